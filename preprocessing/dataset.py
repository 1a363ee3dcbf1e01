"""A committed preprocessing output: how it is committed, and `Dataset`, the handle readers
(training, adaptation, embedding) open once and pass around.

A dataset is committed when ``DIR/manifest.json`` exists: it is written last (whole or not at
all, `Storage.write`) and lists every data file. Readers go through the manifest, so a crash at
any point leaves either the previous dataset or none, never a half-written one; anything else
under the directory (an interrupted run's debris, archived versions) is never read.
"""

from __future__ import annotations

import functools
import posixpath

from elmo_core.vocabulary import Vocabulary

from . import schema
from .config import SPLITS
from .manifest import manifest_files
from .storage import Storage


class DatasetError(Exception):
    """No committed dataset where one was expected."""


class Dataset:
    """A committed dataset, its manifest read and checked once; the vocabulary is read on first use."""

    def __init__(self, storage: Storage, manifest: dict) -> None:
        self.storage, self.manifest = storage, manifest

    @classmethod
    def open(cls, where: str | Storage) -> "Dataset":
        """The dataset committed at ``where`` (a local path, an ``s3://`` URI, or its `Storage`)."""
        storage = where if isinstance(where, Storage) else Storage(where)
        manifest = storage.read_json(schema.MANIFEST_NAME)
        if manifest is None:
            raise DatasetError(f"{storage.uri}: no committed dataset (no {schema.MANIFEST_NAME}); "
                               "run `elmo preprocess` to (re)build it")
        if manifest.get("format") != schema.MANIFEST_FORMAT:
            raise DatasetError(f"{storage.uri}: manifest format {manifest.get('format')!r} is not supported")
        return cls(storage, manifest)

    @property
    def uri(self) -> str:
        return self.storage.uri

    def split_files(self, split: str) -> list[str]:
        """URIs of a split's Parquet files, in manifest order."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return [self.storage.uri_of(entry["path"]) for entry in self.manifest["splits"][split]["files"]]

    @functools.cached_property
    def vocabulary(self) -> Vocabulary:
        data = self.storage.read(self.manifest["vocab"]["file"]) or b""
        vocab = Vocabulary.from_text(data.decode("utf-8"))
        if vocab.digest() != self.manifest["vocab"]["digest"]:
            raise DatasetError(f"{self.uri}: vocabulary file does not match the manifest's digest")
        return vocab


def commit(out: Storage, staging: str, manifest: dict, say) -> None:
    """Archive the committed version (if any), move the new files in, write the manifest last."""
    old = out.read_json(schema.MANIFEST_NAME)
    if old is not None:
        archive = posixpath.join(schema.VERSIONS_DIR, str(old.get("version", "unknown"))[:16])
        out.write_json(posixpath.join(archive, "manifest.incomplete.json"), old)
        out.delete(schema.MANIFEST_NAME)  # from here on no reader sees a dataset here
        for rel in manifest_files(old):
            if out.exists(rel):
                out.move(rel, posixpath.join(archive, rel))
        out.write_json(posixpath.join(archive, schema.MANIFEST_NAME), old)
        out.delete(posixpath.join(archive, "manifest.incomplete.json"))
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
    out.write_json(schema.MANIFEST_NAME, manifest)
