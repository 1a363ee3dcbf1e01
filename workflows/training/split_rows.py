"""A split's Parquet files read by row number: the length index, and only the rows asked for.

Training workers read the train split through this instead of a Ray Data stream of the
whole split: `SplitRows.lengths` reads the ``num_tokens`` column alone (under a byte a
row: the index the batch plan is computed from, `workflows.training.batch_plan`), and
`SplitRows.read` reads, of the row groups holding the rows asked for, the columns training
needs (``word_ids``, ``tokens``) and returns only the rows asked for (the worker turns them
into sentences with character ids, `workflows.training.batch_plan.worker_batches`). Every
dataset has ``num_tokens`` (`preprocessing.schema.SENTENCES`), so datasets written before this
reader need nothing new. Stream mode also reads the corpus order's small columns
(`SplitRows.text_order`) and then the rows under its stream rows
(`workflows.training.streams.stream_pieces`).

Parquet is read a row group at a time (pyarrow has no row-range reads). So that a worker reads
about 1/N of the split, rows are owned by blocks (`SplitRows.block_starts`: cut at every row
group's start, and every ``block_rows`` rows within a larger one) and a worker computes the
sentences of its own blocks (`workflows.training.batch_plan.block_share`); `elmo preprocess`
writes row groups of `preprocessing.parquet_writer.ROW_GROUP_ROWS` rows for this. Data written
with larger row groups trains the same, each worker reading more.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from preprocessing.storage import Storage


LENGTH_COLUMN = "num_tokens"
ORDER_COLUMNS = ["source", "line", "sentence_index"]  # the corpus order (stream mode's running text)
ROW_COLUMNS = ["word_ids", "tokens"]
KEPT_ROW_GROUPS = 2  # decoded row groups kept between reads (a buffer's rows may share one with the next)


class SplitRows:
    """Rows of a split's files (``paths`` relative to ``root``, in manifest order), numbered
    ``0 .. rows - 1`` in that order. With ``cache``, every row group read is kept (a small split
    read once, replayed by later epochs); else the last `KEPT_ROW_GROUPS`.

    ``bytes_read``: Parquet bytes read so far (column chunks as stored, plus footers);
    ``rows_read``: rows returned by `read` so far."""

    def __init__(self, root: str, paths: list[str], cache: bool = False) -> None:
        self.storage, self.paths, self.cache = Storage(root), list(paths), cache
        self.bytes_read = self.rows_read = 0
        self._files: dict[int, pq.ParquetFile] = {}
        self._groups: list[tuple[int, int]] = []  # (file, row group) in row order
        self._starts = np.zeros(1, np.int64)  # first row of each row group, then the total
        self._kept: OrderedDict[int, pa.Table] = OrderedDict()
        self._lengths: np.ndarray | None = None

    def _file(self, i: int) -> pq.ParquetFile:
        if i not in self._files:
            source = self.storage.fs.open_input_file(self.storage.path(self.paths[i]))
            self._files[i] = pq.ParquetFile(source)
            self.bytes_read += self._files[i].metadata.serialized_size
        return self._files[i]

    def lengths(self) -> np.ndarray:
        """(rows,) int64 tokens of every row, in row order: read from the ``num_tokens`` column only
        (once; later calls return it again)."""
        if self._lengths is not None:
            return self._lengths
        parts, groups, starts = [], [], [0]
        for i in range(len(self.paths)):
            f = self._file(i)
            column = f.schema_arrow.get_field_index(LENGTH_COLUMN)
            for g in range(f.num_row_groups):
                self.bytes_read += f.metadata.row_group(g).column(column).total_compressed_size
                table = f.read_row_group(g, columns=[LENGTH_COLUMN])
                parts.append(table.column(0).combine_chunks().to_numpy().astype(np.int64))
                groups.append((i, g))
                starts.append(starts[-1] + table.num_rows)
        self._groups, self._starts = groups, np.asarray(starts, np.int64)
        self._lengths = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        return self._lengths

    def text_order(self) -> np.ndarray:
        """(rows,) int64 row numbers in corpus order (`ORDER_COLUMNS`), read from those small
        columns only: the dataset's order sorts sources by a hash of their name."""
        if len(self._starts) == 1:
            self.lengths()
        parts = []
        for i, g in self._groups:
            f = self._file(i)
            meta = f.metadata.row_group(g)
            self.bytes_read += sum(meta.column(c).total_compressed_size for c in range(meta.num_columns)
                                   if meta.column(c).path_in_schema in ORDER_COLUMNS)
            parts.append(f.read_row_group(g, columns=ORDER_COLUMNS))
        if not parts:
            return np.zeros(0, np.int64)
        table = pa.concat_tables(parts)
        return pc.sort_indices(table, [(c, "ascending") for c in ORDER_COLUMNS]).to_numpy().astype(np.int64)

    def block_starts(self, block_rows: int) -> np.ndarray:
        """First row of each block of rows, ascending: the split cut at every row group's start
        and every ``block_rows`` rows within a row group (so no block spans two row groups)."""
        if block_rows < 1:
            raise ValueError("block_rows must be >= 1")
        if len(self._starts) == 1:
            self.lengths()
        cuts = [np.arange(a, b, block_rows, dtype=np.int64) for a, b in zip(self._starts[:-1], self._starts[1:])]
        return np.concatenate(cuts) if cuts else np.zeros(0, np.int64)

    def read(self, rows: np.ndarray) -> pa.Table:
        """The rows ``rows`` (sorted, unique row numbers) in that order, columns `ROW_COLUMNS`,
        reading only the row groups holding them."""
        if len(self._starts) == 1:
            self.lengths()
        rows = np.asarray(rows, np.int64)
        groups = np.searchsorted(self._starts, rows, side="right") - 1
        parts = [self._row_group(int(g)).take(pa.array(rows[groups == g] - self._starts[g]))
                 for g in np.unique(groups)]
        self.rows_read += len(rows)
        return pa.concat_tables(parts) if parts else pa.table({c: [] for c in ROW_COLUMNS})

    def _row_group(self, g: int) -> pa.Table:
        if g in self._kept:
            self._kept.move_to_end(g)
            return self._kept[g]
        i, group = self._groups[g]
        f = self._file(i)
        meta = f.metadata.row_group(group)
        # a list column's chunk is named by its leaf path (``word_ids.list.element``)
        self.bytes_read += sum(meta.column(c).total_compressed_size for c in range(meta.num_columns)
                               if meta.column(c).path_in_schema.split(".")[0] in ROW_COLUMNS)
        table = f.read_row_group(group, columns=ROW_COLUMNS)
        self._kept[g] = table
        if not self.cache:
            while len(self._kept) > KEPT_ROW_GROUPS:
                self._kept.popitem(last=False)
        return table

    def close(self) -> None:
        self._files.clear()
        self._kept.clear()
