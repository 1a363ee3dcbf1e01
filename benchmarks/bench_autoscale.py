"""Does a node that joins a running job get work? `elmo embed-corpus --num-actors 1..2` and
`elmo preprocess` on a local 2-node Ray cluster whose second node starts after the job did.

    .venv/bin/python benchmarks/bench_autoscale.py --out benchmarks/results/autoscale_cpu.json

For each job: a head (``ray start --head``, `infra.local.local_services.ray_cluster`) with
``--head-cpus``; the job started as a user starts it (the CLI, ``--address`` the head); once
its first embedding actor (preprocessing: its first tokenizer task) is running, and
``--join-delay`` seconds later, a second node with ``--node-cpus`` joins
(`local_services.join_ray_node`). Recorded from Ray's state API (``ray.util.state``): every
actor of the job with its node and start/end time, the tasks each node ran, and the most tasks
running at once (from their start and end times; a sample every 2 s for the pool).

* embed: ``--cpus-per-actor 2`` on a head of 3 CPUs holds one actor (and the 0.5-CPU reading and
  tokenizing tasks); the pool may grow to 2, and only the late node (2 CPUs) can hold the second.
* preprocess: a head of 1 CPU; tokenizer tasks of 1 CPU each. Before issue 26 the job capped its
  tokenizer tasks at the CPUs present at the start (1), so the late node got none at a time
  beyond that one.

Generated data (nothing committed): a random-weight ``--preset`` model and shuffled pydoc
sentences (`embed_setup`), sized so that each job runs a minute or two on a 2-vCPU machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import write_report

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from infra.local import local_services  # noqa: E402

# On a loaded machine a starting node can miss the 30 s Ray gives it to register with the GCS (fixed
# in ray/_private/node.py); the state API's queries load the GCS too, so they are not too frequent.
JOIN_ATTEMPTS, SAMPLE_EVERY_S = 5, 2.0
EMBED_ACTOR_CLASS = "MapWorker(MapBatches(EmbedActor))"  # Ray Data's name for the pool's actors


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", default="embed,preprocess", help="which jobs: embed, preprocess or both")
    p.add_argument("--preset", default="small")
    p.add_argument("--tokens", type=int, default=200_000, help="tokens of the embedding corpus")
    p.add_argument("--files", type=int, default=8, help="files of the embedding corpus")
    p.add_argument("--preprocess-mb", type=float, default=30.0, help="MB of text for the preprocessing job")
    p.add_argument("--preprocess-shards", type=int, default=4)
    p.add_argument("--join-delay", type=float, default=5.0, help="seconds after the job's first worker runs")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds a job may take")
    p.add_argument("--out", default=None, help="JSON report path")
    return p.parse_args()


def state(kind: str, address: str, **kwargs) -> list[dict]:
    """Ray's state API (the dashboard at ``address``), as dicts; [] while it does not answer."""
    from ray.util import state as ray_state

    try:
        return [dict(getattr(r, "__dict__", r)) for r in getattr(ray_state, f"list_{kind}")(
            address=address, limit=10_000, raise_on_missing_output=False, **kwargs)]
    except Exception:  # noqa: BLE001 (the dashboard may be busy; the next sample asks again)
        return []


def node_ids(address: str) -> list[str]:
    return [n["node_id"] for n in state("nodes", address) if n.get("state") == "ALIVE"]


def run_job(name: str, argv: list[str], head, is_worker, node_cpus: int, join_delay: float, timeout: float,
            log: Path) -> dict:
    """Start the job, join a node once a worker of it runs (``is_worker(task_or_actor)``), sample
    until it ends; returns what ran where."""
    address = head.address
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled"}
    head_node = node_ids(address)[0]
    start, start_epoch_ms = time.monotonic(), time.time() * 1000
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    samples, joined, late_node, first_worker_s, join_failures = [], None, None, None, []
    try:
        while proc.poll() is None:
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"{name}: still running after {timeout:.0f} s; see {log}")
            now = round(time.monotonic() - start, 1)
            actors = [a for a in state("actors", address) if is_worker(a)]
            tasks = [t for t in state("tasks", address, filters=[("state", "=", "RUNNING")]) if is_worker(t)]
            alive = [a["node_id"] for a in actors if a.get("state") == "ALIVE" and a.get("node_id")]
            running = [t["node_id"] for t in tasks if t.get("type") != "ACTOR_CREATION_TASK" and t.get("node_id")]
            samples.append({"t_s": now, "actors": {n[:8]: alive.count(n) for n in set(alive)},
                            "pending_actors": sum(1 for a in actors if a.get("state") == "PENDING_CREATION"),
                            "tasks_running": {n[:8]: running.count(n) for n in set(running)}})
            if (alive or running) and first_worker_s is None:
                first_worker_s = now
            if first_worker_s is not None and joined is None and now - first_worker_s >= join_delay:
                before = set(node_ids(address))
                try:
                    local_services.join_ray_node(head, node_cpus)
                except local_services.ServiceError as exc:  # Ray gives a node 30 s to register, fixed
                    join_failures.append(f"{round(time.monotonic() - start, 1)} s: {exc}")
                    if len(join_failures) >= JOIN_ATTEMPTS:
                        raise
                    continue
                late_node = next(iter(set(node_ids(address)) - before))
                joined = round(time.monotonic() - start, 1)
            time.sleep(SAMPLE_EVERY_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    wall = round(time.monotonic() - start, 1)
    tasks = [t for t in state("tasks", address, detail=True) if is_worker(t)]
    per_node = {}
    for label, node in (("head", head_node), ("late_node", late_node)):
        here = [t for t in tasks if t.get("node_id") == node]
        work = [t for t in here if t.get("type") != "ACTOR_CREATION_TASK" and t.get("state") == "FINISHED"]
        per_node[label] = {
            "node_id": node,
            "actor_first_seen_s": next((s["t_s"] for s in samples if s["actors"].get((node or "-")[:8])), None),
            "tasks_finished": len(work),
            "first_task_started_s": min((_seconds(t.get("start_time_ms"), start_epoch_ms) for t in work), default=None),
            "tasks_finished_after_join": sum(1 for t in work if joined is not None
                                             and _seconds(t.get("start_time_ms"), start_epoch_ms) >= joined),
            "most_tasks_running_at_once": _most_at_once(work),
        }
    cluster_wide = [t for t in tasks if t.get("type") != "ACTOR_CREATION_TASK" and t.get("state") == "FINISHED"]
    lines = log.read_text().splitlines()
    pool = [line.split("--", 1)[1].strip() for line in lines if "Actors: " in line and "running=" in line]
    return {"returncode": proc.returncode, "wall_s": wall, "first_worker_s": first_worker_s, "node_joined_s": joined,
            "join_failures": join_failures, "most_tasks_running_at_once": _most_at_once(cluster_wide),
            "per_node": per_node, "job_log": [line for line in lines if line.startswith(("[embed", "[preprocess"))],
            "ray_data_pool_log": pool, "samples": samples}


def _most_at_once(tasks: list[dict]) -> int:
    """The most of ``tasks`` (finished, with start and end times) that ran at the same moment."""
    timed = [t for t in tasks if t.get("start_time_ms") and t.get("end_time_ms")]
    events = sorted([(t["start_time_ms"], 1) for t in timed] + [(t["end_time_ms"], -1) for t in timed])
    most = running = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


def _seconds(epoch_ms, start_epoch_ms: float) -> float | None:
    return round((epoch_ms - start_epoch_ms) / 1000, 1) if epoch_ms else None


def embed_job(tmp: Path, args, head) -> dict:
    from embed_setup import make_corpus, make_model

    model = make_model(tmp / "model", args.preset)
    corpus = make_corpus(tmp / "corpus", args.tokens, args.files)
    argv = [sys.executable, "-m", "elmo_cli", "embed-corpus", str(tmp / "corpus"), "--output", str(tmp / "emb"),
            "--model", str(tmp / "model"), "--tokenizer", "whitespace", "--num-actors", "1..2",
            "--cpus-per-actor", "2", "--address", head.extra["gcs"]]

    def is_actor(w: dict) -> bool:  # the embedding actors (the job's only actors of that class), and their calls
        return w.get("class_name") == EMBED_ACTOR_CLASS or (w.get("name") or "").startswith(EMBED_ACTOR_CLASS + ".")

    result = run_job("embed", argv, head, is_actor, 2, args.join_delay, args.timeout, tmp / "embed.log")
    manifest = json.loads((tmp / "emb" / "_manifest.json").read_text()) if result["returncode"] == 0 else {}
    return {"command": " ".join(argv[1:]), "model": model, "corpus": corpus, "head_cpus": 3, "node_cpus": 2,
            "tokens": manifest.get("tokens"), "tokens_per_second": manifest.get("tokens_per_second"), **result}


def preprocess_job(tmp: Path, args, head) -> dict:
    from bench_preprocess import make_corpus

    (tmp / "text").mkdir()
    make_corpus(tmp / "text", args.preprocess_mb, args.preprocess_shards)
    argv = [sys.executable, "-m", "elmo_cli", "preprocess", str(tmp / "text"), "--output", str(tmp / "ds"),
            "--address", head.extra["gcs"]]

    def is_tokenizer_task(w: dict) -> bool:
        return "stage_block" in (w.get("name") or "") and w.get("type") == "NORMAL_TASK"

    result = run_job("preprocess", argv, head, is_tokenizer_task, 1, args.join_delay, args.timeout,
                     tmp / "preprocess.log")
    manifest = json.loads((tmp / "ds" / "manifest.json").read_text()) if result["returncode"] == 0 else {}
    return {"command": " ".join(argv[1:]), "mb": args.preprocess_mb, "shards": args.preprocess_shards,
            "head_cpus": 1, "node_cpus": 1, "tokens": manifest.get("tokens_out"), **result}


def main() -> None:
    args = parse_args()
    os.environ["RAY_AUTH_MODE"] = "disabled"
    report = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "settings": vars(args)}
    jobs = {"embed": (embed_job, 3), "preprocess": (preprocess_job, 1)}
    for name in args.jobs.split(","):
        run, head_cpus = jobs[name]
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            try:
                with local_services.ray_cluster(local_services.ray_temp_dir(tmp), nodes=1, cpus_per_node=head_cpus,
                                                env={"PYTHONPATH": str(REPO)}) as head:
                    report[name] = run(tmp, args, head)
            except (local_services.ServiceError, TimeoutError) as exc:  # recorded, and the next job runs
                report[name] = {"error": str(exc)}
                print(f"{name}: {exc}", file=sys.stderr)
                continue
        late = report[name]["per_node"]["late_node"]
        report[name]["late_node_got_work"] = late["tasks_finished"] > 0
        print(f"{name}: late node {late}", file=sys.stderr)
    write_report(args.out, report)


if __name__ == "__main__":
    main()
