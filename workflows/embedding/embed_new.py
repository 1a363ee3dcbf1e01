"""``elmo embed-new`` and its ``ray job submit`` twin ``python -m workflows.embedding.embed_new``: embed
the files of a source that are not embedded yet, exactly once each (for cron, a Kubernetes
CronJob / KubeRay RayCronJob, Airflow; or a loop with ``--every``).

    elmo embed-new SOURCE --output OUT --model models:/NAME@ALIAS [--every 1h] [--reembed]
        [embed-corpus's input, layer, dtype, format and Ray flags]

Each run takes OUT's lease (another scheduler holding it: exit 0 with a message), pins the alias
to one version, lists SOURCE, and embeds the files without a ledger entry: by default, files never
embedded by any model version (a new version leaves the old outputs alone); with ``--reembed``,
files not yet embedded by *this* version (the whole source again, beside the old outputs). A
changed file (new size or fingerprint) is a new file version: embedded again, its old output kept.
Each output (a folder of parts written by the embedding actors, `workflows.embedding.parts`; or
an HDF5 file) is published under ``OUT/<model version>/<input key>.<entry id>.<ext>`` and only
then committed to ``OUT/_ledger/`` (`workflows.embedding.ledger`), in groups of 1, 2, 4, ... up to
256 files a commit (`workflows.embedding.ledger.CommitGroups`): readers trust only the ledger
(`workflows.embedding.ledger.committed_outputs`). A file that cannot be read is reported (exit status 2)
and tried again on the next run; the others finish. Killed at any point, the next run completes
the work with one output per input (the tests kill it at ``faults.point``s: `workflows.faults`).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from preprocessing.entry_point import entry_point

from workflows import faults
from workflows.embedding.config import EmbedJobConfig

def parse_every(text: str) -> float:
    """``90s``, ``15m``, ``1h``, ``1d`` or plain seconds -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text or "")
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"--every: expected e.g. 90s, 15m, 1h, 1d; not {text!r}")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def add_arguments(p: argparse.ArgumentParser) -> None:
    from workflows.embedding.embed_corpus import add_job_arguments

    p.add_argument("source", metavar="SOURCE", help="a directory, prefix or glob (local or s3://) to watch")
    p.add_argument("--output", required=True, metavar="OUT", help="directory or s3:// prefix (ledger + outputs)")
    add_job_arguments(p)
    p.add_argument("--reembed", action="store_true",
                   help="embed every file again with the model's current version (beside the old outputs)")
    p.add_argument("--every", type=parse_every, metavar="INTERVAL",
                   help="run again every INTERVAL (90s, 15m, 1h, 1d) until stopped; default: run once")
    p.add_argument("--lease-ttl", type=float, default=120.0,
                   help="seconds a crashed scheduler keeps others out (default %(default)s)")


def version_dir(version_key: str) -> str:
    """``NAME/3`` -> ``NAME-v3``; ``sha256:...`` -> ``sha256-...``: a folder name per model version."""
    name, _, version = version_key.rpartition("/")
    if name and version.isdigit():
        return f"{re.sub(r'[^A-Za-z0-9._-]', '_', name)}-v{version}"
    return re.sub(r"[^A-Za-z0-9._-]", "-", version_key)


def run_once(source: str, output: str, model_spec: str, config: EmbedJobConfig, reembed: bool = False,
             address: str | None = None, lease_ttl: float = 120.0, log=None) -> dict:
    """One scheduler run; returns a summary (``status``: done / busy / nothing / failed)."""
    from preprocessing.ray_session import ensure_ray
    from preprocessing.sources import InputError
    from preprocessing.storage import Storage

    from workflows.embedding.embed_corpus import check_layers
    from workflows.embedding.job_run import EmbeddingRun
    from workflows.embedding.model_source import resolve_model
    from workflows.embedding.output import FORMATS
    from workflows.embedding.parts import publish_parts
    from workflows.embedding.pipeline import embed_files, list_inputs
    from workflows.embedding.ledger import CommitGroups, Lease, LeaseHeld, Ledger, entry_id, file_identity

    say = log or (lambda m: print(m, file=sys.stderr, flush=True))
    store = Storage(output)
    lease = Lease.acquire(store, lease_ttl)
    if isinstance(lease, LeaseHeld):
        say(f"[embed-new] {output} is being embedded by another scheduler ({lease.host} pid {lease.pid}, "
            f"lease expires in {max(lease.expires_in, 0):.0f}s): nothing to do here")
        return {"status": "busy"}
    try:
        store.clear_temp()  # files a killed run left being written
        model = resolve_model(model_spec)
        check_layers(config, model)
        config = config.for_model(model.tokenization, model.version, lambda m: say(f"[embed-new] warning: {m}"))
        settings = config.output_settings()
        try:
            files = list_inputs([source], config)
        except InputError as exc:
            if "no objects found" in str(exc) or "no such file" in str(exc) or "no Parquet files" in str(exc):
                say(f"[embed-new] {source}: no input files yet")
                return {"status": "nothing", "model_version": model.version, "embedded": []}
            raise
        ledger = Ledger(store)
        # A file is pending if this output is not committed; without --reembed, if no model version's
        # output of it is (an entry committed implies its file identity is): one index column each
        if reembed:
            committed = ledger.committed_ids(only="entry_ids").entry_ids
            keys = [entry_id(f.to_dict(), model.version_key, settings) for f in files]
        else:
            committed = ledger.committed_ids(only="file_identities").file_identities
            keys = [file_identity(f.to_dict()) for f in files]
        pending = [f for f, known in zip(files, committed.contains(keys)) if not known]
        say(f"[embed-new] {output}: model {model.version}; {len(files)} file(s) in {source}, "
            f"{len(pending)} to embed")
        if not pending:
            return {"status": "nothing", "model_version": model.version, "embedded": []}
        ensure_ray(address)
        run = EmbeddingRun("embed-new", model, [source], output, {**settings, "reembed": reembed}, say)
        started = time.monotonic()
        folder = version_dir(model.version_key)
        embedded, failed = [], []
        publisher = ThreadPoolExecutor(config.publish_threads, thread_name_prefix="elmo-publish")

        def output_of(result) -> tuple[str, str]:
            eid = entry_id(result.input.to_dict(), model.version_key, settings)
            return eid, f"{folder}/{result.input.key}.{eid[:12]}{FORMATS[config.format]}"

        def publish(result, existing: dict | None, staged_copies: list) -> dict:
            """Publish one complete file's output (its parts in order); its ledger entry."""
            ident = result.input.to_dict()
            eid, rel = output_of(result)
            faults.point("before_publish")
            parts = publish_parts(store, result, rel, None if existing is None else existing.get(rel, []),
                                  staged_copies)
            faults.point("after_publish")
            return {"entry_id": eid, "file_identity": file_identity(ident), "input": {**ident, "sha256": result.sha256},
                    **model.describe(), "model_version_key": model.version_key, "settings": settings,
                    **({"mlflow_run_id": run.run_id} if run.run_id else {}),
                    "output": rel, "parts": parts,
                    "lines": result.lines, "blank_lines": result.blank_lines,
                    "sentences": result.sentences, "tokens": result.tokens, "lease_epoch": lease.epoch,
                    "committed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

        def publish_group(results: list) -> list[dict]:
            """A due group's outputs, published ``publish_threads`` at a time once the lease is
            checked (S3 copies wait on the server, not on this process). What a killed run left
            in their folders: one listing of the range of names the group spans where that costs
            fewer requests than a listing per output; the staged parts: deleted together."""
            lease.check()
            rels = sorted(output_of(r)[1] for r in results)
            # outputs side by side in the version folder (keys without "/"; a filer-backed S3
            # such as SeaweedFS lists folder by folder, not in key order across deeper folders)
            flat = config.format == "parquet" and not any("/" in rel[len(folder) + 1:] for rel in rels)
            listed = store.list_range(folder, start_after=rels[0] + "/", end_before=rels[-1] + "0",  # "0" sorts after "/"
                                      limit=1000 * len(rels)) if flat else None
            existing = None
            if listed is not None:  # each output's files: the listed paths under "<rel>/"
                paths = sorted(f.path for f in listed)
                existing = {rel: paths[bisect.bisect_right(paths, rel + "/"):bisect.bisect_left(paths, rel + "0")]
                            for rel in rels}
            staged_copies: list[str] = []
            entries = list(publisher.map(lambda r: publish(r, existing, staged_copies), results))
            store.delete_many(staged_copies)
            return entries

        groups = CommitGroups(ledger, before_commit=lease.check, after_commit=lambda: faults.point("after_commit"),
                              prepare=publish_group)

        committed_entries: list[dict] = []

        def record(entries: list[dict]) -> None:
            committed_entries.extend(entries)
            embedded.extend(e["output"] for e in entries)

        def commit(result) -> None:
            """A complete file joins its group (`CommitGroups`: 1, 2, 4, ... files); when the group
            is due its outputs are published, then it is committed."""
            if result.status != "ok":
                failed.append({"uri": result.input.uri, "error": result.error})
                return
            record(groups.add(result))  # publish, lease check, commit, after_commit

        def arriving(uri: str) -> None:  # the driver first hears of a file
            faults.point("during")

        def counts() -> dict:
            return {"files": len(committed_entries), "failed_files": len(failed),
                    **{k: sum(e[k] for e in committed_entries) for k in ("lines", "sentences", "tokens")}}

        try:
            try:
                embed_files(pending, model, config, store, commit, say, on_input=arriving)
                record(groups.flush())
            except BaseException:
                with contextlib.suppress(Exception):  # the complete files are still worth publishing and committing
                    record(groups.flush())
                raise
            finally:
                publisher.shutdown()
            lease.check()
        except BaseException:
            run.finish(counts(), time.monotonic() - started, status="FAILED")
            raise
        store.clear_temp(remove_dir=True)  # still ours: no other scheduler's files in there
        run.finish(counts(), time.monotonic() - started, status="FAILED" if failed else "FINISHED")
        for f in failed:
            say(f"[embed-new] FAILED (will be tried again next run): {f['error']}")
        say(f"[embed-new] committed {len(embedded)} output(s) under {store.uri_of(folder)}"
            + (f"; {len(failed)} file(s) failed" if failed else ""))
        return {"status": "failed" if failed else "done", "model_version": model.version,
                "embedded": embedded, "failed": failed}
    finally:
        lease.release()


def run(args: argparse.Namespace) -> int:
    from preprocessing.sources import InputError

    from workflows.embedding.embed_corpus import job_config
    from workflows.embedding.pipeline import EmbedError
    from workflows.embedding.ledger import LeaseLost

    while True:
        try:
            summary = run_once(args.source, args.output, args.model, job_config(args), args.reembed,
                               args.address, args.lease_ttl)
            status = 2 if summary["status"] == "failed" else 0
        except (InputError, EmbedError, ValueError, LeaseLost) as exc:
            print(f"elmo embed-new: error: {exc}", file=sys.stderr)
            status = 2
        if not args.every:
            return status
        print(f"[embed-new] next run in {args.every:.0f}s", file=sys.stderr, flush=True)
        time.sleep(args.every)


main = entry_point("python -m workflows.embedding.embed_new", __doc__, add_arguments, run)


if __name__ == "__main__":
    sys.exit(main())
