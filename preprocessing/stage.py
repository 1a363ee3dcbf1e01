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
from .config import PreprocessConfig
from .encode import token_counts
from .ids import doc_id, split_of
from .text import LineProcessor, decode_line

RAW_LINES = pa.schema([("kind", pa.string()), ("source", pa.string()), ("key", pa.string()),
                       ("line", pa.int64()), ("raw", pa.binary()), ("detail", pa.string())])
KIND_LINE = "line"  # a raw line; other kinds are the file markers of `schema`


def _stats_table(n: int, kind: str, columns: dict) -> pa.Table:
    """``n`` statistics rows of one kind: the given columns, "" / 0 for the others."""
    filled = {"kind": pa.array([kind] * n, pa.string())}
    for field in schema.STATS:
        if field.name != "kind":
            default = pa.array([""] * n, pa.string()) if field.type == pa.string() else pa.array(np.zeros(n, np.int64))
            filled[field.name] = pa.array(columns[field.name], field.type) if field.name in columns else default
    return pa.table(filled, schema=schema.STATS)


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

    def __call__(self, batch: pa.Table) -> tuple[dict[str, pa.Table], pa.Table]:
        process, config = self.process, self.config
        markers = []
        line_source, line_split, line_empty, line_invalid, line_sentences, line_cut = [], [], [], [], [], []
        ids, sources, numbers, indexes, token_lists, splits = [], [], [], [], [], []
        columns = [batch.column(name).to_pylist() for name in RAW_LINES.names]
        for kind, source, key, line, raw, detail in zip(*columns):
            if kind != KIND_LINE:  # end or error marker of a file: passed through
                markers.append((kind, source, line, detail or ""))
                continue
            text, invalid = decode_line(raw)
            if line == 1 and text.startswith("\ufeff"):
                text = text[1:]  # byte-order mark
            sentences, cut_count = process(text)
            line_id = doc_id(key, line)
            split = split_of(line_id, config)
            line_source.append(source)
            line_split.append(split)
            line_empty.append(not sentences)
            line_invalid.append(invalid)
            line_sentences.append(len(sentences))
            line_cut.append(cut_count)
            for index, tokens in enumerate(sentences):
                ids.append(f"{line_id}:{index}")
                sources.append(source)
                numbers.append(line)
                indexes.append(index)
                token_lists.append(tokens)
                splits.append(split)
        tokens = pa.array(token_lists, pa.list_(pa.string()))
        rows = pa.table({"sentence_id": pa.array(ids, pa.string()), "source": pa.array(sources, pa.string()),
                         "line": pa.array(numbers, pa.int64()), "sentence_index": pa.array(indexes, pa.int32()),
                         "num_tokens": pc.list_value_length(tokens).cast(pa.int32()), "tokens": tokens,
                         "split": pa.array(splits, pa.string())}, schema=schema.STAGED)
        lines = pa.table({"source": pa.array(line_source, pa.string()), "split": pa.array(line_split, pa.string()),
                          "empty": pa.array(line_empty, pa.bool_()).cast(pa.int64()),
                          "invalid": pa.array(line_invalid, pa.bool_()).cast(pa.int64()),
                          "sentences": pa.array(line_sentences, pa.int64()), "cut": pa.array(line_cut, pa.int64())})
        staged = {}
        if rows.num_rows:
            for source in pc.unique(rows.column("source")).to_pylist():
                staged[source] = rows.filter(pc.equal(rows.column("source"), source))
        stats = pa.concat_tables([_markers(markers), _line_counters(lines, rows), _token_rows(rows)])
        return staged, stats
