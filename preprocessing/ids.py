"""The deterministic train/validation/test split of input lines.

A line's identity is its shard's key and its 1-based line number; a sentence's id is
``<key>:<line>:<index among the line's sentences>`` (built for whole blocks in `stage`)."""

from __future__ import annotations

import hashlib

import numpy as np

from .config import SPLITS, PreprocessConfig

SPLIT_HASH = "blake2b(salt, shard) ^ line, splitmix64"  # part of a dataset's version: a new one re-splits


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijection of uint64 whose output bits all depend on every input
    bit (arrays only: numpy wraps array arithmetic silently)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _shard_seed(shard_key: str, config: PreprocessConfig) -> np.uint64:
    digest = hashlib.blake2b(f"{config.split_salt}\0{shard_key}".encode("utf-8"), digest_size=8).digest()
    return np.uint64(int.from_bytes(digest, "big"))


def line_split_codes(shard_key: str, lines: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Split of each line (index into `preprocessing.config.SPLITS`) by a 64-bit hash of its
    identity (shard key, line number), computed for a whole block at once: independent of
    workers, blocks and run order, and all sentences of one line (document pieces, cut
    sentences) land in the same split.

    A shard in ``config.assigned_splits`` goes wholly to its split.

    lines: int [n] (1-based line numbers) -> int8 [n]"""
    assigned = dict(config.assigned_splits).get(shard_key)
    if assigned is not None:
        return np.full(len(lines), SPLITS.index(assigned), np.int8)
    hashed = _mix64(np.asarray(lines, np.int64).astype(np.uint64) ^ _shard_seed(shard_key, config))
    u = (hashed >> np.uint64(11)).astype(np.float64) * 2.0**-53  # uniform in [0, 1)
    codes = np.full(len(u), SPLITS.index("train"), np.int8)
    codes[u < config.validation_fraction + config.test_fraction] = SPLITS.index("test")
    codes[u < config.validation_fraction] = SPLITS.index("validation")
    return codes
