"""Pass 2 of `elmo preprocess` on the Ray workers: word ids, written as the dataset's Parquet files.

The driver groups the staged sentence files of pass 1 (`group_staged_files`); each
`encode_staged` task looks up the vocabulary for its group's rows and writes them per split
(`parquet_writer.SplitWriter`), reporting each file it wrote.
"""

from __future__ import annotations

import posixpath

import pyarrow as pa
import pyarrow.compute as pc

from .config import SPLITS
from .parquet_writer import SplitWriter
from .storage import Storage
from .tokenize_tasks import STAGED_SUFFIX, read_staged

_WORD_IDS: dict = {}  # vocabulary digest -> WordIds (one per worker process)
_STORAGES: dict[str, Storage] = {}  # dataset root -> its storage


def encode_staged(groups: pa.Table, vocab_tokens: list[str], vocab_digest: str, root_uri: str, data_dir: str,
                  target_bytes: int) -> pa.Table:
    """Ray Data UDF: groups of staged sentence files -> the dataset's Parquet files, per split
    under ``data_dir/<split>/``, named after the group's first staged file (a retried task
    rewrites the same files). Returns one row per file written: split, path, rows, bytes.

    The files are written here rather than by ``Dataset.write_parquet``: the rows then never
    pass through the object store, and the manifest needs no second look at the files."""
    from .encode import WordIds

    if vocab_digest not in _WORD_IDS:
        _WORD_IDS.clear()
        _WORD_IDS[vocab_digest] = WordIds(vocab_tokens)
    if root_uri not in _STORAGES:
        _STORAGES[root_uri] = Storage(root_uri)
    storage = _STORAGES[root_uri]
    written = []
    for paths in groups.column("paths").to_pylist():
        name = posixpath.basename(paths[0]).removesuffix(STAGED_SUFFIX)
        writers = {split: SplitWriter(storage, posixpath.join(data_dir, split, name), target_bytes)
                   for split in SPLITS}
        for rel in paths:
            rows = _WORD_IDS[vocab_digest](read_staged(storage.fs, storage.path(rel)))
            for split, writer in writers.items():
                part = rows.filter(pc.equal(rows.column("split"), split))
                if part.num_rows:
                    writer.add(part.drop_columns(["split"]))
        written += [{"split": split, **entry} for split, writer in writers.items() for entry in writer.close()]
    return pa.Table.from_pylist(written, schema=pa.schema([("split", pa.string()), ("path", pa.string()),
                                                          ("rows", pa.int64()), ("bytes", pa.int64())]))


def group_staged_files(files: list[tuple[str, int]], target_bytes: int, workers: int) -> list[list[str]]:
    """Consecutive runs of staged (path, size) of about equal size: enough runs that each is
    under ``target_bytes`` of staged data (each writes about one dataset file per split) and,
    where there are files enough, at least one per worker."""
    total = sum(size for _, size in files)
    count = min(len(files), max(-(-total // target_bytes), workers))
    groups: list[list[str]] = [[] for _ in range(count)]
    done = 0
    for rel, size in files:
        groups[min(count - 1, done * count // max(total, 1))].append(rel)
        done += size
    return [g for g in groups if g]
