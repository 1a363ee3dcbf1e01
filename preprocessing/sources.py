"""Input shards: expand what the user named into files, fingerprint them, read their lines.

Inputs may be local paths, directories or globs, ``s3://`` / ``gs://`` prefixes or globs,
``http(s)://`` URLs, or ``@LIST`` (a file, local or remote, naming one input per line).
Bytes are read through smart-open (local, S3, GCS, HTTP); ``.gz``, ``.bz2`` and ``.zst``
are decompressed here so that the sha256 recorded in the manifest is of the stored bytes.
"""

from __future__ import annotations

import bz2
import fnmatch
import glob
import gzip
import hashlib
import io
import os
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from typing import Iterator

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


def scheme_of(uri: str) -> str:
    parsed = urllib.parse.urlparse(uri)
    return parsed.scheme if len(parsed.scheme) > 1 else ""  # "C:" is not a scheme


def _has_glob(text: str) -> bool:
    return any(c in text for c in _GLOB_CHARS)


def _visible(relpath: str) -> bool:
    """Skip hidden and underscore files (checksums, _SUCCESS markers, editor debris)."""
    return not any(part.startswith((".", "_")) for part in relpath.split("/") if part)


# --- listing ----------------------------------------------------------------------------------
def _list_local(spec: str) -> list[InputFile]:
    def entry(path: str, key: str) -> InputFile:
        st = os.stat(path)
        return InputFile(os.path.abspath(path), key, st.st_size, f"mtime_ns:{st.st_mtime_ns}")

    if _has_glob(spec):
        root = spec[: min(spec.index(c) for c in _GLOB_CHARS if c in spec)]
        root = root if root.endswith(os.sep) or not root else os.path.dirname(root)
        paths = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
        return [entry(p, os.path.relpath(p, root or ".").replace(os.sep, "/")) for p in paths
                if _visible(os.path.relpath(p, root or "."))]
    if os.path.isdir(spec):
        out = []
        for dirpath, dirnames, filenames in os.walk(spec):
            dirnames[:] = sorted(d for d in dirnames if _visible(d))
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, spec).replace(os.sep, "/")
                if _visible(rel):
                    out.append(entry(path, rel))
        return out
    if os.path.isfile(spec):
        return [entry(spec, os.path.basename(spec))]
    raise InputError(f"{spec}: no such file or directory")


def _s3_client():
    import boto3  # smart-open's S3 transport uses the same client settings (AWS_* variables)

    return boto3.client("s3")


def _list_s3(spec: str) -> list[InputFile]:
    parsed = urllib.parse.urlparse(spec)
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    pattern = None
    if _has_glob(key):
        pattern = key
        key = key[: min(key.index(c) for c in _GLOB_CHARS if c in key)]
        root = key[: key.rfind("/") + 1]
    client = _s3_client()
    try:
        if pattern is None and key and not key.endswith("/"):
            try:  # an object named exactly like this?
                head = client.head_object(Bucket=bucket, Key=key)
                return [InputFile(spec, key.rsplit("/", 1)[-1], head["ContentLength"], f"etag:{head['ETag'].strip(chr(34))}")]
            except client.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                    raise
            key += "/"
        if pattern is None:
            root = key
        out = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
            for obj in page.get("Contents", []):
                name = obj["Key"]
                if name.endswith("/") or (pattern is not None and not fnmatch.fnmatchcase(name, pattern)):
                    continue
                rel = name[len(root):]
                if _visible(rel):
                    out.append(InputFile(f"s3://{bucket}/{name}", rel, obj["Size"], f"etag:{obj['ETag'].strip(chr(34))}"))
    except Exception as exc:  # botocore raises many unrelated types
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{spec}: cannot list: {exc}") from exc
    if not out:
        raise InputError(f"{spec}: no objects found")
    return sorted(out, key=lambda f: f.key)


def _list_pyarrow(spec: str) -> list[InputFile]:
    """Other object stores (gs://) through pyarrow's filesystems; fingerprint = mtime."""
    import pyarrow.fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(spec)
        info = fs.get_file_info(path)
        scheme = scheme_of(spec)
        if info.type == pafs.FileType.File:
            return [InputFile(spec, path.rsplit("/", 1)[-1], info.size, f"mtime:{info.mtime}")]
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    except Exception as exc:
        raise InputError(f"{spec}: cannot list: {exc}") from exc
    out = [InputFile(f"{scheme}://{i.path}", i.path[len(path):].lstrip("/"), i.size, f"mtime:{i.mtime}")
           for i in infos if i.type == pafs.FileType.File and _visible(i.path[len(path):])]
    if not out:
        raise InputError(f"{spec}: no files found")
    return sorted(out, key=lambda f: f.key)


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
        if scheme == "s3":
            files.extend(_list_s3(spec))
        elif scheme in ("http", "https"):
            files.extend(_stat_http(spec))
        elif scheme in ("", "file"):
            files.extend(_list_local(spec[7:] if scheme == "file" else spec))
        else:
            files.extend(_list_pyarrow(spec))
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
        import smart_open

        try:
            raw = smart_open.open(self.uri, "rb", compression="disable")
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
