"""What `elmo embed-new` has embedded, and who may write: a commit log and a lease in OUT.

Modelled on Spark Structured Streaming's file sink log and Delta Lake's transaction log: the
commit is one atomic write of a log entry that names a complete file, and readers trust only the
log.

* **Ledger** ``OUT/_ledger/<seq>.json``: one entry per embedded input file version: the input's
  identity (URI, size, fingerprint = S3 etag or local mtime), the model version and digest, the
  output settings, the output's path and counts. An entry is created with `Storage.put_if_absent`
  under the next sequence number, *after* its output was published whole, so every entry names a
  complete file. An output file not named by an entry (a run killed between publishing and
  committing) is invisible to readers, and the rerun writes the same path again (paths are a
  function of the entry's identity) before committing it: one output per input, never two.
* **Lease** ``OUT/_lease/<epoch>.json``: one scheduler at a time. A scheduler takes epoch n+1
  with `put_if_absent` when epoch n is released or expired, so of two contenders exactly one wins;
  a crashed holder blocks others for at most ``ttl`` seconds (not at all on its own machine, where
its process is seen to be gone). The holder renews its own epoch in
  a background thread and, before every commit, checks that no later epoch exists and that its
  lease has at least a quarter of ``ttl`` left.

What this relies on: atomic create-if-absent (``link(2)`` on a local filesystem, ``If-None-Match:
*`` PUTs on S3, which AWS S3 and SeaweedFS honour); atomic replacement of one file (rename, or
S3's whole-object PUT); clocks on the machines that run schedulers agreeing to well within
``ttl / 4`` (default ttl 120 s); a commit (one small PUT) taking less than that. Readers also keep
only the first entry per identity, so even a violated assumption cannot show an output twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass

from preprocessing.storage import Storage

LEDGER_DIR = "_ledger"
LEASE_DIR = "_lease"
DEFAULT_TTL = 120.0


def _seq_of(name: str) -> int:
    return int(name.rsplit("/", 1)[-1].split(".", 1)[0])


def _json_names(store: Storage, folder: str) -> list[str]:
    """The ``.json`` files in ``folder``, sorted (a writer's temporary files are not)."""
    return [f.path for f in store.list(folder) if f.path.endswith(".json")]


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
        epochs = sorted(_seq_of(n) for n in _json_names(store, LEASE_DIR))
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
        return cls(store, latest + 1, record, ttl)

    def _name(self, epoch: int) -> str:
        return f"{LEASE_DIR}/{epoch:012d}.json"

    def _superseded(self) -> bool:
        return any(_seq_of(n) > self.epoch for n in _json_names(self.store, LEASE_DIR))

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


class Ledger:
    def __init__(self, store: Storage) -> None:
        self.store = store

    def entries(self) -> list[dict]:
        """Committed entries in commit order, the first per ``entry_id`` only."""
        seen, out = set(), []
        for name in _json_names(self.store, LEDGER_DIR):
            entry = json.loads(self.store.read(name) or b"null")
            if entry and entry["entry_id"] not in seen:
                seen.add(entry["entry_id"])
                out.append(entry)
        return out

    def commit(self, entry: dict) -> int:
        """Append ``entry`` under the next free sequence number; returns it."""
        names = _json_names(self.store, LEDGER_DIR)
        seq = max((_seq_of(n) for n in names), default=0) + 1
        while not self.store.put_if_absent(f"{LEDGER_DIR}/{seq:020d}.json",
                                           json.dumps({**entry, "seq": seq}, sort_keys=True).encode()):
            seq += 1
        return seq


def committed_outputs(out: str) -> list[dict]:
    """For readers: every output `embed-new` committed under ``out``, in commit order, with
    ``output_uri`` (a Parquet folder: ``pq.read_table`` reads its rows in line order; or an HDF5
    file) and ``part_uris`` (Parquet: the parts in line order; entries written before parts name
    one file, the output itself)."""
    store = Storage(out)
    return [{**e, "output_uri": store.uri_of(e["output"]),
             "part_uris": [store.uri_of(p["path"]) for p in e.get("parts") or [{"path": e["output"]}]]}
            for e in Ledger(store).entries()]
