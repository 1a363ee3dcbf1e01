"""Pretrain a biLM on an `elmo preprocess` output with Ray Train; track and register it in MLflow.

    elmo pretrain --data DIR --registered-model NAME [--preset tiny|small|medium|original]
        [--max-steps N] [--num-workers N] [--use-gpu] [--address RAY_ADDRESS] [--storage PATH]
    ray job submit --address http://HEAD:8265 -- python -m workflows.pretrain ...   (same arguments)

The tracking URI comes from ``MLFLOW_TRACKING_URI`` (default: ``sqlite:///mlflow.db`` here).
Reported on held-out data (the ``validation`` split, full softmax): ``val_ppl_forward``,
``val_ppl_backward`` and ``val_ppl`` = exp(mean of the two directions' mean NLL), the geometric
mean of the two, as bilm-tf reports. ``train_loss`` is the sampled-softmax loss (not a perplexity).
"""

from __future__ import annotations

import argparse
import os
import sys

from .config import TrainJobConfig

PRESETS = ("tiny", "small", "medium", "original")


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    d = TrainJobConfig()
    p.add_argument("--data", required=True, metavar="DIR", help="an `elmo preprocess` output directory")
    p.add_argument("--registered-model", required=True, metavar="NAME")
    p.add_argument("--max-steps", type=int, default=d.max_steps)
    p.add_argument("--num-workers", type=int, default=d.num_workers)
    p.add_argument("--use-gpu", action="store_true")
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
    p.add_argument("--experiment", default="elmo", help="MLflow experiment name")
    p.add_argument("--parent-run-id", help="nest this stage's MLflow run under a pipeline run")
    p.add_argument("--run-name", help="Ray Train run name (default: a fresh one, printed at start); give the "
                                      "name of a killed run to resume it from its last checkpoint")


def job_config(args) -> TrainJobConfig:
    return TrainJobConfig(data=args.data, max_steps=args.max_steps, num_workers=args.num_workers,
                          use_gpu=args.use_gpu, cpus_per_worker=args.cpus_per_worker,
                          placement_strategy=args.placement_strategy, batch_tokens=args.batch_tokens,
                          grad_accum=args.grad_accum, eval_every=min(args.eval_every, args.max_steps),
                          checkpoint_every=min(args.checkpoint_every, args.max_steps), seed=args.seed,
                          cache_train_mb=args.cache_train_mb)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p)
    p.add_argument("--preset", choices=PRESETS, default="small")


def model_options(preset: str, vocab_size: int, dropout: float | None = None) -> dict:
    """bilm-tf options for a preset with this data's vocabulary (negatives capped by its size)."""
    from elmo_core.config import BiLMConfig

    config = BiLMConfig.preset(preset)
    t = config.training
    changes = {"n_tokens_vocab": vocab_size, "n_negative_samples_batch": min(t.n_negative_samples_batch, vocab_size)}
    if dropout is not None:
        changes["dropout"] = dropout
    import dataclasses

    return config.replace(training=dataclasses.replace(t, **changes)).to_options()


def pretrain(job: TrainJobConfig, preset: str, registered_model: str, storage: str, address: str | None = None,
             experiment: str = "elmo", parent_run_id: str | None = None, model_config: dict | None = None,
             run_name: str | None = None) -> dict:
    """The whole stage; returns the registration outcome plus the final metrics."""
    from preprocessing.dataset import load_manifest, load_vocabulary

    from . import tracking
    from .training import ensure_ray, run_stage, unique_name

    manifest = load_manifest(job.data)
    vocab = load_vocabulary(job.data)
    options = model_config or model_options(preset, len(vocab))
    ensure_ray(address)
    name = run_name or unique_name(f"pretrain-{registered_model}")
    print(f"Ray Train run {name!r} (checkpoints under {storage}; rerun with --run-name {name} to resume)",
          file=sys.stderr)
    params = {**{f"job.{k}": v for k, v in job.to_dict().items()}, "preset": preset,
              **{f"model.{k}": v for k, v in _flatten(options).items()}}
    run = tracking.StageRun(experiment, name, params, {"stage": "pretrain", "vocab_digest": vocab.digest()},
                            parent_run_id)
    if run.resumed:
        print(f"continuing MLflow run {run.run_id} of the interrupted driver", file=sys.stderr)
    try:
        run.log_dataset_manifest(manifest, "train")
        result = run_stage(job, vocab, storage, name, model_config=options, tracking=run.coordinates())
        run.log_curves(result.history)
        model_uri = run.log_model(os.path.join(result.checkpoint_dir, "model"))
        outcome = tracking.register(model_uri, registered_model, {
            "val_ppl": result.final["val_ppl"], "data_manifest": manifest.get("version"),
            "vocab_digest": vocab.digest(), "run_id": run.run_id})
        run.finish()
    except BaseException:
        run.finish("FAILED")
        raise
    return {**outcome, "run_id": run.run_id, "metrics": result.final, "checkpoint_dir": result.checkpoint_dir,
            "model_uri": model_uri}


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
                           args.experiment, args.parent_run_id, run_name=args.run_name)
    except (ValueError, DatasetError) as exc:
        print(f"elmo pretrain: error: {exc}", file=sys.stderr)
        return 2
    m = outcome["metrics"]
    print(f"registered {outcome['name']} version {outcome['version']} (val_ppl {m['val_ppl']:.2f}: forward "
          f"{m['val_ppl_forward']:.2f}, backward {m['val_ppl_backward']:.2f}); "
          f"{'promoted to champion' if outcome['promoted'] else 'champion unchanged (gate)'}")
    print(f"final checkpoint: {outcome['checkpoint_dir']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="elmo pretrain", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
