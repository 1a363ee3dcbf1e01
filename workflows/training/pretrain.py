"""Pretrain a biLM on an `elmo preprocess` output with Ray Train; track and register it in MLflow.

    elmo pretrain --data DIR --registered-model NAME [--preset tiny|lm5m|lm20m|small|medium|original]
        [--mode sentence|stream] [--max-steps N] [--max-epochs N] [--num-workers N] [--use-gpu]
        [--address RAY_ADDRESS] [--storage PATH] [--evaluate-test] [--summary-json PATH]
    ray job submit --address http://HEAD:8265 -- python -m workflows.training.pretrain ...   (same arguments)

The tracking URI comes from ``MLFLOW_TRACKING_URI`` (default: ``sqlite:///mlflow.db`` here).
Reported on held-out data (the ``validation`` split, full softmax): ``val_ppl_forward``,
``val_ppl_backward`` and ``val_ppl`` = exp(mean of the two directions' mean NLL), the geometric
mean of the two, as bilm-tf reports, in the training mode's way (`workflows.training.evaluation`); the
model of the best evaluation is registered. ``train_loss`` is the training softmax's loss.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING

from elmo_core.config import OPTIMIZERS, PRESETS

from preprocessing.entry_point import entry_point

from workflows.training.config import TRAINING_MODES, TrainJobConfig

if TYPE_CHECKING:  # the command's flags are parsed without loading pyarrow
    from preprocessing.dataset import Dataset

UNLIMITED_STEPS = 10**12  # --max-epochs without --max-steps



def add_common_arguments(p: argparse.ArgumentParser) -> None:
    d = TrainJobConfig()
    p.add_argument("--data", required=True, metavar="DIR", help="an `elmo preprocess` output directory")
    p.add_argument("--registered-model", required=True, metavar="NAME")
    p.add_argument("--max-steps", type=int, help=f"optimizer steps (default: {d.max_steps}, or unlimited with "
                                                 "--max-epochs)")
    p.add_argument("--num-workers", type=int, default=d.num_workers)
    p.add_argument("--use-gpu", action="store_true")
    p.add_argument("--bf16", action="store_true",
                   help="GPU: autocast to bfloat16 (measured no faster than TF32 on an H200, see benchmarks/README.md)")
    p.add_argument("--no-tf32", dest="tf32", action="store_false",
                   help="GPU: exact float32 products (default: TF32 tensor cores for them)")
    p.add_argument("--cpus-per-worker", type=float, default=d.cpus_per_worker)
    p.add_argument("--placement-strategy", default=d.placement_strategy,
                   choices=["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"], help="Ray placement of the workers")
    p.add_argument("--address", metavar="RAY_ADDRESS", help="Ray cluster (default: the job's, else a local Ray)")
    p.add_argument("--storage", default=os.path.abspath("out/ray_results"),
                   help="checkpoints (local path or s3://; shared by all nodes on a cluster)")
    p.add_argument("--batch-tokens", type=int, default=d.batch_tokens)
    p.add_argument("--grad-accum", type=int, default=d.grad_accum)
    p.add_argument("--eval-every", type=int, default=d.eval_every)
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--cache-train-mb", type=int, default=d.cache_train_mb,
                   help="keep a train split of up to this many MB of Parquet in each worker's memory after "
                        "the first epoch, instead of reading it again every epoch (0: never)")
    p.add_argument("--seed", type=int, default=d.seed)
    recipe = p.add_argument_group("recipe (defaults: elmo_core.config.TrainingConfig and the preset)")
    recipe.add_argument("--mode", choices=TRAINING_MODES, default=d.mode,
                        help="sentence: full sentences, each from a zero state (default); stream: windows of the "
                             "running text with the state carried (truncated BPTT; the train split is held in memory)")
    recipe.add_argument("--stream-rows", type=int, default=d.stream_rows, help="stream mode: rows per global batch")
    recipe.add_argument("--unroll-steps", type=int, default=d.unroll_steps, help="stream mode: tokens per window")
    recipe.add_argument("--max-epochs", type=int, help="stop at the end of this epoch (--max-steps still applies "
                                                       "when given; unlimited otherwise)")
    recipe.add_argument("--eval-each-epoch", action="store_true",
                        help="evaluate (and apply the schedule) at the end of every epoch as well")
    recipe.add_argument("--optimizer", choices=OPTIMIZERS, help="default: the model config's (adam for new models)")
    recipe.add_argument("--learning-rate", type=float)
    recipe.add_argument("--dropout", type=float, help="default: the preset's (pretrain) or the starting model's (adapt)")
    recipe.add_argument("--lr-decay", type=float, default=d.lr_decay,
                        help="learning-rate factor after --lr-decay-patience evaluations without improvement "
                             "(1: never; default: %(default)s)")
    recipe.add_argument("--lr-decay-patience", type=int, default=d.lr_decay_patience)
    recipe.add_argument("--plateau-threshold", type=float, default=d.plateau_threshold,
                        help="relative validation improvement below which an evaluation counts as a plateau")
    recipe.add_argument("--lr-decay-start-epoch", type=int,
                        help="instead of the plateau rule: multiply the learning rate by --lr-decay at the end "
                             "of every epoch from this one on")
    recipe.add_argument("--early-stop-patience", type=int, default=d.early_stop_patience,
                        help="stop after this many evaluations without improvement (0: never)")
    p.add_argument("--torch-threads", type=int, help="torch threads per worker (default: cpus per worker, "
                                                     "rounded up)")
    p.add_argument("--evaluate-test", action="store_true",
                   help="after training, evaluate the registered model on the test split in both modes "
                        "(sentence and stream); logged as test_* metrics")
    p.add_argument("--summary-json", metavar="PATH", help="write the stage's outcome (metrics, version) as JSON")
    p.add_argument("--experiment", default="elmo", help="MLflow experiment name")
    p.add_argument("--parent-run-id", help="nest this stage's MLflow run under a pipeline run")
    p.add_argument("--run-name", help="Ray Train run name (default: a fresh one, printed at start); give the "
                                      "name of a killed run to resume it from its last checkpoint")


def job_config(args) -> TrainJobConfig:
    max_steps = args.max_steps if args.max_steps is not None else (
        UNLIMITED_STEPS if args.max_epochs is not None else TrainJobConfig.max_steps)
    return TrainJobConfig(data=args.data, max_steps=max_steps, num_workers=args.num_workers,
                          use_gpu=args.use_gpu, cpus_per_worker=args.cpus_per_worker,
                          placement_strategy=args.placement_strategy, batch_tokens=args.batch_tokens,
                          grad_accum=args.grad_accum, eval_every=min(args.eval_every, max_steps),
                          checkpoint_every=min(args.checkpoint_every, max_steps), seed=args.seed,
                          cache_train_mb=args.cache_train_mb, mode=args.mode, stream_rows=args.stream_rows,
                          unroll_steps=args.unroll_steps, max_epochs=args.max_epochs,
                          eval_each_epoch=args.eval_each_epoch, lr_decay=args.lr_decay,
                          lr_decay_patience=args.lr_decay_patience, plateau_threshold=args.plateau_threshold,
                          early_stop_patience=args.early_stop_patience, torch_threads=args.torch_threads,
                          lr_decay_start_epoch=args.lr_decay_start_epoch, bf16=args.bf16, tf32=args.tf32)


def recipe_overrides(args) -> dict:
    """`TrainingConfig` fields set on the command line."""
    return {k: v for k, v in (("optimizer", args.optimizer), ("learning_rate", args.learning_rate),
                              ("dropout", args.dropout)) if v is not None}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p)
    p.add_argument("--preset", choices=sorted(PRESETS), default="small",
                   help="model size (elmo_core.config.PRESETS; the README's configuration reference lists them)")


def model_options(preset: str, vocab_size: int, **training) -> dict:
    """bilm-tf options for a preset with this data's vocabulary (negatives capped by its size)
    and the given `TrainingConfig` overrides."""
    from elmo_core.config import BiLMConfig

    config = BiLMConfig.preset(preset, **training)
    return config.replace(training=config.training.for_vocabulary(vocab_size)).to_options()


def pretrain(job: TrainJobConfig, preset: str, registered_model: str, storage: str, address: str | None = None,
             experiment: str = "elmo", parent_run_id: str | None = None, model_config: dict | None = None,
             run_name: str | None = None, recipe: dict | None = None, evaluate_test: bool = False) -> dict:
    """The whole `elmo pretrain`; returns the registration outcome plus the final metrics."""
    from preprocessing.dataset import Dataset

    from workflows.registry import tracking
    from workflows.training.checkpoints import final_model_dir
    from workflows.registry.register import register_run
    from workflows.training.driver import ensure_ray, run_training, unique_name

    dataset = Dataset.open(job.data)
    vocab = dataset.vocabulary
    options = model_config or model_options(preset, len(vocab), **(recipe or {}))
    ensure_ray(address)
    name = run_name or unique_name(f"pretrain-{registered_model}")
    print(f"Ray Train run {name!r} (checkpoints under {storage}; rerun with --run-name {name} to resume)",
          file=sys.stderr)
    params = {**{f"job.{k}": v for k, v in job.to_dict().items()}, "preset": preset,
              **{f"model.{k}": v for k, v in _flatten(options).items()}}
    run = tracking.TrackedRun(experiment, name, params, {"stage": "pretrain", "vocab_digest": vocab.digest()},
                            parent_run_id)
    if run.resumed:
        print(f"continuing MLflow run {run.run_id} of the interrupted driver", file=sys.stderr)
    try:
        run.log_dataset_manifest(dataset.manifest, "train")
        result = run_training(job, dataset, storage, name, model_config=options, tracking=run.coordinates())
        run.log_curves(result.history)
        chosen = final_model_dir(result.checkpoint_dir)  # the best validation evaluation's model
        model_uri = run.log_model(str(chosen))
        test = test_metrics(str(chosen), dataset, job) if evaluate_test else {}
        if test:
            run.log_metrics(test, int(result.final["step"]))
        run.finish()
    except BaseException:
        run.finish("FAILED")
        raise
    outcome = register_run(run.run_id, registered_model)  # its own step: `elmo register` can redo it
    return {**outcome, "run_id": run.run_id, "run_name": name, "metrics": result.final, "test": test,
            "checkpoint_dir": result.checkpoint_dir, "model_dir": str(chosen), "model_uri": model_uri,
            "history": result.history}


def test_metrics(model_dir: str, dataset: Dataset, job: TrainJobConfig) -> dict:
    """``test_ppl[_stream]{,_forward,_backward}`` of a model on the dataset's test split."""
    from workflows.training.evaluation import evaluate_model, load_for_evaluation, read_split

    model, vocab = load_for_evaluation(model_dir, dataset)
    results = evaluate_model(model, vocab, read_split(dataset, "test"), batch_tokens=job.batch_tokens,
                             stream_rows=job.eval_stream_rows, unroll_steps=job.unroll_steps)
    metrics = {}
    for mode, ppl in results.items():
        prefix = "test_ppl" if mode == "sentence" else "test_ppl_stream"
        metrics.update({prefix: ppl.average, f"{prefix}_forward": ppl.forward, f"{prefix}_backward": ppl.backward})
    return metrics


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def run(args: argparse.Namespace) -> int:
    from preprocessing.dataset import DatasetError

    try:
        job = job_config(args)
        outcome = pretrain(job, args.preset, args.registered_model, args.storage, args.address,
                           args.experiment, args.parent_run_id, run_name=args.run_name,
                           recipe=recipe_overrides(args), evaluate_test=args.evaluate_test)
    except (ValueError, DatasetError) as exc:
        print(f"elmo pretrain: error: {exc}", file=sys.stderr)
        return 2
    m = outcome["metrics"]
    print(f"registered {outcome['name']} version {outcome['version']} (best val_ppl {outcome['val_ppl']:.2f}; "
          f"last evaluation {m['val_ppl']:.2f}: forward {m['val_ppl_forward']:.2f}, backward "
          f"{m['val_ppl_backward']:.2f}); {'promoted to champion' if outcome['promoted'] else 'champion unchanged (gate)'}")
    for key, value in outcome["test"].items():
        print(f"{key} {value:.2f}")
    print(f"final checkpoint: {outcome['checkpoint_dir']}")
    write_summary_json(args.summary_json, outcome)
    return 0


def write_summary_json(path: str | None, outcome: dict) -> None:
    """``--summary-json``: the stage's outcome (metrics, registered version, run id) as JSON."""
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(outcome, f, indent=2, default=str)
            f.write("\n")


main = entry_point("elmo pretrain", __doc__, add_arguments, run)


if __name__ == "__main__":
    sys.exit(main())
