"""The dataset's Parquet files of one split, as one task writes them: a new file at a size target."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from . import schema
from .storage import Storage

# A Parquet row group holds this many sentences (a file's last one fewer), or fewer where that
# many pass a quarter of the file size target in memory (Arrow bytes, before encoding and
# compression). Small groups let a training worker read only its own rows (Parquet is read a
# row group at a time; `workflows.training.split_rows`): 1,024 rows of PTB-like text are ~55 KB.
ROW_GROUP_ROWS = 1024
PARQUET_COMPRESSION = "zstd"  # smaller than snappy and, measured here, faster to write


class SplitWriter:
    """The Parquet files of one split written by one task: ``<prefix>-<k>.parquet``, a new file
    once one reaches ``target_bytes`` (so a file is at most one row group and the footer over)."""

    def __init__(self, storage: Storage, prefix: str, target_bytes: int) -> None:
        self.storage, self.prefix, self.target_bytes = storage, prefix, target_bytes
        self.pending: list[pa.Table] = []
        self.pending_rows = self.pending_bytes = 0
        self.stream = self.writer = None
        self.written: list[dict] = []  # {"path", "rows", "bytes"} of each finished file

    def add(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.pending_rows += table.num_rows
        self.pending_bytes += table.nbytes
        if self.pending_rows >= ROW_GROUP_ROWS or self.pending_bytes >= self.target_bytes // 4:
            self._flush()

    def _flush(self, last: bool = False) -> None:
        """Write the pending rows as whole row groups of `ROW_GROUP_ROWS` (all of them if ``last``
        or if fewer than that many passed the byte limit); the rest stays pending."""
        if not self.pending_rows:
            return
        table = pa.concat_tables(self.pending)
        rows = table.num_rows
        if not last and rows >= ROW_GROUP_ROWS:
            rows -= rows % ROW_GROUP_ROWS
        if self.writer is None:
            rel = f"{self.prefix}-{len(self.written):05d}.parquet"
            self.written.append({"path": rel, "rows": 0, "bytes": 0})
            self.stream = self.storage.open_output(rel)
            self.writer = pq.ParquetWriter(self.stream, schema.SENTENCES, compression=PARQUET_COMPRESSION)
        self.writer.write_table(table.slice(0, rows), row_group_size=ROW_GROUP_ROWS)
        self.written[-1]["rows"] += rows
        rest = table.slice(rows)
        self.pending, self.pending_rows, self.pending_bytes = ([rest], rest.num_rows, rest.nbytes) if rest.num_rows \
            else ([], 0, 0)
        if self.stream.tell() >= self.target_bytes:
            self._close_file()

    def _close_file(self) -> None:
        self.writer.close()
        self.written[-1]["bytes"] = self.stream.tell()
        self.stream.close()
        self.stream = self.writer = None

    def close(self) -> list[dict]:
        self._flush(last=True)
        if self.writer is not None:
            self._close_file()
        return self.written
