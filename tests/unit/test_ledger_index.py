"""The ledger checkpoint's binary index (12 bytes an id, what a tick reads), and checkpoints written
before it (text index only) read and continued."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from preprocessing.storage import Storage
from workflows.embedding import ledger as ledger_module
from workflows.embedding.ledger import (CHECKPOINT_DIR, ENTRY_IDS, ENTRY_IDS_BINARY, FILE_IDS, FILE_IDS_BINARY, IdSet,
                                        Ledger, LedgerSettings, entry_id, file_identity)

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "ledger_d7b79fc"


def real(i: int, version: str = "m/1") -> dict:
    ident = {"uri": f"/in/{i}.txt", "size": i, "fingerprint": f"mtime_ns:{i}"}
    return {"entry_id": entry_id(ident, version, {}), "file_identity": file_identity(ident),
            "output": f"{version}/o{i}"}


def checkpoint(tmp_path: Path, seq: int) -> pq.ParquetFile:
    return pq.ParquetFile(tmp_path / CHECKPOINT_DIR / f"{seq:020d}.parquet")


def test_a_checkpoint_of_real_ids_holds_them_as_12_bytes_uncompressed_and_a_tick_reads_only_those(tmp_path):
    store = Storage(str(tmp_path))
    ledger = Ledger(store, LedgerSettings(checkpoint_every=2))
    entries = [real(i) for i in range(300)] + [real(5, "m/2")]  # one file identity under two model versions
    ledger.commit_group(entries[:200])
    ledger.commit_group(entries[200:])  # checkpoint at 2
    parquet = checkpoint(tmp_path, 2)
    table = parquet.read()
    assert table.column_names == ["seq", "entry", ENTRY_IDS, FILE_IDS, ENTRY_IDS_BINARY, FILE_IDS_BINARY]
    for text, binary in ((ENTRY_IDS, ENTRY_IDS_BINARY), (FILE_IDS, FILE_IDS_BINARY)):
        assert table.schema.field(binary).type == pa.binary(12)
        assert table.column(binary).to_pylist() == [bytes.fromhex(t) for t in table.column(text).to_pylist()]
    assert table.column(FILE_IDS_BINARY).to_pylist() == sorted(bytes.fromhex(e["file_identity"]) for e in entries)
    chunks = [parquet.metadata.row_group(0).column(c) for c in range(parquet.metadata.num_columns)]
    compression = {chunk.path_in_schema: chunk.compression for chunk in chunks}
    assert compression == {"seq": "ZSTD", "entry": "ZSTD", ENTRY_IDS: "ZSTD", FILE_IDS: "ZSTD",
                           ENTRY_IDS_BINARY: "UNCOMPRESSED", FILE_IDS_BINARY: "UNCOMPRESSED"}

    reader = Ledger(store)
    ids = reader.committed_ids()
    assert reader._checkpoint.column_names == [ENTRY_IDS_BINARY, FILE_IDS_BINARY]  # not the text, not the rows
    present = entries[7]["entry_id"]
    asked = [e["entry_id"] for e in entries] + [real(i)["entry_id"] for i in range(300, 310)] + [
        present.upper(), present[:-1], present + "0", " " + present[1:], "z" * 24, "", "é" * 24, "e0001"]
    assert list(ids.entry_ids.contains(asked)) == [True] * 301 + [False] * 18
    files = [e["file_identity"] for e in entries] + ["f0001"]
    assert list(ids.file_identities.contains(files)) == [True] * 301 + [False]
    assert set(ids.entry_ids) == {e["entry_id"] for e in entries} and len(ids.file_identities) == 300


def test_ids_not_made_by_entry_id_keep_a_text_index_only(tmp_path):
    store = Storage(str(tmp_path))
    ledger = Ledger(store, LedgerSettings(checkpoint_every=2))
    ledger.commit_group([real(i) for i in range(5)])
    ledger.commit({"entry_id": "e0001", "file_identity": "f0001", "output": "o"})  # checkpoint at 2
    assert checkpoint(tmp_path, 2).schema_arrow.names == ["seq", "entry", ENTRY_IDS, FILE_IDS]
    ids = Ledger(store).committed_ids()
    assert list(ids.entry_ids.contains([real(0)["entry_id"], "e0001", "e000", real(9)["entry_id"]])) == [
        True, True, False, False]


def test_hex_ids_to_12_bytes_and_back():
    raw = np.frombuffer(bytes(range(256)) * 3 + b"\x00" * 12 + b"\xff" * 12, dtype="S12")  # zero bytes at the ends too
    text = np.array([bytes(r).hex().encode() for r in raw.view(np.uint8).reshape(-1, 12)])
    assert ledger_module._binary_to_hex(raw).tolist() == text.tolist()
    binary, valid = ledger_module._hex_to_binary(text)
    assert valid.all() and binary.view(np.uint8).tolist() == raw.view(np.uint8).tolist()
    assert (np.sort(binary).view(np.uint8).reshape(-1, 12).tolist()
            == sorted(list(r) for r in raw.view(np.uint8).reshape(-1, 12)))  # the text's order, byte for byte
    _, valid = ledger_module._hex_to_binary(np.array([b"ab" * 12, b"AB" * 12, b"ab" * 11 + b"a", b"ab" * 12 + b"0",
                                                       b"g" * 24, b"ab" * 11 + b"a-"]))
    assert valid.tolist() == [True, False, False, False, False, False]
    binary_set = IdSet(np.sort(binary), binary=True)
    assert binary_set.contains([t.decode() for t in text.tolist()]).all()
    assert sorted(binary_set) == sorted(set(t.decode() for t in text.tolist()))


def test_a_ledger_written_before_the_binary_index_is_read_and_continued(tmp_path):
    """`tests/data/ledger_d7b79fc`: written by the ledger of d7b79fc (`make.py`; checkpoints at 3 and
    6 with the text index only, one log entry after them)."""
    spec = importlib.util.spec_from_file_location("make_fixture", FIXTURE / "make.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    shutil.copytree(FIXTURE / "_ledger", tmp_path / "_ledger")
    store = Storage(str(tmp_path))
    assert checkpoint(tmp_path, 6).schema_arrow.names == ["seq", "entry", ENTRY_IDS, FILE_IDS]
    committed = ([make.fixture_entry(i) for i in range(50)] + [make.fixture_entry(7, "m/2")]
                 + [make.fixture_entry(i) for i in range(50, 54)])
    seqs = [1] * 40 + [2] * 10 + [3, 4, 5, 6, 7]
    expected = [{**e, "seq": s} for e, s in zip(committed, seqs)]
    assert Ledger(store).entries() == expected
    reader = Ledger(store)
    ids = reader.committed_ids()
    assert reader._checkpoint_seq == 6 and reader._checkpoint.column_names == [ENTRY_IDS, FILE_IDS]
    asked = [e["entry_id"] for e in committed] + [make.fixture_entry(60)["entry_id"],
                                                   make.fixture_entry(7, "m/3")["entry_id"]]
    assert list(ids.entry_ids.contains(asked)) == [True] * 55 + [False] * 2
    assert list(ids.file_identities.contains([make.fixture_entry(7, "m/3")["file_identity"],
                                              make.fixture_entry(60)["file_identity"]])) == [True, False]

    # continued by this code: its first checkpoint (at 9) adds the binary index, from the text one
    writer = Ledger(store, LedgerSettings(checkpoint_every=3))
    writer.committed_ids()
    more = [make.fixture_entry(i) for i in range(60, 62)]
    assert [writer.commit(e) for e in more] == [8, 9]
    table = checkpoint(tmp_path, 9).read()
    assert table.column(ENTRY_IDS_BINARY).to_pylist() == sorted(
        bytes.fromhex(e["entry_id"]) for e in committed + more)
    assert table.column(FILE_IDS).to_pylist() == sorted(e["file_identity"] for e in committed + more)
    assert Ledger(store).entries() == expected + [{**e, "seq": s} for e, s in zip(more, (8, 9))]
    reader = Ledger(store)
    assert set(reader.committed_ids().entry_ids) == {e["entry_id"] for e in committed + more}
    assert reader._checkpoint.column_names == [ENTRY_IDS_BINARY, FILE_IDS_BINARY]


def test_the_tick_that_writes_a_checkpoint_reads_of_the_previous_one_only_what_it_lacks(tmp_path, monkeypatch):
    store = Storage(str(tmp_path))
    Ledger(store, LedgerSettings(checkpoint_every=2)).commit_group([real(i) for i in range(10)])
    Ledger(store, LedgerSettings(checkpoint_every=2)).commit_group([real(i) for i in range(10, 20)])  # checkpoint 2
    asked: list[tuple[int, str]] = []
    read_checkpoint = Ledger._read_checkpoint
    monkeypatch.setattr(Ledger, "_read_checkpoint", lambda self, seq, part, size=None: asked.append((seq, part)) or (
        read_checkpoint(self, seq, part, size)))
    tick = Ledger(store, LedgerSettings(checkpoint_every=2))
    tick.committed_ids()
    tick.commit(real(20))
    tick.commit(real(21))  # checkpoint at 4: the rows of 2 read now, its index was read by the tick
    assert asked == [(2, "index"), (2, "rows")]
    asked.clear()
    reader = Ledger(store, LedgerSettings(checkpoint_every=2))
    assert len(reader.entries()) == 22
    reader.commit(real(22))
    reader.commit(real(23))  # checkpoint at 6: the index of 4 now, its rows were read by `entries`
    assert asked == [(4, "rows"), (4, "index")]
    asked.clear()
    reader.commit(real(24))
    reader.commit(real(25))  # checkpoint at 8: everything of 6 is known (this object wrote it)
    assert asked == []
    assert [json.loads(t)["output"] for t in checkpoint(tmp_path, 8).read().column("entry").to_pylist()] == [
        f"m/1/o{i}" for i in range(26)]
    assert set(Ledger(store).committed_ids().entry_ids) == {real(i)["entry_id"] for i in range(26)}


def test_the_pointer_gives_the_checkpoints_size_and_a_wrong_one_is_not_trusted(tmp_path, monkeypatch):
    sizes: list[int | None] = []
    read_checkpoint = Ledger._read_checkpoint
    monkeypatch.setattr(Ledger, "_read_checkpoint", lambda self, seq, part, size=None: sizes.append(size) or (
        read_checkpoint(self, seq, part, size)))
    store = Storage(str(tmp_path))
    ledger = Ledger(store, LedgerSettings(checkpoint_every=2))
    ledger.commit_group([real(i) for i in range(10)])
    ledger.commit_group([real(i) for i in range(10, 20)])  # checkpoint at 2
    ledger.commit(real(20))
    pointer = json.loads(store.read(ledger_module.CHECKPOINT_POINTER))
    assert pointer == {"seq": 2, "files": 20, "bytes": (tmp_path / CHECKPOINT_DIR / f"{2:020d}.parquet").stat().st_size}
    expected = {real(i)["entry_id"] for i in range(21)}
    sizes.clear()
    assert set(Ledger(store).committed_ids().entry_ids) == expected and sizes == [pointer["bytes"]]
    for wrong in (pointer["bytes"] - 1, pointer["bytes"] + 100):  # read again at the listing's size
        store.write(ledger_module.CHECKPOINT_POINTER, json.dumps({**pointer, "bytes": wrong}).encode())
        sizes.clear()
        reader = Ledger(store)
        assert set(reader.committed_ids().entry_ids) == expected and reader._checkpoint_seq == 2
        assert sizes == [wrong, pointer["bytes"]]
    store.write(ledger_module.CHECKPOINT_POINTER, json.dumps({"seq": 2, "files": 20}).encode())  # as d7b79fc wrote it
    sizes.clear()
    assert set(Ledger(store).committed_ids().entry_ids) == expected and sizes == [pointer["bytes"]]


def test_a_tick_reads_one_index_column_and_commits_and_checkpoints_as_before(tmp_path):
    store = Storage(str(tmp_path))
    ledger = Ledger(store, LedgerSettings(checkpoint_every=2))
    entries = [real(i) for i in range(40)]
    ledger.commit_group(entries[:20])
    ledger.commit_group(entries[20:30])  # checkpoint at 2
    ledger.commit_group(entries[30:])  # in the tail after it
    for only, column, other, new in (("file_identities", FILE_IDS_BINARY, "entry_ids", real(100)),
                                     ("entry_ids", ENTRY_IDS_BINARY, "file_identities", real(101))):
        reader = Ledger(store, LedgerSettings(checkpoint_every=2))
        ids = reader.committed_ids(only=only)
        assert reader._checkpoint.column_names == [column] and getattr(ids, other) is None
        key = "file_identity" if only == "file_identities" else "entry_id"
        asked = [e[key] for e in entries] + [real(99)[key]]
        assert list(getattr(ids, only).contains(asked)) == [True] * len(entries) + [False]
        reader.commit(new)  # the first tick's commit (4) writes a checkpoint: rows and index read from 2
        entries = entries + [new]
    table = checkpoint(tmp_path, 4).read()
    assert sorted(json.loads(t)["entry_id"] for t in table.column("entry").to_pylist()) == sorted(
        e["entry_id"] for e in entries[:41])
    assert sorted(table.column(FILE_IDS).to_pylist()) == sorted(e["file_identity"] for e in entries[:41])
    assert set(Ledger(store).committed_ids().entry_ids) == {e["entry_id"] for e in entries}


def test_committed_ids_refuses_an_unknown_column(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="entry_ids"):
        Ledger(Storage(str(tmp_path))).committed_ids(only="entries")
