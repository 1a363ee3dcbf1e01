"""``elmo register``: put a finished training run's model in the registry, its own step (MLflow's
registry workflow). `elmo pretrain` and `elmo adapt` end with it; run it yourself to register a
run's model under another name, to finish a registration that failed, or to re-gate a version.

    elmo register RUN_ID --registered-model NAME

A run whose model already is a version of NAME gets no second version: its tags are set again
and the gate is applied to it again (e.g. after the champion alias was removed or the champion
version deleted).

Everything the version is tagged with comes from the run: ``val_ppl`` (pretraining: the best
held-out perplexity; adaptation: the target domain's after adapting), ``data_manifest``,
``heldout_digest`` (the held-out split it was measured on), ``vocab_digest``, ``training_mode``,
``eval_mode``, ``eval_max_sentences``, ``tokenizer`` and ``language`` (how its training text was
tokenized: the model folder's ``tokenization.json`` says the same), ``run_id``; pretraining also ``test_ppl*`` (with
``--evaluate-test``), adaptation ``parent_model``. Then the gate: alias ``candidate`` to the version, and
``champion`` only if there is none, or if its ``val_ppl`` beats the champion's and both were measured on
the same held-out data, vocabulary and evaluation mode (``--promote-anyway``: also when they were not).
The gate's decision, in one line, is printed and kept as the version's ``gate`` tag (`tracking.gate`).
"""

from __future__ import annotations

import argparse
import sys

from preprocessing.entry_point import entry_point

from workflows.registry.comparability import evaluation_tags


def registration_tags(run) -> dict:
    """The version's tags, read from an MLflow run (`mlflow.entities.Run`) of `elmo pretrain` or
    `elmo adapt`."""
    metrics, tags, params = run.data.metrics, run.data.tags, run.data.params
    stage = tags.get("stage")
    if stage == "pretrain":
        val_ppl = metrics.get("best_val_ppl", metrics.get("val_ppl"))
        out = {"data_manifest": tags.get("data.train.version"), "heldout_digest": tags.get("data.train.heldout_digest"),
               "tokenizer": tags.get("data.train.tokenizer"), "language": tags.get("data.train.language"),
               **{k: round(v, 3) for k, v in metrics.items() if k.startswith("test_ppl")}}
    elif stage == "adapt":
        val_ppl = metrics.get("target_ppl_after")
        out = {"parent_model": tags.get("parent_model"), "data_manifest": tags.get("data.target.version"),
               "heldout_digest": tags.get("data.target.heldout_digest"),
               "tokenizer": tags.get("data.target.tokenizer"), "language": tags.get("data.target.language")}
    else:
        raise ValueError(f"run {run.info.run_id} is not an `elmo pretrain` or `elmo adapt` run (tag stage={stage!r})")
    if val_ppl is None:
        raise ValueError(f"run {run.info.run_id} has no held-out perplexity to gate on")
    return {"val_ppl": val_ppl, "vocab_digest": tags.get("vocab_digest"), "run_id": run.info.run_id,
            "training_mode": params.get("job.mode"), **evaluation_tags(params), **out}


def register_run(run_id: str, registered_model: str, promote_anyway: bool = False) -> dict:
    """Register the model run ``run_id`` logged as a new version of ``registered_model`` (or, if
    the run already has a version there, tag that one again) and gate it (``promote_anyway``: see
    `tracking.gate`); returns `tracking.gate`'s outcome plus ``already_registered``."""
    from workflows.registry import tracking

    run = tracking.get_run(run_id)
    if run.info.status != "FINISHED":
        raise ValueError(f"run {run_id} is {run.info.status}: only a finished run's model is registered")
    model_uri = run.data.tags.get(tracking.MODEL_URI_TAG)
    if not model_uri:
        raise ValueError(f"run {run_id} logged no model (no {tracking.MODEL_URI_TAG} tag)")
    tags = registration_tags(run)
    existing = tracking.version_of_run(registered_model, run_id)
    if existing is None:
        return {**tracking.register(model_uri, registered_model, tags, promote_anyway), "already_registered": False}
    tracking.set_version_tags(registered_model, existing, tags)
    return {**tracking.gate(registered_model, existing, promote_anyway), "already_registered": True}


def ensure_registered(run_id: str, registered_model: str, promote_anyway: bool = False) -> dict:
    """Run ``run_id``'s version of ``registered_model`` as the gate left it, changing nothing, if the
    gate has seen it (`tracking.gated_version`, ``already_registered``: True); else `register_run`:
    a registration a killed driver left undone (or half done) is done once."""
    from workflows.registry import tracking

    gated = tracking.gated_version(registered_model, run_id)
    if gated is not None:
        return {**gated, "already_registered": True}
    return register_run(run_id, registered_model, promote_anyway)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_id", metavar="RUN_ID", help="a finished `elmo pretrain` / `elmo adapt` MLflow run")
    p.add_argument("--registered-model", required=True, metavar="NAME",
                   help="the MLflow registered model to add the run's model to as a version")
    add_promote_anyway(p)


def add_promote_anyway(p: argparse.ArgumentParser) -> None:
    """``--promote-anyway`` (`elmo register`, `elmo pretrain`, `elmo adapt`)."""
    p.add_argument("--promote-anyway", action="store_true",
                   help="make the new version champion even when the champion's val_ppl was measured on other "
                        "held-out data, vocabulary or evaluation mode (not comparable: the gate keeps the champion)")


def run(args: argparse.Namespace) -> int:
    try:
        outcome = register_run(args.run_id, args.registered_model, args.promote_anyway)
    except ValueError as exc:
        print(f"elmo register: error: {exc}", file=sys.stderr)
        return 2
    how = "already registered as" if outcome["already_registered"] else "registered"
    print(f"{how} {outcome['name']} version {outcome['version']} (val_ppl {outcome['val_ppl']:.2f}); "
          f"{outcome['reason']}")
    return 0


main = entry_point("elmo register", __doc__, add_arguments, run)


if __name__ == "__main__":
    sys.exit(main())
