"""Tokenized sentences -> the dataset's rows (word ids, character ids) as Arrow arrays."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from elmo_core.characters import MAX_CHARS_PER_TOKEN, token_to_ids
from elmo_core.vocabulary import Vocabulary

from . import schema
from .ids import sentence_id


class SentenceEncoder:
    """Explodes staged lines into sentence rows (`schema.SENTENCES`), one Arrow table a batch."""

    def __init__(self, vocab_tokens: list[str]) -> None:
        self.vocab = Vocabulary(vocab_tokens)

    def __call__(self, lines: pa.Table) -> pa.Table:
        cols = {name: lines.column(name).to_pylist() for name in ("doc_id", "source", "line", "sentences")}
        ids, sources, line_nos, indices, tokens = [], [], [], [], []
        for doc, source, line, sentences in zip(cols["doc_id"], cols["source"], cols["line"], cols["sentences"]):
            for k, sentence in enumerate(sentences):
                ids.append(sentence_id(doc, k))
                sources.append(source)
                line_nos.append(line)
                indices.append(k)
                tokens.append(sentence)
        lengths = np.fromiter((len(s) for s in tokens), dtype=np.int32, count=len(tokens))
        flat = [t for s in tokens for t in s]
        index = self.vocab.index
        unk = self.vocab.unk
        word_ids = np.fromiter((index.get(t, unk) for t in flat), dtype=np.int32, count=len(flat))
        # (num tokens in batch, 50) character ids; token_to_ids caches repeated tokens
        chars = (np.stack([token_to_ids(t) for t in flat]).astype(np.uint16)
                 if flat else np.zeros((0, MAX_CHARS_PER_TOKEN), np.uint16))
        offsets = np.zeros(len(tokens) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        token_list = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.string()))
        word_list = pa.ListArray.from_arrays(pa.array(offsets), pa.array(word_ids))
        char_list = pa.ListArray.from_arrays(pa.array(offsets * MAX_CHARS_PER_TOKEN), pa.array(chars.reshape(-1)))
        return pa.Table.from_arrays(
            [pa.array(ids, pa.string()), pa.array(sources, pa.string()), pa.array(line_nos, pa.int64()),
             pa.array(indices, pa.int32()), pa.array(lengths), token_list, word_list, char_list],
            schema=schema.SENTENCES,
        )


def char_matrix(row_char_ids: np.ndarray) -> np.ndarray:
    """A row's flat ``char_ids`` -> (num_tokens, 50)."""
    return np.asarray(row_char_ids).reshape(-1, MAX_CHARS_PER_TOKEN)
