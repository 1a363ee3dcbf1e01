"""One `run_embed_corpus` call in this process, with what its driver process carried: run by
`bench_embed_driver.py` in a subprocess whose ``PYTHONPATH`` picks the code (this checkout or
another, e.g. the one before the actors wrote the parts). Prints one JSON line.

    python benchmarks/embed_driver_run.py INPUT_DIR OUT_DIR MODEL_DIR --actors N --cpus C

Counted: bytes of the blocks the driver iterates (`ray.data.Dataset.iter_batches`, wrapped: what
the pipeline hands the driver) and their columns; the driver's ``/proc/self/io`` (``rchar`` /
``wchar``: bytes through read/write system calls; ``read_bytes`` / ``write_bytes``: to and from
the block layer) over the call; its peak resident memory (``ru_maxrss``, whole process life);
the call's wall time. Ray is started before (not timed) with ``--cpus`` CPUs."""

from __future__ import annotations

import argparse
import json
import os
import resource
import time


def proc_io() -> dict:
    with open("/proc/self/io") as f:
        return {k: int(v) for k, v in (line.split(":") for line in f)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("inputs")
    p.add_argument("out")
    p.add_argument("model")
    p.add_argument("--actors", type=int, default=1)
    p.add_argument("--cpus", type=int, default=2)
    args = p.parse_args()

    import ray
    from ray.data import Dataset

    from workflows.embedding.config import EmbedJobConfig
    from workflows.embedding.embed_corpus import run_embed_corpus

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    iterated = {"bytes": 0, "blocks": 0, "columns": set()}
    base = Dataset.iter_batches

    def counting(self, *a, **k):
        for block in base(self, *a, **k):
            iterated["bytes"] += block.nbytes
            iterated["blocks"] += 1
            iterated["columns"].update(block.schema.names)
            yield block

    Dataset.iter_batches = counting
    config = EmbedJobConfig(tokenizer="whitespace", num_actors=args.actors, cpus_per_actor=1)
    before, start = proc_io(), time.perf_counter()
    manifest = run_embed_corpus([args.inputs], args.out, args.model, config, log=lambda m: None)
    wall, after = time.perf_counter() - start, proc_io()
    out_bytes = sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(args.out) for n in names)
    print(json.dumps({
        "wall_s": round(wall, 2), "files": len(manifest["files"]), "sentences": manifest["sentences"],
        "tokens": manifest["tokens"], "tokens_per_s": round(manifest["tokens"] / wall, 1),
        "files_per_s": round(len(manifest["files"]) / wall, 2), "output_bytes": out_bytes,
        "driver_io": {k: after[k] - before[k] for k in ("rchar", "wchar", "read_bytes", "write_bytes")},
        "driver_iterated": {"bytes": iterated["bytes"], "blocks": iterated["blocks"],
                            "columns": sorted(iterated["columns"])},
        "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
    ray.shutdown()


if __name__ == "__main__":
    main()
