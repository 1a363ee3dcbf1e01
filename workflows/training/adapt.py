"""Adapt a biLM to a new domain: continue LM training on unlabeled target-domain text.

    elmo adapt --from MODEL --data DIR --registered-model NAME [--source-data DIR] [...]
    ray job submit ... -- python -m workflows.training.adapt ...   (same arguments)

MODEL: ``models:/NAME@ALIAS`` or ``runs:/RUN_ID/model`` (an MLflow model logged by
`elmo pretrain`), a training checkpoint or native model directory, or ``OPTIONS.json,WEIGHTS.hdf5``
(imported bilm-tf/AllenNLP weights). The model's vocabulary and character scheme are kept: DIR
must be preprocessed with that vocabulary (``elmo preprocess ... --vocab``); a different one is
refused. The optimizer state is restored when the source is a training checkpoint.

Reported: ``target_ppl_before`` / ``target_ppl_after`` (held-out target data) and, with
``--source-data``, ``source_ppl_before`` / ``source_ppl_after`` (forgetting); all are the
geometric mean of the forward and backward full-softmax perplexities (``val_ppl``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from preprocessing.entry_point import entry_point

from workflows.training.config import TrainJobConfig
from workflows.training.pretrain import (add_common_arguments, finished_job, job_config, recipe_overrides,
                                         report_finished_job, write_summary_json)

if TYPE_CHECKING:  # the command's flags are parsed without loading pyarrow
    from preprocessing.dataset import Dataset


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="source", required=True, metavar="MODEL", help="model to start from (see above)")
    p.add_argument("--source-data", metavar="DIR", help="the source domain's preprocessed data (forgetting)")
    add_common_arguments(p)


def resolve_start(source: str, workdir: str, vocab_size: int) -> tuple[str, str]:
    """MODEL -> (local directory to start from, lineage string). Imported bilm-tf weights carry
    no softmax: one is added for the data's vocabulary (``vocab_size`` words), freshly initialized."""
    from elmo_core.model_spec import ModelSpec

    from workflows.registry import tracking

    spec = ModelSpec.parse(source)
    if spec.registry_uri is not None:
        folder, _, lineage = tracking.download_pinned(spec.registry_uri, workdir)
        return folder, lineage
    if spec.folder is not None:
        return spec.folder, spec.local_path()
    from elmo_core.bilm import BiLM
    from elmo_core.weights import load_bilm_tf, save_model_folder

    imported = load_bilm_tf(spec.options_file, spec.weight_file)
    model = BiLM(imported.config.replace(training=imported.config.training.for_vocabulary(vocab_size)))
    missing, unexpected = model.load_state_dict(imported.state_dict(), strict=False)
    if unexpected or any(not k.startswith("softmax.") for k in missing):
        raise ValueError(f"{source}: imported weights do not fit the model ({unexpected or missing})")
    target = os.path.join(workdir, "imported")
    save_model_folder(model, target)
    return target, f"bilm-tf:{os.path.basename(spec.weight_file)}"


def held_out_ppl(model_dir: str, dataset: Dataset, job: TrainJobConfig) -> float:
    """Full-softmax perplexity (geometric mean of both directions) of a model on a validation
    split, each sentence from a zero state."""
    from workflows.training.evaluation import evaluate_model, load_for_evaluation, read_split

    model, vocab = load_for_evaluation(model_dir, dataset)
    results = evaluate_model(model, vocab, read_split(dataset, "validation"), ["sentence"],
                             batch_tokens=job.batch_tokens, max_sentences=job.eval_max_sentences)
    return results["sentence"].average


def adapt(job: TrainJobConfig, source: str, registered_model: str, storage: str, address: str | None = None,
          source_data: str | None = None, experiment: str = "elmo", parent_run_id: str | None = None,
          run_name: str | None = None, recipe: dict | None = None, promote_anyway: bool = False) -> dict:
    """The whole `elmo adapt`; ``recipe``: `TrainingConfig` overrides (optimizer, learning rate, dropout);
    ``promote_anyway``: the gate's override (`tracking.gate`)."""
    from preprocessing.dataset import Dataset

    from workflows import faults
    from workflows.registry import tracking
    from elmo_core.tokenization import read_tokenization, tokenization_of_preprocessing, write_tokenization

    from workflows.training.checkpoints import final_model_dir, load_model_and_vocab, model_folder
    from workflows.registry.register import register_run
    from workflows.training.driver import ensure_ray, run_training, unique_name

    done = finished_job(run_name, storage, experiment, registered_model, promote_anyway)
    if done is not None:  # with the perplexities before and after, as logged
        return {**done, **{k: v for k, v in done["metrics"].items() if k.endswith(("_ppl_before", "_ppl_after"))}}
    workdir = tempfile.mkdtemp(prefix="elmo-adapt-")
    target = Dataset.open(job.data)
    source_dataset = Dataset.open(source_data) if source_data else None
    data_vocab = target.vocabulary
    start_dir, lineage = resolve_start(source, workdir, len(data_vocab))
    start = Path(start_dir)
    _, model_vocab = load_model_and_vocab(start)
    if model_vocab is not None and model_vocab != data_vocab:
        raise ValueError(f"{job.data} was preprocessed with a different vocabulary than {source}: rerun "
                         "`elmo preprocess ... --vocab <the model's vocab.txt>` so word ids match the softmax")
    tokenization = tokenization_of_preprocessing(target.manifest["config"])
    parent_tokenization = read_tokenization(model_folder(start))
    if parent_tokenization is not None and parent_tokenization != tokenization:
        print(f"warning: {source} was trained on text tokenized with {parent_tokenization.describe()}, {job.data} "
              f"was tokenized with {tokenization.describe()}; the adapted model records the latter",
              file=sys.stderr)
    before = {"target_ppl_before": held_out_ppl(start_dir, target, job)}
    if source_dataset:
        before["source_ppl_before"] = held_out_ppl(start_dir, source_dataset, job)
    ensure_ray(address)
    name = run_name or unique_name(f"adapt-{registered_model}")
    print(f"Ray Train run {name!r} (checkpoints under {storage}; rerun with --run-name {name} to resume)",
          file=sys.stderr)
    run = tracking.TrackedRun(experiment, name, {**{f"job.{k}": v for k, v in job.to_dict().items()}, "from": source},
                            {"stage": "adapt", "parent_model": lineage, "vocab_digest": data_vocab.digest(),
                             tracking.TRAIN_STORAGE_TAG: tracking.storage_key(storage)},
                            parent_run_id)
    if run.resumed:
        print(f"continuing MLflow run {run.run_id} of the interrupted driver", file=sys.stderr)
    try:
        run.log_dataset_manifest(target.manifest, "target")
        run.log_metrics(before, 0)
        result = run_training(job, target, storage, name, init_model=start_dir, recipe=recipe,
                              tracking=run.coordinates())
        chosen = final_model_dir(result.checkpoint_dir)  # the best validation evaluation's model
        write_tokenization(chosen, tokenization)  # as the text it was adapted on
        after = {"target_ppl_after": result.final.get("best_val_ppl", result.final["val_ppl"])}
        if source_dataset:
            after["source_ppl_after"] = held_out_ppl(str(chosen), source_dataset, job)
        run.log_metrics(after, int(result.final["step"]))
        run.log_curves(result.history)
        run.log_model(str(chosen))
        run.finish()
    except BaseException:
        run.finish("FAILED")
        raise
    faults.point("before_register")  # tests: the driver killed after the run finished, before registering
    outcome = register_run(run.run_id, registered_model, promote_anyway)  # its own step: `elmo register` can redo it
    return {**outcome, **before, **after, "run_id": run.run_id, "run_name": name, "metrics": result.final,
            "checkpoint_dir": result.checkpoint_dir}


def run(args: argparse.Namespace) -> int:
    from preprocessing.dataset import DatasetError

    try:
        outcome = adapt(job_config(args), args.source, args.registered_model, args.storage, args.address,
                        args.source_data, args.experiment, args.parent_run_id, run_name=args.run_name,
                        recipe=recipe_overrides(args), promote_anyway=args.promote_anyway)
    except (ValueError, DatasetError) as exc:
        print(f"elmo adapt: error: {exc}", file=sys.stderr)
        return 2
    if outcome.get("finished_before"):
        report_finished_job(outcome)
        write_summary_json(args.summary_json, outcome)
        return 0
    line = (f"target perplexity {outcome['target_ppl_before']:.2f} -> {outcome['target_ppl_after']:.2f}")
    if "source_ppl_after" in outcome:
        line += f"; source {outcome['source_ppl_before']:.2f} -> {outcome['source_ppl_after']:.2f}"
    print(f"{line}; registered {outcome['name']} version {outcome['version']}; {outcome['reason']}")
    print(f"final checkpoint: {outcome['checkpoint_dir']}")
    write_summary_json(args.summary_json, outcome)
    return 0


main = entry_point("elmo adapt", __doc__, add_arguments, run)


if __name__ == "__main__":
    sys.exit(main())
