"""A backlog of one-line files through `elmo embed-new` on the local S3 server: one tick that embeds
``--files`` new files (goal, issue 26 section 3: 3,000 files at >= 20 files/s on this machine), then
a tick with nothing new.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_feed.py --files 3000 --out benchmarks/results/feed_s3.json

The S3 server is the tests' (SeaweedFS ``weed mini`` on 127.0.0.1, started here and stopped by
PID). ``--files`` one-line text files (generated sentences, `tests.helpers.random_inputs`) are
written under ``s3://bench/incoming/``; a ``tiny`` biLM with random weights is saved in a local
model directory (``--model DIR``: no MLflow). Each tick is the command itself,
``python -m workflows.embedding.embed_new s3://bench/incoming/ --output s3://bench/out --model DIR
--tokenizer whitespace``, a subprocess with ``RAY_ADDRESS`` unset: it starts its own local Ray.

Reported: the tick's wall time (process start to exit) and files/s; its phases, from the time each
of its stderr lines arrived (start -> "N to embed": imports, lease, model, listing, ledger;
-> first file done: Ray and the actor starting, the first blocks; first -> last file done: the
stream; -> "committed": the last group; -> exit: Ray's shutdown); the ledger's objects afterwards
(log entries, checkpoints); and the S3 requests of the nothing-new tick, counted by
`bench_ledger.CountingProxy` (those of the first tick too with ``--count-first``: the proxy is a
Python process on the same two cores, so the timed tick goes direct by default).
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
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from report import cpu_model, write_report

REPO = Path(__file__).resolve().parents[1]
BUCKET = "bench"
SOURCE, OUT = f"s3://{BUCKET}/incoming/", f"s3://{BUCKET}/out"
MARKERS = {"to_embed": " to embed", "committed": "[embed-new] committed"}


def write_inputs(client, files: int, seed: int) -> dict:
    """``files`` one-line files ``incoming/doc-NNNNN.txt``, each a generated sentence."""
    from tests.helpers.random_inputs import random_sentences

    lines = [" ".join(s) + "\n" for s in random_sentences(files, seed=seed, min_len=3, max_len=12)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: client.put_object(Bucket=BUCKET, Key=f"incoming/doc-{i:05d}.txt",
                                                  Body=lines[i].encode()), range(files)))
    return {"files": files, "tokens": sum(line.count(" ") + 1 for line in lines),
            "bytes": sum(len(line.encode()) for line in lines)}


def run_tick(model_dir: Path, env: dict, log_path: Path, extra: list[str], timeout: float) -> dict:
    """One `embed-new` tick as a subprocess (in a session of its own: stopped with its local Ray
    after ``timeout`` s); its wall time, exit status and stderr line times."""
    cmd = [sys.executable, "-m", "workflows.embedding.embed_new", SOURCE, "--output", OUT,
           "--model", str(model_dir), "--tokenizer", "whitespace", *extra]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    watchdog = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
    watchdog.daemon = True  # an interrupted benchmark does not wait for it
    watchdog.start()
    stamps: dict[str, float] = {}
    file_times: list[float] = []
    with open(log_path, "w", buffering=1) as log:  # line by line: readable while it runs
        for line in proc.stderr:
            t = time.perf_counter() - started
            log.write(f"{t:9.3f} {line}")
            stamps.setdefault("first_line", t)
            for name, marker in MARKERS.items():
                if marker in line:
                    stamps.setdefault(name, t)
            if line.startswith("[embed ") and "s] " in line and " sentences, " in line:
                file_times.append(t)  # a file done (`_RecordCollector._finish`)
    rc = proc.wait()
    wall = time.perf_counter() - started
    watchdog.cancel()
    with contextlib.suppress(ProcessLookupError):  # anything of its session still there (Ray's)
        os.killpg(proc.pid, signal.SIGKILL)
    return {"cmd": " ".join(cmd), "returncode": rc, "wall_s": round(wall, 2), "stamps": stamps,
            "file_times": file_times}


def phases(tick: dict) -> dict:
    """The tick's wall time cut where its stderr says a phase ended."""
    s, ft = tick["stamps"], tick["file_times"]
    if not ft or "to_embed" not in s:
        return {}
    points = [("startup_lease_model_listing_ledger", s["to_embed"]), ("ray_start_to_first_file_done", ft[0]),
              ("first_to_last_file_done", ft[-1]), ("last_file_to_committed", s.get("committed", ft[-1])),
              ("committed_to_exit", tick["wall_s"])]
    out, before = {}, 0.0
    for name, t in points:
        out[name] = round(t - before, 2)
        before = t
    n = len(ft)
    out["stream_files_per_s"] = round((n - 1) / (ft[-1] - ft[0]), 2) if n > 1 and ft[-1] > ft[0] else None
    # files done by each tenth of the stream: does it slow as the ledger grows?
    tenth = max(1, n // 10)
    out["files_per_s_by_tenth"] = [round(tenth / (ft[min(i + tenth, n - 1)] - ft[i]), 2)
                                   for i in range(0, n - tenth, tenth) if ft[min(i + tenth, n - 1)] > ft[i]]
    return out


def ledger_objects(client) -> dict:
    counts = {"log_entries": 0, "checkpoints": 0, "other": 0, "bytes": 0}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="out/_ledger/"):
        for obj in page.get("Contents", []):
            name = obj["Key"][len("out/_ledger/"):]
            kind = ("checkpoints" if name.startswith("_checkpoints/")
                    else "log_entries" if name.endswith(".json") and name[:-5].isdigit() else "other")
            counts[kind] += 1
            counts["bytes"] += obj["Size"]
    return counts


def committed_count(env: dict) -> int:
    """The files the ledger names (as a reader sees them)."""
    code = ("import sys; from workflows.embedding.ledger import committed_outputs; "
            f"print(len(committed_outputs({OUT!r})))")
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    return int(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else -1


def run(files: int, seed: int, count_first: bool, extra: list[str], keep_logs: Path | None,
        timeout: float) -> dict:
    sys.path.insert(0, str(REPO))
    from bench_ledger import CountingProxy
    from embed_setup import make_model
    from infra.local.local_services import ray_temp_dir, s3_server

    report = {"machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "load_average_at_start": os.getloadavg()},
              "settings": {"files": files, "seed": seed, "model": "tiny preset, random weights (embed_setup.make_model)",
                           "extra_flags": extra, "count_first_tick": count_first}}
    with tempfile.TemporaryDirectory(prefix="bench-feed-") as tmp, s3_server(Path(tmp) / "s3") as (service, s3env, client):
        tmp = Path(tmp)
        report["server"] = {"kind": "SeaweedFS (weed mini) on 127.0.0.1", "pid": service.pid}
        client.create_bucket(Bucket=BUCKET)
        started = time.perf_counter()
        report["inputs"] = write_inputs(client, files, seed)
        report["inputs"]["write_s"] = round(time.perf_counter() - started, 1)
        report["model"] = make_model(tmp / "model", "tiny", seed)
        proxy = CountingProxy(s3env["AWS_ENDPOINT_URL"])
        base = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        base.update(s3env, PYTHONPATH=str(REPO), RAY_TMPDIR=str(ray_temp_dir(tmp)), RAY_AUTH_MODE="disabled",
                    RAY_DATA_DISABLE_PROGRESS_BARS="1")
        logs = keep_logs or tmp
        try:
            for name, counted in (("backlog_tick", count_first), ("nothing_new_tick", True)):
                env = {**base, "AWS_ENDPOINT_URL": proxy.address} if counted else base
                proxy.take()
                tick = run_tick(tmp / "model", env, logs / f"{name}.log", extra, timeout)
                tick["s3_requests"] = proxy.take() if counted else None
                tick["phases"] = phases(tick)
                tick["files_done"] = len(tick["file_times"])
                tick["files_per_s"] = round(files / tick["wall_s"], 2) if name == "backlog_tick" else None
                tick["file_times"] = [round(t, 2) for t in tick["file_times"]]
                if tick["returncode"] != 0:
                    tick["stderr_tail"] = (logs / f"{name}.log").read_text()[-4000:]
                report[name] = tick
                report[name + "_ledger_objects"] = ledger_objects(client)
                print(json.dumps({name: {k: tick[k] for k in ("returncode", "wall_s", "files_done", "files_per_s",
                                                              "phases", "s3_requests")}}), flush=True)
            report["committed_files"] = committed_count(base)
        finally:  # the tick's Ray sessions and logs
            shutil.rmtree(base["RAY_TMPDIR"], ignore_errors=True)
        proxy.server.shutdown()
    report["machine"]["load_average_at_end"] = os.getloadavg()  # other jobs share the cores
    report["goal"] = {"files_per_s": 20, "met": (report["backlog_tick"]["files_per_s"] or 0) >= 20}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=3000, help="one-line files in the backlog")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count-first", action="store_true",
                        help="count the backlog tick's S3 requests too (through the proxy: slower)")
    parser.add_argument("--keep-logs", type=Path, help="folder for the ticks' stderr (stamped); default: discarded")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds a tick may take")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/feed_s3.json")
    args, extra = parser.parse_known_args()  # anything else: embed-new's flags (e.g. --num-actors 1)
    if args.keep_logs:
        args.keep_logs.mkdir(parents=True, exist_ok=True)
    report = run(args.files, args.seed, args.count_first, extra, args.keep_logs, args.timeout)
    write_report(args.out, report, shown=["inputs", "goal", "committed_files", "backlog_tick_ledger_objects",
                                          "nothing_new_tick_ledger_objects"])


if __name__ == "__main__":
    main()
