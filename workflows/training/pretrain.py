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

from elmo_core.cli_fields import add_fields, flag_fields, from_args, given
from elmo_core.config import PRESETS, TrainingConfig

from preprocessing.entry_point import entry_point

from workflows.registry.register import add_promote_anyway
from workflows.training.config import TrainJobConfig

if TYPE_CHECKING:  # the command's flags are parsed without loading pyarrow
    from preprocessing.dataset import Dataset

UNLIMITED_STEPS = 10**12  # --max-epochs without --max-steps
RECIPE_FIELDS = tuple(f.name for f in flag_fields(TrainingConfig))  # the recipe's flags (None: not given)


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """The flags `pretrain` and `adapt` share: `TrainJobConfig`'s, the recipe's (`TrainingConfig`
    fields given on the command line) and the stage's."""
    p.add_argument("--registered-model", required=True, metavar="NAME", help="the MLflow registered model to add "
                                                                             "a version to")
    p.add_argument("--address", metavar="RAY_ADDRESS", help="Ray cluster (default: the job's, else a local Ray)")
    p.add_argument("--storage", default=os.path.abspath("out/ray_results"),
                   help="checkpoints (local path or s3://; shared by all nodes on a cluster)")
    p.add_argument("--evaluate-test", action="store_true",
                   help="after training, evaluate the registered model on the test split in both modes "
                        "(sentence and stream); logged as test_* metrics")
    p.add_argument("--summary-json", metavar="PATH", help="write the stage's outcome (metrics, version) as JSON")
    add_promote_anyway(p)
    p.add_argument("--experiment", default="elmo", help="MLflow experiment name")
    p.add_argument("--parent-run-id", help="nest this stage's MLflow run under a pipeline run")
    p.add_argument("--run-name", help="Ray Train run name (default: a fresh one, printed at start); give the "
                                      "name of a killed run to resume it from its last checkpoint (of a "
                                      "finished one: its registered version is reported, nothing is trained)")
    add_fields(p, TrainJobConfig, unset={"max_steps": f"{TrainJobConfig.max_steps}, or unlimited with --max-epochs"})
    add_fields(p, TrainingConfig, title="recipe (elmo_core.config.TrainingConfig)",
               unset=dict.fromkeys(RECIPE_FIELDS, "the preset's (pretrain) or the starting model's (adapt)"))


def job_config(args) -> TrainJobConfig:
    max_steps = args.max_steps if args.max_steps is not None else (
        UNLIMITED_STEPS if args.max_epochs is not None else TrainJobConfig.max_steps)
    return from_args(TrainJobConfig, args, max_steps=max_steps, eval_every=min(args.eval_every, max_steps),
                     checkpoint_every=min(args.checkpoint_every, max_steps))


def recipe_overrides(args) -> dict:
    """`TrainingConfig` fields set on the command line."""
    return given(TrainingConfig, args)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p)
    p.add_argument("--preset", choices=sorted(PRESETS), default="small",
                   help="model size (elmo_core.config.PRESETS; the README's configuration reference lists them)")


def model_options(preset: str, vocab_size: int, **training) -> dict:
    """bilm-tf options for a preset with this data's vocabulary (negatives capped by its size)
    and the given `TrainingConfig` overrides."""
    from elmo_core.config import BiLMConfig

    return BiLMConfig.preset(preset).with_recipe({**training, "n_tokens_vocab": vocab_size}).to_options()


def finished_job(run_name: str | None, storage: str, experiment: str, registered_model: str,
                 promote_anyway: bool = False) -> dict | None:
    """A training job (`pretrain` / `adapt`) rerun after it finished: its MLflow run (`tracking.finished_run_id`)
    and that run's version of ``registered_model`` (`register.ensure_registered`: registered now only
    if a killed driver left that undone), with ``finished_before`` and the run's ``metrics`` (each one's
    last value); None if the job has not finished.
    Nothing is trained and no MLflow run is opened."""
    from workflows.registry import tracking
    from workflows.registry.register import ensure_registered

    run_id = tracking.finished_run_id(experiment, run_name, storage) if run_name else None
    if run_id is None:
        return None
    outcome = ensure_registered(run_id, registered_model, promote_anyway)
    logged = tracking.get_run(run_id).data.metrics  # each metric's last value
    return {**outcome, "finished_before": True, "run_id": run_id, "run_name": run_name, "metrics": logged,
            "test": {k: v for k, v in logged.items() if k.startswith("test_ppl")}}


def report_finished_job(outcome: dict) -> None:
    """What a rerun of a finished job prints (`finished_job`)."""
    how = "already registered as" if outcome["already_registered"] else "registered"
    print(f"Ray Train run {outcome['run_name']!r} finished before (MLflow run {outcome['run_id']}), nothing to "
          f"train: {how} {outcome['name']} version {outcome['version']} (val_ppl {outcome['val_ppl']:.2f}); "
          f"{outcome['reason']}")


def pretrain(job: TrainJobConfig, preset: str, registered_model: str, storage: str, address: str | None = None,
             experiment: str = "elmo", parent_run_id: str | None = None, model_config: dict | None = None,
             run_name: str | None = None, recipe: dict | None = None, evaluate_test: bool = False,
             promote_anyway: bool = False) -> dict:
    """The whole `elmo pretrain`; returns the registration outcome plus the final metrics. ``model_config``:
    the model's options (default: ``preset``'s for the data's vocabulary); ``recipe``:
    `TrainingConfig` fields changed on top of them (the optimizer recipe, dropout, ...);
    ``promote_anyway``: the gate's override (`tracking.gate`)."""
    from elmo_core.config import BiLMConfig
    from elmo_core.tokenization import tokenization_of_preprocessing, write_tokenization
    from preprocessing.dataset import Dataset

    from workflows import faults
    from workflows.registry import tracking
    from workflows.training.checkpoints import final_model_dir
    from workflows.registry.register import register_run
    from workflows.training.driver import ensure_ray, run_training, unique_name

    done = finished_job(run_name, storage, experiment, registered_model, promote_anyway)
    if done is not None:
        return done
    dataset = Dataset.open(job.data)
    vocab = dataset.vocabulary
    options = model_config or model_options(preset, len(vocab))
    trained = BiLMConfig.from_options(options).with_recipe(recipe or {}).to_options()  # what the worker builds
    ensure_ray(address)
    name = run_name or unique_name(f"pretrain-{registered_model}")
    print(f"Ray Train run {name!r} (checkpoints under {storage}; rerun with --run-name {name} to resume)",
          file=sys.stderr)
    params = {**{f"job.{k}": v for k, v in job.to_dict().items()}, "preset": preset,
              **{f"model.{k}": v for k, v in _flatten(trained).items()}}
    run = tracking.TrackedRun(experiment, name, params, {"stage": "pretrain", "vocab_digest": vocab.digest(),
                                                         tracking.TRAIN_STORAGE_TAG: tracking.storage_key(storage)},
                            parent_run_id)
    if run.resumed:
        print(f"continuing MLflow run {run.run_id} of the interrupted driver", file=sys.stderr)
    try:
        run.log_dataset_manifest(dataset.manifest, "train")
        result = run_training(job, dataset, storage, name, model_config=options, recipe=recipe,
                              tracking=run.coordinates())
        run.log_curves(result.history)
        chosen = final_model_dir(result.checkpoint_dir)  # the best validation evaluation's model
        # how raw text is to be tokenized for this model: as its training text was
        write_tokenization(chosen, tokenization_of_preprocessing(dataset.manifest["config"]))
        model_uri = run.log_model(str(chosen))
        test = test_metrics(str(chosen), dataset, job) if evaluate_test else {}
        if test:
            run.log_metrics(test, int(result.final["step"]))
        run.finish()
    except BaseException:
        run.finish("FAILED")
        raise
    faults.point("before_register")  # tests: the driver killed after the run finished, before registering
    outcome = register_run(run.run_id, registered_model, promote_anyway)  # its own step: `elmo register` can redo it
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
                           recipe=recipe_overrides(args), evaluate_test=args.evaluate_test,
                           promote_anyway=args.promote_anyway)
    except (ValueError, DatasetError) as exc:
        print(f"elmo pretrain: error: {exc}", file=sys.stderr)
        return 2
    if outcome.get("finished_before"):
        report_finished_job(outcome)
        write_summary_json(args.summary_json, outcome)
        return 0
    m = outcome["metrics"]
    print(f"registered {outcome['name']} version {outcome['version']} (best val_ppl {outcome['val_ppl']:.2f}; "
          f"last evaluation {m['val_ppl']:.2f}: forward {m['val_ppl_forward']:.2f}, backward "
          f"{m['val_ppl_backward']:.2f}); {outcome['reason']}")
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
