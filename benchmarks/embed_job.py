"""`bench_embed.py`'s job phase: `elmo embed-corpus`'s job (`run_embed_corpus`) on a new local Ray,
timed, with a timeline of its stages (each actor's model load and blocks, each tokenize task, the
driver's writes) and the CPU (and, when asked, the memory) of every process of the job."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from processes import ProcessSampler


def _trace(path: str, **event) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(event) + "\n")


def instrument(trace_path: str) -> dict:
    """Wrap the pipeline's stages to time them, without changing what they do: `EmbedActor`
    (model load, each block), `tokenize_block` (each block) and the driver's Parquet writes. Ray
    ships the wrappers by value (this module is not on the workers' import path); the originals
    are imported by name in the workers."""
    from ray import cloudpickle

    import workflows.embedding.output as eo
    import workflows.embedding.pipeline as ep

    cloudpickle.register_pickle_by_value(sys.modules[__name__])

    base_actor, base_tokenize = ep.EmbedActor, ep.tokenize_block
    # the driver wrote the outputs before the actors wrote the parts (issue 26); now it writes none
    writer = getattr(eo, "ParquetOutput", None)

    class TracedEmbedActor(base_actor):
        def __init__(self, *args, **kwargs):
            t = time.time()
            super().__init__(*args, **kwargs)
            _trace(trace_path, stage="actor_init", pid=os.getpid(), start=t, end=time.time())

        def __call__(self, batch):
            t = time.time()
            out = super().__call__(batch)
            _trace(trace_path, stage="embed", pid=os.getpid(), start=t, end=time.time(), rows=batch.num_rows)
            return out

    TracedEmbedActor.__name__ = TracedEmbedActor.__qualname__ = "EmbedActor"  # Ray Data names its operator after it

    def traced_tokenize(batch, config, keep_text):
        t = time.time()
        out = base_tokenize(batch, config, keep_text)
        _trace(trace_path, stage="tokenize", pid=os.getpid(), start=t, end=time.time(), rows=out.num_rows)
        return out

    driver = {"write_s": 0.0, "writes": 0, "max_rows": 0, "max_mb": 0.0}

    def traced_add(self, rows):
        t = time.perf_counter()
        base_add(self, rows)
        driver["write_s"] += time.perf_counter() - t
        driver["writes"] += 1
        driver["max_rows"] = max(driver["max_rows"], rows.num_rows)
        driver["max_mb"] = max(driver["max_mb"], rows.nbytes / 2**20)

    ep.EmbedActor, ep.tokenize_block = TracedEmbedActor, traced_tokenize
    if writer is not None:
        base_add = writer.add
        writer.add = traced_add
    return driver


def summarize_trace(trace_path: str, call_start: float, call_end: float) -> dict:
    """Per actor: model load, first and last block, busy time embedding, utilization over the call."""
    events = [json.loads(line) for line in open(trace_path)] if os.path.exists(trace_path) else []
    actors: dict[int, dict] = {}
    for e in events:
        if e["stage"] in ("actor_init", "embed"):
            a = actors.setdefault(e["pid"], {"blocks": 0, "rows": 0, "busy_s": 0.0})
            if e["stage"] == "actor_init":
                a["init_start_s"], a["model_load_s"] = e["start"] - call_start, e["end"] - e["start"]
            else:
                a["blocks"] += 1
                a["rows"] += e["rows"]
                a["max_rows_per_call"] = max(a.get("max_rows_per_call", 0), e["rows"])
                a["busy_s"] += e["end"] - e["start"]
                a["first_block_start_s"] = min(a.get("first_block_start_s", 1e9), e["start"] - call_start)
                a["last_block_end_s"] = max(a.get("last_block_end_s", 0), e["end"] - call_start)
    wall = call_end - call_start
    for a in actors.values():
        a["utilization"] = a["busy_s"] / wall
        if "first_block_start_s" in a:
            a["utilization_first_to_last_block"] = a["busy_s"] / (a["last_block_end_s"] - a["first_block_start_s"])
        for k, v in list(a.items()):
            a[k] = round(v, 3) if isinstance(v, float) else v
    tok = [e for e in events if e["stage"] == "tokenize"]
    blocks = [e for e in events if e["stage"] == "embed"]
    phases = {}
    if blocks:  # the call = startup (until the first block reaches an actor) + embedding + the tail after the last
        first, last = min(e["start"] for e in blocks) - call_start, max(e["end"] for e in blocks) - call_start
        phases = {"startup_s": round(first, 3), "embedding_s": round(last - first, 3), "tail_s": round(wall - last, 3)}
    return {**phases, "actors": list(actors.values()),
            "tokenize": {"blocks": len(tok), "busy_s": round(sum(e["end"] - e["start"] for e in tok), 3),
                         "last_end_s": round(max((e["end"] for e in tok), default=call_start) - call_start, 3)}}


def bound_blocks(lines_per_block: int, block_mb: int) -> None:
    """A change to `embed_files` tried here from outside (--bounded-memory): the embedding stage's
    ``map_batches(EmbedActor, batch_size=None)`` gets ``batch_size=lines_per_block``, and Ray Data's
    ``target_max_block_size`` is lowered to ``block_mb`` MiB for the job. Without it, Ray Data joins
    the blocks of ``lines_per_block`` lines that `read_shards` yields into blocks of up to
    ``target_max_block_size`` (128 MiB) of text: in practice one block per input file, so an actor
    embeds a whole file in one call and its output (3 KB a token for ``small``: 3 layers x 256
    float32) travels as one block to the driver; memory grows with the size of the input files."""
    import workflows.embedding.pipeline as ep
    from ray.data import DataContext, Dataset

    DataContext.get_current().target_max_block_size = block_mb << 20
    original = Dataset.map_batches

    def map_batches(self, fn, *args, **kwargs):
        if fn is ep.EmbedActor:
            kwargs["batch_size"] = lines_per_block
        return original(self, fn, *args, **kwargs)

    Dataset.map_batches = map_batches


def phase_job(corpus: Path, model_dir: Path, actors: int, cpus_per_actor: float, num_cpus: float,
              lines_per_block: int, batch_tokens: int, memory: bool, bounded_block_mb: int | None = None) -> dict:
    os.environ["RAY_AUTH_MODE"] = "disabled"
    import ray

    from workflows.embedding.config import EmbedJobConfig
    from workflows.embedding.embed_corpus import run_embed_corpus

    with tempfile.TemporaryDirectory() as tmp:
        trace_path = os.path.join(tmp, "trace.jsonl")
        driver = instrument(trace_path)
        if bounded_block_mb:
            bound_blocks(lines_per_block, bounded_block_mb)
        config = EmbedJobConfig(tokenizer="whitespace", num_actors=actors, cpus_per_actor=cpus_per_actor,
                                lines_per_block=lines_per_block, batch_tokens=batch_tokens)
        log: list[str] = []
        with ProcessSampler(memory_kinds=(lambda kind: True) if memory else None) as procs:
            start = time.perf_counter()
            # a new local Ray ("local": never one that `ray start` left running on this machine),
            # with the dashboard, as a plain `ray.init()`
            ray.init(address="local", num_cpus=num_cpus, logging_level="WARNING")
            ray_start = time.perf_counter() - start
            call_start, start = time.time(), time.perf_counter()
            manifest = run_embed_corpus([str(corpus)], os.path.join(tmp, "out"), str(model_dir), config,
                                        log=lambda m: log.append(f"[{time.perf_counter() - start:6.1f}s] {m}"))
            wall = time.perf_counter() - start
            call_end = time.time()
            ray.shutdown()
        trace = summarize_trace(trace_path, call_start, call_end)
    tokens = manifest["tokens"]
    return {"actors": actors, "cpus_per_actor": cpus_per_actor,
            "torch_threads_per_actor": max(1, round(cpus_per_actor)),
            "ray_num_cpus": num_cpus, "ray_start_s": ray_start, "wall_s": wall, "manifest_s": manifest["seconds"],
            "tokens": tokens, "sentences": manifest["sentences"], "tokens_per_s": tokens / wall,
            "tokens_per_s_manifest": manifest["tokens_per_second"],
            "driver_write_s": round(driver["write_s"], 2), "driver_writes": driver["writes"],
            # the largest piece of a block the driver wrote at once (rows of one file in one block)
            "driver_max_write_rows": driver["max_rows"], "driver_max_write_mb": round(driver["max_mb"], 1),
            "bounded_block_mb": bounded_block_mb,
            **trace, **procs.summary(), "log": log}
