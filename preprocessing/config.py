"""Preprocessing settings: the one place their numbers live.

`PreprocessConfig` holds everything that changes the output; its `config_hash` names a dataset
version. Settings that only change how fast the job runs (workers, block sizes) live in
`RunOptions` and are not hashed, so re-running with more workers is still a no-op.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from elmo_core.cli_fields import setting
from elmo_core.tokenization import TOKENIZERS

SPLITS = ("train", "validation", "test")
INPUT_FORMATS = ("sentence", "document")
COMPRESSIONS = (".gz", ".bz2", ".zst")


@dataclass(frozen=True)
class PreprocessConfig:
    """What the output depends on (hashed into `config_hash`)."""

    tokenizer: str = setting("moses", "moses (sacremoses, Moses-compatible) or whitespace for pre-tokenized text",
                             choices=TOKENIZERS)
    language: str = setting("en", "Moses language rules")
    input_format: str = setting("sentence", "one sentence a line, or one document a line (split into sentences)",
                                choices=INPUT_FORMATS)
    # bilm-tf trains on 20-token windows; 256 keeps LSTM memory bounded while splitting almost no
    # real sentence (1B Word Benchmark sentences are under 100 tokens).
    max_sentence_tokens: int = setting(256, "cut longer sentences into consecutive pieces of at most this many "
                                       "tokens (never dropped)")
    # Vocabulary, counted on the train split (neither applies when an existing vocabulary file is
    # given).
    max_vocab: int | None = setting(None, "vocabulary: keep at most N entries, specials included (None: no limit)",
                                    metavar="N")
    min_count: int = setting(3, "vocabulary: keep words seen at least K times (bilm-tf's 1B Word vocabulary: 3)",
                             metavar="K")
    validation_fraction: float = setting(0.01, "share of lines held out for validation (by a hash of each line's "
                                         "id: the pieces of a line stay together)")
    test_fraction: float = setting(0.01, "the same, for the test split")
    split_salt: str = setting("elmo-split-v1", "names the hash scheme; a new salt is a new split (and dataset "
                              "version)", flag=False)
    assigned_splits: tuple[tuple[str, str], ...] = setting(
        (), "shards whose every line goes to one split, whatever the hash says: (shard key, split) pairs, e.g. a "
        "benchmark's own validation and test files (`--validation-input`, `--test-input`)", flag=False)
    shard_size_mb: int = setting(128, "Parquet file size target in MB: a new file starts once one reaches it")
    quarantine_bad_files: bool = setting(False, "skip shards that cannot be read and list them in the manifest "
                                         "instead of failing the job")

    def __post_init__(self) -> None:
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(f"tokenizer must be one of {TOKENIZERS}, got {self.tokenizer!r}")
        if self.input_format not in INPUT_FORMATS:
            raise ValueError(f"input_format must be one of {INPUT_FORMATS}, got {self.input_format!r}")
        if self.max_sentence_tokens < 1:
            raise ValueError("max_sentence_tokens must be >= 1")
        if self.max_vocab is not None and self.max_vocab < 4:
            raise ValueError("max_vocab must be >= 4 (three special tokens plus one word)")
        if self.min_count < 1:
            raise ValueError("min_count must be >= 1")
        held_out = self.validation_fraction + self.test_fraction
        if min(self.validation_fraction, self.test_fraction) < 0 or held_out >= 1:
            raise ValueError("validation and test fractions must be >= 0 and sum to less than 1")
        object.__setattr__(self, "assigned_splits", tuple(sorted((str(k), str(v)) for k, v in self.assigned_splits)))
        for key, split in self.assigned_splits:
            if split not in SPLITS:
                raise ValueError(f"shard {key!r} assigned to unknown split {split!r}; choose from {SPLITS}")
        if len({k for k, _ in self.assigned_splits}) != len(self.assigned_splits):
            raise ValueError("a shard is assigned to more than one split")
        if self.shard_size_mb < 1:
            raise ValueError("shard_size_mb must be >= 1")

    def to_dict(self) -> dict:
        """JSON-shaped (lists, not tuples): equal to itself after a JSON round trip."""
        values = dataclasses.asdict(self)
        values["assigned_splits"] = [list(pair) for pair in self.assigned_splits]
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "PreprocessConfig":
        from elmo_core.config import from_known_fields

        return from_known_fields(cls, values)

    def config_hash(self) -> str:
        """sha256 of the canonical JSON of every output-affecting field (no assigned splits: the
        hash datasets made before that field existed had)."""
        values = self.to_dict()
        if not values["assigned_splits"]:
            del values["assigned_splits"]
        text = json.dumps(values, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class RunOptions:
    """How the job runs; never changes a row (``num_workers`` can change how pass 2 splits the rows
    into files)."""

    num_workers: int | None = setting(None, "tokenizer tasks at a time, and pass 2's tasks at least (None: as many "
                                      "as the cluster has CPUs for, also CPUs that join while the job runs)")
    # A reader (no CPU reserved) decompresses and splits lines ~100x faster than a CPU tokenizes
    # them with Moses, so a few keep a large cluster's tokenizers busy.
    readers: int = setting(2, "shards read at a time when --num-workers is not given (else that many)")
    cpus_per_worker: float = setting(1.0, "CPUs Ray reserves per tokenizer process (fractions leave room for "
                                     "reading on small machines)")
    lines_per_block: int = setting(4096, "lines a reader yields and a tokenizer call takes (tasks: one a shard or 128 MiB)")
    address: str | None = setting(None, "Ray cluster to use (None: the job's cluster, else a local Ray started now)",
                                  metavar="RAY_ADDRESS")
