"""Input shards: expand what the user named into files, fingerprint them, read their lines.

Inputs may be local paths, directories or globs, ``s3://`` / ``gs://`` prefixes or globs,
``http(s)://`` URLs, or ``@LIST`` (a file, local or remote, naming one input per line).
They are listed and fingerprinted through `preprocessing.storage` (URLs: one HEAD request, the
standard library's). Bytes are read through smart-open (local, S3, GCS, HTTP); ``.gz``, ``.bz2``
and ``.zst`` are decompressed here so that the sha256 recorded in the manifest is of the stored
bytes.
"""

from __future__ import annotations

import bz2
import fnmatch
import glob
import gzip
import hashlib
import io
import os
import threading
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from typing import Iterator

from .storage import Storage, StoredFile, scheme_of

_GLOB_CHARS = "*?["
READ_CHUNK = 1 << 20


class InputError(Exception):
    """An input that cannot be found, listed or read; the message names it."""


@dataclass(frozen=True)
class InputFile:
    uri: str  # what smart-open opens
    key: str  # stable name of the shard: path relative to the root the user named
    size: int  # bytes as stored (compressed)
    fingerprint: str  # etag (object stores, HTTP) or mtime_ns (local): detects changed inputs

    def to_dict(self) -> dict:
        return asdict(self)


def _has_glob(text: str) -> bool:
    return any(c in text for c in _GLOB_CHARS)


def _visible(relpath: str) -> bool:
    """Skip hidden and underscore files (checksums, _SUCCESS markers, editor debris)."""
    return not any(part.startswith((".", "_")) for part in relpath.split("/") if part)


# --- listing ----------------------------------------------------------------------------------
def _input_file(storage: Storage, stored: StoredFile, key: str) -> InputFile:
    return InputFile(storage.uri_of(stored.path), key, stored.size, stored.fingerprint)


def _list_local_glob(spec: str) -> list[InputFile]:
    """A local glob, as `glob.glob` (``recursive=True``) expands it; keys relative to its fixed part."""
    root = spec[: min(spec.index(c) for c in _GLOB_CHARS if c in spec)]
    root = root if root.endswith(os.sep) or not root else os.path.dirname(root)
    out = []
    for path in sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p)):
        key = os.path.relpath(path, root or ".").replace(os.sep, "/")
        if _visible(key):
            storage = Storage(path)
            out.append(_input_file(storage, storage.stat(), key))
    return out


def _list_stored(spec: str) -> list[InputFile]:
    """A file or object, a folder or prefix, or (object stores) a glob over keys, which ``*``
    matches across ``/`` (`fnmatch`); local paths, ``s3://`` and the other schemes pyarrow knows."""
    local = scheme_of(spec) in ("", "file")
    pattern = None
    if not local and _has_glob(spec):
        fixed = spec[: min(spec.index(c) for c in _GLOB_CHARS if c in spec)]
        root = fixed[: fixed.rfind("/")]
        pattern, spec = spec[len(root) + 1:], root
    try:
        storage = Storage(spec)
        single = None if pattern or spec.endswith("/") else storage.stat()
        if single is not None:
            return [_input_file(storage, single, spec.rstrip("/").rsplit("/", 1)[-1])]
        listed = storage.list()
    except Exception as exc:  # botocore and pyarrow raise many unrelated types
        raise InputError(f"{spec}: cannot list: {exc}") from exc
    out = [_input_file(storage, f, f.path) for f in listed
           if _visible(f.path) and (pattern is None or fnmatch.fnmatchcase(f.path, pattern))]
    if not out and not (local and storage.exists()):  # an empty local directory holds no inputs
        raise InputError(f"{spec}: no such file or directory" if local else f"{spec}: no objects found")
    return out


def _stat_http(spec: str) -> list[InputFile]:
    request = urllib.request.Request(spec, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            size = int(response.headers.get("Content-Length") or -1)
            tag = response.headers.get("ETag") or response.headers.get("Last-Modified") or ""
    except Exception as exc:
        raise InputError(f"{spec}: cannot reach: {exc}") from exc
    name = urllib.parse.urlparse(spec).path.rsplit("/", 1)[-1] or spec
    return [InputFile(spec, name, size, f"http:{tag}")]


def _read_list_file(spec: str) -> list[str]:
    import smart_open

    try:
        with smart_open.open(spec, "r", encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    except Exception as exc:
        raise InputError(f"{spec}: cannot read input list: {exc}") from exc


def resolve_inputs(specs: list[str]) -> list[InputFile]:
    """Expand input specs into files, sorted by shard key; shard keys must be unique."""
    files: list[InputFile] = []
    for spec in specs:
        if spec.startswith("@"):
            files.extend(resolve_inputs(_read_list_file(spec[1:])))
            continue
        scheme = scheme_of(spec)
        if scheme in ("http", "https"):
            files.extend(_stat_http(spec))
        elif scheme in ("", "file") and _has_glob(spec):
            files.extend(_list_local_glob(spec[7:] if scheme == "file" else spec))
        else:
            files.extend(_list_stored(spec))
    if not files:
        raise InputError("no input files")
    seen: dict[str, str] = {}
    for f in files:
        if f.key in seen and seen[f.key] != f.uri:
            raise InputError(f"{seen[f.key]} and {f.uri} both have the shard name {f.key!r}; "
                             "name their common directory instead so that sentence ids stay unique")
        seen[f.key] = f.uri
    unique = {f.uri: f for f in files}
    return sorted(unique.values(), key=lambda f: f.key)


# --- reading ----------------------------------------------------------------------------------
class _HashingReader(io.RawIOBase):
    """Passes bytes through and hashes them (the checksum of the stored, compressed file)."""

    def __init__(self, raw) -> None:
        self.raw = raw
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.sha256.update(data)
        return n

    def drain(self) -> None:
        """Hash what the decompressor left unread (trailing bytes belong to the checksum too)."""
        while True:
            data = self.raw.read(READ_CHUNK)
            if not data:
                return
            self.sha256.update(data)


def _decompressed(uri: str, hashed: io.RawIOBase) -> io.BufferedIOBase:
    path = urllib.parse.urlparse(uri).path if scheme_of(uri) else uri
    buffered = io.BufferedReader(hashed, READ_CHUNK)
    if path.endswith(".gz"):
        return gzip.GzipFile(fileobj=buffered, mode="rb")
    if path.endswith(".bz2"):
        return bz2.BZ2File(buffered, "rb")
    if path.endswith(".zst"):
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True), READ_CHUNK)
    return buffered


_S3_CLIENTS: dict = {}  # this process's boto3 client for s3:// inputs, per endpoint and key id
_S3_CLIENT_LOCK = threading.Lock()


def open_input(uri: str):
    """``uri``'s stored bytes as a binary stream (smart-open, no decompression). ``s3://`` goes
    through one boto3 client per process: smart-open makes a client per call otherwise, ~10 ms of
    CPU, more than reading a one-line file costs (benchmarks/README.md, ``bench_feed.py``)."""
    import smart_open

    params = {}
    if uri.startswith("s3://"):
        settings = (os.environ.get("AWS_ENDPOINT_URL"), os.environ.get("AWS_ACCESS_KEY_ID"))
        with _S3_CLIENT_LOCK:  # making a boto3 client is not thread-safe
            if settings not in _S3_CLIENTS:
                import boto3

                _S3_CLIENTS[settings] = boto3.client("s3")
        params = {"client": _S3_CLIENTS[settings]}
    return smart_open.open(uri, "rb", compression="disable", transport_params=params)


class ShardReader:
    """A shard's lines as bytes (line ending removed), in batches; `sha256` is ready after.

    Any failure (missing object, corrupt compression, network) raises `InputError` naming the
    URI; `lines_read` tells how many lines were delivered before it.
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.lines_read = 0
        self.sha256: str | None = None

    def line_batches(self) -> Iterator[list[bytes]]:
        """The lines of each ``READ_CHUNK`` of text: split in C (``bytes.split``), not line by
        line in Python."""
        try:
            raw = open_input(self.uri)
        except Exception as exc:
            raise InputError(f"{self.uri}: cannot open: {exc}") from exc
        hashed = _HashingReader(raw)
        try:
            stream = _decompressed(self.uri, hashed)
            pending: list[bytes] = []  # pieces of an unfinished line (joined once: a huge line stays linear)
            while True:
                chunk = stream.read1(READ_CHUNK)  # what is there: lines before an error still come out
                if not chunk:
                    break
                if b"\n" not in chunk:
                    pending.append(chunk)
                    continue
                if pending:
                    chunk = b"".join([*pending, chunk])
                    pending = []
                lines = chunk.split(b"\n")
                unfinished = lines.pop()  # "" after a final newline
                if unfinished:
                    pending.append(unfinished)
                yield self._delivered(lines, b"\r" in chunk)
            if pending:
                last = b"".join(pending)
                yield self._delivered([last], last.endswith(b"\r"))
            hashed.drain()
            self.sha256 = hashed.sha256.hexdigest()
        except InputError:
            raise
        except (OSError, EOFError, ValueError) as exc:
            raise InputError(f"{self.uri}: unreadable after line {self.lines_read}: {exc}") from exc
        except Exception as exc:  # zstandard.ZstdError and friends
            raise InputError(f"{self.uri}: unreadable after line {self.lines_read}: {type(exc).__name__}: {exc}") from exc
        finally:
            raw.close()

    def _delivered(self, lines: list[bytes], any_cr: bool) -> list[bytes]:
        """``lines`` without the carriage return of CRLF endings, counted as read."""
        if any_cr:
            lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
        self.lines_read += len(lines)
        return lines
