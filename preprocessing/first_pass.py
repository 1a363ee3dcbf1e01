"""Pass 1 of `elmo preprocess`, one block at a time: raw lines -> staged sentence rows + statistics.

A block of raw lines (and the file markers the reader emits) becomes

* staged sentence rows (`schema.STAGED`), one table per source file in the block, and
* a statistics table (`schema.STATS`): the block's token counts by split, its line counters by
  (source, split), and its file markers.

The tokenizer is the only per-line Python here; nothing is Python per token, and counting is
Arrow's and numpy's.
"""

from __future__ import annotations

from dataclasses import dataclass

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
BYTE_ORDER_MARK = "\ufeff".encode("utf-8")  # dropped from the first line of a file


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


def _line_counters(lines: pa.Table, split_codes: np.ndarray, per_line: np.ndarray, tokens_per_line: np.ndarray,
                   invalid: list[int], cut: list[tuple[int, int]]) -> pa.Table:
    """Per (source, split) of a block's text lines: lines, empty, invalid UTF-8, sentences, tokens,
    cut sentences. ``invalid`` holds the positions of invalid lines, ``cut`` (position, pieces
    cut) pairs: both are rare, so they are kept sparse."""
    sources = pc.unique(lines.column("source"))
    group = pc.index_in(lines.column("source"), sources).to_numpy() * len(SPLITS) + split_codes
    size = len(sources) * len(SPLITS)

    def total(weights=None, at=None) -> np.ndarray:
        where = group if at is None else group[np.asarray(at, np.int64)]
        return np.bincount(where, weights=weights, minlength=size).astype(np.int64)

    counted = total()
    present = np.flatnonzero(counted)
    columns = {"lines": counted, "empty_lines": total(per_line == 0), "invalid_utf8_lines": total(at=invalid),
               "sentences": total(per_line), "tokens": total(tokens_per_line),
               "split_sentences": total([n for _, n in cut], at=[i for i, _ in cut])}
    return _stats_table(len(present), schema.KIND_LINES, {
        "source": sources.take(pa.array(present // len(SPLITS))),
        "split": pa.array(SPLITS, pa.string()).take(pa.array(present % len(SPLITS))),
        **{name: pa.array(values[present]) for name, values in columns.items()}})


def _token_rows(staged: pa.Table) -> pa.Table:
    counts = token_counts(staged)
    return _stats_table(counts.num_rows, schema.KIND_TOKEN, {
        "split": counts.column("split"), "key": counts.column("token"), "count": counts.column("count")})


@dataclass
class TokenizedLines:
    """A block of lines as sentences: ``rows`` (`schema.TOKENIZED`: sentence_id, source, line,
    sentence_index, num_tokens, tokens), ``per_line`` (L,) sentences of each line, ``line_of``
    (S,) each sentence's line (position in the block), ``texts`` each line decoded and stripped,
    ``invalid`` positions of lines with invalid UTF-8, ``cut`` (position, sentences cut)."""

    rows: pa.Table
    per_line: np.ndarray
    line_of: np.ndarray
    texts: list[str]
    invalid: list[int]
    cut: list[tuple[int, int]]


def tokenize_lines(lines: pa.Table, raws: list[bytes], process: LineProcessor) -> TokenizedLines:
    """Raw lines (``lines``: source, key, line number; ``raws`` their bytes) -> sentences. The one
    tokenizing step of preprocessing and of the embedding jobs (`workflows.embedding.pipeline`); the
    tokenizer is the only per-line Python, nothing here is per token."""
    for i in np.flatnonzero(lines.column("line").to_numpy() == 1):
        if raws[i].startswith(BYTE_ORDER_MARK):
            raws[i] = raws[i][len(BYTE_ORDER_MARK):]
    joined = process.joined
    sentences: list[str] = []  # every sentence of the block, its tokens joined by spaces
    per_line: list[int] = []
    texts: list[str] = []
    invalid: list[int] = []
    cut: list[tuple[int, int]] = []
    for i, raw in enumerate(raws):
        text, bad = decode_line(raw)
        if bad:
            invalid.append(i)
        texts.append(text.strip())
        found, cut_count = joined(text)
        sentences += found
        per_line.append(len(found))
        if cut_count:
            cut.append((i, cut_count))
    per_line_array = np.asarray(per_line, np.int64)
    line_of = np.repeat(np.arange(len(raws)), per_line_array)
    first = np.cumsum(per_line_array) - per_line_array
    index = np.arange(len(sentences), dtype=np.int32) - np.repeat(first, per_line_array).astype(np.int32)
    tokens = pc.split_pattern(pa.array(sentences, pa.string()), " ")
    lengths = pc.list_value_length(tokens).cast(pa.int32())
    take_lines = pa.array(line_of)  # line columns -> sentence columns
    key, number = lines.column("key").take(take_lines), lines.column("line").take(take_lines)
    sentence_id = pc.binary_join_element_wise(key, number.cast(pa.string()), pa.array(index).cast(pa.string()), ":")
    rows = pa.table({
        "sentence_id": sentence_id, "source": lines.column("source").take(take_lines), "line": number,
        "sentence_index": pa.array(index), "num_tokens": lengths, "tokens": tokens}, schema=schema.TOKENIZED)
    return TokenizedLines(rows, per_line_array, line_of, texts, invalid, cut)


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
        is_line = pc.equal(batch.column("kind"), KIND_LINE)
        markers = []
        if not pc.all(is_line).as_py():  # end or error markers of files: passed through
            markers = [(r["kind"], r["source"], r["line"], r["detail"] or "")
                       for r in batch.filter(pc.invert(is_line)).to_pylist()]
            batch = batch.filter(is_line)
        lines = batch.select(["source", "key", "line"])
        tokenized = tokenize_lines(lines, batch.column("raw").to_pylist(), self.process)
        split_codes = self._split_codes(lines)
        splits = pa.array(SPLITS, pa.string()).take(pa.array(split_codes))
        rows = tokenized.rows.append_column("split", splits.take(pa.array(tokenized.line_of)))
        tokens_per_line = np.bincount(tokenized.line_of, weights=rows.column("num_tokens").to_numpy(),
                                      minlength=len(tokenized.texts))
        staged = {}
        if rows.num_rows:
            sources = pc.unique(rows.column("source")).to_pylist()
            for source in sources:
                staged[source] = rows if len(sources) == 1 else rows.filter(pc.equal(rows.column("source"), source))
        counters = _line_counters(lines, split_codes, tokenized.per_line, tokens_per_line, tokenized.invalid,
                                  tokenized.cut)
        stats = pa.concat_tables([_markers(markers), counters, _token_rows(rows)])
        return staged, stats
