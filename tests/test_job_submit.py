"""`ray job submit` through the Jobs API against a real 2-node cluster on 127.0.0.1 (a head from
`ray start --head` and a second node joined with `ray start --address`): preprocessing, a smoke
pretraining with one DDP worker per node that registers a model, then embedding with that model
from the registry (batch, and scheduled)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest

from elmo_core.sample_text import pydoc_sentences
from processes import free_ports

BIN = os.path.dirname(sys.executable)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("head")
    gcs, dashboard, client = free_ports(3)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}
    start = subprocess.run(
        [os.path.join(BIN, "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--ray-client-server-port={client}",
         "--num-cpus=2", "--disable-usage-stats"], env=env, capture_output=True, text=True, timeout=120)
    assert start.returncode == 0, start.stderr[-2000:]
    node = subprocess.run(
        [os.path.join(BIN, "ray"), "start", f"--address=127.0.0.1:{gcs}", "--node-ip-address=127.0.0.1",
         "--num-cpus=2", "--disable-usage-stats"], env=env, capture_output=True, text=True, timeout=120)
    try:
        assert node.returncode == 0, node.stderr[-2000:]
        yield f"http://127.0.0.1:{dashboard}", env, tmp
    finally:
        subprocess.run([os.path.join(BIN, "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)


def submit(address: str, env: dict, runtime_env: dict, *entrypoint: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [os.path.join(BIN, "ray"), "job", "submit", "--address", address, "--runtime-env-json",
         json.dumps(runtime_env), "--", *entrypoint], env=env, capture_output=True, text=True, timeout=900, cwd=REPO)


def test_preprocess_and_pretrain_as_ray_jobs(head):
    address, env, tmp = head
    corpus = tmp / "corpus"
    corpus.mkdir()
    (corpus / "pydoc.txt").write_text("".join(" ".join(s) + "\n" for s in pydoc_sentences(limit=300)))
    runtime_env = {"env_vars": {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db", "RAY_AUTH_MODE": "disabled",
                                "PYTHONPATH": REPO}}
    pre = submit(address, env, runtime_env, sys.executable, "-m", "workflows.preprocess", str(corpus),
                 "--output", str(tmp / "data"), "--tokenizer", "whitespace", "--min-count", "1")
    assert pre.returncode == 0 and "succeeded" in pre.stdout.lower(), pre.stdout[-3000:] + pre.stderr[-2000:]
    assert (tmp / "data" / "manifest.json").exists()
    train = submit(address, env, runtime_env, sys.executable, "-m", "workflows.pretrain", "--data", str(tmp / "data"),
                   "--registered-model", "smoke", "--preset", "tiny", "--max-steps", "2", "--batch-tokens", "800",
                   "--num-workers", "2", "--placement-strategy", "STRICT_SPREAD", "--storage", str(tmp / "ray_results"))
    assert train.returncode == 0 and "succeeded" in train.stdout.lower(), train.stdout[-3000:] + train.stderr[-2000:]
    assert "registered smoke version 1" in train.stdout
    with sqlite3.connect(tmp / "mlflow.db") as db:
        aliases = db.execute("select alias, version from registered_model_aliases where name='smoke'").fetchall()
        nodes = db.execute("select value from metrics where key='num_nodes'").fetchall()
        workers = db.execute("select value from metrics where key='num_workers'").fetchall()
    assert sorted(aliases) == [("candidate", 1), ("champion", 1)]
    assert nodes and {v for (v,) in nodes} == {2.0} and {v for (v,) in workers} == {2.0}  # one worker per node

    # the registered model embeds the corpus: a batch job, then the scheduler (nothing new the second time)
    embed = submit(address, env, runtime_env, sys.executable, "-m", "workflows.embed", str(corpus),
                   "--model", "models:/smoke@champion", "--output", str(tmp / "emb"), "--tokenizer", "whitespace",
                   "--num-actors", "2")
    assert embed.returncode == 0 and "succeeded" in embed.stdout.lower(), embed.stdout[-3000:] + embed.stderr[-2000:]
    manifest = json.loads((tmp / "emb" / "_manifest.json").read_text())
    assert manifest["model_version"] == "smoke/1" and manifest["sentences"] == 300
    for _ in range(2):
        new = submit(address, env, runtime_env, sys.executable, "-m", "workflows.schedule", str(corpus),
                     "--model", "models:/smoke@champion", "--output", str(tmp / "emb-new"), "--tokenizer", "whitespace")
        assert new.returncode == 0 and "succeeded" in new.stdout.lower(), new.stdout[-3000:] + new.stderr[-2000:]
    assert "0 to embed" in new.stdout + new.stderr  # the second run: nothing new
    from workflows.ledger import committed_outputs

    (entry,) = committed_outputs(str(tmp / "emb-new"))
    assert entry["model_version"] == "smoke/1" and entry["sentences"] == 300
