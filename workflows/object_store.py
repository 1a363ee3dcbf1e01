"""Where the embedding jobs write: a local directory or an ``s3://`` prefix, with the three
operations their commit protocols rely on (paths are relative to the root):

* `publish`: a finished local file appears under its final name all at once (rename within one
  local filesystem; on S3 one PUT, or a multipart upload that becomes visible only when completed);
* `put_if_absent`: create an object only if no object has that name, atomically (local:
  ``link(2)`` of a complete temporary file, which fails if the name exists; S3: a conditional
  PUT with ``If-None-Match: *``, which AWS S3 and SeaweedFS honour). Two writers racing for one
  name: exactly one wins;
* `read` / `list` / `write` / `delete`: ordinary reads and (last-writer-wins) writes.

S3 settings come from the usual ``AWS_*`` variables (``AWS_ENDPOINT_URL`` for other servers).
"""

from __future__ import annotations

import os
import posixpath
import tempfile
import urllib.parse
import uuid

TMP_DIR = "_tmp"  # local roots: files being written (same filesystem, so publishing is a rename)


class Store:
    def __init__(self, root_uri: str) -> None:
        self.uri = root_uri.rstrip("/")
        parsed = urllib.parse.urlparse(self.uri)
        if parsed.scheme == "s3":
            import boto3

            self.local = False
            self.bucket, self.prefix = parsed.netloc, parsed.path.strip("/")
            self.client = boto3.client("s3")
        elif parsed.scheme in ("", "file"):
            self.local = True
            self.root = os.path.abspath(parsed.path if parsed.scheme == "file" else self.uri)
        else:
            raise ValueError(f"{root_uri}: output must be a local directory or s3:// (not {parsed.scheme}://)")

    # ---------------------------------------------------------------- names
    def _key(self, rel: str) -> str:
        return posixpath.join(self.prefix, rel) if self.prefix else rel

    def _path(self, rel: str) -> str:
        return os.path.join(self.root, *rel.split("/"))

    def uri_of(self, rel: str) -> str:
        return self._path(rel) if self.local else f"s3://{self.bucket}/{self._key(rel)}"

    def temp_file(self, suffix: str) -> str:
        """A fresh local path to write a file that `publish` will move into place."""
        if self.local:
            os.makedirs(self._path(TMP_DIR), exist_ok=True)
            return self._path(f"{TMP_DIR}/{uuid.uuid4().hex}{suffix}")
        fd, path = tempfile.mkstemp(prefix="elmo-embed-", suffix=suffix)
        os.close(fd)
        return path

    def clear_temp(self, remove_dir: bool = False) -> None:
        """Files a killed writer left being written (local roots; S3 uploads never leave one)."""
        if self.local and os.path.isdir(self._path(TMP_DIR)):
            for name in os.listdir(self._path(TMP_DIR)):
                os.unlink(os.path.join(self._path(TMP_DIR), name))
            if remove_dir:
                os.rmdir(self._path(TMP_DIR))

    # ---------------------------------------------------------------- the three operations
    def publish(self, local_path: str, rel: str) -> None:
        """Move a complete local file to ``rel`` atomically (the local file is gone afterwards)."""
        if self.local:
            os.makedirs(os.path.dirname(self._path(rel)), exist_ok=True)
            os.replace(local_path, self._path(rel))
        else:
            self.client.upload_file(local_path, self.bucket, self._key(rel))
            os.unlink(local_path)

    def put_if_absent(self, rel: str, data: bytes) -> bool:
        """Create ``rel`` holding ``data`` unless it exists; True if this call created it."""
        if self.local:
            path = self._path(rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{uuid.uuid4().hex}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # atomic, and refuses an existing name
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(rel), Body=data, IfNoneMatch="*")
            return True
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                return False
            raise

    def write(self, rel: str, data: bytes) -> None:
        """Replace ``rel`` with ``data`` (atomically: readers see the old or the new bytes)."""
        if self.local:
            tmp = self.temp_file(".tmp")
            with open(tmp, "wb") as f:
                f.write(data)
            self.publish(tmp, rel)
        else:
            self.client.put_object(Bucket=self.bucket, Key=self._key(rel), Body=data)

    def read(self, rel: str) -> bytes | None:
        if self.local:
            try:
                with open(self._path(rel), "rb") as f:
                    return f.read()
            except FileNotFoundError:
                return None
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(rel))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def list(self, prefix: str) -> list[str]:
        """Names of the files directly or indirectly under the folder ``prefix``, sorted."""
        if self.local:
            base = self._path(prefix)
            out = []
            for dirpath, _, names in os.walk(base):
                for name in names:
                    out.append(os.path.relpath(os.path.join(dirpath, name), self.root).replace(os.sep, "/"))
            return sorted(out)
        out = []
        start = self._key(prefix.rstrip("/") + "/")
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start):
            for obj in page.get("Contents", []):
                out.append(obj["Key"][len(self.prefix) + 1 if self.prefix else 0:])
        return sorted(out)

    def exists(self, rel: str) -> bool:
        if self.local:
            return os.path.exists(self._path(rel))
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(rel))
            return True
        except self.client.exceptions.ClientError:
            return False

    def delete(self, rel: str) -> None:
        if self.local:
            try:
                os.unlink(self._path(rel))
            except FileNotFoundError:
                pass
        else:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(rel))
