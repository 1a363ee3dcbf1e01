"""What `elmo embed-new` has embedded, and who may write: a commit log and a lease in OUT.

Modelled on Spark Structured Streaming's file sink log and Delta Lake's transaction log: the
commit is one atomic write of a log entry that names complete files, and readers trust only the
log; every few commits a checkpoint holds the whole log so far, so reading costs the same after
a hundred commits as after a million.

* **Ledger** ``OUT/_ledger/<seq>.json`` (``seq`` 20 digits): one log entry per commit,
  ``{"seq": n, "entries": [...]}``, naming one or more embedded input file versions (a *group
  commit*: `CommitGroups`). Each file's entry holds the input's identity (URI, size, fingerprint =
  S3 etag or local mtime), the model version and digest, the output settings, the output's path
  and counts. A log entry is created with `Storage.put_if_absent` under the next sequence number,
  *after* every output it names was published whole, so every entry names complete files. An
  output not named by an entry (a run killed between publishing and committing) is invisible to
  readers, and the rerun writes the same path again (paths are a function of the entry's
  identity) before committing it: one output per input, never two. Logs written before group
  commits (one file's entry per ``<seq>.json``, with its ``seq``) are read the same way.
* **Checkpoints** ``OUT/_ledger/_checkpoints/<seq>.parquet``: every ``checkpoint_every`` commits
  the committer writes (put-if-absent) one Parquet file holding every file entry up to ``seq``,
  the first per ``entry_id`` only (columns ``seq`` and ``entry``, the entry as JSON, in commit
  order; and an index: ``entry_ids_sorted`` and ``file_identities_sorted``, the same rows' ids each
  sorted on its own, not aligned with the rows, as text; and, when every id is 24 hex digits as
  `entry_id` and `file_identity` make them, the same two again as 12 bytes each, uncompressed:
  ``entry_ids_sorted_binary``, ``file_identities_sorted_binary``), then replaces the pointer
  ``OUT/_ledger/_last_checkpoint`` (``{"seq": n, "files": k, "bytes": size}``) and deletes
  checkpoints older than the previous one. A reader reads the pointer, lists ``_ledger/`` *after*
  the pointer's log name (S3 ``StartAfter``: the listing holds only the newer log entries and the
  few checkpoints), takes the newest checkpoint in it (a pointer left stale by a kill is corrected
  here; a missing pointer costs one full listing), and reads the log entries after that
  checkpoint; the checkpoint the pointer names is read meanwhile, in a second thread (its footer,
  then its columns: two requests, none for its size). A scheduler's tick reads only the two
  binary id columns (checkpoints written before them: the two text ones) and searches them as
  they are (`Ledger.committed_ids`: no decompression, no set of 100,000 strings built). The log
  entries themselves are never deleted: they are the record, and a lost checkpoint is rebuilt
  from them.
* **Lease** ``OUT/_lease/<epoch>.json``: one scheduler at a time. A scheduler takes epoch n+1
  with `put_if_absent` when epoch n is released or expired, so of two contenders exactly one wins;
  a crashed holder blocks others for at most ``ttl`` seconds (not at all on its own machine, where
  its process is seen to be gone). The winner deletes the epochs before n, so the folder holds two
  files, not one per run. The holder renews its own epoch in a background thread and, before
  every commit, checks that no later epoch exists (a listing that starts after its own) and that
  its lease has at least a quarter of ``ttl`` left.

What this relies on: atomic create-if-absent (``link(2)`` on a local filesystem, ``If-None-Match:
*`` PUTs on S3, which AWS S3 and SeaweedFS honour); atomic replacement of one file (rename, or
S3's whole-object PUT); clocks on the machines that run schedulers agreeing to well within
``ttl / 4`` (default ttl 120 s); a commit (one small PUT) taking less than that. Readers also keep
only the first entry per identity, so even a violated assumption cannot show an output twice.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from elmo_core.cli_fields import setting
from preprocessing.storage import Storage

LEDGER_DIR = "_ledger"
CHECKPOINT_DIR = f"{LEDGER_DIR}/_checkpoints"
CHECKPOINT_POINTER = f"{LEDGER_DIR}/_last_checkpoint"
LEASE_DIR = "_lease"
DEFAULT_TTL = 120.0
_LOG_NAME = re.compile(rf"{LEDGER_DIR}/(\d+)\.json")
_CHECKPOINT_NAME = re.compile(rf"{CHECKPOINT_DIR}/(\d+)\.parquet")
ENTRY_IDS, FILE_IDS = "entry_ids_sorted", "file_identities_sorted"  # a checkpoint's index columns (text)
ENTRY_IDS_BINARY, FILE_IDS_BINARY = f"{ENTRY_IDS}_binary", f"{FILE_IDS}_binary"  # the same, 12 bytes an id
_ID_COLUMNS = [ENTRY_IDS, FILE_IDS]
_BINARY_ID_COLUMNS = [ENTRY_IDS_BINARY, FILE_IDS_BINARY]
_ROW_COLUMNS = ["seq", "entry"]
ID_HEX_DIGITS = 24  # an `entry_id` or `file_identity`: 24 lowercase hex digits, 12 bytes in binary


@dataclass(frozen=True)
class LedgerSettings:
    """How the ledger is written (never what it says)."""

    # Delta Lake and Spark's file sink log checkpoint every 10 commits: a reader reads at most 9
    # small log entries beyond the checkpoint; a checkpoint rewrites the whole ledger (Parquet)
    checkpoint_every: int = setting(10, "commits between two ledger checkpoints", flag=False)
    group_max: int = setting(256, "most input files one ledger commit names (groups grow 1, 2, 4, ... up to it)",
                             flag=False)
    group_seconds: float = setting(5.0, "a published output waits at most about this long for its group's commit",
                                   flag=False)

    def __post_init__(self) -> None:
        if self.checkpoint_every < 1 or self.group_max < 1 or self.group_seconds < 0:
            raise ValueError("ledger settings: checkpoint_every and group_max >= 1, group_seconds >= 0")


def _seq_of(name: str) -> int:
    return int(name.rsplit("/", 1)[-1].split(".", 1)[0])


def _json_names(store: Storage, folder: str, start_after: str | None = None) -> list[str]:
    """The ``.json`` files in ``folder`` (after ``start_after``), sorted (a writer's temporary files are not)."""
    return [f.path for f in store.list(folder, start_after=start_after) if f.path.endswith(".json")]


def _dead_here(record: dict) -> bool:
    """The holder ran on this machine and its process is gone (killed): no need to wait for expiry."""
    if record.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(record["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, ValueError, TypeError):
        return False
    return False


class LeaseLost(Exception):
    """Another scheduler took over this OUT (our lease expired): stop before committing."""


@dataclass
class LeaseHeld:
    """Acquiring failed: who holds the lease, and for how long still."""

    owner: str
    host: str
    pid: int
    expires_in: float


class Lease:
    def __init__(self, store: Storage, epoch: int, record: dict, ttl: float) -> None:
        self.store, self.epoch, self.record, self.ttl = store, epoch, record, ttl
        self._stop = threading.Event()
        self._lost: str | None = None
        self._thread = threading.Thread(target=self._renew_loop, name="elmo-lease", daemon=True)
        self._thread.start()

    @classmethod
    def acquire(cls, store: Storage, ttl: float = DEFAULT_TTL) -> "Lease | LeaseHeld":
        """The lease, or who holds it."""
        epochs = sorted(_seq_of(n) for n in _json_names(store, LEASE_DIR))  # two, since old epochs are deleted
        latest = epochs[-1] if epochs else 0
        if latest:
            raw = store.read(f"{LEASE_DIR}/{latest:012d}.json")
            current = json.loads(raw) if raw else {"released": True}
            remaining = current.get("expires", 0) - time.time()
            if not current.get("released") and remaining > 0 and not _dead_here(current):
                return LeaseHeld(current["owner"], current["host"], current["pid"], remaining)
        record = {"owner": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(),
                  "acquired": time.time(), "expires": time.time() + ttl, "released": False}
        if not store.put_if_absent(f"{LEASE_DIR}/{latest + 1:012d}.json", json.dumps(record).encode()):
            raw = store.read(f"{LEASE_DIR}/{latest + 1:012d}.json") or b"{}"
            winner = json.loads(raw)
            return LeaseHeld(winner.get("owner", "?"), winner.get("host", "?"), winner.get("pid", 0),
                             winner.get("expires", 0) - time.time())
        for old in epochs[:-1]:  # keep the previous holder's epoch (and ours): the folder stays two files
            try:
                store.delete(f"{LEASE_DIR}/{old:012d}.json")
            except OSError as exc:  # left for the next winner
                print(f"[embed-new] could not delete lease epoch {old}: {exc}", flush=True)
        return cls(store, latest + 1, record, ttl)

    def _name(self, epoch: int) -> str:
        return f"{LEASE_DIR}/{epoch:012d}.json"

    def _superseded(self) -> bool:
        return bool(_json_names(self.store, LEASE_DIR, start_after=self._name(self.epoch)))

    def _renew(self) -> None:
        if self._superseded():
            self._lost = "a later lease epoch exists"
            return
        if time.time() > self.record["expires"]:
            self._lost = "the lease expired before it was renewed"
            return
        self.record["expires"] = time.time() + self.ttl
        self.store.write(self._name(self.epoch), json.dumps(self.record).encode())

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self._renew()
            except Exception as exc:  # a storage hiccup: the commit check decides
                print(f"[embed-new] lease renewal failed: {exc}", flush=True)
            if self._lost:
                return

    def check(self) -> None:
        """Raise `LeaseLost` unless this lease is still ours with at least ttl/4 to go."""
        if not self._lost and self.record["expires"] - time.time() < self.ttl / 2:
            self._renew()
        if not self._lost and self._superseded():
            self._lost = "a later lease epoch exists"
        if not self._lost and self.record["expires"] - time.time() < self.ttl / 4:
            self._lost = "too little of the lease is left to commit safely"
        if self._lost:
            raise LeaseLost(f"{self.store.uri}: lease epoch {self.epoch} lost ({self._lost}); stopping")

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if not self._lost and not self._superseded():
            self.record["released"] = True
            self.store.write(self._name(self.epoch), json.dumps(self.record).encode())


# ---------------------------------------------------------------------------------- ledger
def file_identity(input_dict: dict) -> str:
    """An input file version: its URI, size and fingerprint (etag or mtime)."""
    text = json.dumps([input_dict["uri"], input_dict["size"], input_dict["fingerprint"]])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def entry_id(input_dict: dict, model_version_key: str, settings: dict) -> str:
    """One output: an input file version embedded by one model version with one set of settings."""
    text = json.dumps([file_identity(input_dict), model_version_key, settings], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]



def _log_name(seq: int) -> str:
    return f"{LEDGER_DIR}/{seq:020d}.json"


def _checkpoint_name(seq: int) -> str:
    return f"{CHECKPOINT_DIR}/{seq:020d}.parquet"


def _file_entries(log_entry: dict | None) -> list[dict]:
    """The file entries of one log entry: a group (``{"seq", "entries"}``), or today's one file."""
    if not log_entry:
        return []
    if "entries" in log_entry:
        return [{**e, "seq": log_entry["seq"]} for e in log_entry["entries"]]
    return [log_entry]  # written before group commits: one file's entry, its "seq" inside


def _sorted_bytes(column) -> np.ndarray:
    """A checkpoint's sorted id column as a numpy array of fixed-width bytes (no copy when every id
    has the same length, as ours do)."""
    import pyarrow as pa

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(arr) == 0:
        return np.array([], dtype="S1")
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset:arr.offset + len(arr) + 1]
    width = int(offsets[1] - offsets[0])
    if pa.types.is_string(arr.type) and arr.null_count == 0 and width > 0 and (np.diff(offsets) == width).all():
        ids = np.frombuffer(arr.buffers()[2], dtype=f"S{width}", count=len(arr), offset=int(offsets[0]))
    else:
        ids = np.array([s.encode() for s in arr.to_pylist()])
    return ids


def _sorted_binary(column) -> np.ndarray:
    """A checkpoint's binary id column as a numpy array of 12-byte ids (``S12``; no copy when it is
    one row group, as up to a million files are)."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    if len(column) == 0:
        return np.array([], dtype=_BINARY)
    return np.frombuffer(column.buffers()[1], dtype=_BINARY, count=len(column), offset=column.offset * _BINARY_WIDTH)


_BINARY_WIDTH = ID_HEX_DIGITS // 2
_BINARY = f"S{_BINARY_WIDTH}"
_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_NIBBLES = np.full(256, 255, dtype=np.uint8)  # an ASCII byte's value as a hex digit; 255: not one
_NIBBLES[_HEX_DIGITS] = np.arange(16, dtype=np.uint8)


def _hex_to_binary(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ids as text (numpy ``S``, n) -> their 12 bytes (``S12``, n) and whether each is 24 lowercase
    hex digits (bool, n; where not, its 12 bytes mean nothing)."""
    n, width = len(ids), ids.dtype.itemsize
    if width < ID_HEX_DIGITS:
        return np.zeros(n, dtype=_BINARY), np.zeros(n, dtype=bool)
    chars = np.ascontiguousarray(ids).view(np.uint8).reshape(n, width)
    nibbles = _NIBBLES[chars[:, :ID_HEX_DIGITS]]
    valid = (nibbles < 16).all(axis=1) & (chars[:, ID_HEX_DIGITS:] == 0).all(axis=1)
    packed = (nibbles[:, 0::2] << 4) | (nibbles[:, 1::2] & 15)
    return packed.view(_BINARY).reshape(n), valid


def _binary_to_hex(ids: np.ndarray) -> np.ndarray:
    """12-byte ids (``S12``, n) -> their 24 lowercase hex digits (``S24``, n)."""
    raw = np.ascontiguousarray(ids).view(np.uint8).reshape(len(ids), _BINARY_WIDTH)
    digits = np.empty((len(ids), ID_HEX_DIGITS), dtype=np.uint8)
    digits[:, 0::2], digits[:, 1::2] = _HEX_DIGITS[raw >> 4], _HEX_DIGITS[raw & 15]
    return digits.view(f"S{ID_HEX_DIGITS}").reshape(len(ids))


def _merged(sorted_ids: np.ndarray, more: list[str]) -> np.ndarray:
    """Sorted ids as text (numpy ``S``) with ``more`` put in their places (duplicates kept)."""
    if not more:
        return sorted_ids
    added = np.sort(np.array([k.encode() for k in more]))
    width = max(sorted_ids.dtype.itemsize, added.dtype.itemsize)
    base, added = sorted_ids.astype(f"S{width}", copy=False), added.astype(f"S{width}", copy=False)
    return np.insert(base, np.searchsorted(base, added), added)


def _text_array(ids: np.ndarray):
    """Ids as text (numpy ``S``) -> a pyarrow string array (on their bytes, when every id is as wide
    as the array, as ours are)."""
    import pyarrow as pa

    n, width = len(ids), ids.dtype.itemsize
    chars = np.ascontiguousarray(ids).view(np.uint8).reshape(n, width)
    if n and n * width < 2**31 and (chars[:, -1] != 0).all():
        offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))
    return pa.array([b.decode() for b in ids.tolist()], pa.string())


def _binary_array(ids: np.ndarray):
    """12-byte ids (``S12``) -> a pyarrow ``fixed_size_binary(12)`` array."""
    import pyarrow as pa

    data = pa.py_buffer(np.ascontiguousarray(ids).tobytes())
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(_BINARY_WIDTH), len(ids), [None, data])


class IdSet:
    """A set of ids: a checkpoint's (sorted, binary-searched; sorted here if they are not), as text
    (each id's bytes) or ``binary`` (each id's 24 hex digits as 12 bytes), and those committed after it."""

    def __init__(self, sorted_ids: np.ndarray | None = None, binary: bool = False) -> None:
        ids = np.array([], dtype="S1") if sorted_ids is None else sorted_ids
        self._sorted = ids if (ids[:-1] <= ids[1:]).all() else np.sort(ids)
        self._binary = binary
        self._more: set[str] = set()

    def add(self, key: str) -> None:
        self._more.add(key)

    def contains(self, keys: list[str]) -> np.ndarray:
        """For each of ``keys``, whether it is in the set (a bool array)."""
        found = np.fromiter((k in self._more for k in keys), dtype=bool, count=len(keys))
        if len(self._sorted) and len(keys):
            wanted = np.array([k.encode() for k in keys])
            if self._binary:  # a key that is not 24 hex digits is not among them
                ids, (wanted, valid) = self._sorted, _hex_to_binary(wanted)
            else:
                width = max(wanted.itemsize, self._sorted.itemsize)  # no id cut to the other's width
                ids = self._sorted if self._sorted.itemsize == width else self._sorted.astype(f"S{width}")
                wanted, valid = wanted.astype(f"S{width}"), True
            at = np.minimum(np.searchsorted(ids, wanted), len(ids) - 1)
            found |= (ids[at] == wanted) & valid
        return found

    def sorted_text(self) -> np.ndarray:
        """The checkpoint's ids as text (numpy ``S``), sorted; not those added after it."""
        return _binary_to_hex(self._sorted) if self._binary else self._sorted

    def __contains__(self, key: str) -> bool:
        return bool(self.contains([key])[0])

    def __iter__(self):
        yield from dict.fromkeys([b.decode() for b in self.sorted_text().tolist()] + sorted(self._more))

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _index_sets(table) -> tuple[IdSet | None, IdSet | None]:
    """A checkpoint's index as (entry ids, file identities): its binary columns, or where it has none
    (written before them, or ids not made by `entry_id`) its text columns; None for a column that
    was not read (`Ledger.committed_ids`'s ``only``)."""
    names = table.column_names
    binary = ENTRY_IDS_BINARY in names or FILE_IDS_BINARY in names
    return tuple((IdSet(_sorted_binary(table.column(b)), binary=True) if binary else
                  IdSet(_sorted_bytes(table.column(t)))) if (b if binary else t) in names else None
                 for b, t in zip(_BINARY_ID_COLUMNS, _ID_COLUMNS))


def _has_index(table) -> bool:
    """Whether ``table`` (what was read of a checkpoint) holds both index columns."""
    names = set(table.column_names)
    return set(_BINARY_ID_COLUMNS) <= names or set(_ID_COLUMNS) <= names


@dataclass
class CommittedIds:
    """What a scheduler needs to know of the ledger: which outputs and which input file versions
    are committed (by any model version)."""

    entry_ids: IdSet | None = field(default_factory=IdSet)  # None: not read (`Ledger.committed_ids`)
    file_identities: IdSet | None = field(default_factory=IdSet)


class Ledger:
    """The commit log of one OUT (see the module docstring). An object remembers what it read, and
    its commits add to that: a scheduler reads the ledger once a tick, then only writes."""

    def __init__(self, store: Storage, settings: LedgerSettings = LedgerSettings()) -> None:
        self.store, self.settings = store, settings
        self._checkpoint_seq = 0  # the checkpoint read (0: none)
        self._checkpoint = None  # what was read of it (a pyarrow Table): its rows, its index, or both
        self._checkpoints_seen: list[int] = []  # the checkpoints the last listing found
        self._checkpoint_sizes: dict[int, int] = {}  # their sizes (what the listing said; or what this object wrote)
        self._tail: list[dict] = []  # the file entries committed after the checkpoint, in order
        self._last_seq: int | None = None  # the newest log entry known (None: not read yet)

    # ------------------------------------------------------------------ reading
    def entries(self) -> list[dict]:
        """Committed file entries in commit order, the first per ``entry_id`` only."""
        self._read("rows")
        out = [] if self._checkpoint is None else [json.loads(t) for t in self._checkpoint.column("entry").to_pylist()]
        seen = {e["entry_id"] for e in out}  # a checkpoint holds each id once
        for entry in self._tail:
            if entry["entry_id"] not in seen:
                seen.add(entry["entry_id"])
                out.append(entry)
        return out

    def committed_ids(self, only: str | None = None) -> CommittedIds:
        """The committed entry ids and file identities (a tick's question; reads only the checkpoint's
        index: its two binary id columns, 12 bytes a file each). With ``only`` ("entry_ids" or
        "file_identities") just that column is read, and the other is None: a tick needs one of
        them (`workflows.embedding.embed_new.run_once`), half the bytes."""
        if only not in (None, *CommittedIds.__dataclass_fields__):
            raise ValueError(f"committed_ids(only={only!r}): one of {list(CommittedIds.__dataclass_fields__)}")
        self._read("index" if only is None else f"index:{only}")
        entry_ids, file_ids = (IdSet(), IdSet()) if self._checkpoint is None else _index_sets(self._checkpoint)
        if only == "entry_ids":
            file_ids = None
        elif only == "file_identities":
            entry_ids = None
        tail = [e["entry_id"] for e in self._tail]
        # a tail entry already in the checkpoint adds nothing; without the entry ids, adding it is harmless
        in_checkpoint = entry_ids.contains(tail) if entry_ids is not None else np.zeros(len(tail), bool)
        for entry, known in zip(self._tail, in_checkpoint):
            if not known:
                if entry_ids is not None:
                    entry_ids.add(entry["entry_id"])
                if file_ids is not None:
                    file_ids.add(entry["file_identity"])
        return CommittedIds(entry_ids, file_ids)

    def _read(self, part: str) -> None:
        """Read the newest checkpoint (its ``part``: "rows", "index" or "index:<column>", `_read_checkpoint`) and the log
        entries after it. The checkpoint is read in a second thread while the listing (for the one
        the pointer names) and the log entries are: its requests overlap theirs."""
        pointer = self.store.read_json(CHECKPOINT_POINTER) or {}
        pointed = pointer.get("seq") or 0
        after = _log_name(pointed) if pointed else None
        self.store.fs  # noqa: B018 - the client is made here, not in two threads at once
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="elmo-ledger") as pool:
            reading = {}  # seq: its read under way (for a pointer written without the size: after the listing)
            if pointed and pointer.get("bytes"):
                reading[pointed] = pool.submit(self._read_checkpoint, pointed, part, pointer["bytes"])
            listed = self.store.list(LEDGER_DIR, start_after=after)
            names = [f.path for f in listed]
            self._checkpoint_sizes = {int(m.group(1)): f.size for f in listed
                                      if (m := _CHECKPOINT_NAME.fullmatch(f.path))}
            self._checkpoints_seen = sorted(self._checkpoint_sizes)
            newest = self._checkpoints_seen[-1] if self._checkpoints_seen else 0
            if newest and newest >= pointed:  # as a tick finds it: the listing holds every log entry after it
                if newest not in reading or pointer["bytes"] != self._checkpoint_sizes[newest]:  # the pointer is behind
                    reading[newest] = pool.submit(self._read_checkpoint, newest, part, self._checkpoint_sizes[newest])
                tail, last = self._read_log(names, newest)
                table = reading[newest].result()
                if table is not None:
                    self._checkpoint_seq, self._checkpoint, self._tail, self._last_seq = newest, table, tail, last
                    return
        # no checkpoint, the pointer's is gone, or the newest cannot be read (pruned after the listing,
        # or unreadable): the newest of the others that can be read, or the log alone
        self._checkpoint_seq, self._checkpoint = 0, None
        for seq in reversed(self._checkpoints_seen):
            if seq == newest and newest >= pointed:
                continue  # tried above
            table = self._read_checkpoint(seq, part, self._checkpoint_sizes[seq])
            if table is not None:
                self._checkpoint_seq, self._checkpoint = seq, table
                break
        if after and self._checkpoint_seq < pointed:  # the pointer's checkpoint is gone: list from ours
            start = _log_name(self._checkpoint_seq) if self._checkpoint_seq else None
            names = [f.path for f in self.store.list(LEDGER_DIR, start_after=start)]
        self._tail, self._last_seq = self._read_log(names, self._checkpoint_seq)

    def _read_log(self, names: list[str], after: int) -> tuple[list[dict], int]:
        """The file entries of the log entries among ``names`` numbered after ``after``, and the
        newest number (``after`` if none)."""
        logs = sorted(seq for n in names if (m := _LOG_NAME.fullmatch(n)) and (seq := int(m.group(1))) > after)
        entries = [e for seq in logs for e in _file_entries(self.store.read_json(_log_name(seq)))]
        return entries, logs[-1] if logs else after

    def _read_checkpoint(self, seq: int, part: str, size: int | None = None):
        """``part`` of checkpoint ``seq``, a pyarrow Table: "rows" (``seq``, ``entry``), "index" (the
        binary id columns; in a checkpoint without them, the text ones) or "index:entry_ids" /
        "index:file_identities" (one of them). None if it cannot be read. Given its ``size`` in
        bytes, no request asks for it."""
        import pyarrow as pa
        import pyarrow.dataset as ds

        try:  # not whole: the footer, then the columns asked for, in one request
            fragment = ds.ParquetFileFormat().make_fragment(self.store.path(_checkpoint_name(seq)), self.store.fs,
                                                           file_size=size)
            names = fragment.physical_schema.names
            columns = (_ROW_COLUMNS if part == "rows" else
                       _BINARY_ID_COLUMNS if ENTRY_IDS_BINARY in names else _ID_COLUMNS)
            if part.startswith("index:"):  # one of the two: "index:entry_ids" or "index:file_identities"
                columns = columns[:1] if part == "index:entry_ids" else columns[1:]
            return fragment.to_table(columns=columns) if set(columns) <= set(names) else None
        except (OSError, pa.ArrowException):  # gone (pruned after the listing) or unreadable: an older one, or the log
            return None

    # ------------------------------------------------------------------ writing
    def commit(self, entry: dict) -> int:
        """Append one file's ``entry``; returns its sequence number."""
        return self.commit_group([entry])

    def commit_group(self, entries: list[dict]) -> int:
        """Append one log entry naming ``entries`` (each file's entry) under the next free sequence
        number, found from what this object read (reading the ledger first if it has not: the
        newest checkpoint and a listing after it); returns the number. Every ``checkpoint_every``
        commits, writes a checkpoint too."""
        if not entries:
            raise ValueError("a commit names at least one file")
        if self._last_seq is None:
            self._read("index")
        seq = self._last_seq + 1
        while not self.store.put_if_absent(_log_name(seq), json.dumps({"seq": seq, "entries": entries},
                                                                      sort_keys=True).encode()):
            self._tail += _file_entries(self.store.read_json(_log_name(seq)))  # another writer's commit
            seq += 1
        self._tail += [{**e, "seq": seq} for e in entries]
        self._last_seq = seq
        if seq - self._checkpoint_seq >= self.settings.checkpoint_every:
            self.write_checkpoint()
        return seq

    def write_checkpoint(self) -> None:
        """Write a checkpoint of everything this object knows up to its newest log entry, point to
        it, and delete the checkpoints before the previous one. Killed at any moment, the ledger
        reads the same: the checkpoint is created whole (put-if-absent) before the pointer moves,
        and readers take the newest checkpoint they list, whatever the pointer says. Of the previous
        checkpoint it reads what this object has not read yet: its rows, or its index."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._last_seq is None:
            self._read("index")
        seq, previous = self._last_seq, self._checkpoint_seq
        if seq <= previous:
            return
        rows = index = None
        if self._checkpoint is not None:
            known = self._checkpoint.column_names
            size = self._checkpoint_sizes.get(previous)
            rows = self._checkpoint if "entry" in known else self._read_checkpoint(previous, "rows", size)
            index = self._checkpoint if _has_index(self._checkpoint) else (
                self._read_checkpoint(previous, "index", size))
            if rows is None or index is None:  # pruned meanwhile (another writer): read it all again
                self._read("index")
                return self.write_checkpoint()
        entry_ids, file_ids = (IdSet(), IdSet()) if index is None else _index_sets(index)
        in_checkpoint = entry_ids.contains([e["entry_id"] for e in self._tail])
        new, seen = [], set()
        for entry, known_before in zip(self._tail, in_checkpoint):  # the first per entry_id
            if not known_before and entry["entry_id"] not in seen:
                seen.add(entry["entry_id"])
                new.append(entry)
        entry_text = _merged(entry_ids.sorted_text(), [e["entry_id"] for e in new])
        file_text = _merged(file_ids.sorted_text(), [e["file_identity"] for e in new])
        seqs = pa.array([e["seq"] for e in new], pa.int64())
        texts = pa.array([json.dumps(e, sort_keys=True) for e in new], pa.string())
        columns = {
            "seq": seqs if rows is None else pa.chunked_array(rows.column("seq").chunks + [seqs]),
            "entry": texts if rows is None else pa.chunked_array(rows.column("entry").chunks + [texts]),
            ENTRY_IDS: _text_array(entry_text), FILE_IDS: _text_array(file_text)}
        (entry_binary, entry_hex), (file_binary, file_hex) = _hex_to_binary(entry_text), _hex_to_binary(file_text)
        if entry_hex.all() and file_hex.all():  # ids as `entry_id` and `file_identity` make them
            columns |= {ENTRY_IDS_BINARY: _binary_array(entry_binary), FILE_IDS_BINARY: _binary_array(file_binary)}
        table = pa.table(columns)
        buffer = io.BytesIO()
        pq.write_table(table, buffer, use_dictionary=False,  # unique strings: no dictionary
                       compression={n: "none" if n in _BINARY_ID_COLUMNS else "zstd" for n in table.column_names})
        pointer = {"seq": seq, "files": table.num_rows}
        if self.store.put_if_absent(_checkpoint_name(seq), buffer.getvalue()):  # taken: the same rows, an earlier try's
            self._checkpoint_sizes[seq] = pointer["bytes"] = buffer.tell()
        self.store.write(CHECKPOINT_POINTER, json.dumps(pointer).encode())
        for old in self._checkpoints_seen:
            if old < previous:
                self.store.delete(_checkpoint_name(old))
        self._checkpoints_seen = [s for s in (previous, seq) if s]
        self._checkpoint_seq, self._checkpoint, self._tail = seq, table, []


class CommitGroups:
    """Group commits: outputs published one by one, committed a group per log entry. The rule:
    the first commit of a run names 1 file, each next one twice as many as the one before (1, 2,
    4, ...) up to ``group_max``; a group is also committed as soon as a file arrives when its
    oldest file has waited ``group_seconds``, and by `flush` (the end of a run). So the first
    files of a run are committed at once, as one-file commits were, a kill loses at most a group
    of published outputs (embedded again by the next run, under the same names), and a backlog of
    small files costs one commit per up to ``group_max`` files instead of one per file.

    With ``prepare``, what is added are items (embed-new: complete files, not published yet) that
    wait unpublished; when their group is due, ``prepare(items)`` returns their entries (embed-new
    publishes the group's outputs there, several at once), then the group is committed. Either
    way an entry is committed only after ``prepare`` returned it: its output is published whole."""

    def __init__(self, ledger: Ledger, before_commit: Callable[[], None] = lambda: None,
                 after_commit: Callable[[], None] = lambda: None,
                 prepare: Callable[[list], list[dict]] | None = None) -> None:
        self.ledger, self.before_commit, self.after_commit, self.prepare = ledger, before_commit, after_commit, prepare
        self.waiting: list = []  # with ``prepare``: items not prepared yet
        self.pending: list[dict] = []  # entries ready to commit
        self.size = 1
        self._oldest = 0.0

    def add(self, item) -> list[dict]:
        """Add the entry of a published output (or, with ``prepare``, an item); returns the entries
        this call committed ([]: none)."""
        if not self.pending and not self.waiting:
            self._oldest = time.monotonic()
        (self.waiting if self.prepare else self.pending).append(item)
        if (len(self.waiting) + len(self.pending) >= self.size
                or time.monotonic() - self._oldest >= self.ledger.settings.group_seconds):
            return self.flush()
        return []

    def flush(self) -> list[dict]:
        """Prepare the items waiting, then commit the files waiting (``before_commit`` first: the
        lease check); returns them."""
        if self.waiting:
            items, self.waiting = self.waiting, []  # prepared once: if that fails, the next run does them
            self.pending += self.prepare(items)
        if not self.pending:
            return []
        group = self.pending
        self.before_commit()
        self.ledger.commit_group(group)
        self.pending = []
        self.size = min(2 * self.size, self.ledger.settings.group_max)
        self.after_commit()
        return group


def committed_outputs(out: str) -> list[dict]:
    """For readers: every output `embed-new` committed under ``out``, in commit order, with
    ``output_uri`` (a Parquet folder: ``pq.read_table`` reads its rows in line order; or an HDF5
    file) and ``part_uris`` (Parquet: the parts in line order; entries written before parts name
    one file, the output itself)."""
    store = Storage(out)
    return [{**e, "output_uri": store.uri_of(e["output"]),
             "part_uris": [store.uri_of(p["path"]) for p in e.get("parts") or [{"path": e["output"]}]]}
            for e in Ledger(store).entries()]
