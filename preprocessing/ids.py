"""Stable identities and the deterministic train/validation/test split."""

from __future__ import annotations

import hashlib

from .config import PreprocessConfig


def doc_id(shard_key: str, line: int) -> str:
    """Identity of an input line: its shard's key and 1-based line number."""
    return f"{shard_key}:{line}"


def sentence_id(line_doc_id: str, index: int) -> str:
    """Identity of a sentence: its line's id and its index among that line's sentences."""
    return f"{line_doc_id}:{index}"


def split_of(line_doc_id: str, config: PreprocessConfig) -> str:
    """Split by a 64-bit hash of the line id: independent of workers, blocks and run order, and
    all sentences of one line (document pieces, cut sentences) land in the same split."""
    digest = hashlib.blake2b(f"{config.split_salt}\0{line_doc_id}".encode("utf-8"), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2.0**64
    if u < config.validation_fraction:
        return "validation"
    if u < config.validation_fraction + config.test_fraction:
        return "test"
    return "train"
