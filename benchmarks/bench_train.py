"""Training throughput: elmo_core's single-process step vs the Ray Train workflow at 1 and 2 workers.

    .venv/bin/python benchmarks/bench_train.py --preset small --steps 20 --out benchmarks/results/train_cpu.json

Data: CPython's pydoc prose preprocessed at run time (whitespace tokens). All phases train the
same model config on the same global batches (`workflows.batches`, ``--batch-tokens`` tokens
each) with the same step function; tokens/s counts real words (no padding) and leaves out the
first ``--warmup`` steps. Phases, each in its own process:

* ``single_1t`` / ``single_2t``: one process, no Ray, 1 / 2 torch threads;
* ``ray_1w``: Ray Train, 1 worker (Ray gives it 1 CPU, hence 1 thread);
* ``ray_2w``: Ray Train, 2 DDP workers x 1 CPU (gloo all-reduce every step).

Reported: ``overhead_1w`` = 1 - ray_1w / single_1t and ``overhead_2w`` = 1 - ray_2w / single_2t
(the issue's target: under 15%).
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

REPO = Path(__file__).resolve().parents[1]


def prepare(data: Path) -> None:
    import ray

    from elmo_core.sample_text import pydoc_sentences
    from preprocessing.config import PreprocessConfig
    from preprocessing.pipeline import run_preprocess

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    corpus = data.parent / "corpus"
    corpus.mkdir(exist_ok=True)
    (corpus / "pydoc.txt").write_text("".join(" ".join(s) + "\n" for s in pydoc_sentences()))
    ray.init(num_cpus=2, logging_level="WARNING")
    run_preprocess([str(corpus)], str(data), PreprocessConfig(tokenizer="whitespace", min_count=1),
                   log=lambda m: None)
    ray.shutdown()


def phase_single(data: Path, preset: str, steps: int, warmup: int, batch_tokens: int, threads: int) -> dict:
    import pyarrow.parquet as pq
    import torch

    from elmo_core.bilm import BiLM
    from elmo_core.config import BiLMConfig
    from preprocessing.dataset import load_vocabulary, split_files
    from workflows.batches import COLUMNS, global_batches
    from workflows.config import TrainJobConfig
    from workflows.pretrain import model_options
    from workflows.train_loop import LMLoss, _null, _train_step, make_optimizer

    torch.set_num_threads(threads)
    vocab = load_vocabulary(str(data))
    model = BiLM(BiLMConfig.from_options(model_options(preset, len(vocab)))).train()
    optimizer = make_optimizer(model)
    job = TrainJobConfig(data=str(data), batch_tokens=batch_tokens)
    tables = [pq.read_table(u, columns=COLUMNS) for u in split_files(str(data), "train")]
    stream = global_batches(lambda e: iter(tables), batch_tokens, job.shuffle_buffer, 1, job.seed)
    tokens, start = 0, None
    for batch in stream:
        if batch.step == warmup:
            start, tokens = time.perf_counter(), 0
        if batch.step == steps:
            break
        _train_step(LMLoss(model), model, optimizer, batch, vocab, 0, 1, job, model.config.training, "cpu", _null())
        tokens += batch.num_tokens()
    seconds = time.perf_counter() - start
    return {"tokens_per_s": tokens / seconds, "seconds": seconds, "threads": threads}


def phase_ray(data: Path, preset: str, steps: int, warmup: int, batch_tokens: int, workers: int) -> dict:
    import ray

    from preprocessing.dataset import load_vocabulary
    from workflows.config import TrainJobConfig
    from workflows.pretrain import model_options
    from workflows.training import run_stage, unique_name

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    ray.init(num_cpus=4, logging_level="WARNING")
    vocab = load_vocabulary(str(data))
    # one report at the end of the warm-up and one at the end: the second window is what we time
    job = TrainJobConfig(data=str(data), max_steps=steps, batch_tokens=batch_tokens, num_workers=workers,
                         report_every=warmup, eval_every=steps, checkpoint_every=steps, eval_max_sentences=64)
    with tempfile.TemporaryDirectory() as storage:
        start = time.perf_counter()
        result = run_stage(job, vocab, storage, unique_name("bench"), model_config=model_options(preset, len(vocab)))
        wall = time.perf_counter() - start
    ray.shutdown()
    timed = [h for h in result.history if h.get("step", 0) > warmup and "tokens_per_second" in h]
    rate = sum(h["tokens_per_second"] for h in timed) / len(timed)
    return {"tokens_per_s": rate, "wall_s_including_startup": wall, "workers": workers,
            "windows": [{"step": h["step"], "tokens_per_second": h["tokens_per_second"]} for h in result.history]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--batch-tokens", type=int, default=1280)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    common = (args.data, args.preset, args.steps, args.warmup, args.batch_tokens)
    if args.phase == "single":
        print(json.dumps(phase_single(*common, threads=args.n)))
        return
    if args.phase == "ray":
        print(json.dumps(phase_ray(*common, workers=args.n)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        prepare(data)

        def run(phase: str, n: int) -> dict:
            cmd = [sys.executable, __file__, "--phase", phase, "--n", str(n), "--data", str(data), "--preset",
                   args.preset, "--steps", str(args.steps), "--warmup", str(args.warmup),
                   "--batch-tokens", str(args.batch_tokens)]
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO,
                                  env={**os.environ, "PYTHONPATH": str(REPO)})
            if proc.returncode:
                raise SystemExit(f"phase {phase} {n} failed")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"{phase} {n}: {result['tokens_per_s']:.1f} tokens/s", file=sys.stderr)
            return result

        phases = {"single_1t": run("single", 1), "single_2t": run("single", 2), "ray_1w": run("ray", 1),
                  "ray_2w": run("ray", 2)}
    report = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "preset": args.preset, "steps": args.steps, "warmup": args.warmup, "batch_tokens": args.batch_tokens,
        "phases": phases,
        "overhead_1w": 1 - phases["ray_1w"]["tokens_per_s"] / phases["single_1t"]["tokens_per_s"],
        "overhead_2w": 1 - phases["ray_2w"]["tokens_per_s"] / phases["single_2t"]["tokens_per_s"],
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
