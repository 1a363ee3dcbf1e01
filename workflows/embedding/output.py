"""One input file's embeddings -> one output file, written locally and then published whole.

* Parquet (zstd): one row per sentence: ``sentence_id``, ``source``, ``line`` (1-based),
  ``sentence_index``, ``tokens``, then the vectors: ``layer_0``, ``layer_1``, ``layer_2`` for
  ``--layers all``, else ``embedding``; each a list (one entry per token) of fixed-size lists of
  2P floats (float32 or float16), i.e. (n, 2P) per sentence and column. The file's key-value
  metadata ``elmo.embedding`` holds the JSON description (model, version, digest, layers, dtype,
  input URI + fingerprint + sha256, counts), also written to the job's manifest.
* HDF5: exactly what ``elmo embed`` writes for the same file (AllenNLP's layout): one dataset per
  non-blank line keyed by its 0-based line index, (3, n, 2P) or (n, 2P), and
  ``sentence_to_index``. Blank lines, which ``elmo embed`` refuses, are skipped (and counted by
  the job); the other lines keep their line numbers as keys.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from workflows.embedding.config import OUTPUT_FORMATS

METADATA_KEY = "elmo.embedding"
ROW_COLUMNS = ("sentence_id", "source", "line", "sentence_index", "tokens")
FORMATS = {name: f".{name}" for name in OUTPUT_FORMATS}  # format -> file extension


def vectors_of(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A vector column -> (values (total tokens, 2P), offsets (rows + 1,)): row i's (n, 2P)
    matrix is ``values[offsets[i]:offsets[i + 1]]``."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    inner = array.values  # fixed-size lists, one per token
    values = inner.values.to_numpy(zero_copy_only=False).reshape(len(inner), inner.type.list_size)
    offsets = array.offsets.to_numpy()
    return values, offsets - offsets[0]


ROW_GROUP_BYTES = 64 << 20  # rows are gathered into Parquet row groups of about this size


class ParquetOutput:
    def __init__(self, path: str, vector_names: list[str]) -> None:
        self.path = path
        self.names = vector_names
        self.writer: pq.ParquetWriter | None = None
        self.pending: list[pa.Table] = []
        self.pending_bytes = 0

    def add(self, rows: pa.Table) -> None:
        table = rows.select([*ROW_COLUMNS, *self.names])
        self.pending.append(table)
        self.pending_bytes += table.nbytes
        if self.pending_bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        table = pa.concat_tables(self.pending)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema, compression="zstd")
        self.writer.write_table(table, row_group_size=table.num_rows)
        self.pending, self.pending_bytes = [], 0

    def finish(self, description: dict, empty_schema: pa.Schema) -> None:
        self._flush()
        if self.writer is None:  # a file without sentences still gets its (empty) output
            self.writer = pq.ParquetWriter(self.path, empty_schema, compression="zstd")
        self.writer.add_key_value_metadata({METADATA_KEY: json.dumps(description, sort_keys=True)})
        self.writer.close()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if os.path.exists(self.path):
            os.unlink(self.path)


class Hdf5Output:
    def __init__(self, path: str, vector_names: list[str]) -> None:
        import h5py

        self.path = path
        self.names = vector_names
        self.file = h5py.File(path, "w")
        self.mapping: dict[str, str] = {}

    def add(self, rows: pa.Table) -> None:
        lines = rows.column("line").to_numpy()
        texts = rows.column("text").to_pylist()
        columns = [vectors_of(rows.column(name)) for name in self.names]
        for i, line in enumerate(lines):
            key = str(int(line) - 1)
            mats = [values[offsets[i]:offsets[i + 1]] for values, offsets in columns]
            self.file.create_dataset(key, data=np.stack(mats) if len(mats) > 1 else mats[0])
            self.mapping[texts[i]] = key

    def finish(self, description: dict, empty_schema: pa.Schema) -> None:
        from elmo_core.embed_command import write_sentence_index

        write_sentence_index(self.file, self.mapping)
        self.file.attrs[METADATA_KEY] = json.dumps(description, sort_keys=True)
        self.file.close()

    def abort(self) -> None:
        self.file.close()
        if os.path.exists(self.path):
            os.unlink(self.path)


def open_output(fmt: str, path: str, vector_names: list[str]):
    return (ParquetOutput if fmt == "parquet" else Hdf5Output)(path, vector_names)


def read_description(path: str) -> dict:
    """The ``elmo.embedding`` description stored in an output file (Parquet or HDF5)."""
    if path.endswith(".hdf5"):
        import h5py

        with h5py.File(path, "r") as f:
            return json.loads(f.attrs[METADATA_KEY])
    return json.loads(pq.read_metadata(path).metadata[METADATA_KEY.encode()])
