"""Where the jobs keep their files: a local directory or an ``s3://`` prefix, with the operations
their commit protocols rely on (write whole or not at all, publish, put-if-absent, list, read).
Paths are given relative to the root, ``/``-separated. Other schemes pyarrow knows (``gs://``)
work through pyarrow alone, for everything but `put_if_absent`.

What each operation guarantees, per backend:

=================  ================================================  ==========================================
operation          local directory                                   ``s3://``
=================  ================================================  ==========================================
`write`            whole or not at all: written beside the target,   whole or not at all: one PUT (a multipart
                   then renamed over it (`elmo_core.atomic`)         upload becomes visible only when completed)
`publish`          whole: a rename from `temp_file` (same            whole: one upload of the finished file
                   filesystem); the local file is gone after         (as `write`); the local file is deleted
`put_if_absent`    atomic create: ``link(2)`` of a complete          atomic create: a PUT with ``If-None-Match:
                   temporary file fails if the name exists           *`` (AWS S3, SeaweedFS). Of two writers
                                                                     racing for a name, exactly one wins
`move`             atomic rename                                     copy, then delete: not atomic (for a
                                                                     moment both names exist)
`open_output`      not atomic: readers may see a partial file;       the object appears when the stream is
                   for files no reader looks at yet (staging)        closed (also after a failed write:
                                                                     pyarrow cannot abort an upload)
`read`, `list`,    ordinary; `list` fingerprints a file by its       ordinary; `list` and `stat` fingerprint
`stat`, `delete`   ``mtime_ns``                                      an object by its ETag
=================  ================================================  ==========================================

The libraries: pyarrow's filesystems read, move and delete everywhere and write to object stores
(they are also what Ray Data and Parquet take); local files are written and listed with ``os``;
boto3 does what pyarrow cannot on S3: the conditional PUT, listing with ETags (the
fingerprints recorded for inputs) and after a name (``StartAfter``); and the whole-object `read`,
`write` and `delete` in one request each (pyarrow's streams take two or three). S3 settings come
from the usual ``AWS_*`` variables (``AWS_ENDPOINT_URL`` for servers other than AWS).

This module lives in `preprocessing`, the lowest package that reads or writes ``s3://``:
`elmo_core` keeps only local atomic writes (`elmo_core.atomic`, which this module uses for local
roots), so the model code installs without pyarrow or boto3.
"""

from __future__ import annotations

import functools
import json
import os
import posixpath
import tempfile
import urllib.parse
import uuid
from dataclasses import dataclass

import pyarrow.fs as pafs

from elmo_core.atomic import atomic_file

TEMP_DIR = "_tmp"  # local roots: files being written (same filesystem, so publishing is a rename)
# the error codes S3 servers answer a conditional PUT with when the name exists
_NAME_TAKEN = ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")


def scheme_of(uri: str) -> str:
    """``s3``, ``gs``, ``http``...; "" for a local path (``C:`` is not a scheme)."""
    parsed = urllib.parse.urlparse(uri)
    return parsed.scheme if len(parsed.scheme) > 1 else ""


@dataclass(frozen=True)
class StoredFile:
    path: str  # relative to the storage root ("" for the root itself)
    size: int  # bytes as stored
    fingerprint: str  # "etag:..." (S3), "mtime_ns:..." (local), "mtime:..." (other schemes)


class Storage:
    """Files under one root: a local directory (also ``file://``), ``s3://bucket/prefix``, or
    another scheme pyarrow knows. Cheap to make; the clients are made on first use."""

    def __init__(self, root_uri: str) -> None:
        self.uri = root_uri.rstrip("/")
        parsed = urllib.parse.urlparse(self.uri)
        self.scheme = scheme_of(self.uri)
        self.local = self.scheme in ("", "file")
        if self.local:
            self.root = os.path.abspath(parsed.path if self.scheme == "file" else self.uri)
        else:
            self.root = f"{parsed.netloc}{parsed.path}".rstrip("/")

    @functools.cached_property
    def fs(self) -> pafs.FileSystem:
        """The pyarrow filesystem (made on first use: S3's asks the server for the bucket's region)."""
        return pafs.LocalFileSystem() if self.local else pafs.FileSystem.from_uri(self.uri)[0]

    @functools.cached_property
    def _s3(self):
        import boto3

        return boto3.client("s3")

    # ---------------------------------------------------------------- names
    def path(self, rel: str = "") -> str:
        """``rel`` as a path on `fs`."""
        return posixpath.join(self.root, rel) if rel else self.root

    def uri_of(self, rel: str = "") -> str:
        """What Ray Data, pyarrow and smart-open accept for ``rel``."""
        return self.path(rel) if self.local else f"{self.scheme}://{self.path(rel)}"

    def _bucket_key(self, rel: str) -> tuple[str, str]:
        bucket, _, key = self.path(rel).partition("/")
        return bucket, key

    # ---------------------------------------------------------------- reading
    def exists(self, rel: str = "") -> bool:
        return self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound

    def read(self, rel: str) -> bytes | None:
        """The bytes of ``rel``; None if there is no such file."""
        if self.scheme == "s3":  # one GET (pyarrow's stream asks for the size first: two requests)
            bucket, key = self._bucket_key(rel)
            try:
                return self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            except self._s3.exceptions.NoSuchKey:
                return None
        try:
            with self.fs.open_input_stream(self.path(rel)) as f:
                return f.read()
        except FileNotFoundError:
            return None

    def read_json(self, rel: str):
        data = self.read(rel)
        return None if data is None else json.loads(data)

    def stat(self, rel: str = "") -> StoredFile | None:
        """``rel`` if it is a file (or an object), else None."""
        if self.scheme == "s3":
            bucket, key = self._bucket_key(rel)
            if not key:
                return None
            try:
                head = self._s3.head_object(Bucket=bucket, Key=key)
            except self._s3.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise
            return StoredFile(rel, head["ContentLength"], f"etag:{head['ETag'].strip(chr(34))}")
        if self.local:
            path = self.path(rel)
            return self._local_file(path) if os.path.isfile(path) else None
        info = self.fs.get_file_info(self.path(rel))
        return self._stored(info) if info.type == pafs.FileType.File else None

    def list(self, rel: str = "", start_after: str | None = None) -> list[StoredFile]:
        """Every file below the folder ``rel`` (at any depth; local symlinks to folders are not
        followed), sorted by path; [] if there is none. With ``start_after`` (a path relative to the
        root), only the files whose path sorts after it: on S3 the server skips the others
        (``ListObjectsV2``'s ``StartAfter``), so a listing costs what it returns, not the folder."""
        after = start_after or ""
        if self.scheme == "s3":
            bucket, key = self._bucket_key(rel)
            root_key = self._bucket_key("")[1]
            start = len(root_key) + 1 if root_key else 0
            extra = {"StartAfter": self._bucket_key(start_after)[1]} if start_after else {}
            found = []
            for page in self._s3.get_paginator("list_objects_v2").paginate(
                    Bucket=bucket, Prefix=key + "/" if key else "", **extra):
                found += [StoredFile(obj["Key"][start:], obj["Size"], f"etag:{obj['ETag'].strip(chr(34))}")
                          for obj in page.get("Contents", []) if not obj["Key"].endswith("/")]  # "/": folder markers
        elif self.local:
            found = []
            for folder, _, names in os.walk(self.path(rel)):
                base = os.path.relpath(folder, self.root).replace(os.sep, "/")
                for name in names:
                    if (name if base == "." else f"{base}/{name}") <= after:
                        continue  # compared before the stat: names are free, stats are not
                    try:
                        found.append(self._local_file(os.path.join(folder, name)))
                    except FileNotFoundError:  # gone while listing (a writer's temporary file)
                        pass
        else:
            infos = self.fs.get_file_info(pafs.FileSelector(self.path(rel), recursive=True, allow_not_found=True))
            found = [f for f in (self._stored(i) for i in infos if i.type == pafs.FileType.File) if f.path > after]
        return sorted(found, key=lambda f: f.path)

    def list_range(self, rel: str, start_after: str, end_before: str, limit: int) -> list[StoredFile] | None:
        """The files below the folder ``rel`` whose paths (relative to the root) sort after
        ``start_after`` and before ``end_before``, sorted; on S3 one listing request per 1,000 of
        them; in the server's order (S3: key order; SeaweedFS: folder by folder, which differs
        where a name is the start of another: the caller sorts). None if there are more than
        ``limit``, and on other stores (where listing each folder is cheap): the caller lists
        folder by folder instead."""
        if self.scheme != "s3":
            return None
        bucket, key = self._bucket_key(rel)
        root_key = self._bucket_key("")[1]
        start = len(root_key) + 1 if root_key else 0
        found = []
        for page in self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=key + "/" if key else "", StartAfter=self._bucket_key(start_after)[1]):
            for obj in page.get("Contents", []):
                path = obj["Key"][start:]
                if path >= end_before:  # what follows sorts after it, in either order
                    return found
                if not obj["Key"].endswith("/"):
                    found.append(StoredFile(path, obj["Size"], f"etag:{obj['ETag'].strip(chr(34))}"))
                if len(found) > limit:
                    return None
        return found

    def _local_file(self, path: str) -> StoredFile:
        st = os.stat(path)
        rel = os.path.relpath(path, self.root).replace(os.sep, "/")
        return StoredFile("" if rel == "." else rel, st.st_size, f"mtime_ns:{st.st_mtime_ns}")

    def _stored(self, info: pafs.FileInfo) -> StoredFile:
        rel = posixpath.relpath(info.path, self.root) if info.path != self.root else ""
        return StoredFile(rel, info.size, f"mtime:{info.mtime}")

    # ---------------------------------------------------------------- writing
    def write(self, rel: str, data: bytes) -> None:
        """Replace ``rel`` with ``data``, whole or not at all (readers see the old or the new bytes)."""
        if self.local:
            with atomic_file(self.path(rel)) as tmp, open(tmp, "wb") as f:
                f.write(data)
        elif self.scheme == "s3":  # one PUT (pyarrow's stream is a multipart upload: three requests)
            bucket, key = self._bucket_key(rel)
            self._s3.put_object(Bucket=bucket, Key=key, Body=data)
        else:
            with self.fs.open_output_stream(self.path(rel)) as f:
                f.write(data)

    def write_json(self, rel: str, value) -> None:
        self.write(rel, (json.dumps(value, indent=2) + "\n").encode("utf-8"))

    def temp_file(self, suffix: str) -> str:
        """A fresh local path to write a file that `publish` will move into place."""
        if self.local:
            os.makedirs(self.path(TEMP_DIR), exist_ok=True)
            return self.path(f"{TEMP_DIR}/{uuid.uuid4().hex}{suffix}")
        fd, path = tempfile.mkstemp(prefix="elmo-", suffix=suffix)
        os.close(fd)
        return path

    def clear_temp(self, remove_dir: bool = False) -> None:
        """Delete the files in ``_tmp/``: what a killed writer left being written, and staged
        files never published (object stores: one listing, then deletes)."""
        folder = self.path(TEMP_DIR)
        if self.local:
            if os.path.isdir(folder):
                for name in os.listdir(folder):
                    os.unlink(os.path.join(folder, name))
                if remove_dir:
                    os.rmdir(folder)
        elif self.scheme == "s3":
            bucket, _ = self._bucket_key("")
            keys = [self._bucket_key(f.path)[1] for f in self.list(TEMP_DIR)]  # paths from the root: "_tmp/..."
            for start in range(0, len(keys), 1000):  # one request per 1,000 objects
                self._s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[start:start + 1000]]})
        else:
            self.fs.delete_dir_contents(folder, missing_dir_ok=True)

    def publish(self, local_path: str, rel: str) -> None:
        """Move a complete local file to ``rel`` whole (the local file is gone afterwards)."""
        if self.local:
            os.makedirs(os.path.dirname(self.path(rel)), exist_ok=True)
            os.replace(local_path, self.path(rel))
        else:
            pafs.copy_files(local_path, self.path(rel), destination_filesystem=self.fs)
            os.unlink(local_path)

    def put_if_absent(self, rel: str, data: bytes) -> bool:
        """Create ``rel`` holding ``data`` unless it exists; True if this call created it."""
        if self.local:
            path = self.path(rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{uuid.uuid4().hex}.tmp"
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.link(tmp, path)  # atomic, and refuses an existing name
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        if self.scheme != "s3":
            raise ValueError(f"{self.uri}: creating only if absent needs a local directory or s3:// "
                             f"(not {self.scheme}://)")
        bucket, key = self._bucket_key(rel)
        try:
            self._s3.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
            return True
        except self._s3.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _NAME_TAKEN:
                return False
            raise

    def open_output(self, rel: str):
        """A pyarrow output stream writing ``rel`` (not atomic: for files no reader looks at yet)."""
        if self.local:  # object stores have no folders to make
            os.makedirs(os.path.dirname(self.path(rel)), exist_ok=True)
        return self.fs.open_output_stream(self.path(rel))

    def move(self, src: str, dst: str) -> None:
        """Move one file (a rename locally; a server-side copy + delete on object stores: no
        data through this process)."""
        if self.scheme == "s3":  # boto3: pyarrow would leave an empty folder object behind
            bucket, key = self._bucket_key(src)
            self._s3.copy_object(Bucket=bucket, Key=self._bucket_key(dst)[1], CopySource={"Bucket": bucket, "Key": key})
            self._s3.delete_object(Bucket=bucket, Key=key)
            return
        if self.local:
            os.makedirs(os.path.dirname(self.path(dst)), exist_ok=True)
        self.fs.move(self.path(src), self.path(dst))

    def copy(self, src: str, dst: str) -> None:
        """Copy one file (a server-side copy on object stores: no data through this process)."""
        if self.scheme == "s3":
            bucket, key = self._bucket_key(src)
            self._s3.copy_object(Bucket=bucket, Key=self._bucket_key(dst)[1], CopySource={"Bucket": bucket, "Key": key})
            return
        if self.local:
            os.makedirs(os.path.dirname(self.path(dst)), exist_ok=True)
        self.fs.copy_file(self.path(src), self.path(dst))

    def delete_many(self, rels: list[str]) -> None:
        """Delete the files ``rels`` (those that exist); on S3 one request per 1,000."""
        if self.scheme == "s3":
            bucket, _ = self._bucket_key("")
            keys = [self._bucket_key(rel)[1] for rel in rels]
            for start in range(0, len(keys), 1000):
                self._s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[start:start + 1000]]})
            return
        for rel in rels:
            self.delete(rel)

    def delete(self, rel: str) -> None:
        """Delete the file ``rel`` if it exists."""
        if self.scheme == "s3":  # boto3: pyarrow would leave an empty folder object behind; one request, no error if gone
            bucket, key = self._bucket_key(rel)
            self._s3.delete_object(Bucket=bucket, Key=key)
            return
        try:
            self.fs.delete_file(self.path(rel))
        except FileNotFoundError:
            pass

    def delete_dir(self, rel: str) -> None:
        """Delete the folder ``rel`` and everything below it, if it exists."""
        if self.exists(rel):
            self.fs.delete_dir(self.path(rel))
