"""Per-unit costs of the shared components, for the scale plan (`docs/scale.md`): what one
checkpoint, one S3 request, one MLflow call, one ledger or part record, one gradient all-reduce
and one driver-written or worker-decoded byte cost on this machine.

    .venv/bin/python benchmarks/bench_unit_costs.py --out benchmarks/results/unit_costs_cpu.json

About 1-2 minutes on 2 vCPUs. It starts its own S3 server (SeaweedFS, `infra.local.local_services`)
and `mlflow server` on 127.0.0.1 and stops them by PID; ``--skip-s3`` / ``--skip-mlflow`` leave
those sections out. Every section measures the project's own code path where one exists:

* ``models``: parameter counts and float32 gradient bytes (what DDP all-reduces each step) of
  `lm5m`, `small` and `original`, at a 10k vocabulary and at the 1B Word Benchmark's 793,471 words
  (models built on the ``meta`` device: nothing allocated).
* ``checkpoints``: `save_training_checkpoint` / `load_training_checkpoint` (model, best model, Adam
  state) of `lm5m` and `original` at a 10k vocabulary to local disk, then the directory uploaded to
  and downloaded from S3 with ``pyarrow.fs.copy_files`` (what Ray Train's persistence does).
* ``s3``: one request of each kind through `preprocessing.storage.Storage` (PUT, GET, HEAD,
  conditional PUT new and taken, LIST of 1,000 keys).
* ``ledger``: today's `Ledger` on S3 over 1,000 entries: reading it, and one commit.
* ``mlflow``: the training loop's calls counted by its rule (restated from `worker._AfterStep.of`) and the
  latency of one `WorkerTracker.log` (one ``log_batch``) on a real server.
* ``embedding``: bytes of a per-part record and of today's ledger entry; `ParquetOutput` writing
  `original`'s three 1,024-float layers (the driver's per-byte cost today).
* ``training_read``: bytes per token of the preprocessed Parquet and the rate at which one worker
  reads and batches a split (`global_batches`: today every worker decodes the whole split).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import cpu_model, write_report  # noqa: E402

LM1B_VOCAB = 793_471  # the 1B Word Benchmark vocabulary of the released `original` (elmo-reference.md)
SMALL_VOCAB = 10_000


def _timed(fn, repeat: int) -> dict:
    """Median / min / max seconds of ``repeat`` calls of ``fn``."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "n": repeat}


def _vocab(size: int):
    from elmo_core.vocabulary import SPECIALS, Vocabulary

    return Vocabulary(list(SPECIALS) + [f"w{i}" for i in range(size - len(SPECIALS))])


def _config(preset: str, vocab: int):
    from elmo_core.config import BiLMConfig

    return BiLMConfig.preset(preset, n_tokens_vocab=vocab)


# ------------------------------------------------------------------------------------- models
def models() -> dict:
    """Parameter counts and gradient bytes (float32), built on the meta device."""
    import torch

    from elmo_core.bilm import BiLM

    out = {}
    for preset in ("lm5m", "small", "original"):
        for vocab in (SMALL_VOCAB, LM1B_VOCAB):
            with torch.device("meta"):
                model = BiLM(_config(preset, vocab))
            total = sum(p.numel() for p in model.parameters())
            softmax = sum(p.numel() for p in model.softmax.parameters())
            out[f"{preset}@{vocab}"] = {
                "parameters": total, "softmax_parameters": softmax, "without_softmax": total - softmax,
                "grad_bytes_per_allreduce": 4 * total,
                "model_file_bytes_est": 4 * total,
                "checkpoint_bytes_est_adam": 4 * total * 4,  # model + best_model + exp_avg + exp_avg_sq
                "checkpoint_bytes_est_adagrad": 4 * total * 3,  # model + best_model + accumulator
                "train_negative_samples": _config(preset, vocab).training.train_negative_samples}
    return out


# -------------------------------------------------------------------------------- checkpoints
def _model_with_adam_state(preset: str, vocab: int):
    """A model and its Adam optimizer after one step (zero gradients): the state is allocated."""
    import torch

    from elmo_core.bilm import BiLM
    from workflows.training.step import make_optimizer

    torch.manual_seed(0)
    model = BiLM(_config(preset, vocab))
    optimizer = make_optimizer(model)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    return model, optimizer


def _dir_bytes(path: Path) -> dict:
    files = {str(p.relative_to(path)): p.stat().st_size for p in sorted(path.rglob("*")) if p.is_file()}
    return {"total_bytes": sum(files.values()), "files": files}


def checkpoints(work: Path, s3_env: dict | None, presets: list[str]) -> dict:
    import pyarrow.fs as pafs

    from workflows.training.checkpoints import load_training_checkpoint, save_training_checkpoint

    out = {}
    for preset in presets:
        model, optimizer = _model_with_adam_state(preset, SMALL_VOCAB)
        vocab = _vocab(SMALL_VOCAB)
        params = sum(p.numel() for p in model.parameters())
        directory = work / f"ckpt-{preset}"
        directory.mkdir()
        extra = {"epoch": 0, "schedule": {}}
        save = _timed(lambda: save_training_checkpoint(directory, model, vocab, optimizer, 1, extra, best_model=model),
                      repeat=2)
        sizes = _dir_bytes(directory)
        load = _timed(lambda: load_training_checkpoint(directory), repeat=2)
        gb = sizes["total_bytes"] / 1e9
        row = {"parameters": params, "optimizer": "adam", **sizes,
               "bytes_per_parameter": sizes["total_bytes"] / params,
               "save_local": save, "load_local": load,
               "save_local_s_per_gb": save["median_s"] / gb, "load_local_s_per_gb": load["median_s"] / gb}
        if s3_env is not None:
            fs = pafs.S3FileSystem(endpoint_override=s3_env["AWS_ENDPOINT_URL"], scheme="http",
                                   access_key=s3_env["AWS_ACCESS_KEY_ID"], secret_key=s3_env["AWS_SECRET_ACCESS_KEY"],
                                   region=s3_env["AWS_DEFAULT_REGION"])
            target = f"bench/ckpt/{preset}"
            back = work / f"back-{preset}"
            up = _timed(lambda: pafs.copy_files(str(directory), target, source_filesystem=pafs.LocalFileSystem(),
                                                destination_filesystem=fs, use_threads=True), repeat=1)
            down = _timed(lambda: pafs.copy_files(target, str(back), source_filesystem=fs,
                                                  destination_filesystem=pafs.LocalFileSystem(), use_threads=True),
                          repeat=1)
            row.update(upload_s3=up, download_s3=down, upload_s3_s_per_gb=up["median_s"] / gb,
                       download_s3_s_per_gb=down["median_s"] / gb)
        out[f"{preset}@{SMALL_VOCAB}"] = row
    return out


# ---------------------------------------------------------------------------------------- S3
def s3_requests(env: dict, client) -> dict:
    """One request of each kind through `Storage`, on a 1 KB object (except LIST)."""
    from preprocessing.storage import Storage

    client.create_bucket(Bucket="unitcosts")
    store = Storage("s3://unitcosts/requests")
    body = b"x" * 1024
    n = 60
    counter = iter(range(10**9))
    out = {
        "put_1kb": _timed(lambda: store.write("put/obj.json", body), n),
        "get_1kb": _timed(lambda: store.read("put/obj.json"), n),
        "head": _timed(lambda: store.stat("put/obj.json"), n),
        "put_if_absent_new": _timed(lambda: store.put_if_absent(f"cond/{next(counter):08d}.json", body), n),
        "put_if_absent_taken": _timed(lambda: store.put_if_absent("cond/00000000.json", body), n),
    }
    keys = 1000
    for i in range(keys):
        client.put_object(Bucket="unitcosts", Key=f"requests/listed/{i:020d}.json", Body=b"{}")
    listed = _timed(lambda: store.list("listed"), 5)
    out["list_1000_keys"] = {**listed, "keys": keys, "s_per_key": listed["median_s"] / keys}
    return out


def ledger(client, entry: dict, entries: int = 1000) -> dict:
    """Today's `Ledger` over ``entries`` committed entries (written directly, one PUT each, under
    the names `Ledger.commit` gives): reading it (`entries`: one LIST page per 1,000 keys and one
    GET per entry) and one `commit` (a LIST of the whole log, then a conditional PUT)."""
    from preprocessing.storage import Storage
    from workflows.embedding.ledger import LEDGER_DIR, Ledger

    client.create_bucket(Bucket="ledger")
    for seq in range(1, entries + 1):
        body = json.dumps({**entry, "entry_id": f"{seq:024d}", "seq": seq}, sort_keys=True).encode()
        client.put_object(Bucket="ledger", Key=f"out/{LEDGER_DIR}/{seq:020d}.json", Body=body)
    log = Ledger(Storage("s3://ledger/out"))
    read = _timed(lambda: log.entries(), 1)
    counter = iter(range(10**9))
    commit = _timed(lambda: log.commit({**entry, "entry_id": f"new-{next(counter)}"}), 3)
    return {"entries": entries, "read_all": read, "read_s_per_entry": read["median_s"] / entries,
            "commit": commit}


# ------------------------------------------------------------------------------------ MLflow
def mlflow_calls_by_rule() -> dict:
    """What the training loop sends per step with the defaults of `TrainJobConfig`: reports (one
    MLflow ``log_batch`` from rank 0 and one ``ray.train.report`` from every worker), evaluations
    and checkpoints per 1,000 steps. The rule is the one `workflows/training/worker.py` applies
    after each step (``_AfterStep.of``, private there), restated here for the middle of a run
    (no epoch end): evaluate every ``eval_every``, checkpoint every ``checkpoint_every`` and at
    the last step, report every ``report_every`` and whenever it evaluates or checkpoints."""
    from workflows.training.config import TrainJobConfig

    job = TrainJobConfig(data="x", max_steps=1000)
    counts = {"report": 0, "evaluate": 0, "checkpoint": 0}
    for done in range(1, job.max_steps + 1):
        last = done == job.max_steps
        evaluate = done % job.eval_every == 0 or last
        checkpoint = done % job.checkpoint_every == 0 or last
        report = done % job.report_every == 0 or evaluate or checkpoint
        for key, happens in (("report", report), ("evaluate", evaluate), ("checkpoint", checkpoint)):
            counts[key] += happens
    return {"steps": job.max_steps, "report_every": job.report_every, "eval_every": job.eval_every,
            "checkpoint_every": job.checkpoint_every, "per_1000_steps": counts,
            "mlflow_log_batch_per_step": counts["report"] / job.max_steps,
            "metrics_per_report": "3 (train_loss, tokens_per_second, learning_rate) + 5 on evaluations (val_ppl*, "
                                  "best_val_ppl, best_step), with 4 run tags (step, epoch, num_workers, num_nodes) in "
                                  "the same log_batch"}


def mlflow_latency(root: Path) -> dict:
    import mlflow

    from infra.local import local_services
    from workflows.registry.tracking import WorkerTracker

    began = time.perf_counter()
    with local_services.mlflow_server(root) as server:
        started = time.perf_counter() - began
        client = mlflow.MlflowClient(server.address)
        experiment = client.create_experiment("unit-costs")
        run_id = client.create_run(experiment).info.run_id
        tracker = WorkerTracker({"tracking_uri": server.address, "run_id": run_id})
        report = {"step": 1, "epoch": 0, "num_workers": 8, "num_nodes": 1, "train_loss": 4.2,
                  "tokens_per_second": 60000.0, "learning_rate": 2e-3}
        evaluation = {**report, "val_ppl_forward": 40.0, "val_ppl_backward": 41.0, "val_ppl": 40.5,
                      "best_val_ppl": 40.5, "best_step": 1}
        step = iter(range(1, 10**9))
        tracker.log(report, 0)  # connection set up outside the timing
        return {"server_start_s": started,
                "log_batch_7_metrics": _timed(lambda: tracker.log(report, next(step)), 40),
                "log_batch_12_metrics": _timed(lambda: tracker.log(evaluation, next(step)), 20)}


# --------------------------------------------------------------------------------- embedding
def embedding(work: Path) -> dict:
    """Bookkeeping bytes per part and per input file; `ParquetOutput`'s rate at `original`'s width."""
    import pyarrow as pa

    from workflows.embedding.config import EmbedJobConfig
    from workflows.embedding.output import ParquetOutput
    from workflows.embedding.pipeline import output_schema, vector_column

    checksum = hashlib.sha256(b"part").hexdigest()
    part = {"part": "elmo-news-v7/corpus/2026/12/02/news-000123.txt.3f2a9c1d0b7e.00007.parquet",
            "input": "s3://bucket/feeds/corpus/2026/12/02/news-000123.txt", "first_line": 7169, "lines": 1024,
            "rows": 1021, "blank_lines": 3, "tokens": 25_530, "sha256": checksum}
    # the ledger entry `embed_new.run_once` commits today for one input file (field for field)
    ident = {"uri": part["input"], "key": "corpus/2026/12/02/news-000123.txt", "size": 1_234_567,
             "fingerprint": "etag:" + hashlib.md5(b"x").hexdigest()}
    entry = {"entry_id": checksum[:24], "file_identity": checksum[:24], "input": {**ident, "sha256": checksum},
             "model_uri": "models:/elmo-news@champion", "model_source": "registry", "model_version": "elmo-news/7",
             "model_digest": checksum, "model_version_key": "elmo-news/7",
             "settings": EmbedJobConfig().output_settings(),
             "output": f"elmo-news-v7/{ident['key']}.{checksum[:12]}.parquet", "lines": 12_000,
             "blank_lines": 3, "sentences": 11_997, "tokens": 300_000, "lease_epoch": 12,
             "committed": "2026-12-02T12:00:00Z", "seq": 100_000}
    part_bytes = len(json.dumps(part, sort_keys=True).encode())
    entry_bytes = len(json.dumps(entry, sort_keys=True).encode())

    # original: 3 layers x (n, 1,024) float32 per sentence; 25-token sentences
    dim, n_tokens, sentence_len = 1024, 12_000, 25
    rng = np.random.default_rng(0)
    sentences = n_tokens // sentence_len
    names = ["layer_0", "layer_1", "layer_2"]
    columns = {
        "sentence_id": pa.array([f"s{i}" for i in range(sentences)]),
        "source": pa.array(["news-000123.txt"] * sentences),
        "line": pa.array(np.arange(1, sentences + 1), pa.int64()),
        "sentence_index": pa.array(np.zeros(sentences, np.int32)),
        "tokens": pa.array([[f"w{j}" for j in range(sentence_len)] for _ in range(sentences)]),
    }
    for name in names:
        matrices = [rng.standard_normal((sentence_len, dim), dtype=np.float32) for _ in range(sentences)]
        columns[name] = vector_column(matrices, dim, np.float32)
    table = pa.table(columns, schema=output_schema(names, dim, "float32"))
    raw = table.nbytes
    path = work / "emb.parquet"

    def write():
        output = ParquetOutput(str(path), names)
        output.add(table)
        output.finish({"bench": True}, table.schema)

    timing = _timed(write, 2)
    stored = path.stat().st_size
    return {"part_record_json_bytes": part_bytes, "ledger_entry_json_bytes_today": entry_bytes,
            "example_part_record": part, "example_ledger_entry": entry, "parquet_write": {
                "tokens": n_tokens, "layers": 3, "dim": dim, "arrow_bytes": raw, "file_bytes": stored,
                "file_bytes_per_token": stored / n_tokens, **timing,
                "mb_per_s_written": stored / timing["median_s"] / 1e6,
                "tokens_per_s_one_core": n_tokens / timing["median_s"]}}


# ----------------------------------------------------------------------------- training read
def training_read(work: Path) -> dict:
    """Bytes per token of a preprocessed split and one worker's read + batch rate (today every
    worker decodes every row: sentences, char ids, buckets)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from preprocessing import schema
    from preprocessing.parquet_writer import PARQUET_COMPRESSION
    from workflows.training.batches import COLUMNS, global_batches

    rng = np.random.default_rng(0)
    words = [f"{''.join(rng.choice(list('etaoinshrdlucmfw'), size=int(k)))}" for k in rng.integers(2, 10, 50_000)]
    n_sentences, tokens_total = 16_000, 0
    lengths = np.clip(rng.poisson(25, n_sentences), 1, None)
    ranks = np.minimum(rng.zipf(1.2, int(lengths.sum())), len(words)) - 1
    rows, at = {"tokens": [], "word_ids": []}, 0
    for n in lengths:
        ids = ranks[at:at + n]
        at += n
        rows["tokens"].append([words[i] for i in ids])
        rows["word_ids"].append(ids.astype(np.int32))
        tokens_total += int(n)
    table = pa.table({
        "sentence_id": pa.array([f"d{i}" for i in range(n_sentences)]), "source": pa.array(["news.txt"] * n_sentences),
        "line": pa.array(np.arange(n_sentences), pa.int64()),
        "sentence_index": pa.array(np.zeros(n_sentences, np.int32)),
        "num_tokens": pa.array(lengths.astype(np.int32)), "tokens": pa.array(rows["tokens"]),
        "word_ids": pa.array(rows["word_ids"], pa.list_(pa.int32()))}).select(schema.SENTENCES.names)
    table = table.cast(schema.SENTENCES)
    path = work / "train.parquet"
    pq.write_table(table, path, compression=PARQUET_COMPRESSION)
    stored = path.stat().st_size

    def decode(world: int) -> int:
        def epoch(_):
            yield from pq.ParquetFile(path).iter_batches(batch_size=1024, columns=COLUMNS)

        seen = 0
        for batch in global_batches(lambda e: (pa.Table.from_batches([b]) for b in epoch(e)), 2560, 20_000,
                                    world, 0, read_ahead=False):
            if batch.epoch > 0:
                break
            seen += batch.num_tokens()
        return seen

    timing = _timed(lambda: decode(8), 2)
    return {"sentences": n_sentences, "tokens": tokens_total, "file_bytes": stored,
            "file_bytes_per_token": stored / tokens_total, "read_and_batch_one_worker": timing,
            "tokens_per_s_one_worker": tokens_total / timing["median_s"]}


# ---------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results/unit_costs_cpu.json")
    parser.add_argument("--skip-s3", action="store_true")
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--checkpoint-presets", default="lm5m,original")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    began = time.perf_counter()
    result = {"machine": {"cpu": cpu_model(), "cpus": os.cpu_count()},
              "command": "benchmarks/bench_unit_costs.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with tempfile.TemporaryDirectory(prefix="unit-costs-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        s3_env = client = None
        if not args.skip_s3:
            from infra.local import local_services

            if local_services.s3_available() is None:
                result["s3_skipped"] = "no S3 server binary here"
            else:
                _, s3_env, client = stack.enter_context(local_services.s3_server(work / "s3"))
                os.environ.update(s3_env)
                client.create_bucket(Bucket="bench")
                result["s3_server"] = local_services.s3_available()
        result["models"] = models()
        print("models done", flush=True)
        result["mlflow"] = {"by_rule": mlflow_calls_by_rule()}
        if s3_env is not None:
            result["s3"] = s3_requests(s3_env, client)
            print("s3 done", flush=True)
        result["embedding"] = embedding(work)
        print("embedding done", flush=True)
        if s3_env is not None:
            result["ledger"] = ledger(client, result["embedding"]["example_ledger_entry"])
            print("ledger done", flush=True)
        result["training_read"] = training_read(work)
        print("training read done", flush=True)
        result["checkpoints"] = checkpoints(work, s3_env, args.checkpoint_presets.split(","))
        print("checkpoints done", flush=True)
        if not args.skip_mlflow:
            result["mlflow"]["latency"] = mlflow_latency(work / "mlflow")
    result["wall_s"] = time.perf_counter() - began
    write_report(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
