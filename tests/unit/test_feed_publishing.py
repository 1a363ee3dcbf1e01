"""A backlog of small files through `embed-new` without a cluster: complete files wait unpublished
until their commit group is due, then are published together and committed (`CommitGroups`'
``prepare``); a small part reaches an object store in one request; s3:// inputs share one client."""

from __future__ import annotations

import hashlib
import io
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from preprocessing.storage import Storage
from workflows.embedding.ledger import CommitGroups, LeaseLost, Ledger, LedgerSettings


def entry(i: int) -> dict:
    return {"entry_id": f"e{i:04d}", "file_identity": f"f{i:04d}", "output": f"v1/in{i}.parquet"}


def test_items_wait_unpublished_until_their_group_is_due_then_are_published_before_the_commit(tmp_path):
    store = Storage(str(tmp_path))
    ledger = Ledger(store, LedgerSettings(checkpoint_every=100, group_max=4, group_seconds=60))
    events = []

    def publish(items):
        events.append(("publish", list(items)))
        assert not set(items) & {e["entry_id"] for e in Ledger(store).entries()}  # none committed yet
        return [entry(i) for i in items]

    groups = CommitGroups(ledger, before_commit=lambda: events.append("check"),
                          after_commit=lambda: events.append("done"), prepare=publish)
    committed = [[e["entry_id"] for e in groups.add(i)] for i in range(1, 9)]
    # groups of 1, 2, 4 (the cap), then one waiting: published only when its group is due
    assert committed == [["e0001"], [], ["e0002", "e0003"], [], [], [], ["e0004", "e0005", "e0006", "e0007"], []]
    assert events == [("publish", [1]), "check", "done", ("publish", [2, 3]), "check", "done",
                      ("publish", [4, 5, 6, 7]), "check", "done"]
    assert groups.waiting == [8] and groups.pending == []
    assert [e["entry_id"] for e in groups.flush()] == ["e0008"] and groups.flush() == []
    assert [e["seq"] for e in Ledger(store).entries()] == [1, 2, 2, 3, 3, 3, 3, 4]


def test_a_group_whose_publishing_failed_or_whose_lease_is_lost_is_not_committed(tmp_path):
    store = Storage(str(tmp_path))
    ledger = Ledger(store, LedgerSettings(checkpoint_every=100, group_max=4, group_seconds=60))

    def broken(items):
        raise OSError("copy failed")

    groups = CommitGroups(ledger, prepare=broken)
    with pytest.raises(OSError):
        groups.add(1)
    assert groups.waiting == [] and groups.flush() == []  # not published again in this run

    def lost():
        raise LeaseLost("gone")

    published = []
    groups = CommitGroups(ledger, before_commit=lost, prepare=lambda items: published.extend(items) or
                          [entry(i) for i in items])
    with pytest.raises(LeaseLost):
        groups.add(2)
    with pytest.raises(LeaseLost):  # the published entry is still only committed after a lease check
        groups.flush()
    assert published == [2] and Ledger(store).entries() == []


class ObjectStore:
    """An object store's Storage as `write_part` sees it: whole-object writes, counted."""

    local = False

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.streams = 0

    def write(self, rel: str, data: bytes) -> None:
        self.objects[rel] = data

    def open_output(self, rel: str):
        self.streams += 1
        return pa.BufferOutputStream()


def test_a_small_part_goes_to_an_object_store_in_one_write_with_its_checksum():
    from workflows.embedding.output import SMALL_PART_BYTES, write_part

    store = ObjectStore()
    rows = pa.table({"line": [1, 2, 3]})
    written = write_part(store, "_tmp/d.part-1.parquet", rows, {"part": 1})
    data = store.objects["_tmp/d.part-1.parquet"]
    assert store.streams == 0 and written == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert pq.read_table(io.BytesIO(data)).column("line").to_pylist() == [1, 2, 3]
    big = pa.table({"x": pa.array(range(SMALL_PART_BYTES // 8 + 1), pa.int64())})
    streamed = write_part(store, "_tmp/d.part-2.parquet", big, {})  # a large part streams
    assert store.streams == 1 and "_tmp/d.part-2.parquet" not in store.objects and streamed["bytes"] > 0


def test_s3_inputs_are_opened_through_one_client_per_process(monkeypatch):
    import boto3
    import smart_open

    from preprocessing import sources

    made, opened = [], []
    monkeypatch.setattr(sources, "_S3_CLIENTS", {})
    monkeypatch.setattr(boto3, "client", lambda service: made.append(service) or object())
    monkeypatch.setattr(smart_open, "open", lambda uri, mode, compression, transport_params: opened.append(
        transport_params.get("client")))
    threads = [threading.Thread(target=sources.open_input, args=(f"s3://b/f{i}.txt",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sources.open_input("/local/file.txt")
    assert made == ["s3"] and len(opened) == 9 and len({id(c) for c in opened[:8]}) == 1 and opened[8] is None


def test_publishing_with_the_callers_listing_removes_the_strays_it_names(tmp_path):
    from workflows.embedding.output import write_part
    from workflows.embedding.parts import publish_parts, staging_path
    from workflows.embedding.pipeline import FileResult
    from preprocessing.sources import InputFile

    store = Storage(str(tmp_path))
    schema = pa.schema([("line", pa.int64())])
    staged = staging_path("digest", 1, 0)
    part = {"staged": staged, "name": staged.split(".", 1)[1], "first_line": 1, "last_line": 2, "rows": 2,
            "tokens": 0, **write_part(store, staged, pa.table({"line": [1, 2]}, schema=schema), {})}
    stray = "o.parquet/part-0000000005-00000000.parquet"
    write_part(store, stray, pa.table({"line": [5]}, schema=schema), {})
    result = FileResult(InputFile("/in/o", "o", 1, "f"), "ok", parts=[part], description={}, schema=schema)
    copies = []
    published = publish_parts(store, result, "o.parquet", existing=[stray], staged_copies=copies)
    assert [p["path"] for p in published] == ["o.parquet/" + part["name"]]
    assert pq.read_table(tmp_path / "o.parquet").column("line").to_pylist() == [1, 2]  # the stray is gone
    assert copies == [] and not (tmp_path / staged).exists()  # a local store moves (a rename)
    assert store.list_range("", "a", "z", limit=10) is None  # local: the caller lists folder by folder
