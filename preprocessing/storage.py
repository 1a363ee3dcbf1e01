"""The output location (local directory or ``s3://`` prefix) through pyarrow's filesystems,
and the commit protocol that makes a dataset appear all at once.

A dataset is committed when ``DIR/manifest.json`` exists: it is written last (atomically:
rename on local disks, a single PUT on object stores) and lists every data file. Readers go
through the manifest (`preprocessing.dataset`), so a crash at any point leaves either the
previous dataset or none, never a half-written one.
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid

import pyarrow.fs as pafs

from . import schema
from .config import SPLITS


class OutputLocation:
    """Paths under one root on one filesystem, all given relative to the root."""

    def __init__(self, root_uri: str) -> None:
        self.uri = root_uri.rstrip("/")
        if "://" in self.uri and not self.uri.startswith("file://"):
            self.fs, self.root = pafs.FileSystem.from_uri(self.uri)
            self.local = False
        else:
            path = self.uri[7:] if self.uri.startswith("file://") else self.uri
            self.fs, self.root = pafs.LocalFileSystem(), os.path.abspath(path)
            self.local = True

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def uri_of(self, *parts: str) -> str:
        """What Ray Data / smart-open accept for a path under the root."""
        if self.local:
            return self.path(*parts)
        return f"{self.uri.split('://', 1)[0]}://{self.path(*parts)}"

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def read_text(self, *parts: str) -> str | None:
        try:
            with self.fs.open_input_stream(self.path(*parts)) as f:
                return f.read().decode("utf-8")
        except FileNotFoundError:
            return None

    def write_text(self, text: str, *parts: str) -> None:
        """Atomic: local files are written aside and renamed; an object PUT is atomic already."""
        target = self.path(*parts)
        self.fs.create_dir(posixpath.dirname(target), recursive=True)
        temp = target + f".tmp-{uuid.uuid4().hex}" if self.local else target
        with self.fs.open_output_stream(temp) as f:
            f.write(text.encode("utf-8"))
        if self.local:
            self.fs.move(temp, target)

    def read_json(self, *parts: str) -> dict | None:
        text = self.read_text(*parts)
        return None if text is None else json.loads(text)

    def write_json(self, value: dict, *parts: str) -> None:
        self.write_text(json.dumps(value, indent=2, sort_keys=False) + "\n", *parts)

    def list_files(self, *parts: str) -> list[tuple[str, int]]:
        """(path relative to the root, size) of every file below, sorted; [] if absent."""
        base = self.path(*parts)
        if self.fs.get_file_info(base).type == pafs.FileType.NotFound:
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True))
        return sorted((posixpath.relpath(i.path, self.root), i.size) for i in infos if i.type == pafs.FileType.File)

    def move(self, src: str, dst: str) -> None:
        """Move one file (a rename locally; copy + delete on object stores)."""
        target = self.path(dst)
        self.fs.create_dir(posixpath.dirname(target), recursive=True)
        if self.local:
            self.fs.move(self.path(src), target)
        else:
            self.fs.copy_file(self.path(src), target)
            self.fs.delete_file(self.path(src))

    def delete_file(self, *parts: str) -> None:
        try:
            self.fs.delete_file(self.path(*parts))
        except FileNotFoundError:
            pass

    def delete_dir(self, *parts: str) -> None:
        if self.exists(*parts):
            self.fs.delete_dir(self.path(*parts))


def commit(out: OutputLocation, staging: str, manifest: dict, say) -> None:
    from .manifest import manifest_files

    """Archive the committed version (if any), move the new files in, write the manifest last."""
    old = out.read_json(schema.MANIFEST_NAME)
    if old is not None:
        archive = posixpath.join(schema.VERSIONS_DIR, str(old.get("version", "unknown"))[:16])
        out.write_json(old, archive, "manifest.incomplete.json")
        out.delete_file(schema.MANIFEST_NAME)  # from here on no reader sees a dataset here
        for rel in manifest_files(old):
            if out.exists(rel):
                out.move(rel, posixpath.join(archive, rel))
        out.write_json(old, archive, schema.MANIFEST_NAME)
        out.delete_file(archive, "manifest.incomplete.json")
        say(f"previous version {archive} archived")
    for split in SPLITS:  # files of an interrupted commit, listed by no manifest
        out.delete_dir(split)
    for split in SPLITS:
        for i, entry in enumerate(manifest["splits"][split]["files"]):
            final = posixpath.join(split, f"part-{i:05d}.parquet")
            out.move(entry.pop("staged"), final)
            entry["path"] = final
    for name in (schema.VOCAB_NAME, schema.COUNTS_NAME):
        out.move(posixpath.join(staging, name), name)
    out.write_json(manifest, schema.MANIFEST_NAME)
