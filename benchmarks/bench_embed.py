"""Embedding speed and memory: `elmo embed-corpus` on a local Ray vs elmo_core's embedder in one process.

    .venv/bin/python benchmarks/bench_embed.py --out benchmarks/results/embed_cpu.json

Input: CPython's pydoc prose (`preprocessing.sample_text.pydoc_sentences`, one sentence a line,
shuffled copies), written at run time as ``--files`` plain-text files of ``--tokens`` whitespace
tokens in total (nothing is committed); the memory phases use a corpus of ``--memory-tokens``
and one ``--memory-factor`` times larger (the same number of files, each that much longer).
Model: a native model directory (`elmo_core.weights.save_model_folder`) of the ``--preset``
configuration (default ``small``, the released ELMo small sizes) with random weights of a
realistic scale (std 1/sqrt(fan in), as ``tests/conftest.py: seeded``): speed does not depend on
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
  (driver, Ray daemons, Ray workers by task kind), sampled every second. The call splits
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

The phases live in `embed_baseline.py` and `embed_job.py`, their inputs in `embed_setup.py`, the
comparisons in `embed_summary.py`; the processes are sampled by `processes.ProcessSampler`.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import embed_summary
from embed_baseline import phase_baseline
from embed_job import phase_job
from embed_setup import make_corpus, make_model
from phase_runner import print_phase_result, run_phase
from report import cpu_model, write_report


def parse_args() -> argparse.Namespace:
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
    return parser.parse_args()


def phase_list(args) -> dict[str, tuple[str, ...]]:
    """The phases of a round: name -> (phase, its arguments)."""
    two_cpus = args.two_actor_cpus
    return {
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


class PhaseRunner:
    """Runs a phase in its own process on the model and a corpus in ``tmp``, and logs its headline."""

    SHOWN = ("seconds", "wall_s", "manifest_s", "tokens", "tokens_per_s", "embed_tokens_per_s", "peak_mb",
             "foreign_cpu_s", "process_s")

    def __init__(self, args, tmp: Path) -> None:
        self.args, self.tmp, self.began = args, tmp, time.monotonic()

    def __call__(self, name: str, phase: str, *extra: str, corpus: str = "corpus") -> dict:
        started = time.monotonic()
        result = run_phase(__file__, "--phase", phase, "--corpus", str(self.tmp / corpus),
                           "--model", str(self.tmp / "model"), "--lines-per-block", str(self.args.lines_per_block),
                           "--batch-tokens", str(self.args.batch_tokens), *extra, env={"RAY_AUTH_MODE": "disabled"})
        result["process_s"] = round(time.monotonic() - started, 1)
        shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in result.items() if k in self.SHOWN}
        print(f"[{time.monotonic() - self.began:6.0f}s] {name}: {shown}", file=sys.stderr)
        return result


def run_memory_phases(args, run: PhaseRunner, phases: dict) -> dict:
    """The job on the smaller and the larger memory corpus with memory sampled (and again with
    bounded blocks if asked)."""
    spec = phases["job_2a_1t" if args.memory_actors == 2 else "job_1a_1t"][1:]
    large = f"memory_{args.memory_factor}x"
    variants = [("", ())] + ([("_bounded", ("--bound-blocks", str(args.bounded_memory)))] if args.bounded_memory else [])
    memory = {}
    for suffix, bound in variants:
        memory[f"memory_1x{suffix}"] = run(f"memory_1x{suffix}", "job", *spec, "--memory", *bound,
                                           corpus="corpus_small")
        memory[f"{large}{suffix}"] = run(f"{large}{suffix}", "job", *spec, "--memory", *bound, corpus="corpus_big")
    return memory


def machine() -> dict:
    import pyarrow
    import ray
    import torch

    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "processor": cpu_model(), "torch": torch.__version__, "torch_threads_default": torch.get_num_threads(),
            "ray": ray.__version__, "pyarrow": pyarrow.__version__}


def build_report(args, phases: dict, inputs: dict, rounds: list[dict], memory: dict) -> dict:
    """The JSON report: machine, settings, medians, ratios, memory, targets and every phase's result."""
    ratios = embed_summary.ratios_per_round(rounds)
    medians = embed_summary.medians_of(rounds, ratios)
    mem = embed_summary.memory_growth(memory, args.memory_factor, args.bounded_memory)
    return {
        "machine": machine(),
        "settings": {"preset": args.preset, **inputs,
                     "tokenizer": "whitespace", "layers": "all", "dtype": "float32", "format": "parquet",
                     "lines_per_block": args.lines_per_block, "batch_tokens": args.batch_tokens,
                     "rounds": args.rounds, "memory_actors": args.memory_actors,
                     "phases": {k: " ".join(v) for k, v in phases.items()}},
        "tokens_per_s_median": {name: embed_summary.phase_median(rounds, name) for name in phases},
        "embedder_alone_tokens_per_s_median": {name: embed_summary.phase_median(rounds, name, "embed_tokens_per_s")
                                               for name in ("baseline_1t", "baseline_2t")},
        "ratios_median": medians,
        "ratios_per_round": ratios,
        "memory": mem,
        "same_tokens_everywhere": len({p["tokens"] for r in rounds for p in r.values()}) == 1,
        "targets": embed_summary.targets(medians, mem),
        "rounds": rounds,
        "memory_phases": memory,
    }


def main() -> None:
    args = parse_args()
    if args.phase == "baseline":  # one phase, in the process `run_phase` started
        print_phase_result(phase_baseline(args.corpus, args.model, args.threads, args.lines_per_block,
                                          args.batch_tokens))
        return
    if args.phase == "job":
        print_phase_result(phase_job(args.corpus, args.model, args.actors, args.cpus_per_actor, args.num_cpus,
                                     args.lines_per_block, args.batch_tokens, args.memory, args.bound_blocks))
        return

    began = time.monotonic()
    skip = set(filter(None, args.skip.split(",")))
    phases = phase_list(args)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = make_model(tmp / "model", args.preset)
        corpus = make_corpus(tmp / "corpus", args.tokens, args.files)
        small = big = None
        if "memory" not in skip:
            small = make_corpus(tmp / "corpus_small", args.memory_tokens, args.files)
            big = make_corpus(tmp / "corpus_big", args.memory_tokens * args.memory_factor, args.files)
        print(f"model {model}; corpus {corpus}; memory corpora {small} {big}", file=sys.stderr)
        run = PhaseRunner(args, tmp)
        rounds = [{name: run(f"round {r + 1} {name}", *spec) for name, spec in phases.items() if name not in skip}
                  for r in range(args.rounds)]
        memory = run_memory_phases(args, run, phases) if "memory" not in skip else {}

    report = build_report(args, phases, {"model": model, "corpus": corpus, "memory_corpus_1x": small,
                                         f"memory_corpus_{args.memory_factor}x": big}, rounds, memory)
    report["benchmark_wall_s"] = round(time.monotonic() - began, 1)
    write_report(args.out, report)


if __name__ == "__main__":
    main()
