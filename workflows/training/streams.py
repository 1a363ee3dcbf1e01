"""Running text for stream training and evaluation (truncated backpropagation through time).

A split's sentences, in corpus order (source, line, sentence index), are joined into one running
text with the sentence boundary as a token, as in Mikolov's Penn Treebank files (``<eos>``):

    s = </S> a1 .. an </S> b1 .. bm </S> ...

The forward LM reads ``s[:-1]`` and predicts ``s[1:]``: every word and every sentence end is
predicted exactly once (the count Kim et al. 2016 and Mikolov report perplexity over). The
backward LM reads the reversed text, whose boundary token is ``<S>``
(``<S> bm .. b1 <S> an .. a1 <S>``), and predicts its next token the same way.

Training layout (Zaremba et al. 2014; Kim et al. 2016): the ``N - 1`` (input, target) pairs of
each direction are cut into ``rows`` contiguous rows of ``L = (N - 1) // rows`` pairs; step ``k``
of an epoch is columns ``[kT, (k + 1)T)`` of every row, and each row's LSTM state carries from
step ``k`` to ``k + 1`` (reset to zero at an epoch's start). The last ``L mod T`` columns of a
row are not trained on. Worker ``r`` of ``W`` takes rows ``r, r + W, ...``; each worker's loss is
scaled by the global target count, so W workers compute one worker's gradient.

Evaluation covers every pair: ``rows`` contiguous rows of ``ceil((N - 1) / rows)`` pairs, the
last window of a row padded with ignored targets. Only the first position of each row lacks the
text before it.

The split is held in memory as two int32 arrays per direction (word id, token type) and one
character-id row per distinct token: about 8 bytes a token (Penn Treebank's train split: 7 MB).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from elmo_core.characters import BOS_TOKEN, EOS_TOKEN, token_to_ids
from elmo_core.softmax import IGNORE
from elmo_core.vocabulary import Vocabulary

ORDER_COLUMNS = ("source", "line", "sentence_index")


@dataclass(frozen=True)
class TokenStream:
    """One direction's running text: position ``t`` is word ``word_ids[t]`` whose characters are
    ``type_chars[types[t]]``. word_ids, types: (N,) int32; type_chars: (K, 50) int64."""

    word_ids: np.ndarray
    types: np.ndarray
    type_chars: np.ndarray

    def __len__(self) -> int:
        return len(self.word_ids)

    @property
    def num_pairs(self) -> int:
        """(input, target) pairs: every position but the last predicts the next one."""
        return len(self.word_ids) - 1


@dataclass(frozen=True)
class RunningText:
    forward: TokenStream
    backward: TokenStream
    sentences: int
    words: int  # real words (boundaries not counted)


def running_text(tables: Iterable[pa.Table], vocab: Vocabulary, max_sentences: int | None = None) -> RunningText:
    """Rows of the preprocessing schema (any order) -> the split's running text in both directions."""
    tables = [t for t in tables if t.num_rows]
    if not tables:
        raise ValueError("the split has no sentences")
    table = pa.concat_tables(tables).combine_chunks()
    missing = [c for c in ORDER_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"rows lack the column(s) {missing} that give the corpus order")
    table = table.take(pc.sort_indices(table, [(c, "ascending") for c in ORDER_COLUMNS]))
    if max_sentences is not None:
        table = table.slice(0, max_sentences)
    words = table.column("word_ids").combine_chunks()
    tokens = table.column("tokens").combine_chunks()
    lengths = pc.list_value_length(words).to_numpy(zero_copy_only=False).astype(np.int64)
    if not np.array_equal(lengths, pc.list_value_length(tokens).to_numpy(zero_copy_only=False)):
        raise ValueError("a row's tokens and word_ids differ in length")
    flat_words = words.flatten().to_numpy(zero_copy_only=False).astype(np.int32)
    encoded = pc.dictionary_encode(tokens.flatten()) if len(flat_words) else None
    from preprocessing.encode import char_ids_of

    if encoded is not None:
        flat_types = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32)
        type_chars = np.asarray(char_ids_of(encoded.dictionary), dtype=np.int64)
    else:
        flat_types, type_chars = np.zeros(0, np.int32), np.zeros((0, 50), np.int64)
    bos_type, eos_type = len(type_chars), len(type_chars) + 1
    type_chars = np.concatenate([type_chars, token_to_ids(BOS_TOKEN)[None].astype(np.int64),
                                 token_to_ids(EOS_TOKEN)[None].astype(np.int64)])

    S, n_words = len(lengths), int(lengths.sum())
    N = 1 + n_words + S
    starts = 1 + np.concatenate([[0], np.cumsum(lengths)[:-1]]) + np.arange(S)  # first word of each sentence
    positions = np.repeat(starts, lengths) + (np.arange(n_words) - np.repeat(np.cumsum(lengths) - lengths, lengths))
    boundary = np.ones(N, bool)
    boundary[positions] = False
    fwd_words = np.full(N, vocab.eos, np.int32)
    fwd_types = np.full(N, eos_type, np.int32)
    fwd_words[positions] = flat_words
    fwd_types[positions] = flat_types
    bwd_words, bwd_types, bwd_boundary = fwd_words[::-1].copy(), fwd_types[::-1].copy(), boundary[::-1]
    bwd_words[bwd_boundary] = vocab.bos
    bwd_types[bwd_boundary] = bos_type
    return RunningText(TokenStream(fwd_words, fwd_types, type_chars), TokenStream(bwd_words, bwd_types, type_chars),
                       sentences=S, words=n_words)


@dataclass(frozen=True)
class StreamBatch:
    """One step's windows for this worker: char_ids (2, R, T, 50), targets (2, R, T)."""

    step: int
    epoch: int
    char_ids: torch.Tensor
    targets: torch.Tensor
    global_targets: int  # per direction, all workers

    def num_tokens(self) -> int:
        """Positions the whole global batch predicts per direction (words and sentence ends)."""
        return self.global_targets


class StreamLayout:
    """Where step ``k``'s windows lie in the running text (module docstring)."""

    def __init__(self, text: RunningText, rows: int, unroll: int) -> None:
        if rows < 1 or unroll < 1:
            raise ValueError("rows and unroll steps must be >= 1")
        self.text, self.rows, self.unroll = text, rows, unroll
        self.row_length = text.forward.num_pairs // rows
        self.steps_per_epoch = self.row_length // unroll
        if self.steps_per_epoch == 0:
            raise ValueError(f"the training text has {text.forward.num_pairs:,} tokens: too few for {rows} rows of "
                             f"{unroll}-token windows; use fewer --stream-rows or a shorter --unroll-steps")

    def worker_rows(self, rank: int, world_size: int) -> np.ndarray:
        rows = np.arange(rank, self.rows, world_size)
        if len(rows) == 0:
            raise ValueError(f"{self.rows} stream rows cannot be shared by {world_size} workers")
        return rows

    def batch(self, step: int, rank: int, world_size: int) -> StreamBatch:
        epoch, k = divmod(step, self.steps_per_epoch)
        rows = self.worker_rows(rank, world_size)
        index = rows[:, None] * self.row_length + k * self.unroll + np.arange(self.unroll)[None, :]  # (R, T)
        chars, targets = _windows(self.text, index, np.ones_like(index, bool))
        return StreamBatch(step, epoch, chars, targets, self.rows * self.unroll)

    def batches(self, start_step: int, rank: int, world_size: int) -> Iterator[StreamBatch]:
        step = start_step
        while True:
            yield self.batch(step, rank, world_size)
            step += 1


def evaluation_windows(text: RunningText, rows: int, unroll: int, rank: int = 0,
                       world_size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor, bool]]:
    """Every (input, target) pair of both directions, once: ``rows`` contiguous rows, this
    worker's rows ``rank::world_size``. Yields (char_ids (2, R, T, 50), targets (2, R, T),
    first window of the rows); the state carries between windows."""
    pairs = text.forward.num_pairs
    rows = max(1, min(rows, pairs))
    length = -(-pairs // rows)
    mine = np.arange(rank, rows, world_size)
    if len(mine) == 0:
        return
    for k, start in enumerate(range(0, length, unroll)):
        index = mine[:, None] * length + start + np.arange(min(unroll, length - start))[None, :]
        valid = (index < pairs) & (index < (mine[:, None] + 1) * length)
        chars, targets = _windows(text, np.where(valid, index, 0), valid)
        yield chars, targets, k == 0


def _windows(text: RunningText, index: np.ndarray, valid: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions (R, T) of both directions -> char ids (2, R, T, 50) and targets (2, R, T)."""
    chars, targets = [], []
    for stream in (text.forward, text.backward):
        chars.append(stream.type_chars[stream.types[index]])
        target = stream.word_ids[index + 1].astype(np.int64)
        target[~valid] = IGNORE
        targets.append(target)
    return torch.from_numpy(np.stack(chars)), torch.from_numpy(np.stack(targets))
