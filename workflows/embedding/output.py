"""One input file's embeddings -> one output, written in parts by the embedding actors.

* Parquet (zstd): the output of an input is a folder (``<key>.parquet/``) of part files
  ``part-<first line>-<first sentence index>.parquet`` (zero-padded, so sorted names are line
  order and ``pq.read_table(folder)`` returns the input's rows in line order), plus
  ``_common_metadata`` (the Parquet convention for a dataset's schema; readers skip names starting
  with ``_``). One row per sentence: ``sentence_id``, ``source``, ``line`` (1-based),
  ``sentence_index``, ``tokens``, then the vectors: ``layer_0``, ``layer_1``, ``layer_2`` for
  ``--layers all``, else ``embedding``; each a list (one entry per token) of fixed-size lists of
  2P floats (float32 or float16), i.e. (n, 2P) per sentence and column. The key-value metadata
  ``elmo.embedding`` holds a JSON description: in ``_common_metadata`` the input's (model,
  version, digest, layers, dtype, input URI + fingerprint + sha256, counts; also in the job's
  manifest or ledger entry), in each part the same without the counts and sha256, plus ``part``
  (its first/last line, rows, tokens).
* HDF5: exactly what ``elmo embed`` writes for the same file (AllenNLP's layout): one dataset per
  non-blank line keyed by its 0-based line index, (3, n, 2P) or (n, 2P), and
  ``sentence_to_index``. Blank lines, which ``elmo embed`` refuses, are skipped (and counted by
  the job); the other lines keep their line numbers as keys. A worker task merges the input's
  staged parts into it (`workflows.embedding.parts`).
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from workflows.embedding.config import OUTPUT_FORMATS

METADATA_KEY = "elmo.embedding"
ROW_COLUMNS = ("sentence_id", "source", "line", "sentence_index", "tokens")
FORMATS = {name: f".{name}" for name in OUTPUT_FORMATS}  # format -> file (hdf5) or folder (parquet) suffix
COMMON_METADATA = "_common_metadata"  # in a Parquet output folder: the schema + the input's description


def vectors_of(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A vector column -> (values (total tokens, 2P), offsets (rows + 1,)): row i's (n, 2P)
    matrix is ``values[offsets[i]:offsets[i + 1]]``."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    inner = array.values  # fixed-size lists, one per token
    values = inner.values.to_numpy(zero_copy_only=False).reshape(len(inner), inner.type.list_size)
    offsets = array.offsets.to_numpy()
    return values, offsets - offsets[0]


def part_name(first_line: int, first_sentence_index: int) -> str:
    """A part's file name in its output folder: sorted names are line order."""
    return f"part-{first_line:010d}-{first_sentence_index:08d}.parquet"


class _HashingStream:
    """A writable file object that hashes what passes through it (sha256) and counts bytes."""

    def __init__(self, raw) -> None:
        self.raw, self.digest, self.size, self.closed = raw, hashlib.sha256(), 0, False

    def write(self, data) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def flush(self) -> None:
        pass

    def tell(self) -> int:
        return self.size

    def close(self) -> None:
        self.closed = True


# A part of at most this many bytes in memory is written to an object store in one request (a
# PUT) from a buffer; a larger one streams (a multipart upload: three requests or more, no second
# copy in memory). A feed of one-line files is all small parts.
SMALL_PART_BYTES = 8 << 20


def write_part(store, rel: str, rows: pa.Table, description: dict) -> dict:
    """Write ``rows`` as one Parquet part at ``rel`` of ``store`` (`preprocessing.storage.Storage`):
    on an object store a small part in one request, else streaming (no second copy in memory);
    returns its ``bytes`` and ``sha256``."""
    schema = rows.schema.with_metadata({METADATA_KEY: json.dumps(description, sort_keys=True)})
    if not store.local and rows.nbytes <= SMALL_PART_BYTES:
        sink = pa.BufferOutputStream()
        with pq.ParquetWriter(sink, schema, compression="zstd") as writer:
            writer.write_table(rows.replace_schema_metadata(schema.metadata), row_group_size=max(rows.num_rows, 1))
        data = sink.getvalue().to_pybytes()
        store.write(rel, data)
        return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    with store.open_output(rel) as raw:
        stream = _HashingStream(raw)
        with pq.ParquetWriter(stream, schema, compression="zstd") as writer:
            writer.write_table(rows.replace_schema_metadata(schema.metadata), row_group_size=max(rows.num_rows, 1))
    return {"bytes": stream.size, "sha256": stream.digest.hexdigest()}


def write_common_metadata(store, folder: str, schema: pa.Schema, description: dict) -> None:
    """The folder's ``_common_metadata``: ``schema`` with the input's description (a few KB)."""
    sink = pa.BufferOutputStream()
    pq.write_metadata(schema.with_metadata({METADATA_KEY: json.dumps(description, sort_keys=True)}), sink)
    store.write(f"{folder}/{COMMON_METADATA}", sink.getvalue().to_pybytes())


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

    def finish(self, description: dict) -> None:
        from elmo_core.embed_command import write_sentence_index

        write_sentence_index(self.file, self.mapping)
        self.file.attrs[METADATA_KEY] = json.dumps(description, sort_keys=True)
        self.file.close()

    def abort(self) -> None:
        self.file.close()
        if os.path.exists(self.path):
            os.unlink(self.path)


def output_files(entry: dict) -> list[str]:
    """The files (relative to OUT) that make up a committed output (a manifest or ledger entry)."""
    if entry["output"].endswith(FORMATS["hdf5"]):
        return [entry["output"]]
    return [p["path"] for p in entry["parts"]] + [f"{entry['output']}/{COMMON_METADATA}"]


def read_description(path: str) -> dict:
    """The ``elmo.embedding`` description of an output: an HDF5 file, a Parquet output folder
    (the input's, with counts), or one part (the part's), local or a URI pyarrow opens."""
    if path.endswith(FORMATS["hdf5"]):
        import h5py

        with h5py.File(path, "r") as f:
            return json.loads(f.attrs[METADATA_KEY])
    import pyarrow.fs as pafs

    fs, inner = pafs.FileSystem.from_uri(path) if "://" in path else (pafs.LocalFileSystem(), os.path.abspath(path))
    if fs.get_file_info(inner).type == pafs.FileType.Directory:
        inner = f"{inner.rstrip('/')}/{COMMON_METADATA}"
    return json.loads(pq.read_schema(inner, filesystem=fs).metadata[METADATA_KEY.encode()])
