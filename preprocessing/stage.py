"""Pass 1 of the pipeline, one block at a time: raw lines -> staged sentence rows + statistics.

A block of raw lines (and the file markers the reader emits) becomes

* staged sentence rows (`schema.STAGED`), one table per source file in the block, and
* a statistics table (`schema.STATS`): the block's token counts by split, its line counters by
  (source, split), and its file markers.

The tokenizer is the only per-token Python here; counting is Arrow's.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import schema
from .config import SPLITS, PreprocessConfig
from .encode import token_counts
from .ids import line_split_codes
from .text import LineProcessor, decode_line

RAW_LINES = pa.schema([("kind", pa.string()), ("source", pa.string()), ("key", pa.string()),
                       ("line", pa.int64()), ("raw", pa.binary()), ("detail", pa.string())])
KIND_LINE = "line"  # a raw line; other kinds are the file markers of `schema`


def _stats_table(n: int, kind: str, columns: dict) -> pa.Table:
    """``n`` statistics rows of one kind: the given columns (lists or Arrow arrays), "" / 0 for
    the others."""
    arrays = []
    for field in schema.STATS:
        value = columns.get(field.name)
        if field.name == "kind":
            arrays.append(pa.repeat(pa.scalar(kind, pa.string()), n))
        elif value is None:
            arrays.append(pa.repeat(pa.scalar("" if field.type == pa.string() else 0, field.type), n))
        elif isinstance(value, (pa.Array, pa.ChunkedArray)):
            arrays.append(value.cast(field.type))  # not through Python objects
        else:
            arrays.append(pa.array(value, field.type))
    return pa.table(arrays, schema=schema.STATS)


def _markers(rows: list[tuple[str, str, int, str]]) -> pa.Table:
    """File markers (kind, source, lines read, checksum or error) as statistics rows."""
    if not rows:
        return _stats_table(0, schema.KIND_FILE_END, {})
    return pa.concat_tables([_stats_table(1, kind, {"source": [source], "lines": [lines], "key": [detail]})
                             for kind, source, lines, detail in rows])


def _line_counters(lines: pa.Table, staged: pa.Table) -> pa.Table:
    """Per (source, split): lines, empty, invalid UTF-8, sentences, tokens, cut sentences."""
    per_line = lines.group_by(["source", "split"]).aggregate(
        [("empty", "count"), ("empty", "sum"), ("invalid", "sum"), ("sentences", "sum"), ("cut", "sum")])
    tokens = staged.group_by(["source", "split"]).aggregate([("num_tokens", "sum")])
    joined = per_line.join(tokens, ["source", "split"], join_type="left outer")
    return _stats_table(joined.num_rows, schema.KIND_LINES, {
        "source": joined.column("source"), "split": joined.column("split"),
        "lines": joined.column("empty_count").cast(pa.int64()),
        "empty_lines": joined.column("empty_sum").cast(pa.int64()),
        "invalid_utf8_lines": joined.column("invalid_sum").cast(pa.int64()),
        "sentences": joined.column("sentences_sum").cast(pa.int64()),
        "tokens": joined.column("num_tokens_sum").fill_null(0).cast(pa.int64()),
        "split_sentences": joined.column("cut_sum").cast(pa.int64())})


def _token_rows(staged: pa.Table) -> pa.Table:
    counts = token_counts(staged)
    return _stats_table(counts.num_rows, schema.KIND_TOKEN, {
        "split": counts.column("split"), "key": counts.column("token"), "count": counts.column("count")})


class BlockStager:
    """One raw-line block -> ({source: staged sentence rows}, statistics)."""

    def __init__(self, config: PreprocessConfig) -> None:
        self.config = config
        self.process = LineProcessor(config)

    def _split_codes(self, lines: pa.Table) -> np.ndarray:
        """Split code of each line (columns key, line), one hash call per shard in the block."""
        keys, numbers = lines.column("key"), lines.column("line").to_numpy()
        shard_keys = pc.unique(keys)
        codes = np.empty(len(numbers), np.int8)
        of_line = pc.index_in(keys, shard_keys).to_numpy()
        for i, shard_key in enumerate(shard_keys.to_pylist()):
            mine = of_line == i
            codes[mine] = line_split_codes(shard_key, numbers[mine], self.config)
        return codes

    def __call__(self, batch: pa.Table) -> tuple[dict[str, pa.Table], pa.Table]:
        process = self.process
        markers = []
        kept, line_invalid, line_sentences, line_cut = [], [], [], []  # per text line
        sentence_lengths, flat_tokens = [], []  # per sentence; all tokens of the block in order
        columns = [batch.column(name).to_pylist() for name in RAW_LINES.names]
        for row, (kind, source, _, line, raw, detail) in enumerate(zip(*columns)):
            if kind != KIND_LINE:  # end or error marker of a file: passed through
                markers.append((kind, source, line, detail or ""))
                continue
            text, invalid = decode_line(raw)
            if line == 1 and text.startswith("\ufeff"):
                text = text[1:]  # byte-order mark
            sentences, cut_count = process(text)
            kept.append(row)
            line_invalid.append(invalid)
            line_sentences.append(len(sentences))
            line_cut.append(cut_count)
            for tokens in sentences:
                sentence_lengths.append(len(tokens))
                flat_tokens.extend(tokens)
        # everything per sentence is derived from the per-line lists with array operations
        lines = batch.take(pa.array(kept, pa.int64())).select(["source", "key", "line"])
        splits = pa.array(SPLITS, pa.string()).take(pa.array(self._split_codes(lines), pa.int8()))
        per_line = np.asarray(line_sentences, np.int64)
        of_sentence = pa.array(np.repeat(np.arange(len(kept)), per_line))  # its line's position in `kept`
        first = np.cumsum(per_line) - per_line
        index = np.arange(int(per_line.sum()), dtype=np.int32) - np.repeat(first, per_line).astype(np.int32)
        key, number = lines.column("key").take(of_sentence), lines.column("line").take(of_sentence)
        lengths = np.asarray(sentence_lengths, np.int32)
        offsets = np.zeros(len(lengths) + 1, np.int32)
        offsets[1:] = np.cumsum(lengths)
        tokens = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat_tokens, pa.string()))
        sentence_id = pc.binary_join_element_wise(key, number.cast(pa.string()), pa.array(index).cast(pa.string()), ":")
        rows = pa.table({
            "sentence_id": sentence_id,
            "source": lines.column("source").take(of_sentence), "line": number, "sentence_index": pa.array(index),
            "num_tokens": pa.array(lengths), "tokens": tokens,
            "split": splits.take(of_sentence)}, schema=schema.STAGED)
        line_table = pa.table({"source": lines.column("source"), "split": splits,
                               "empty": pa.array(per_line == 0).cast(pa.int64()),
                               "invalid": pa.array(line_invalid, pa.bool_()).cast(pa.int64()),
                               "sentences": pa.array(per_line), "cut": pa.array(line_cut, pa.int64())})
        staged = {}
        if rows.num_rows:
            for source in pc.unique(rows.column("source")).to_pylist():
                staged[source] = rows.filter(pc.equal(rows.column("source"), source))
        stats = pa.concat_tables([_markers(markers), _line_counters(line_table, rows), _token_rows(rows)])
        return staged, stats
