"""Reading a committed preprocessing output (what training and adaptation use).

Only files listed in ``manifest.json`` are data: anything else under the directory (an
interrupted run's debris, archived versions) is never read.
"""

from __future__ import annotations

from elmo_core.vocabulary import Vocabulary

from . import schema
from .config import SPLITS
from .storage import OutputLocation


class DatasetError(Exception):
    """No committed dataset where one was expected."""


def load_manifest(directory: str) -> dict:
    """The manifest of the dataset committed at ``directory`` (local path or ``s3://``)."""
    location = OutputLocation(directory)
    manifest = location.read_json(schema.MANIFEST_NAME)
    if manifest is None:
        raise DatasetError(f"{directory}: no committed dataset (no {schema.MANIFEST_NAME}); "
                           "run `elmo preprocess` to (re)build it")
    if manifest.get("format") != schema.MANIFEST_FORMAT:
        raise DatasetError(f"{directory}: manifest format {manifest.get('format')!r} is not supported")
    return manifest


def split_files(directory: str, split: str) -> list[str]:
    """URIs of a split's Parquet files, in manifest order."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    location = OutputLocation(directory)
    return [location.uri_of(entry["path"]) for entry in load_manifest(directory)["splits"][split]["files"]]


def load_vocabulary(directory: str) -> Vocabulary:
    location = OutputLocation(directory)
    manifest = load_manifest(directory)
    vocab = Vocabulary.from_text(location.read_text(manifest["vocab"]["file"]) or "")
    if vocab.digest() != manifest["vocab"]["digest"]:
        raise DatasetError(f"{directory}: vocabulary file does not match the manifest's digest")
    return vocab
