"""`embed-new`'s ledger on a local folder: checkpoints, group commits, logs written before them,
what a reader does when a kill left the pointer behind, and lease epochs that do not pile up."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from preprocessing.storage import Storage
from workflows.embedding.ledger import (CHECKPOINT_DIR, CHECKPOINT_POINTER, LEASE_DIR, LEDGER_DIR, CommitGroups, Lease,
                                        LeaseLost, Ledger, LedgerSettings, committed_outputs)


def entry(i: int, eid: str | None = None) -> dict:
    return {"entry_id": eid or f"e{i:04d}", "file_identity": f"f{i:04d}", "output": f"v1/in{i}.parquet", "rows": i}


def listing(store: Storage, folder: str) -> list[str]:
    return [f.path for f in store.list(folder)]


class CountingStorage(Storage):
    """Counts reads (GETs) and listings."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.reads = self.lists = 0

    def read(self, rel):
        self.reads += 1
        return super().read(rel)

    def list(self, rel="", start_after=None):
        self.lists += 1
        return super().list(rel, start_after)


def test_checkpoints_every_k_commits_and_a_reader_reads_only_what_follows(tmp_path):
    store = Storage(str(tmp_path))
    ledger = Ledger(store, LedgerSettings(checkpoint_every=3))
    seqs = [ledger.commit(entry(i)) for i in range(1, 8)]
    assert seqs == list(range(1, 8))
    assert listing(store, CHECKPOINT_DIR) == [f"{CHECKPOINT_DIR}/{3:020d}.parquet", f"{CHECKPOINT_DIR}/{6:020d}.parquet"]
    assert json.loads(store.read(CHECKPOINT_POINTER))["seq"] == 6
    expected = [{**entry(i), "seq": i} for i in range(1, 8)]
    assert Ledger(store).entries() == expected
    # the reader reads the pointer and the one log entry after checkpoint 6, nothing before it
    counting = CountingStorage(str(tmp_path))
    ids = Ledger(counting).committed_ids()
    assert set(ids.entry_ids) == {f"e{i:04d}" for i in range(1, 8)} and len(ids.file_identities) == 7
    assert "e0003" in ids.entry_ids and "e0007" in ids.entry_ids and "e000" not in ids.entry_ids
    assert list(ids.file_identities.contains(["f0001", "f0007", "f0008", "f00011"])) == [True, True, False, False]
    assert (counting.reads, counting.lists) == (2, 1)
    for seq in range(1, 7):  # the log before the checkpoint is not needed to read the ledger
        os.unlink(tmp_path / LEDGER_DIR / f"{seq:020d}.json")
    assert Ledger(store).entries() == expected
    # two more checkpoints: the ones before the previous are deleted
    for i in range(8, 13):
        ledger.commit(entry(i))
    assert [p.rsplit("/", 1)[1] for p in listing(store, CHECKPOINT_DIR)] == [f"{9:020d}.parquet", f"{12:020d}.parquet"]
    assert [e["entry_id"] for e in Ledger(store).entries()] == [f"e{i:04d}" for i in range(1, 13)]


def test_a_commit_finds_its_number_from_the_checkpoint_without_listing_the_log(tmp_path):
    Ledger(Storage(str(tmp_path)), LedgerSettings(checkpoint_every=5)).commit_group([entry(i) for i in range(1, 3)])
    store = Storage(str(tmp_path))
    writer = Ledger(store, LedgerSettings(checkpoint_every=5))
    for i in range(3, 13):
        writer.commit(entry(i))  # seqs 2..11: a checkpoint at 6 and at 11
    counting = CountingStorage(str(tmp_path))
    fresh = Ledger(counting, LedgerSettings(checkpoint_every=5))
    assert fresh.commit(entry(13)) == 12
    assert counting.lists == 1  # one listing, after the checkpoint's log name
    assert [f.path for f in store.list(LEDGER_DIR, start_after=f"{LEDGER_DIR}/{11:020d}.json")
            if f.path.endswith(".json")] == [f"{LEDGER_DIR}/{12:020d}.json"]


def test_a_missing_or_stale_pointer_or_a_lost_checkpoint_reads_the_same(tmp_path):
    store = Storage(str(tmp_path))
    ledger = Ledger(store, LedgerSettings(checkpoint_every=4))
    for i in range(1, 11):
        ledger.commit(entry(i))  # checkpoints at 4 and 8
    expected = Ledger(store).entries()
    assert len(expected) == 10
    # killed between writing checkpoint 8 and moving the pointer: the pointer still says 4
    store.write(CHECKPOINT_POINTER, json.dumps({"seq": 4}).encode())
    counting = CountingStorage(str(tmp_path))
    assert Ledger(counting).entries() == expected
    assert counting.reads == 3  # pointer, log 9 and 10: checkpoint 8 was found by the listing after 4
    # no pointer at all (killed before the first one was written, or deleted)
    os.unlink(tmp_path / CHECKPOINT_POINTER)
    assert Ledger(store).entries() == expected
    # a half-written checkpoint (a kill while writing it leaves only a temporary file) is ignored
    (tmp_path / CHECKPOINT_DIR / f"{12:020d}.parquet.0123.tmp").write_bytes(b"PAR1 cut")
    assert Ledger(store).entries() == expected
    # an unreadable newest checkpoint: the previous one and the log after it
    (tmp_path / CHECKPOINT_DIR / f"{8:020d}.parquet").write_bytes(b"not parquet")
    assert Ledger(store).entries() == expected
    # every checkpoint gone: the log alone
    for name in os.listdir(tmp_path / CHECKPOINT_DIR):
        os.unlink(tmp_path / CHECKPOINT_DIR / name)
    store.write(CHECKPOINT_POINTER, json.dumps({"seq": 8}).encode())
    assert Ledger(store).entries() == expected
    # and the next checkpoint is written whole again from the log
    writer = Ledger(store, LedgerSettings(checkpoint_every=4))
    writer.commit(entry(11))
    assert json.loads(store.read(CHECKPOINT_POINTER))["seq"] == 11
    for seq in range(1, 12):
        os.unlink(tmp_path / LEDGER_DIR / f"{seq:020d}.json")
    assert Ledger(store).entries() == expected + [{**entry(11), "seq": 11}]


def test_group_commits_are_one_log_entry_read_as_one_dict_per_file(tmp_path):
    store = Storage(str(tmp_path))
    ledger = Ledger(store, LedgerSettings(checkpoint_every=2))
    assert ledger.commit_group([entry(1)]) == 1
    assert ledger.commit_group([entry(i) for i in range(2, 6)]) == 2  # checkpoint at 2
    assert ledger.commit_group([entry(6), entry(7)]) == 3
    assert len([p for p in listing(store, LEDGER_DIR) if p.endswith(".json")]) == 3
    entries = Ledger(store).entries()
    assert [e["entry_id"] for e in entries] == [f"e{i:04d}" for i in range(1, 8)]
    assert [e["seq"] for e in entries] == [1, 2, 2, 2, 2, 3, 3]
    assert json.loads(store.read(f"{LEDGER_DIR}/{3:020d}.json")) == {"seq": 3, "entries": [entry(6), entry(7)]}
    with pytest.raises(ValueError):
        ledger.commit_group([])


def test_duplicate_entry_ids_keep_the_first_in_the_log_the_checkpoint_and_after_it(tmp_path):
    store = Storage(str(tmp_path))
    ledger = Ledger(store, LedgerSettings(checkpoint_every=3))
    ledger.commit(entry(1))
    ledger.commit_group([entry(2), {**entry(9), "entry_id": "e0001"}])  # a duplicate inside a group
    ledger.commit(entry(3))  # checkpoint at 3
    ledger.commit({**entry(8), "entry_id": "e0002"})  # a duplicate after the checkpoint
    entries = Ledger(store).entries()
    assert [(e["entry_id"], e["rows"]) for e in entries] == [("e0001", 1), ("e0002", 2), ("e0003", 3)]
    assert set(Ledger(store).committed_ids().file_identities) == {"f0001", "f0002", "f0003"}


def test_a_log_written_before_checkpoints_and_groups_is_read_and_continued(tmp_path):
    store = Storage(str(tmp_path))
    old = [{**entry(i), "seq": i} for i in range(1, 6)] + [{**entry(6, eid="e0002"), "seq": 6}]
    for e in old:  # exactly what the one-file-a-commit ledger wrote: the entry with its seq, no pointer
        store.put_if_absent(f"{LEDGER_DIR}/{e['seq']:020d}.json", json.dumps(e, sort_keys=True).encode())
    os.makedirs(tmp_path / LEASE_DIR)
    assert Ledger(store).entries() == old[:5]  # the later duplicate of e0002 is dropped, as before
    (tmp_path / "out").mkdir()
    assert [e["output_uri"] for e in committed_outputs(str(tmp_path))] == [store.uri_of(e["output"]) for e in old[:5]]
    ledger = Ledger(store, LedgerSettings(checkpoint_every=4))
    assert ledger.commit(entry(7)) == 7  # 7 commits since no checkpoint: one is written now
    assert json.loads(store.read(CHECKPOINT_POINTER))["seq"] == 7
    assert Ledger(store).entries() == old[:5] + [{**entry(7), "seq": 7}]


def test_two_writers_never_take_the_same_number_and_a_commit_learns_the_others(tmp_path):
    store = Storage(str(tmp_path))
    first, second = Ledger(store, LedgerSettings(checkpoint_every=3)), Ledger(store, LedgerSettings(checkpoint_every=3))
    first.committed_ids(), second.committed_ids()
    assert first.commit(entry(1)) == 1
    assert second.commit(entry(2)) == 2  # 1 was taken: the next one, and the other's entry is now known
    assert first.commit(entry(3)) == 3  # and a checkpoint that holds all three
    assert [e["entry_id"] for e in Ledger(store).entries()] == ["e0001", "e0002", "e0003"]
    os.unlink(tmp_path / LEDGER_DIR / f"{2:020d}.json")
    assert [e["entry_id"] for e in Ledger(store).entries()] == ["e0001", "e0002", "e0003"]


def test_groups_double_up_to_the_cap_and_flush_early_after_a_wait(tmp_path, monkeypatch):
    store = Storage(str(tmp_path))
    ledger = Ledger(store, LedgerSettings(checkpoint_every=100, group_max=4, group_seconds=60))
    calls = []
    groups = CommitGroups(ledger, before_commit=lambda: calls.append("check"), after_commit=lambda: calls.append("done"))
    committed = [len(groups.add(entry(i))) for i in range(1, 13)]
    # groups of 1, 2, 4, then 4 (the cap): a file arrives, its group is committed when it is full
    assert committed == [1, 0, 2, 0, 0, 0, 4, 0, 0, 0, 4, 0]
    assert calls == ["check", "done"] * 4
    assert [len(g) for g in (groups.pending,)] == [1] and len(groups.flush()) == 1 and groups.flush() == []
    assert [e["seq"] for e in Ledger(store).entries()] == [1, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5]
    # a file that waited group_seconds has its group committed when the next one arrives
    clock = iter([0.0, 10.0, 30.0, 61.0])  # the first file arrives (and is checked), the second, the third
    monkeypatch.setattr("workflows.embedding.ledger.time.monotonic", lambda: next(clock))
    later = CommitGroups(ledger)
    later.size = 4
    assert [len(later.add(entry(i))) for i in (20, 21, 22)] == [0, 0, 3]
    monkeypatch.undo()
    # a failed lease check commits nothing
    def lost():
        raise LeaseLost("gone")
    failing = CommitGroups(ledger, before_commit=lost)
    with pytest.raises(LeaseLost):
        failing.add(entry(30))
    assert "e0030" not in Ledger(store).committed_ids().entry_ids


def test_old_lease_epochs_are_deleted_and_a_later_epoch_is_seen(tmp_path):
    store = Storage(str(tmp_path))
    for n in range(1, 6):
        lease = Lease.acquire(store, ttl=60)
        assert isinstance(lease, Lease) and lease.epoch == n
        lease.release()
    assert listing(store, LEASE_DIR) == [f"{LEASE_DIR}/{4:012d}.json", f"{LEASE_DIR}/{5:012d}.json"]
    lease = Lease.acquire(store, ttl=60)
    assert lease.epoch == 6 and len(listing(store, LEASE_DIR)) == 2
    lease.check()
    store.write(f"{LEASE_DIR}/{7:012d}.json", b"{}")  # another scheduler's later epoch
    with pytest.raises(LeaseLost):
        lease.check()
    lease.release()


def test_listing_after_a_name(tmp_path):
    store = Storage(str(tmp_path))
    for name in ("a/1.json", "a/2.json", "a/b/3.json", "a/2.json.x.tmp", "c.json"):
        store.write(name, b"x")
    assert [f.path for f in store.list("a", start_after="a/2.json")] == ["a/2.json.x.tmp", "a/b/3.json"]
    assert [f.path for f in store.list("a", start_after="a/0")] == ["a/1.json", "a/2.json", "a/2.json.x.tmp", "a/b/3.json"]
    assert [f.path for f in store.list("", start_after="a/b")] == ["a/b/3.json", "c.json"]


def test_a_tick_searches_the_checkpoints_sorted_ids_without_building_sets(tmp_path):
    import pyarrow.parquet as pq

    from workflows.embedding.ledger import ENTRY_IDS, FILE_IDS, IdSet, entry_id, file_identity

    def real(i: int) -> dict:
        ident = {"uri": f"/in/{i}.txt", "size": i, "fingerprint": f"mtime_ns:{i}"}
        return {"entry_id": entry_id(ident, "m/1", {}), "file_identity": file_identity(ident), "output": f"o{i}"}

    store = Storage(str(tmp_path))
    ledger = Ledger(store, LedgerSettings(checkpoint_every=2))
    entries = [real(i) for i in range(300)]
    ledger.commit_group(entries[:200])
    ledger.commit_group(entries[200:299])  # checkpoint at 2
    ledger.commit(entries[299])
    table = pq.read_table(tmp_path / CHECKPOINT_DIR / f"{2:020d}.parquet")
    assert table.column(ENTRY_IDS).to_pylist() == sorted(e["entry_id"] for e in entries[:299])
    assert table.column(FILE_IDS).to_pylist() == sorted(e["file_identity"] for e in entries[:299])
    assert [json.loads(t)["output"] for t in table.column("entry").to_pylist()] == [f"o{i}" for i in range(299)]
    ids = Ledger(store).committed_ids()
    asked = [e["entry_id"] for e in entries] + [entries[5]["entry_id"][:-1], entries[5]["entry_id"] + "0", "z" * 24]
    assert list(ids.entry_ids.contains(asked)) == [True] * 300 + [False] * 3
    assert all(e["file_identity"] in ids.file_identities for e in entries) and len(ids.file_identities) == 300
    unsorted = IdSet(np.array([b"c", b"a", b"b"]))  # an index not sorted (not ours) is searched all the same
    assert list(unsorted.contains(["a", "b", "c", "d"])) == [True, True, True, False]
