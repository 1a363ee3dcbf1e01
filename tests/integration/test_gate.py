"""The champion gate against a real ``mlflow server`` (the session's): a version takes ``champion``
only from a version whose ``val_ppl`` was measured on the same held-out data, vocabulary and
evaluation mode; otherwise ``candidate`` only, the reason in one line (returned, printed, and kept
as the version's ``gate`` tag), and ``--promote-anyway`` overrides. Model versions are created
straight from empty runs (no model is logged): the gate reads only tags and aliases. Also: a
training report's step, epoch, num_workers and num_nodes are run tags, not metrics."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from workflows.registry import tracking

TAGS = {"val_ppl": "40.0", "heldout_digest": "h" * 64, "vocab_digest": "v" * 64, "eval_mode": "sentence",
        "eval_max_sentences": "20000", "data_manifest": "d" * 64}


@pytest.fixture
def client(mlflow_server, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    return mlflow.MlflowClient(mlflow_server)


def new_version(client, name: str, tags: dict) -> str:
    """A version of ``name`` with ``tags``, from an empty run (what the gate sees of a registration)."""
    experiment = client.get_experiment_by_name("gate-tests")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("gate-tests")
    run = client.create_run(experiment_id)
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    return client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
                                       tags=tags).version


def aliases(client, name: str) -> dict:
    return dict(client.get_registered_model(name).aliases)


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_a_better_comparable_version_takes_champion(client):
    name = fresh("gate-same")
    assert tracking.gate(name, new_version(client, name, TAGS))["promoted"]
    outcome = tracking.gate(name, new_version(client, name, {**TAGS, "val_ppl": "30.0"}))
    assert outcome["promoted"] and outcome["comparable"] and outcome["previous_champion"] == 1
    assert aliases(client, name) == {"champion": "2", "candidate": "2"}
    assert client.get_model_version(name, "2").tags["gate"] == outcome["reason"]
    worse = tracking.gate(name, new_version(client, name, {**TAGS, "val_ppl": "35.0"}))
    assert not worse["promoted"] and worse["comparable"]
    assert aliases(client, name) == {"champion": "2", "candidate": "3"}


@pytest.mark.parametrize("differs,what", [
    ({"heldout_digest": "g" * 64}, "held-out data differs"),  # easier held-out text
    ({"vocab_digest": "w" * 64}, "vocabulary differs"),  # a smaller vocabulary
    ({"eval_mode": "stream (10 rows)"}, "evaluation mode differs"),  # stream instead of sentence mode
    ({"eval_max_sentences": "500"}, "held-out sentences evaluated differs"),
])
def test_a_lower_val_ppl_measured_otherwise_stays_candidate(client, differs, what):
    name = fresh("gate-differs")
    new_version(client, name, TAGS)
    tracking.gate(name, "1")
    outcome = tracking.gate(name, new_version(client, name, {**TAGS, **differs, "val_ppl": "10.0"}))
    assert not outcome["promoted"] and outcome["comparable"] is False and what in outcome["reason"]
    assert aliases(client, name) == {"champion": "1", "candidate": "2"}
    assert client.get_model_version(name, "2").tags["gate"] == outcome["reason"]
    forced = tracking.gate(name, "2", promote_anyway=True)
    assert forced["promoted"] and "--promote-anyway" in forced["reason"]
    assert aliases(client, name) == {"champion": "2", "candidate": "2"}


def test_a_champion_registered_before_the_rule_is_comparable_with_nothing(client):
    """A champion tagged by older code (val_ppl, data_manifest, vocab_digest, training_mode only)
    is kept even by a much better new version, which says why and can be promoted explicitly."""
    name = fresh("gate-old")
    old = {"val_ppl": "40.0", "data_manifest": "d" * 64, "vocab_digest": "v" * 64, "training_mode": "sentence"}
    new_version(client, name, old)
    client.set_registered_model_alias(name, "champion", "1")  # as the old gate left it
    outcome = tracking.gate(name, new_version(client, name, {**TAGS, "val_ppl": "5.0"}))
    assert not outcome["promoted"] and "version 1 has no heldout_digest tag" in outcome["reason"]
    assert aliases(client, name) == {"champion": "1", "candidate": "2"}
    assert tracking.gate(name, "2", promote_anyway=True)["promoted"]


def finished_training_run(client, experiment: str, manifest: dict, val_ppl: float, mode: str = "sentence") -> str:
    """A finished `elmo pretrain` run as the driver leaves it (tags, job params, dataset manifest,
    best_val_ppl), its model URI pointing at an artifact of the run."""
    params = {"job.mode": mode, "job.eval_max_sentences": 20000, "job.eval_stream_rows": 10}
    run = tracking.TrackedRun(experiment, fresh("run"), params, {"stage": "pretrain", "vocab_digest": "v" * 64})
    run.log_dataset_manifest(manifest, "train")
    run.log_metrics({"best_val_ppl": val_ppl}, 8)
    client.log_text(run.run_id, "{}", "model/MLmodel")
    client.set_tag(run.run_id, tracking.MODEL_URI_TAG, f"runs:/{run.run_id}/model")
    run.finish()
    return run.run_id


def test_registration_tags_the_heldout_data_and_the_command_prints_why(client, mlflow_server, tmp_path):
    from tests.unit.test_gate_rule import manifest
    from workflows.registry.comparability import heldout_digest
    from workflows.registry.register import register_run

    name, experiment = fresh("gate-runs"), fresh("gate-runs")
    first = register_run(finished_training_run(client, experiment, manifest(), 40.0), name)
    assert first["promoted"]
    tags = client.get_model_version(name, "1").tags
    assert tags["heldout_digest"] == heldout_digest(manifest())
    assert (tags["eval_mode"], tags["eval_max_sentences"], tags["training_mode"]) == ("sentence", "20000", "sentence")
    # another corpus: its held-out text is other text, and easier
    other = manifest()
    other["inputs"][0]["sha256"] = "another corpus"
    run_id = finished_training_run(client, experiment, other, 20.0)
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    cli = [sys.executable, "-m", "elmo_cli", "register", run_id, "--registered-model", name]
    kept = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=300)
    assert kept.returncode == 0, kept.stderr[-2000:]
    assert kept.stdout.count("\n") == 1 and "candidate only" in kept.stdout and "held-out data differs" in kept.stdout
    assert aliases(client, name) == {"champion": "1", "candidate": "2"}
    forced = subprocess.run([*cli, "--promote-anyway"], env=env, capture_output=True, text=True, timeout=300)
    assert forced.returncode == 0 and "promoted to champion by --promote-anyway" in forced.stdout, forced.stderr[-2000:]
    assert aliases(client, name) == {"champion": "2", "candidate": "2"}
    # stream mode on the same data is not compared with sentence mode either
    stream = register_run(finished_training_run(client, experiment, other, 10.0, mode="stream"), name)
    assert not stream["promoted"] and "evaluation mode differs" in stream["reason"]
    assert client.get_model_version(name, "3").tags["eval_mode"] == "stream (10 rows)"


def test_step_epoch_and_placement_are_run_tags_not_metrics(client):
    run_id = client.create_run(client.create_experiment(fresh("report-tags"))).info.run_id
    tracker = tracking.WorkerTracker({"tracking_uri": tracking.tracking_uri(), "run_id": run_id})
    tracker.log({"step": 10, "epoch": 0, "num_workers": 2, "num_nodes": 2, "train_loss": 4.5,
                 "learning_rate": 0.2}, 10)
    tracker.log({"step": 20, "epoch": 1, "num_workers": 2, "num_nodes": 2, "train_loss": 4.0,
                 "learning_rate": 0.2}, 20)
    data = client.get_run(run_id).data
    assert data.metrics == {"train_loss": 4.0, "learning_rate": 0.2}
    assert {k: data.tags[k] for k in ("step", "epoch", "num_workers", "num_nodes")} == {
        "step": "20", "epoch": "1", "num_workers": "2", "num_nodes": "2"}  # the latest report's
    assert [m.step for m in client.get_metric_history(run_id, "train_loss")] == [10, 20]
    assert data.params == {}
