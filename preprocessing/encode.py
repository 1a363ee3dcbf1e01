"""Tokenized sentences -> the dataset's rows (word ids, character ids), vectorized with Arrow.

Everything per token runs in Arrow's C++ kernels (flattening, vocabulary lookup, distinct
tokens); Python touches each *distinct* token of a block once, for its character ids.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from elmo_core.characters import MAX_CHARS_PER_TOKEN, token_to_ids
from elmo_core.vocabulary import Vocabulary

from . import schema


def _offsets(lengths: np.ndarray) -> pa.Array:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.array(offsets)


def sentences_of(lines: pa.Table) -> tuple[pa.ListArray, np.ndarray, np.ndarray]:
    """The lines' sentences as one list<string> array, each sentence's line (row index) and its
    index within that line."""
    nested = lines.column("sentences").combine_chunks()
    if isinstance(nested, pa.ChunkedArray):  # an empty table
        nested = pa.array([], schema.STAGED_LINES.field("sentences").type)
    sentences = pc.list_flatten(nested)
    parent = pc.list_parent_indices(nested).to_numpy(zero_copy_only=False).astype(np.int64)
    per_line = pc.list_value_length(nested).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    first = np.zeros(len(per_line), dtype=np.int64)
    np.cumsum(per_line[:-1], out=first[1:]) if len(per_line) else None
    index = np.arange(len(parent), dtype=np.int64) - first[parent]
    return sentences, parent, index


class SentenceEncoder:
    """Staged lines -> sentence rows (`schema.SENTENCES`), one Arrow table a batch."""

    def __init__(self, vocab_tokens: list[str]) -> None:
        self.vocab = Vocabulary(vocab_tokens)
        self.value_set = pa.array(self.vocab.tokens, pa.string())

    def __call__(self, lines: pa.Table) -> pa.Table:
        sentences, parent, index = sentences_of(lines)
        take = pa.array(parent)
        ids = pc.binary_join_element_wise(pc.take(lines.column("doc_id"), take),
                                          pc.cast(pa.array(index), pa.string()), ":")
        lengths = pc.list_value_length(sentences).to_numpy(zero_copy_only=False).astype(np.int32)
        flat = pc.list_flatten(sentences)
        offsets = _offsets(lengths)
        # word ids: position in the vocabulary (hash lookup in C++), <UNK> where absent
        word_ids = pc.fill_null(pc.index_in(flat, value_set=self.value_set), self.vocab.unk).cast(pa.int32())
        # character ids: computed once per distinct token of the batch, then gathered
        encoded = pc.dictionary_encode(flat)
        distinct = encoded.dictionary.to_pylist()
        table = (np.stack([token_to_ids(t) for t in distinct]).astype(np.uint16) if distinct
                 else np.zeros((0, MAX_CHARS_PER_TOKEN), np.uint16))
        chars = table[encoded.indices.to_numpy(zero_copy_only=False)].reshape(-1)
        char_offsets = pa.array(offsets.to_numpy().astype(np.int64) * MAX_CHARS_PER_TOKEN, pa.int32())
        return pa.Table.from_arrays(
            [ids, pc.take(lines.column("source"), take).combine_chunks(),
             pc.take(lines.column("line"), take).combine_chunks(), pa.array(index.astype(np.int32)),
             pa.array(lengths), pa.ListArray.from_arrays(offsets, flat),
             pa.ListArray.from_arrays(offsets, word_ids), pa.ListArray.from_arrays(char_offsets, pa.array(chars))],
            schema=schema.SENTENCES,
        )


def token_counts(lines: pa.Table) -> pa.Table:
    """(split, token, count) of the lines' tokens, counted in Arrow (C++ hash aggregation)."""
    sentences, parent, _ = sentences_of(lines)
    per_sentence = pc.list_value_length(sentences).to_numpy(zero_copy_only=False).astype(np.int64)
    token_line = np.repeat(parent, per_sentence)
    tokens = pa.table({"split": pc.take(lines.column("split"), pa.array(token_line)),
                       "token": pc.list_flatten(sentences)})
    counted = tokens.group_by(["split", "token"]).aggregate([("token", "count")])
    return pa.table({"split": counted.column("split"), "token": counted.column("token"),
                     "count": counted.column("token_count").cast(pa.int64())})


def char_matrix(row_char_ids: np.ndarray) -> np.ndarray:
    """A row's flat ``char_ids`` -> (num_tokens, 50)."""
    return np.asarray(row_char_ids).reshape(-1, MAX_CHARS_PER_TOKEN)
