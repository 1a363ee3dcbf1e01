"""The integration tier's shared servers, each started once per session by the first test that
asks for it and stopped at the end: an S3 server, an `mlflow server` (the model registry) and a
local Ray. Tests keep to their own buckets, registered-model names and output folders, so sharing
changes nothing a test sees; it saves each module starting (and stopping) its own."""

from __future__ import annotations

import os

import pytest

from infra.local import local_services
from tests.helpers.random_inputs import seeded

# How often Ray Train checks its workers: a killed worker is noticed within 0.2 s, not 2 s
TRAIN_HEALTH_CHECK_S = "0.2"


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """A real S3 server on 127.0.0.1: (client environment, boto3 client); None where no server
    binary is installed."""
    if local_services.s3_available() is None:
        yield None
        return
    with local_services.s3_server(tmp_path_factory.mktemp("s3")) as (_, env, client):
        yield env, client


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> str:
    """The URI of a real ``mlflow server`` on 127.0.0.1 (sqlite store, artifacts on local disk)."""
    with local_services.mlflow_server(tmp_path_factory.mktemp("mlflow")) as server:
        yield server.address


@pytest.fixture(scope="session")
def register_tiny(mlflow_server, tmp_path_factory):
    """``register_tiny(name, seed, val_ppl, experiment, run_name="tiny", tokenization=None)``: a tiny
    biLM with seeded random weights, saved as a native checkpoint, logged as one run of
    ``experiment`` on the shared server (recording ``tokenization``, an
    `elmo_core.tokenization.Tokenization`, if given) and registered as the next version of ``name`` through the gate. Returns the gate's
    answer (``version``, ``promoted``, ...) with ``model`` (the biLM, in eval mode), ``dir`` (the
    checkpoint) and ``model_uri`` (the logged model)."""
    import mlflow

    from elmo_core.bilm import BiLM
    from elmo_core.config import BiLMConfig
    from elmo_core.weights import save_model_folder
    from workflows.registry.tracking import TrackedRun, register

    root = tmp_path_factory.mktemp("registered")

    def register_one(name: str, seed: int, val_ppl: float, experiment: str, run_name: str = "tiny",
                     tokenization=None) -> dict:
        model = seeded(BiLM(BiLMConfig.preset("tiny")), seed=seed).eval()
        directory = root / f"{name}-{seed}"
        save_model_folder(model, directory)
        previous = os.environ.get("MLFLOW_TRACKING_URI")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
            try:
                run = TrackedRun(experiment, run_name, {"preset": "tiny"}, {})
                model_uri = run.log_model(str(directory), tokenization)
                run.finish()
                answer = register(model_uri, name, {"val_ppl": val_ppl})
            finally:
                mlflow.set_tracking_uri(previous)  # TrackedRun set mlflow's global URI to this server
        return {**answer, "model": model, "dir": directory, "model_uri": model_uri}

    return register_one


@pytest.fixture(scope="session")
def actor_fault(tmp_path_factory):
    """While this file exists, one embedding actor takes it and is killed (`workflows.faults`): a
    test that wants one actor killed writes it."""
    return tmp_path_factory.mktemp("fault") / "kill-one-actor"


@pytest.fixture(scope="session")
def cluster(s3, actor_fault):
    """A local Ray in this process (4 CPUs: 2 training workers plus Ray Data's readers; the
    dashboard, for the state API), whose workers see the S3 server's settings (as a cluster's
    nodes would have them) and the actor fault file's path. Yields its GCS address."""
    ray = pytest.importorskip("ray")
    from workflows.faults import FAULT_ENV

    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", TRAIN_HEALTH_CHECK_S)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in (s3[0] if s3 else {}).items():
            mp.setenv(key, value)
        mp.setenv(FAULT_ENV, f"embed_actor:{actor_fault}")
        ray.init(num_cpus=4, include_dashboard=True, dashboard_host="127.0.0.1", logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
