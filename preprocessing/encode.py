"""Arrow-vectorized encodings of tokenized sentences: word ids, character ids, token counts.

Everything per token runs in Arrow's C++ kernels or numpy array operations (flattening,
vocabulary hash lookup, counting, the UTF-8 bytes -> character ids gather); Python loops at most
over sentences.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from elmo_core.characters import utf8_to_ids
from elmo_core.vocabulary import Vocabulary

from . import schema
from .config import SPLITS


def char_ids_of(tokens: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A flat string array of n tokens -> (n, 50) uint16 character ids (`token_to_ids` rows)."""
    if isinstance(tokens, pa.ChunkedArray):
        tokens = tokens.combine_chunks() if tokens.num_chunks else pa.array([], pa.string())
    tokens = tokens.cast(pa.large_string())  # int64 offsets, whatever the size
    if tokens.null_count:
        raise ValueError("tokens must not be null")
    _, offsets_buf, data_buf = tokens.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[tokens.offset:tokens.offset + len(tokens) + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    return utf8_to_ids(data, offsets)


class WordIds:
    """Sentence rows -> the same rows with ``word_ids`` (hash lookup in C++, <UNK> where absent)."""

    def __init__(self, vocab_tokens: list[str]) -> None:
        self.vocab = Vocabulary(vocab_tokens)
        self.value_set = pa.array(self.vocab.tokens, pa.string())

    def __call__(self, staged: pa.Table) -> pa.Table:
        tokens = staged.column("tokens").combine_chunks() if staged.num_rows else pa.array([], pa.list_(pa.string()))
        ids = pc.fill_null(pc.index_in(tokens.flatten(), value_set=self.value_set), self.vocab.unk).cast(pa.int32())
        offsets = pc.subtract(tokens.offsets, tokens.offsets[0])
        word_ids = pa.ListArray.from_arrays(offsets, ids)
        columns = {name: staged.column(name) for name in staged.column_names}
        columns["word_ids"] = word_ids
        table = pa.table([columns[f.name] for f in schema.SENTENCES], schema=schema.SENTENCES)
        return table.append_column("split", staged.column("split"))


def token_counts(staged: pa.Table) -> pa.Table:
    """(split, token, count) of staged sentence rows, counted in Arrow (C++ hash counting)."""
    parts = []
    for split in SPLITS:
        rows = staged.filter(pc.equal(staged.column("split"), split))
        if not rows.num_rows:
            continue
        counted = pc.value_counts(pc.list_flatten(rows.column("tokens")))
        parts.append(pa.table({"split": pa.array([split] * len(counted), pa.string()),
                               "token": counted.field("values"), "count": counted.field("counts")}))
    if not parts:
        return pa.table({"split": pa.array([], pa.string()), "token": pa.array([], pa.string()),
                         "count": pa.array([], pa.int64())})
    return pa.concat_tables(parts)
