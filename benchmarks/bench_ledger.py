"""What `elmo embed-new`'s ledger and lease cost a tick as the ledger grows: time and S3 requests
on the tests' S3 server (SeaweedFS on 127.0.0.1, started and stopped here), after 100, 10,000
and 100,000 committed files; with ``--compare-main``, `/work/main`'s ledger on the same ledgers
(ticks with nothing new); and `/work/main`'s ledger on a log written one object per file, as
the code before checkpoints wrote it, after ``--today-sizes`` files (100, 1,000 and 3,000; when
/work/main was that code, "today's ledger"; ``--today-sizes ''`` skips it).

    .venv/bin/python benchmarks/bench_ledger.py --out benchmarks/results/ledger_s3.json

"A tick" is what `workflows.embedding.embed_new.run_once` does with the ledger and the lease
around the embedding, measured directly (no Ray, no model, no source listing): take the lease,
read what is committed (`Ledger.committed_ids`; today's: `Ledger.entries`), and for a tick with
one new file, the lease check and the commit of its entry (`CommitGroups`, one file), then
release the lease. Entries are synthetic, shaped and sized as `run_once` writes them, and are
written through the ledger's own group commits (256 files a log entry, so 100,000 files are 391
log objects), one ledger per size; today's are written as today's code wrote them (one object a
file). The ticks on this branch's ledgers are taken in turns (a tick on each size, then the next
round), so a load that changes during the run slows every size alike.

Apart from the ticks: what a real tick adds for a source of n files that are all committed
(`lookup_all_listed`): each listed file's `entry_id` and `file_identity`, and the two
`IdSet.contains` questions `run_once` asks for all of them (without the source listing itself).

Requests are counted by a small HTTP proxy on 127.0.0.1 in front of the server (every request of
boto3 and of pyarrow's S3 client, by method); times are taken on the direct connection, in a
separate pass, with clients made before the clock starts (both passes do the same work).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import http.server
import importlib.util
import inspect
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

from report import cpu_model, save_json, write_report

REPO = Path(__file__).resolve().parents[1]
TODAY = Path("/work/main")  # today's code (ledger and storage), for the comparison
BUCKET = "bench"


class CountingProxy:
    """An HTTP proxy on 127.0.0.1 that forwards every request unchanged (the Host header too, so
    the signatures hold) to ``target`` and counts them by method."""

    def __init__(self, target: str) -> None:
        upstream = urllib.parse.urlparse(target)
        self.counts: dict[str, int] = {}
        lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _forward(self) -> None:
                with lock:
                    proxy.counts[self.command] = proxy.counts.get(self.command, 0) + 1
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = b""
                    while (size := int(self.rfile.readline().split(b";")[0], 16)):
                        body += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
                    headers["Content-Length"] = str(len(body))
                else:
                    body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                    headers = dict(self.headers.items())
                conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=120)
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                self.send_response_only(response.status, response.reason)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(key, value)
                length = response.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", length or "0")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def take(self) -> dict[str, int]:
        """The counts since the last call (and their total), then start again."""
        counts, self.counts = self.counts, {}
        return {**dict(sorted(counts.items())), "total": sum(counts.values())}


SETTINGS = {"input_format": "sentence", "tokenizer": "moses", "max_sentence_tokens": 256,
            "layers": "all", "dtype": "float32", "format": "parquet"}


def synthetic_input(i: int) -> dict:
    """Input file ``i`` of the synthetic feed, as `InputFile.to_dict` describes it."""
    return {"uri": f"s3://feed/incoming/2026/12/02/doc-{i:09d}.txt", "key": f"2026/12/02/doc-{i:09d}.txt",
            "size": 1000 + i % 5000, "fingerprint": "etag:" + hashlib.md5(str(i).encode()).hexdigest()}


def synthetic_entry(i: int) -> dict:
    """A file's ledger entry as `run_once` writes it: the same fields, ids and hashes as random as
    real ones (they decide how well a checkpoint compresses)."""
    from workflows.embedding.ledger import entry_id, file_identity

    ident, settings = synthetic_input(i), SETTINGS
    eid = entry_id(ident, "elmo-news/3", settings)
    return {"entry_id": eid, "file_identity": file_identity(ident),
            "input": {**ident, "sha256": hashlib.sha256(str(i).encode()).hexdigest()}, "model_name": "elmo-news",
            "model_version": "elmo-news/3", "model_digest": "sha256:" + "ab" * 32, "model_uri": "models:/elmo-news/3",
            "model_version_key": "elmo-news/3", "settings": settings,
            "output": f"elmo-news-v3/{ident['key']}.{eid[:12]}.parquet", "lines": 12, "blank_lines": 0,
            "sentences": 12, "tokens": 240, "lease_epoch": 1, "committed": "2026-12-02T12:00:00Z"}


def load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def load_today_ledger():
    """Today's ledger module, on today's `Storage` (not this branch's)."""
    import preprocessing.storage

    storage = load_module("storage_today", TODAY / "preprocessing/storage.py")
    sys.modules["preprocessing.storage"] = storage
    try:
        return load_module("ledger_today", TODAY / "workflows/embedding/ledger.py")
    finally:
        sys.modules["preprocessing.storage"] = preprocessing.storage


def storage_at(prefix: str, endpoint: str, module=None):
    """A `Storage` (of ``module``'s, default this branch's) whose boto3 and pyarrow clients talk to
    ``endpoint`` (made now, off the clock)."""
    from preprocessing.storage import Storage

    os.environ["AWS_ENDPOINT_URL"] = endpoint
    store = getattr(module, "Storage", Storage)(f"s3://{BUCKET}/{prefix}")
    store.fs, store._s3  # noqa: B018 - the clients are made on first use
    return store


def tick(module, store, new_entry: dict | None) -> None:
    """The ledger and lease part of one `run_once` (module: this branch's ledger or today's)."""
    lease = module.Lease.acquire(store, 120.0)
    assert isinstance(lease, module.Lease), lease
    try:
        ledger = module.Ledger(store)
        if "only" in inspect.signature(getattr(ledger, "committed_ids", lambda: 0)).parameters:
            done, key = ledger.committed_ids(only="file_identities").file_identities, "file_identity"  # as run_once
        elif hasattr(ledger, "committed_ids"):
            done, key = ledger.committed_ids().entry_ids, "entry_id"
        else:
            done, key = {e["entry_id"] for e in ledger.entries()}, "entry_id"
        if new_entry is not None:
            assert new_entry[key] not in done
            if hasattr(module, "CommitGroups"):
                assert module.CommitGroups(ledger, before_commit=lease.check).add(new_entry)
            else:
                lease.check()
                ledger.commit(new_entry)
    finally:
        lease.release()


class Bench:
    def __init__(self, proxy: CountingProxy, direct: str) -> None:
        self.proxy, self.direct, self.next_id = proxy, direct, 10**9

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def measure(self, module, prefix: str, kind: str, repeats: int, counted_first: bool = False) -> dict:
        """``repeats`` ticks timed on the direct connection, and ``repeats`` counted through the proxy
        (after them, or before them)."""
        return self.measure_in_turns({prefix: (module, prefix)}, kind, repeats, counted_first)[prefix]

    def measure_in_turns(self, targets: dict[str, tuple], kind: str, repeats: int,
                         counted_first: bool = False) -> dict[str, dict]:
        """For each of ``targets`` (name: (ledger module, prefix of its ledger)): ``repeats`` ticks
        timed on the direct connection, and ``repeats`` counted through the proxy (after them, or
        before them); the targets take turns, one tick each a round."""
        timed = {t: storage_at(prefix, self.direct, module) for t, (module, prefix) in targets.items()}
        counted = {t: storage_at(prefix, self.proxy.address, module) for t, (module, prefix) in targets.items()}
        seconds: dict[str, list[float]] = {t: [] for t in targets}
        requests: dict[str, list[dict]] = {t: [] for t in targets}

        def time_them() -> None:
            for _ in range(repeats):
                for t, (module, _) in targets.items():
                    started = time.perf_counter()
                    tick(module, timed[t], synthetic_entry(self.new_id()) if kind == "one_new" else None)
                    seconds[t].append(time.perf_counter() - started)

        def count_them() -> None:
            self.proxy.take()
            for _ in range(repeats):
                for t, (module, _) in targets.items():
                    tick(module, counted[t], synthetic_entry(self.new_id()) if kind == "one_new" else None)
                    requests[t].append(self.proxy.take())

        for step in (count_them, time_them) if counted_first else (time_them, count_them):
            step()
        return {t: summary(seconds[t], requests[t]) for t in targets}


def summary(seconds: list[float], requests: list[dict]) -> dict:
    totals = [r["total"] for r in requests]
    return {"ticks": len(seconds), "seconds_median": round(statistics.median(seconds), 4),
            "seconds_max": round(max(seconds), 4), "seconds_mean": round(statistics.fmean(seconds), 4),
            "seconds": [round(s, 4) for s in seconds], "requests_median": statistics.median(totals),
            "requests_max": max(totals), "requests_mean": round(statistics.fmean(totals), 2),
            "requests_by_method_first": requests[0], "requests": totals}


def lookup_all_listed(module, store, size: int, repeats: int) -> dict:
    """What a real tick adds for a source of ``size`` files, all committed: each file's two ids and
    the two `contains` questions `run_once` asks for all of them (seconds, medians)."""
    inputs = [synthetic_input(i) for i in range(size)]
    committed = module.Ledger(store).committed_ids()
    ids_s, contains_s = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        entry_ids = [module.entry_id(ident, "elmo-news/3", SETTINGS) for ident in inputs]
        file_ids = [module.file_identity(ident) for ident in inputs]
        ids_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        done, earlier = committed.entry_ids.contains(entry_ids), committed.file_identities.contains(file_ids)
        contains_s.append(time.perf_counter() - started)
        assert done.all() and earlier.all()
    return {"files": size, "repeats": repeats, "ids_seconds_median": round(statistics.median(ids_s), 4),
            "contains_seconds_median": round(statistics.median(contains_s), 4)}


def object_count(client, prefix: str) -> dict:
    counts: dict[str, int] = {}
    total_bytes = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith("/"):
                continue
            part = obj["Key"][len(prefix):].split("/")
            kind = "checkpoints" if "_checkpoints" in part else part[0]
            counts[kind] = counts.get(kind, 0) + 1
            if "_checkpoints" in part:
                total_bytes = max(total_bytes, obj["Size"])
    return {**counts, "largest_checkpoint_bytes": total_bytes}


def run(sizes_new: list[int], sizes_today: list[int], repeats: int, today_repeats: int, group: int,
        lookup_repeats: int, compare_main: bool, out: Path | None) -> dict:
    from infra.local.local_services import s3_server
    from workflows.embedding import ledger as ledger_new

    report = {"machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "load_average_at_start": os.getloadavg()},
              "settings": {"checkpoint_every": ledger_new.LedgerSettings().checkpoint_every, "fill_group": group,
                           "repeats": repeats, "today_repeats": today_repeats, "lookup_repeats": lookup_repeats},
              "new": {}, "main_on_same_ledgers": {}, "today": {}}
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp, s3_server(tmp) as (service, env, client):
        report["server"] = {"kind": "SeaweedFS (weed mini) on 127.0.0.1", "pid": service.pid}
        os.environ.update(env)
        client.create_bucket(Bucket=BUCKET)
        proxy = CountingProxy(env["AWS_ENDPOINT_URL"])
        bench = Bench(proxy, env["AWS_ENDPOINT_URL"])

        # this branch: one ledger per size, filled first, then ticked in turns
        prefixes = {size: f"new-{size}" for size in sizes_new}
        for size, prefix in prefixes.items():
            filler = ledger_new.Ledger(storage_at(prefix, env["AWS_ENDPOINT_URL"]))
            started = time.perf_counter()
            for first in range(0, size, group):
                filler.commit_group([synthetic_entry(i) for i in range(first, min(size, first + group))])
            report["new"][str(size)] = {"entries_before": size,
                                        "fill_seconds": round(time.perf_counter() - started, 1),
                                        "objects_before": object_count(client, f"{prefix}/")}
        # `main`'s ledger (`/work/main`) on the same ledgers, nothing new only (it reads the text index;
        # a commit of its would write a checkpoint without the binary one)
        main = load_today_ledger() if compare_main else None
        for kind in ("nothing_new", "one_new"):
            targets = {str(size): (ledger_new, prefix) for size, prefix in prefixes.items()}
            if main and kind == "nothing_new":
                targets |= {f"main {size}": (main, prefix) for size, prefix in prefixes.items()}
            measured = bench.measure_in_turns(targets, kind, repeats)
            for name, row in measured.items():
                if name.startswith("main "):
                    report["main_on_same_ledgers"].setdefault(name.split()[1], {})[kind] = row
                else:
                    report["new"][name][kind] = row
            if out:
                save_json(out, report)  # so far (a run stopped later keeps this)
            print(json.dumps({kind: {name: {m: row[m] for m in ("seconds_median", "requests_median", "requests_max")}
                                     for name, row in measured.items()}}), flush=True)
        for size, prefix in prefixes.items():
            report["new"][str(size)]["lookup_all_listed"] = lookup_all_listed(
                ledger_new, storage_at(prefix, env["AWS_ENDPOINT_URL"]), size, lookup_repeats)

        # today's ledger: one object per file, written as today's commit writes it
        today = load_today_ledger()
        written = 0
        for size in sizes_today:
            while written < size:
                written += 1
                body = json.dumps({**synthetic_entry(written), "seq": written}, sort_keys=True).encode()
                client.put_object(Bucket=BUCKET, Key=f"today/_ledger/{written:020d}.json", Body=body)
            row = {"entries_before": size, "objects_before": object_count(client, "today/"),
                   "nothing_new": bench.measure(today, "today", "nothing", today_repeats),
                   "one_new": bench.measure(today, "today", "one_new", today_repeats)}
            written += 2 * today_repeats
            report["today"][str(size)] = row
            if out:
                save_json(out, report)
            print(json.dumps({f"today {size}": {k: {m: row[k][m] for m in ("seconds_median", "requests_median")}
                                                for k in ("nothing_new", "one_new")}}), flush=True)
        # this branch's first ticks on a log today's code wrote: the first reads it all and writes the
        # first checkpoint (counted; the timed one comes second, on the checkpointed log)
        report["new_on_today_log"] = {} if not sizes_today else {"entries_before": written,
                                      "first_ticks_one_new": bench.measure(ledger_new, "today", "one_new", 1, True),
                                      "then_nothing_new": bench.measure(ledger_new, "today", "nothing", 1)}
        proxy.server.shutdown()
    report["machine"]["load_average_at_end"] = os.getloadavg()  # other jobs share the cores: times are noisy
    first, last = report["new"][str(sizes_new[0])], report["new"][str(sizes_new[-1])]
    report["ratios_largest_to_smallest"] = {
        kind: {"seconds_median": round(last[kind]["seconds_median"] / first[kind]["seconds_median"], 2),
               "requests_median": round(last[kind]["requests_median"] / first[kind]["requests_median"], 2),
               "requests_max": round(last[kind]["requests_max"] / first[kind]["requests_max"], 2)}
        for kind in ("nothing_new", "one_new")}
    return report


def main() -> None:
    global TODAY
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,10000,100000", help="committed files before the ticks (this branch)")
    parser.add_argument("--today-sizes", default="100,1000,3000", help="the same for today's ledger")
    parser.add_argument("--repeats", type=int, default=10, help="ticks of each kind (10 = one checkpoint interval)")
    parser.add_argument("--today-repeats", type=int, default=3)
    parser.add_argument("--group", type=int, default=256, help="files per log entry when filling")
    parser.add_argument("--lookup-repeats", type=int, default=3,
                        help="times a real tick's lookup of all files is taken")
    parser.add_argument("--compare-main", action="store_true",
                        help="also tick /work/main's ledger (nothing new) on this branch's ledgers, in the same turns")
    parser.add_argument("--main", type=Path, default=TODAY,
                        help="the checkout --compare-main (and the today's-ledger rows) load (default /work/main)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    TODAY = args.main
    sys.path.insert(0, str(REPO))
    report = run([int(s) for s in args.sizes.split(",")], [int(s) for s in args.today_sizes.split(",") if s],
                 args.repeats, args.today_repeats, args.group, args.lookup_repeats, args.compare_main, args.out)
    write_report(args.out, report, shown=["new", "main_on_same_ledgers", "today", "new_on_today_log",
                                          "ratios_largest_to_smallest"])


if __name__ == "__main__":
    main()
