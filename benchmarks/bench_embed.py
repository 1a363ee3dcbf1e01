"""Embedding speed and memory: `elmo embed-corpus` on a local Ray vs elmo_core's embedder in one process.

    .venv/bin/python benchmarks/bench_embed.py --out benchmarks/results/embed_cpu.json

Input: CPython's pydoc prose (`preprocessing.sample_text.pydoc_sentences`, one sentence a line,
shuffled copies), written at run time as ``--files`` plain-text files of ``--tokens`` whitespace
tokens in total (nothing is committed); the memory phases use a corpus of ``--memory-tokens``
and one ``--memory-factor`` times larger (the same number of files, each that much longer).
Model: a native model directory (`elmo_core.weights.save_checkpoint`) of the ``--preset``
configuration (default ``small``, the released ELMo small sizes) with random weights of a
realistic scale (std 1/sqrt(fan in), as ``tests/helpers/random_inputs.py: seeded``): speed does not depend on
the values. Every phase runs in its own process, on the same files and model:

* ``baseline_Nt``: one process, no Ray, N torch threads: loads the model, then for each file reads
  it in blocks of ``lines_per_block`` lines, splits them on whitespace, embeds each block with
  ``Embedder(model, batch_size=1 << 20, layers="all", batch_tokens=...)`` (what each `EmbedActor`
  does with a block) and writes the rows to a zstd Parquet file of the job's layout
  (``sentence_id``, ``source``, ``line``, ``sentence_index``, ``tokens``, ``layer_0..2``).
  ``seconds`` covers model load + read + tokenize + embed + write; ``embed_seconds`` only the
  ``embed_all`` calls (the embedder alone);
* ``job_Aa_Tt``: `workflows.embedding.embed_corpus.run_embed_corpus` (what `elmo embed-corpus --tokenizer
  whitespace` runs) with A actors x T CPUs (T torch threads each) on a local Ray started just
  before with ``num_cpus`` logical CPUs. ``wall_s`` is this script's clock around the call (Ray's
  start left out: it is ``ray_start_s``); ``manifest_s`` the job's own ``seconds`` (from just
  before the Ray Data pipeline is built: it leaves out listing the inputs and loading the model
  on the driver). Timelines: each actor's model load and the blocks it embedded (start, end,
  rows), and each tokenize task, recorded by thin subclasses/wrappers of the pipeline's own
  `EmbedActor` / `tokenize_block` (one JSON line appended to a file per block); the driver's time
  writing output rows (`ParquetOutput.add`, wrapped); CPU seconds of every process of the job
  (driver, Ray daemons, Ray workers by task kind), read from /proc every second. The call splits
  into ``startup_s`` (until the first block reaches an actor), ``embedding_s`` and ``tail_s``;
* ``memory_1x`` / ``memory_Kx``: the job (``--memory-actors`` actors) on the two memory corpora,
  with peak memory sampled: PSS summed over this process and every process it started (driver,
  GCS, raylet, dashboard and its modules, agents, Ray workers and actors: shared pages such as
  the object store count once), every second, with its private and shared (object store) parts
  and a timeline. Reading PSS costs CPU (``memory_sampler_cpu_s``), so the timed phases run
  without it. ``memory_1x_bounded`` / ``memory_Kx_bounded`` (``--bounded-memory``) run the same
  with a change to the pipeline tried from outside (`bound_blocks`).

Reported: tokens/s of each phase, per ``--rounds`` round (the phases of a round run back to back,
interleaved with the other rounds: this VM's speed drifts by up to ~20% over minutes) and their
medians; ``overhead_1actor`` = job_1a_1t wall / baseline_1t seconds - 1, per round, median
(target < 0.20; beside it the same against the job's manifest seconds, against the embedder
alone, and after the startup); ``two_actors_over_one`` = job_2a_1t tokens/s / job_1a_1t tokens/s
(and over job_1a_2t: the same 2 CPUs as one actor with 2 threads); ``memory_10x_over_1x``
(target <= 1.2). CPU seconds used on the machine by processes outside the benchmark during each
phase are recorded (``foreign_cpu_s``; about 2-5 s a job phase is the benchmark's own processes
that lived less than the 1-second sampling interval): the machine may be shared. On this 2-vCPU
machine the default run takes about 20 minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from ray_processes import command_line, pids, process_kind

REPO = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")


# --- inputs -----------------------------------------------------------------------------------
def make_model(directory: Path, preset: str, seed: int = 0) -> dict:
    import torch

    from elmo_core.bilm import BiLM
    from elmo_core.config import BiLMConfig
    from elmo_core.weights import save_checkpoint

    model = BiLM(BiLMConfig.preset(preset))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # as tests/helpers/random_inputs.py: seeded (std 1/sqrt(fan in), biases too)
        for p in model.parameters():
            fan_in = p.shape[-2] if p.dim() >= 2 else 4
            p.copy_(torch.randn(p.shape, generator=gen) / fan_in ** 0.5)
    save_checkpoint(model, directory)
    return {"preset": preset, "parameters": sum(p.numel() for p in model.parameters()),
            "output_dim": 2 * model.config.lstm.projection_dim, "layers": model.config.n_output_layers}


def make_corpus(directory: Path, tokens: int, files: int, seed: int = 0) -> dict:
    """Shuffled copies of the pydoc sentences, one a line, cut into ``files`` files of equal line counts."""
    from preprocessing.sample_text import pydoc_sentences

    sentences = [" ".join(s) for s in pydoc_sentences()]
    rng = random.Random(seed)
    lines: list[str] = []
    count = 0
    while count < tokens:
        order = sentences[:]
        rng.shuffle(order)
        for s in order:
            lines.append(s)
            count += s.count(" ") + 1
            if count >= tokens:
                break
    directory.mkdir(parents=True)
    per_file = -(-len(lines) // files)
    for i in range(files):
        (directory / f"part-{i:03d}.txt").write_text("".join(s + "\n" for s in lines[i * per_file:(i + 1) * per_file]))
    return {"files": files, "lines": len(lines), "tokens": count,
            "mb": sum(p.stat().st_size for p in directory.iterdir()) / 1e6}


# --- /proc samplers -----------------------------------------------------------------------------
def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


PSS_FIELDS = ("Pss", "Pss_Anon", "Pss_Shmem")


def _pss(pid: int) -> dict[str, int]:
    """Proportional set size in bytes (pages shared by n processes count 1/n in each), and its
    private-memory (anonymous) and shared-memory (Ray's object store) parts."""
    out = dict.fromkeys(PSS_FIELDS, 0)
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                name = line.split(":", 1)[0]
                if name in out:
                    out[name] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return out


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine has been busy (all cores, /proc/stat; idle and iowait left out)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / TICK


def _rusage_s() -> float:
    """CPU seconds of this process and of its reaped descendants."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _kind(pid: int) -> str:
    if pid == os.getpid():
        return "driver (this process)"
    cmd = command_line(pid) or []
    kind = process_kind(pid, cmd)
    if kind is None:
        head = (cmd[0] if cmd else b"").decode(errors="replace")
        kind = head.split(" ")[0] if head.startswith("ray-dashboard-") else "other (dashboard helpers...)"
    return kind


class JobProcesses:
    """This process and every process it started (Ray's daemons and workers are its descendants
    on a local Ray), sampled from /proc every ``interval`` s: CPU seconds by kind (each process's
    last reading, from its birth if it started after the first sample; a worker keeps the first
    non-idle kind it showed) and, with ``memory``, the peak
    of their summed PSS. Also the machine's busy CPU time, so that what other processes used in the
    meantime is known."""

    def __init__(self, interval: float = 1.0, memory: bool = False) -> None:
        self.interval, self.memory = interval, memory
        self.seen: dict[int, list] = {}  # pid -> [kind, cpu at first sight, latest cpu]
        self.peak, self.peak_by_kind, self.processes_at_peak = 0, {}, 0
        self.peak_parts, self.peak_at, self.timeline = {}, 0.0, []  # timeline: (s, total MB, shared MB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.sampler_cpu_s = 0.0

    def _tree(self) -> dict[int, float]:
        stats = {p: s for p in pids() if (s := _stat(p)) is not None}
        children: dict[int, list[int]] = {}
        for p, (ppid, _) in stats.items():
            children.setdefault(ppid, []).append(p)
        tree, todo = {}, [os.getpid()]
        while todo:
            p = todo.pop()
            if p in stats:
                tree[p] = stats[p][1]
                todo += children.get(p, [])
        return tree

    def _sample(self) -> None:
        tree = self._tree()
        for pid, cpu in tree.items():
            entry = self.seen.get(pid)
            if entry is None:  # a process started since counts from its birth
                self.seen[pid] = [_kind(pid), cpu if self._first else 0.0, cpu]
            else:
                if entry[0] in ("ray::IDLE", "ray worker (idle)"):
                    entry[0] = _kind(pid)
                entry[2] = cpu
        if self.memory:
            by_kind: dict[str, int] = {}
            parts = dict.fromkeys(PSS_FIELDS, 0)
            for pid in tree:
                kind = self.seen[pid][0]
                kind = "ray-dashboard-* modules" if kind.startswith("ray-dashboard-") else kind
                pss = _pss(pid)
                by_kind[kind] = by_kind.get(kind, 0) + pss["Pss"]
                for k in PSS_FIELDS:
                    parts[k] += pss[k]
            total = parts["Pss"]
            now = time.monotonic() - self._wall0
            if not self.timeline or now - self.timeline[-1][0] >= 5:
                self.timeline.append((round(now, 1), round(total / 2**20), round(parts["Pss_Shmem"] / 2**20)))
            if total > self.peak:
                self.peak, self.peak_by_kind, self.processes_at_peak = total, by_kind, len(tree)
                self.peak_parts, self.peak_at = parts, now

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self.sampler_cpu_s = time.thread_time()
            self._stop.wait(self.interval)

    def __enter__(self) -> "JobProcesses":
        self._busy0, self._wall0, self._rusage0 = _busy_cpu_s(), time.monotonic(), _rusage_s()
        self._first = True
        self._sample()  # processes already running count from here
        self._first = False
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.busy_s, self.wall_s = _busy_cpu_s() - self._busy0, time.monotonic() - self._wall0
        self._rusage1 = _rusage_s()

    def cpu_by_kind(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for kind, first, latest in self.seen.values():
            kind = "ray-dashboard-* modules" if kind.startswith("ray-dashboard-") else kind
            totals[kind] = totals.get(kind, 0.0) + latest - first
        return {k: round(v, 1) for k, v in sorted(totals.items(), key=lambda kv: -kv[1]) if v >= 0.05}

    def report(self) -> dict:
        # the processes that exited between two samples lose their last second: the descendants a
        # process reaped count in its children's times, so after ray.shutdown() this process's
        # own + children's CPU time covers the whole job
        own = max(sum(e[2] - e[1] for e in self.seen.values()), self._rusage1 - self._rusage0)
        out = {"cpu_s_by_process": self.cpu_by_kind(), "job_cpu_s": round(own, 1),
               "job_cpu_s_sampled": round(sum(e[2] - e[1] for e in self.seen.values()), 1),
               # machine busy time minus this job's: the test suite or anything else running meanwhile
               "foreign_cpu_s": round(max(0.0, self.busy_s - own), 1), "machine_cpus": os.cpu_count()}
        if self.memory:
            out.update(peak_mb=round(self.peak / 2**20, 1), processes_at_peak=self.processes_at_peak,
                       peak_at_s=round(self.peak_at, 1),  # from just before ray.init
                       peak_private_mb=round(self.peak_parts["Pss_Anon"] / 2**20, 1),
                       peak_shared_mb=round(self.peak_parts["Pss_Shmem"] / 2**20, 1),  # the object store, mostly
                       timeline_s_total_mb_shared_mb=self.timeline,
                       peak_mb_by_process=
                       {k: round(v / 2**20, 1) for k, v in sorted(self.peak_by_kind.items(), key=lambda kv: -kv[1])},
                       memory_sampler_cpu_s=round(self.sampler_cpu_s, 1))
        return out


# --- phases -------------------------------------------------------------------------------------
def phase_baseline(corpus: Path, model_dir: Path, threads: int, lines_per_block: int, batch_tokens: int) -> dict:
    """elmo_core's embedder in this process, on the job's blocks, writing the job's Parquet layout."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from elmo_core.embedder import Embedder
    from elmo_core.weights import load_checkpoint

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as out, JobProcesses() as procs:
        start = time.perf_counter()
        model, _ = load_checkpoint(model_dir)
        embedder = Embedder(model, batch_size=1 << 20, layers="all", batch_tokens=batch_tokens)  # as EmbedActor
        load_s = time.perf_counter() - start
        n_layers, dim = model.config.n_output_layers, 2 * model.config.lstm.projection_dim
        embed_s = tokens = sentences = 0
        for path in sorted(corpus.iterdir()):
            writer = None
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
            for first in range(0, len(lines), lines_per_block):
                numbers, toks = [], []
                for n, line in enumerate(lines[first:first + lines_per_block], first + 1):
                    words = line.split()
                    if words:
                        numbers.append(n)
                        toks.append(words)
                t = time.perf_counter()
                outputs = embedder.embed_all(toks)  # each (L+1, n, 2P) float32
                embed_s += time.perf_counter() - t
                offsets = pa.array(np.concatenate([[0], np.cumsum([len(s) for s in toks])]).astype(np.int32))
                columns = {"sentence_id": pa.array([f"{path.name}:{n}:0" for n in numbers]),
                           "source": pa.array([str(path)] * len(toks)), "line": pa.array(numbers, pa.int64()),
                           "sentence_index": pa.array([0] * len(toks), pa.int32()),
                           "tokens": pa.array(toks, pa.list_(pa.string()))}
                for j in range(n_layers):
                    flat = np.concatenate([o[j] for o in outputs]).reshape(-1)
                    columns[f"layer_{j}"] = pa.ListArray.from_arrays(
                        offsets, pa.FixedSizeListArray.from_arrays(pa.array(flat), dim))
                table = pa.table(columns)
                if writer is None:
                    writer = pq.ParquetWriter(os.path.join(out, path.stem + ".parquet"), table.schema,
                                              compression="zstd")
                writer.write_table(table)
                tokens += int(offsets[-1].as_py())
                sentences += len(toks)
            writer.close()
        seconds = time.perf_counter() - start
    return {"threads": threads, "seconds": seconds, "model_load_s": load_s, "embed_seconds": embed_s,
            "tokens": tokens, "sentences": sentences, "tokens_per_s": tokens / seconds,
            "tokens_per_s_without_model_load": tokens / (seconds - load_s), "embed_tokens_per_s": tokens / embed_s,
            **procs.report()}


def _trace(path: str, **event) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(event) + "\n")


def instrument(trace_path: str) -> dict:
    """Wrap the pipeline's stages to time them, without changing what they do: `EmbedActor`
    (model load, each block), `tokenize_block` (each block) and the driver's Parquet writes. The
    wrappers are defined here (in ``__main__``), so Ray ships them by value; the originals are
    imported by name in the workers."""
    import workflows.embedding.output as eo
    import workflows.embedding.pipeline as ep

    base_actor, base_tokenize, base_add = ep.EmbedActor, ep.tokenize_block, eo.ParquetOutput.add

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

    ep.EmbedActor, ep.tokenize_block, eo.ParquetOutput.add = TracedEmbedActor, traced_tokenize, traced_add
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
        with JobProcesses(memory=memory) as procs:
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
            **trace, **procs.report(), "log": log}


# --- orchestration ------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="small", help="model configuration (default: small, ELMo's released small)")
    # 120,000 tokens: a job's ~10 s start-up (Ray Data, actors, model load) is a fifth of the run
    parser.add_argument("--tokens", type=int, default=120000, help="corpus size in whitespace tokens (default: 120,000)")
    parser.add_argument("--files", type=int, default=8, help="input files the corpus is cut into")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--lines-per-block", type=int, default=1024, help="the job's default")
    parser.add_argument("--batch-tokens", type=int, default=6000, help="the job's default")
    parser.add_argument("--two-actor-cpus", type=float, default=1.0, help="cpus_per_actor of the 2-actor job")
    # the smaller memory corpus must run past the ramp-up (~25 s: actors start, the object store and
    # the driver's row groups fill): with 30,000 tokens the job ended inside it
    parser.add_argument("--memory-tokens", type=int, default=90000,
                        help="the memory phases' smaller corpus (default: 90,000 tokens; 8 files)")
    parser.add_argument("--memory-factor", type=int, default=10, help="their larger corpus: this many times larger")
    parser.add_argument("--memory-actors", type=int, default=2)
    parser.add_argument("--bounded-memory", type=int, default=0, metavar="MiB",
                        help="also run the memory phases with the embedding stage's blocks bounded "
                             "(`bound_blocks`, target block size MiB; 0: not run)")
    parser.add_argument("--skip", default="", help="comma-separated phases to leave out (debugging)")
    parser.add_argument("--out", type=Path, help="write the JSON here (default: stdout only)")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--actors", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--cpus-per-actor", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--num-cpus", type=float, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bound-blocks", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "baseline":
        print(json.dumps(phase_baseline(args.corpus, args.model, args.threads, args.lines_per_block,
                                        args.batch_tokens)))
        return
    if args.phase == "job":
        print(json.dumps(phase_job(args.corpus, args.model, args.actors, args.cpus_per_actor, args.num_cpus,
                                   args.lines_per_block, args.batch_tokens, args.memory, args.bound_blocks)))
        return

    import pyarrow
    import ray
    import torch

    began = time.monotonic()
    skip = set(filter(None, args.skip.split(",")))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = make_model(tmp / "model", args.preset)
        corpus = make_corpus(tmp / "corpus", args.tokens, args.files)
        small = big = None
        if "memory" not in skip:
            small = make_corpus(tmp / "corpus_small", args.memory_tokens, args.files)
            big = make_corpus(tmp / "corpus_big", args.memory_tokens * args.memory_factor, args.files)
        print(f"model {model}; corpus {corpus}; memory corpora {small} {big}", file=sys.stderr)

        def run(name: str, phase: str, *extra: str, corpus_dir: Path = tmp / "corpus") -> dict:
            cmd = [sys.executable, __file__, "--phase", phase, "--corpus", str(corpus_dir),
                   "--model", str(tmp / "model"),
                   "--lines-per-block", str(args.lines_per_block), "--batch-tokens", str(args.batch_tokens), *extra]
            started = time.monotonic()
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO,
                                  env={**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled"})
            if proc.returncode:
                raise SystemExit(f"phase {name} failed")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            result["process_s"] = round(time.monotonic() - started, 1)
            shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in result.items()
                     if k in ("seconds", "wall_s", "manifest_s", "tokens", "tokens_per_s", "embed_tokens_per_s",
                              "peak_mb", "foreign_cpu_s", "process_s")}
            print(f"[{time.monotonic() - began:6.0f}s] {name}: {shown}", file=sys.stderr)
            return result

        two_cpus = args.two_actor_cpus
        phases = {  # name -> (phase, extra arguments)
            "baseline_1t": ("baseline", "--threads", "1"),
            "job_1a_1t": ("job", "--actors", "1", "--cpus-per-actor", "1", "--num-cpus", "2"),
            # the read and tokenize tasks ask for 0.5 CPU each: 2 actors x 1 CPU (or 1 x 2) on Ray's
            # default 2 logical CPUs here would leave them none, so Ray gets at least 0.5 more than
            # the actors use (whole CPUs: Ray's num_cpus is an integer)
            "job_2a_1t": ("job", "--actors", "2", "--cpus-per-actor", str(two_cpus),
                          "--num-cpus", str(max(2, math.ceil(2 * two_cpus + 0.5)))),
            "baseline_2t": ("baseline", "--threads", "2"),
            "job_1a_2t": ("job", "--actors", "1", "--cpus-per-actor", "2", "--num-cpus", "3"),
        }
        rounds = []
        for r in range(args.rounds):
            rounds.append({name: run(f"round {r + 1} {name}", *spec)
                           for name, spec in phases.items() if name not in skip})
        memory = {}
        if "memory" not in skip:
            spec = phases["job_2a_1t" if args.memory_actors == 2 else "job_1a_1t"][1:]
            memory["memory_1x"] = run("memory_1x", "job", *spec, "--memory", corpus_dir=tmp / "corpus_small")
            memory[f"memory_{args.memory_factor}x"] = run(f"memory_{args.memory_factor}x", "job", *spec, "--memory",
                                                          corpus_dir=tmp / "corpus_big")
            if args.bounded_memory:
                bound = ("--bound-blocks", str(args.bounded_memory))
                memory["memory_1x_bounded"] = run("memory_1x_bounded", "job", *spec, "--memory", *bound,
                                                  corpus_dir=tmp / "corpus_small")
                memory[f"memory_{args.memory_factor}x_bounded"] = run(
                    f"memory_{args.memory_factor}x_bounded", "job", *spec, "--memory", *bound,
                    corpus_dir=tmp / "corpus_big")

    def med(name: str, key: str = "tokens_per_s") -> float | None:
        values = [r[name][key] for r in rounds if name in r]
        return statistics.median(values) if values else None

    def per_round(f) -> list:
        out = []
        for r in rounds:
            try:
                out.append(f(r))
            except KeyError:
                pass
        return out

    overhead = per_round(lambda r: r["job_1a_1t"]["wall_s"] / r["baseline_1t"]["seconds"] - 1)
    overhead_manifest = per_round(lambda r: r["job_1a_1t"]["manifest_s"] / r["baseline_1t"]["seconds"] - 1)
    overhead_embed_only = per_round(lambda r: r["job_1a_1t"]["wall_s"] / r["baseline_1t"]["embed_seconds"] - 1)
    # the job's time = a fixed startup (Ray Data, actor process, model load: until the first block
    # reaches an actor) + the embedding + a short tail; the baseline's counterpart of the middle part
    # is its time without the model load
    overhead_after_startup = per_round(lambda r: (r["job_1a_1t"]["wall_s"] - r["job_1a_1t"]["startup_s"])
                                       / (r["baseline_1t"]["seconds"] - r["baseline_1t"]["model_load_s"]) - 1)
    two_over_one = per_round(lambda r: r["job_2a_1t"]["tokens_per_s"] / r["job_1a_1t"]["tokens_per_s"])
    # the same between the first block reaching an actor and the last one done (startup left out)
    two_over_one_steady = per_round(lambda r: r["job_1a_1t"]["embedding_s"] / r["job_2a_1t"]["embedding_s"])
    two_over_one_2t = per_round(lambda r: r["job_2a_1t"]["tokens_per_s"] / r["job_1a_2t"]["tokens_per_s"])
    baseline_2t_over_1t = per_round(lambda r: r["baseline_2t"]["tokens_per_s"] / r["baseline_1t"]["tokens_per_s"])
    job_1a_2t_over_baseline_2t = per_round(lambda r: r["job_1a_2t"]["wall_s"] / r["baseline_2t"]["seconds"] - 1)
    ratios = {
        "job_1actor_over_baseline": [1 / (1 + o) for o in overhead],
        "overhead_1actor": overhead,
        "overhead_1actor_manifest_seconds": overhead_manifest,
        "overhead_1actor_vs_embedder_alone": overhead_embed_only,
        "overhead_1actor_after_startup": overhead_after_startup,
        "two_actors_over_one": two_over_one,
        "two_actors_over_one_after_startup": two_over_one_steady,
        "two_actors_over_one_actor_2_threads": two_over_one_2t,
        "baseline_2_threads_over_1": baseline_2t_over_1t,
        "overhead_1actor_2_threads_vs_baseline_2_threads": job_1a_2t_over_baseline_2t,
    }
    medians = {k: statistics.median(v) if v else None for k, v in ratios.items()}
    startup = per_round(lambda r: r["job_1a_1t"]["startup_s"])
    steady = medians["overhead_1actor_after_startup"]
    if startup and steady is not None and steady < 0.2:
        # corpus size at which the 1-actor overhead would fall to 20%: startup + tokens / rate x (1 + steady)
        # = 1.2 x (tokens / rate), rate = the baseline's tokens/s without the model load
        rate = statistics.median(r["baseline_1t"]["tokens_per_s_without_model_load"] for r in rounds)
        medians["tokens_for_20pct_overhead_1actor"] = round(statistics.median(startup) * rate / (0.2 - steady))
    medians["job_1a_1t_startup_s"] = statistics.median(startup) if startup else None
    mem = None
    if memory:
        small, large = memory["memory_1x"], memory[f"memory_{args.memory_factor}x"]
        mem = {"peak_mb_1x": small["peak_mb"], f"peak_mb_{args.memory_factor}x": large["peak_mb"],
               "memory_10x_over_1x": large["peak_mb"] / small["peak_mb"],
               "growth_mb": large["peak_mb"] - small["peak_mb"]}
        if "memory_1x_bounded" in memory:
            small, large = memory["memory_1x_bounded"], memory[f"memory_{args.memory_factor}x_bounded"]
            mem["with_bounded_blocks"] = {
                "block_mb": args.bounded_memory, "peak_mb_1x": small["peak_mb"],
                f"peak_mb_{args.memory_factor}x": large["peak_mb"],
                "memory_10x_over_1x": large["peak_mb"] / small["peak_mb"],
                "growth_mb": large["peak_mb"] - small["peak_mb"],
                "tokens_per_s_10x": large["tokens_per_s"],
                "tokens_per_s_10x_unbounded": memory[f"memory_{args.memory_factor}x"]["tokens_per_s"]}
    report = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "processor": _cpu_model(), "torch": torch.__version__,
                    "torch_threads_default": torch.get_num_threads(),
                    "ray": ray.__version__, "pyarrow": pyarrow.__version__},
        "settings": {"preset": args.preset, "model": model, "corpus": corpus, "memory_corpus_1x": small,
                     f"memory_corpus_{args.memory_factor}x": big,
                     "tokenizer": "whitespace", "layers": "all", "dtype": "float32", "format": "parquet",
                     "lines_per_block": args.lines_per_block, "batch_tokens": args.batch_tokens,
                     "rounds": args.rounds, "memory_actors": args.memory_actors,
                     "phases": {k: " ".join(v) for k, v in phases.items()}},
        "tokens_per_s_median": {name: med(name) for name in phases},
        "embedder_alone_tokens_per_s_median": {name: med(name, "embed_tokens_per_s")
                                               for name in ("baseline_1t", "baseline_2t")},
        "ratios_median": medians,
        "ratios_per_round": ratios,
        "memory": mem,
        "same_tokens_everywhere": len({p["tokens"] for r in rounds for p in r.values()}) == 1,
        "targets": {
            "overhead_1actor_under_20pct": medians["overhead_1actor"] is not None and medians["overhead_1actor"] < 0.20,
            # the issue asks for "scaling at 2 actors" without a number: faster than 1 actor at all
            "two_actors_faster_than_one": (medians["two_actors_over_one"] or 0) > 1.0,
            "memory_10x_within_1_2x": mem is not None and mem["memory_10x_over_1x"] <= 1.2,
        },
        "rounds": rounds,
        "memory_phases": memory,
        "benchmark_wall_s": round(time.monotonic() - began, 1),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


if __name__ == "__main__":
    main()
