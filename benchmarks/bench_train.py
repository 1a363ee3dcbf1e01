"""Training throughput: elmo_core's single-process step vs the Ray Train workflow at 1 and 2 workers.

    .venv/bin/python benchmarks/bench_train.py --preset small --steps 20 --out benchmarks/results/train_cpu.json

Data: CPython's pydoc prose preprocessed at run time (whitespace tokens). All phases train the
same model config on the same global batches (`workflows.training.batches`, ``--batch-tokens`` tokens
each) with the same step function; tokens/s counts real words (no padding) and leaves out the
first ``--warmup`` steps; ``peak_rss_mb`` is the training processes' peak resident memory (one
process; the sum of the DDP workers'; the sum of Ray's ``RayTrainWorker`` processes', with every
Ray process's in ``peak_rss_mb_by_process``). Phases, each in its own process:

* ``single_1t`` / ``single_2t``: one process, no Ray, 1 / 2 torch threads;
* ``ray_1w``: Ray Train, 1 worker (Ray gives it 1 CPU, hence 1 thread);
* ``ddp_2p``: plain torch DDP, 2 processes x 1 thread (gloo), no Ray: data parallelism's own cost;
* ``ray_2w``: Ray Train, 2 DDP workers x 1 CPU (gloo all-reduce every step).

Reported per round: ``overhead_1w`` = 1 - ray_1w / single_1t and ``overhead_2w`` = 1 - ray_2w /
single_2t (the issue's target: under 15%), ``ray_2w_vs_plain_ddp`` = ray_2w / ddp_2p, and their
medians over ``--rounds`` rounds (``--phases`` runs a subset; ratios need both of their phases). The Ray
phases' tokens/s is the training loop's own ``tokens_per_second`` (evaluation and checkpoint time
excluded, data waits included), averaged over the windows after the warm-up; with the default
data, a 5,120-token run of 16+ steps crosses epoch boundaries (the first epoch streams from Ray
Data; the workers keep this small train split and replay it after: `TrainJobConfig.cache_train_mb`).

``--reading``: what each training worker reads from the train split, without Ray and without
training (issue 26, part 2), on PTB-sized generated text (``--sentences`` sentences of Zipf-drawn
words, ~21 tokens a sentence like the Penn Treebank, preprocessed by `elmo preprocess`; kept in
``--data`` for reuse):

    PYTHONPATH=. .venv/bin/python benchmarks/bench_train.py --reading --data /tmp/ptbsize \
        --before-code /path/to/a/checkout/before/issue-26 --out benchmarks/results/train_reading.json

* ``per_worker``: for 1, 2 and 4 workers, each rank in its own process produces its batches of
  one epoch (sentence mode, default `TrainJobConfig`: shares by row blocks): Parquet bytes read
  (column chunks and footers, from the files' metadata), bytes its process read (``rchar`` of
  ``/proc/self/io``), rows decoded into sentences and CPU seconds; ``imbalance``: per step, the
  largest share over the mean share (real tokens, and padded tokens: sentences x (longest + 2)),
  its mean, 95th percentile and maximum over the epoch's steps, and the steps where a worker had
  no sentence.
* ``per_worker_stream``: the same for stream mode (default `TrainJobConfig`, 20 rows of 35-token
  windows): each rank builds its running text, reading the sentences under its rows.
* ``resume``: seconds from opening the split to a resumed run's first batch, resuming 5% and
  95% into epoch 0 (median of ``--repeats``), in sentence and stream mode.
* ``share_layouts``: from the plan alone, what other ways of sharing a batch would read and
  cost in balance (`share_layouts`).

``--before-code``: the same phases also run with that checkout's code (``PYTHONPATH``); one
without `workflows.training.batch_plan` (before issue 26) takes the path of then: every worker
reads the whole split (the columns the Ray Data stream selects) and keeps its share, and a
resume reads and decodes every batch before its step.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from phase_runner import print_phase_result, run_phase
from processes import ProcessSampler
from report import write_report


def prepare(data: Path) -> None:
    import ray

    from preprocessing.sample_text import pydoc_sentences
    from preprocessing.config import PreprocessConfig
    from preprocessing.driver import run_preprocess

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    corpus = data.parent / "corpus"
    corpus.mkdir(exist_ok=True)
    (corpus / "pydoc.txt").write_text("".join(" ".join(s) + "\n" for s in pydoc_sentences()))
    ray.init(num_cpus=2, logging_level="WARNING")
    run_preprocess([str(corpus)], str(data), PreprocessConfig(tokenizer="whitespace", min_count=1),
                   log=lambda m: None)
    ray.shutdown()


def phase_single(data: Path, preset: str, steps: int, warmup: int, batch_tokens: int, threads: int,
                 rank: int = 0, world: int = 1) -> dict:
    import pyarrow.parquet as pq
    import torch

    from elmo_core.bilm import BiLM
    from elmo_core.config import BiLMConfig
    from preprocessing.dataset import Dataset
    from workflows.training.batches import COLUMNS, global_batches
    from workflows.training.config import TrainJobConfig
    from workflows.training.pretrain import model_options
    from workflows.training.step import LMLoss, StepContext, make_optimizer, sentence_step

    torch.set_num_threads(threads)
    dataset = Dataset.open(str(data))
    vocab = dataset.vocabulary
    torch.manual_seed(0)
    model = BiLM(BiLMConfig.from_options(model_options(preset, len(vocab)))).train()
    optimizer = make_optimizer(model)
    step_module = LMLoss(model)
    if world > 1:  # the process group is set up by phase_ddp
        step_module = torch.nn.parallel.DistributedDataParallel(step_module)
    job = TrainJobConfig(data=str(data), batch_tokens=batch_tokens)
    tables = [pq.read_table(u, columns=COLUMNS) for u in dataset.split_files("train")]
    stream = global_batches(lambda e: iter(tables), batch_tokens, job.shuffle_buffer, world, job.seed)
    tokens, start = 0, None
    for batch in stream:
        if batch.step == warmup:
            start, tokens = time.perf_counter(), 0
        if batch.step == steps:
            break
        sentence_step(step_module, model, optimizer, batch,
                      StepContext(vocab, rank, world, job, model.config.training, "cpu", contextlib.nullcontext()))
        tokens += batch.num_tokens()
    seconds = time.perf_counter() - start
    return {"tokens_per_s": tokens / seconds, "seconds": seconds, "threads": threads,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _ddp_worker(rank: int, world: int, port: int, data: Path, preset: str, steps: int, warmup: int,
                batch_tokens: int, results) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = phase_single(data, preset, steps, warmup, batch_tokens, threads=1, rank=rank, world=world)
        results.put((rank, result))
    finally:
        dist.destroy_process_group()


def phase_ddp(data: Path, preset: str, steps: int, warmup: int, batch_tokens: int, workers: int) -> dict:
    """Plain torch DDP (gloo) in ``workers`` processes x 1 thread, no Ray: what Ray Train adds
    on top of data parallelism itself."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = mp.get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=_ddp_worker, args=(r, workers, port, data, preset, steps, warmup,
                                                           batch_tokens, results)) for r in range(workers)]
    for p in processes:
        p.start()
    by_rank = dict(results.get() for _ in processes)
    for p in processes:
        p.join()
    return {**by_rank[0], "workers": workers,
            "peak_rss_mb": sum(r["peak_rss_mb"] for r in by_rank.values())}  # all workers' peaks


def phase_ray(data: Path, preset: str, steps: int, warmup: int, batch_tokens: int, workers: int) -> dict:
    import ray

    from preprocessing.dataset import Dataset
    from workflows.training.config import TrainJobConfig
    from workflows.training.pretrain import model_options
    from workflows.training.driver import run_training, unique_name

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    ray.init(num_cpus=4, logging_level="WARNING")
    dataset = Dataset.open(str(data))
    vocab = dataset.vocabulary
    # one report at the end of the warm-up and one at the end: the second window is what we time
    # Ray Train V2 keeps only the reports that carry a (kept) checkpoint: every window gets one (the
    # loop's tokens_per_second leaves checkpoint and evaluation time out)
    job = TrainJobConfig(data=str(data), max_steps=steps, batch_tokens=batch_tokens, num_workers=workers,
                         report_every=warmup, eval_every=steps, checkpoint_every=warmup, eval_max_sentences=64,
                         keep_checkpoints=steps)
    with tempfile.TemporaryDirectory() as storage, ProcessSampler(interval=0.5) as procs:
        start = time.perf_counter()
        result = run_training(job, dataset, storage, unique_name("bench"), model_config=model_options(preset, len(vocab)))
        wall = time.perf_counter() - start
    ray.shutdown()
    timed = [h for h in result.history if h.get("step", 0) > warmup and "tokens_per_second" in h]
    rate = sum(h["tokens_per_second"] for h in timed) / len(timed)
    return {"tokens_per_s": rate, "wall_s_including_startup": wall, "workers": workers,
            "cpu_seconds_by_process": procs.cpu_seconds_by_kind(),
            "peak_rss_mb": procs.peak_rss_mb_by_kind().get("ray::RayTrainWorker"),  # the training workers'
            "peak_rss_mb_by_process": procs.peak_rss_mb_by_kind(),
            "windows": [{"step": h["step"], "tokens_per_second": h["tokens_per_second"]} for h in result.history]}


def prepare_ptb_sized(data: Path, sentences: int) -> None:
    """``sentences`` generated sentences (Zipf words over 10,000 types, 1-60 tokens, mean ~21),
    preprocessed with `elmo preprocess` (whitespace tokens, 1% validation)."""
    import numpy as np
    import ray

    from preprocessing.config import PreprocessConfig
    from preprocessing.driver import run_preprocess

    rng = np.random.default_rng(0)
    corpus = data.parent / f"{data.name}-corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    lengths = np.clip(rng.gamma(4.0, 5.3, sentences).astype(int), 1, 60)
    words = np.minimum(rng.zipf(1.3, int(lengths.sum())), 10_000)
    ends = np.cumsum(lengths)
    with open(corpus / "text.txt", "w") as f:
        for a, b in zip(ends - lengths, ends):
            f.write(" ".join(f"w{w}" for w in words[a:b]) + "\n")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=2, logging_level="WARNING")  # never another session's cluster
    run_preprocess([str(corpus)], str(data), PreprocessConfig(tokenizer="whitespace", min_count=1,
                                                              validation_fraction=0.01, test_fraction=0.0),
                   log=lambda m: None)
    ray.shutdown()


def _process_read_bytes() -> int:
    with open("/proc/self/io") as f:
        return int(next(line.split()[1] for line in f if line.startswith("rchar:")))


def _parquet_bytes(files: list[str], columns: list[str]) -> int:
    """Bytes of ``columns``' chunks in every row group of ``files``, plus their footers."""
    import pyarrow.parquet as pq

    total = 0
    for path in files:
        meta = pq.ParquetFile(path).metadata
        total += meta.serialized_size
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            total += sum(group.column(c).total_compressed_size for c in range(group.num_columns)
                         if group.column(c).path_in_schema.split(".")[0] in columns)
    return total


def _sentence_source(data: Path, rank: int, world: int, start_step: int):
    """(this worker's batches from ``start_step`` on, a function giving the Parquet bytes and rows
    decoded so far): today's path when the checkout has no `workflows.training.batch_plan`."""
    import pyarrow.parquet as pq

    from preprocessing.dataset import Dataset
    from workflows.training.config import TrainJobConfig

    job = TrainJobConfig(data=str(data))
    dataset = Dataset.open(str(data))
    try:
        from workflows.training.batch_plan import worker_batches
        from workflows.training.split_rows import SplitRows
    except ImportError:  # before issue 26: the whole split, every batch before start_step decoded
        from workflows.training.batches import COLUMNS, global_batches

        files = dataset.split_files("train")
        counted = {"rows": 0}

        def open_epoch(epoch):
            for path in files:
                table = pq.read_table(path, columns=COLUMNS)
                counted["rows"] += table.num_rows
                yield table

        stream = (b for b in global_batches(open_epoch, job.batch_tokens, job.shuffle_buffer, world, job.seed,
                                            read_ahead=False) if b.step >= start_step)
        return stream, lambda: {"parquet_bytes": None, "rows_decoded": counted["rows"], "path": "before"}
    rows = SplitRows(dataset.uri, [e["path"] for e in dataset.manifest["splits"]["train"]["files"]])
    share = None
    if hasattr(job, "share") and job.share == "blocks":  # this branch's default
        from workflows.training.batch_plan import block_share

        share = block_share(rows.block_starts(job.block_rows), rank, world)
    stream = worker_batches(rows.lengths(), rows.read, job.batch_tokens, job.shuffle_buffer, rank, world, job.seed,
                            start_step, **({"share": share} if share is not None else {}))
    return stream, lambda: {"parquet_bytes": rows.bytes_read, "rows_decoded": rows.rows_read,
                            "path": f"after ({getattr(job, 'share', 'stride')})"}


def _stream_text(data: Path, rank: int, world: int):
    """(worker ``rank``'s running text of stream mode, its Parquet bytes and rows read): this
    checkout's path, or before it (no `worker_text`) the whole split, every column the Ray Data
    stream selected."""
    import pyarrow.parquet as pq

    from preprocessing.dataset import Dataset
    from workflows.training.config import TrainJobConfig

    dataset = Dataset.open(str(data))
    job = TrainJobConfig(data=str(data), mode="stream", num_workers=world)
    try:
        from workflows.training.split_rows import SplitRows
        from workflows.training.streams import worker_text
    except ImportError:
        from workflows.training.batches import COLUMNS
        from workflows.training.streams import running_text

        files = dataset.split_files("train")
        tables = [pq.read_table(path, columns=COLUMNS) for path in files]
        return running_text(tables, dataset.vocabulary), {"parquet_bytes": _parquet_bytes(files, COLUMNS),
                                                           "rows_decoded": sum(t.num_rows for t in tables),
                                                           "path": "before"}
    rows = SplitRows(dataset.uri, [e["path"] for e in dataset.manifest["splits"]["train"]["files"]])
    text = worker_text(rows, job.stream_rows, job.unroll_steps, dataset.vocabulary, rank, world)
    return text, {"parquet_bytes": rows.bytes_read, "rows_decoded": rows.rows_read, "path": "after"}


def phase_read_stream(data: Path, rank: int, world: int) -> dict:
    """One stream-mode worker's running text: what it read and decoded, and the CPU it took."""
    _import_reading_modules()
    before_bytes, before_cpu = _process_read_bytes(), time.process_time()
    text, counts = _stream_text(data, rank, world)
    return {"rank": rank, "world": world, "process_read_bytes": _process_read_bytes() - before_bytes,
            "cpu_s": time.process_time() - before_cpu, "text_pairs": text.forward.num_pairs, **counts}


def _import_reading_modules() -> None:
    """Import what reading needs before anything is counted or timed (imports read files too)."""
    import importlib

    for name in ("pyarrow.parquet", "pyarrow.compute", "preprocessing.dataset", "preprocessing.encode",
                 "workflows.training.batches", "workflows.training.config", "workflows.training.streams",
                 "workflows.training.batch_plan", "workflows.training.split_rows", "workflows.training.worker"):
        try:
            importlib.import_module(name)
        except ImportError:  # before issue 26
            pass
    import pyarrow as pa

    pa.array([1], pa.int32()).to_numpy()  # its first call imports modules: ~11 MB of reads


def phase_read_epoch(data: Path, rank: int, world: int, steps: int) -> dict:
    """One worker's batches of epoch 0 (its first ``steps``): what it read and decoded, and the CPU it took."""
    from preprocessing.dataset import Dataset
    from workflows.training.batches import COLUMNS

    _import_reading_modules()
    before_bytes, before_cpu = _process_read_bytes(), time.process_time()
    stream, counts = _sentence_source(data, rank, world, 0)
    share_tokens, share_padded = [], []
    for _, batch in zip(range(steps), stream):
        assert batch.epoch == 0
        mine = batch.share(rank, world)
        share_tokens.append(sum(len(s) for s in mine))
        share_padded.append(len(mine) * (max((len(s) for s in mine), default=0) + 2) if mine else 0)
    result = {"rank": rank, "world": world, "steps": steps, "process_read_bytes": _process_read_bytes() - before_bytes,
              "cpu_s": time.process_time() - before_cpu, **counts(), "share_tokens": share_tokens,
              "share_padded_tokens": share_padded}
    if result["parquet_bytes"] is None:  # before: every column the stream selects, every row group
        result["parquet_bytes"] = _parquet_bytes(Dataset.open(str(data)).split_files("train"), COLUMNS)
    return result


def phase_resume(data: Path, mode: str, start_step: int) -> dict:
    """Seconds from opening the train split to the first batch of a run resumed at ``start_step``."""
    _import_reading_modules()
    start = time.perf_counter()
    if mode == "stream":
        from workflows.training.config import TrainJobConfig
        from workflows.training.streams import StreamLayout

        job = TrainJobConfig(data=str(data), mode="stream")
        text, _ = _stream_text(data, 0, 1)
        layout = StreamLayout(text, job.stream_rows, job.unroll_steps)
        batch = next(layout.batches(start_step, 0, 1))
    else:
        stream, _ = _sentence_source(data, 0, 1, start_step)
        batch = next(stream)
    assert batch.step == start_step
    return {"mode": mode, "start_step": start_step, "seconds_to_first_batch": time.perf_counter() - start}


def epoch_steps(data: Path, mode: str, world: int = 1) -> int:
    """Steps of epoch 0 on one worker: sentence mode's from the plan (the same batches as
    `global_batches`), stream mode's from the layout's arithmetic."""
    import numpy as np
    import pyarrow.parquet as pq

    from preprocessing.dataset import Dataset
    from workflows.training.batch_plan import plan_buffers
    from workflows.training.config import TrainJobConfig

    dataset = Dataset.open(str(data))
    job = TrainJobConfig(data=str(data), mode=mode)
    lengths = np.concatenate([pq.read_table(p, columns=["num_tokens"]).column(0).to_numpy()
                              for p in dataset.split_files("train")])
    if mode == "stream":  # (input, target) pairs: every word and every sentence end
        return (int(lengths.sum()) + len(lengths)) // job.stream_rows // job.unroll_steps
    steps = 0
    for buffer in plan_buffers(lengths, job.batch_tokens, job.shuffle_buffer, world, job.seed):
        if buffer.epoch > 0:
            return steps
        steps += len(buffer.batches)
    return steps


def measure_reading(data: Path, code: Path, repeats: int, steps: dict) -> dict:
    """The reading measurements with the code of the checkout ``code`` (`phase_read_epoch`, `phase_resume`)."""
    env = {"PYTHONPATH": str(code)}
    result = {"code": str(code), "per_worker": {}, "resume": {}}
    for world in (1, 2, 4):
        ranks = [run_phase(__file__, "--reading", "--phase", "read_epoch", "--data", str(data), "--rank", str(r),
                           "--n", str(world), "--steps", str(steps[f"sentence_{world}w"]), env=env)
                 for r in range(world)]
        result["per_worker"][str(world)] = {"ranks": ranks, "imbalance": share_imbalance(ranks)}
        print(f"[{ranks[0]['path']}] {world} workers: parquet bytes per rank {[r['parquet_bytes'] for r in ranks]}, "
              f"rows decoded {[r['rows_decoded'] for r in ranks]}, imbalance {share_imbalance(ranks)}", file=sys.stderr)
        streams = [run_phase(__file__, "--reading", "--phase", "read_stream", "--data", str(data), "--rank", str(r),
                             "--n", str(world), env=env) for r in range(world)]
        result.setdefault("per_worker_stream", {})[str(world)] = streams
        print(f"[{streams[0]['path']}] stream, {world} workers: parquet bytes per rank "
              f"{[r['parquet_bytes'] for r in streams]}, rows decoded {[r['rows_decoded'] for r in streams]}",
              file=sys.stderr)
    for mode in ("sentence", "stream"):
        for where, fraction in (("early", 0.05), ("late", 0.95)):
            k = int(steps[mode] * fraction)
            seconds = [run_phase(__file__, "--reading", "--phase", "resume", "--data", str(data), "--mode", mode,
                                 "--start-step", str(k), env=env)["seconds_to_first_batch"] for _ in range(repeats)]
            result["resume"][f"{mode}_{where}"] = {"start_step": k, "steps_per_epoch": steps[mode],
                                                   "seconds": seconds, "median_s": statistics.median(seconds)}
            print(f"[{code}] resume {mode} at step {k} of {steps[mode]}: {statistics.median(seconds):.2f} s",
                  file=sys.stderr)
    return result


def share_imbalance(ranks: list[dict]) -> dict:
    """Per step, the largest worker share over the mean share (real and padded tokens): mean,
    95th percentile and maximum over the steps; and the steps where some worker had nothing."""
    import numpy as np

    out = {}
    for key in ("share_tokens", "share_padded_tokens"):
        shares = np.array([r[key] for r in ranks], np.float64)  # (workers, steps)
        ratio = shares.max(axis=0) / shares.mean(axis=0)
        out[key] = {"mean": float(ratio.mean()), "p95": float(np.percentile(ratio, 95)), "max": float(ratio.max())}
    out["steps_with_an_empty_share"] = int((np.array([r["share_tokens"] for r in ranks]) == 0).any(axis=0).sum())
    return out


def share_layouts(data: Path, worlds=(2, 4), group_rows=(512, 2048, 65536)) -> list[dict]:
    """From the plan alone (epoch 0): the largest fraction of a split's row groups one worker must
    read, and the mean over steps of (largest share's tokens / mean share's tokens), if the split
    had row groups of ``group_rows`` rows and a batch were shared by ``stride`` (today: sentences
    ``r, r + W, ...``), ``chunk`` (the batch's rows in split order, cut in W runs) or ``owner`` (the
    rows of row groups ``r, r + W, ...``): what reading ~1/N of the bytes would cost."""
    import numpy as np
    import pyarrow.parquet as pq

    from preprocessing.dataset import Dataset
    from workflows.training.batch_plan import plan_buffers
    from workflows.training.config import TrainJobConfig

    job = TrainJobConfig(data=str(data))
    lengths = np.concatenate([pq.read_table(p, columns=["num_tokens"]).column(0).to_numpy()
                              for p in Dataset.open(str(data)).split_files("train")]).astype(np.int64)
    out = []
    for world in worlds:
        batches = []
        for buffer in plan_buffers(lengths, job.batch_tokens, job.shuffle_buffer, world, job.seed):
            if buffer.epoch > 0:
                break
            batches += buffer.batches
        for g in group_rows:
            for name in ("stride", "chunk", "owner"):
                groups, imbalance = [set() for _ in range(world)], []
                for rows in batches:
                    shares = ([rows[r::world] for r in range(world)] if name == "stride" else
                              np.array_split(np.sort(rows), world) if name == "chunk" else
                              [rows[(rows // g) % world == r] for r in range(world)])
                    tokens = [int(lengths[share].sum()) for share in shares]
                    imbalance.append(max(tokens) * world / sum(tokens))
                    for r in range(world):
                        groups[r].update((shares[r] // g).tolist())
                out.append({"workers": world, "row_group_rows": g, "share": name,
                            "max_fraction_of_row_groups_read": max(map(len, groups)) / -(-len(lengths) // g),
                            "mean_largest_share_over_mean": float(np.mean(imbalance))})
    return out


def reading_benchmark(args) -> None:
    from preprocessing.dataset import Dataset

    data = args.data or Path(tempfile.mkdtemp()) / "data"
    if not (data / "manifest.json").exists():
        prepare_ptb_sized(data, args.sentences)
    train = Dataset.open(str(data)).manifest["splits"]["train"]
    import pyarrow.parquet as pq

    row_groups = [pq.ParquetFile(path).metadata.num_row_groups for path in Dataset.open(str(data)).split_files("train")]
    steps = {mode: epoch_steps(data, mode) for mode in ("sentence", "stream")}
    steps.update({f"sentence_{world}w": epoch_steps(data, "sentence", world) for world in (1, 2, 4)})
    report = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "data": str(data),
              "train": {"sentences": train["sentences"], "tokens": train["tokens"], "files": len(train["files"]),
                        "parquet_bytes": sum(f["bytes"] for f in train["files"]), "row_groups": row_groups},
              "steps_per_epoch": steps, "repeats": args.repeats}
    checkouts = {"after": Path(__file__).resolve().parents[1]}
    if args.before_code:
        checkouts = {"before": args.before_code, **checkouts}
    for name, code in checkouts.items():
        report[name] = measure_reading(data, code, args.repeats, steps)
    report["share_layouts"] = share_layouts(data)
    write_report(args.out, report)


# name -> (how it runs, processes or workers); every round runs the chosen ones in this order
PHASES = {"single_1t": ("single", 1), "ray_1w": ("ray", 1), "single_2t": ("single", 2), "ddp_2p": ("ddp", 2),
          "ray_2w": ("ray", 2)}
# ratio name -> (overhead = 1 - a/b, or ratio = a/b; a; b), reported where both phases ran
RATIOS = {"overhead_1w": ("overhead", "ray_1w", "single_1t"), "overhead_2w": ("overhead", "ray_2w", "single_2t"),
          "ray_2w_vs_plain_ddp": ("ratio", "ray_2w", "ddp_2p")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--batch-tokens", type=int, default=1280)
    parser.add_argument("--rounds", type=int, default=2, help="every phase once per round")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help=f"comma-separated subset of {','.join(PHASES)} (default: all)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--reading", action="store_true", help="what each worker reads (module docstring)")
    parser.add_argument("--sentences", type=int, default=50_000, help="--reading: generated sentences")
    parser.add_argument("--repeats", type=int, default=5, help="--reading: runs of each resume")
    parser.add_argument("--before-code", type=Path, help="--reading: also measure this checkout (before the change)")
    parser.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="sentence", help=argparse.SUPPRESS)
    parser.add_argument("--start-step", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reading:
        if args.phase == "read_epoch":
            print_phase_result(phase_read_epoch(args.data, args.rank, args.n, args.steps))
        elif args.phase == "read_stream":
            print_phase_result(phase_read_stream(args.data, args.rank, args.n))
        elif args.phase == "resume":
            print_phase_result(phase_resume(args.data, args.mode, args.start_step))
        else:
            reading_benchmark(args)
        return
    chosen = [name.strip() for name in args.phases.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(PHASES))
    if unknown or not chosen:
        parser.error(f"--phases: unknown {unknown}; choose from {','.join(PHASES)}")
    common = (args.data, args.preset, args.steps, args.warmup, args.batch_tokens)
    if args.phase:  # one phase, in the process `run_phase` started
        phase = {"single": lambda: phase_single(*common, threads=args.n),
                 "ddp": lambda: phase_ddp(*common, workers=args.n),
                 "ray": lambda: phase_ray(*common, workers=args.n)}[args.phase]
        print_phase_result(phase())
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        prepare(data)

        def run(phase: str, n: int) -> dict:
            result = run_phase(__file__, "--phase", phase, "--n", str(n), "--data", str(data), "--preset",
                               args.preset, "--steps", str(args.steps), "--warmup", str(args.warmup),
                               "--batch-tokens", str(args.batch_tokens))
            print(f"{phase} {n}: {result['tokens_per_s']:.1f} tokens/s, peak {result.get('peak_rss_mb') or 0:.0f} MB",
                  file=sys.stderr)
            return result

        # this VM's speed drifts by up to ~20% over minutes: each round runs every phase once, one
        # right after the other, and the overheads are taken within a round (median over rounds)
        rounds = []
        for r in range(args.rounds):
            phases = {name: run(*PHASES[name]) for name in chosen}
            rate = {name: result["tokens_per_s"] for name, result in phases.items()}
            ratios = {key: 1 - rate[a] / rate[b] if kind == "overhead" else rate[a] / rate[b]
                      for key, (kind, a, b) in RATIOS.items() if a in rate and b in rate}
            rounds.append({"phases": phases, **ratios})
            print(f"round {r + 1}: " + ", ".join(f"{k} {v:+.1%}" if RATIOS[k][0] == "overhead" else f"{k} {v:.3f}"
                                                 for k, v in ratios.items()), file=sys.stderr)
    report = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "preset": args.preset, "phases": chosen, "steps": args.steps, "warmup": args.warmup, "batch_tokens": args.batch_tokens,
        "rounds": rounds,
        **{key: statistics.median(r[key] for r in rounds) for key in RATIOS if key in rounds[0]},
    }
    write_report(args.out, report)


if __name__ == "__main__":
    main()
