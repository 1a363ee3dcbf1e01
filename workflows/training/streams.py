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
row are not trained on. Worker ``r`` of ``W`` takes rows ``r, r + W, ...`` of the forward text and
their mirrors, rows ``rows - 1 - r, rows - 1 - r - W, ...``, of the backward text (which cover
the same stretch of the text, give or take ``(N - 1) mod rows`` tokens); each worker's loss is
scaled by the global target count, so W workers compute one worker's gradient.

So a worker needs only the sentences under its rows (`stream_pieces`, from the sentence lengths
alone): it reads those (about 1/W of the split) and holds them as a partial running text
(`partial_running_text`) whose positions are those of the whole text.

Evaluation covers every pair: ``rows`` contiguous rows of ``ceil((N - 1) / rows)`` pairs, the
last window of a row padded with ignored targets. Only the first position of each row lacks the
text before it.

The text is held in memory as two int32 arrays per direction (word id, token type) and one
character-id row per distinct token: about 8 bytes a token (Penn Treebank's train split: 7 MB),
a worker's share of it in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from elmo_core.characters import BOS_TOKEN, EOS_TOKEN, token_to_ids
from elmo_core.softmax import IGNORE
from elmo_core.vocabulary import Vocabulary

if TYPE_CHECKING:
    from workflows.training.split_rows import SplitRows

ORDER_COLUMNS = ("source", "line", "sentence_index")


@dataclass(frozen=True)
class TokenStream:
    """One direction's running text: position ``t`` is word ``word_ids[t]`` whose characters are
    ``type_chars[types[t]]``. word_ids, types: (N,) int32; type_chars: (K, 50) int64.

    A partial text (``pieces`` set) holds only some stretches of a text of ``total`` positions:
    ``pieces`` (P, 3) int64 rows (first position, where it starts in word_ids/types, length),
    ascending by position; `local` maps positions to array indices."""

    word_ids: np.ndarray
    types: np.ndarray
    type_chars: np.ndarray
    pieces: np.ndarray | None = None
    total: int | None = None

    def __len__(self) -> int:
        return len(self.word_ids) if self.total is None else self.total

    def local(self, positions: np.ndarray) -> np.ndarray:
        """Array indices of text positions (any shape); IndexError for one this text does not hold."""
        if self.pieces is None:
            return positions
        piece = np.searchsorted(self.pieces[:, 0], positions, side="right") - 1
        first, offset, length = (self.pieces[np.maximum(piece, 0), c] for c in range(3))
        if np.any(piece < 0) or np.any(positions - first >= length):
            raise IndexError("a window reaches text this worker has not read")
        return positions - first + offset

    @property
    def num_pairs(self) -> int:
        """(input, target) pairs: every position but the last predicts the next one."""
        return len(self) - 1


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
    forward, backward, words = _text_arrays(table, vocab)
    return RunningText(forward, backward, sentences=table.num_rows, words=words)


def _text_arrays(table: pa.Table, vocab: Vocabulary) -> tuple[TokenStream, TokenStream, int]:
    """Sentences in text order (columns ``word_ids``, ``tokens``) -> (forward, backward, words):
    ``</S> a1 .. an </S> b1 ..`` and its reverse with ``<S>`` for the boundary."""
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
    return TokenStream(fwd_words, fwd_types, type_chars), TokenStream(bwd_words, bwd_types, type_chars), n_words


def text_boundaries(lengths: np.ndarray) -> np.ndarray:
    """(S + 1,) the running text's boundary positions: before sentence ``i`` at ``[i]``, the last at ``[S]``."""
    lengths = np.asarray(lengths, np.int64)
    return np.concatenate([[0], np.cumsum(lengths)]) + np.arange(len(lengths) + 1)


def stream_pieces(lengths: np.ndarray, rows: int, unroll: int, rank: int, world_size: int) -> list[tuple[int, int]]:
    """The sentences (in text order) under worker ``rank``'s training rows, as ranges ``[first,
    last]``, ascending and apart: computed from the sentence lengths (``lengths``, text order) alone.
    Forward row ``j`` reads positions ``[jL, (j + 1)L]``, and its backward mirror (module
    docstring) the same stretch shifted by ``e = (N - 1) mod rows``: together ``[jL, (j + 1)L + e]``."""
    bounds = text_boundaries(lengths)
    pairs = int(bounds[-1])  # N - 1
    layout = StreamLayout.of_size(pairs, rows, unroll)
    extra = pairs - rows * layout.row_length
    pieces: list[tuple[int, int]] = []
    for j in layout.worker_rows(rank, world_size):
        a, b = j * layout.row_length, (j + 1) * layout.row_length + extra
        first = max(0, int(np.searchsorted(bounds, a, side="right")) - 1)
        last = min(len(lengths) - 1, max(first, int(np.searchsorted(bounds, b, side="left")) - 1))
        if pieces and first <= pieces[-1][1] + 1:
            pieces[-1] = (pieces[-1][0], max(last, pieces[-1][1]))
        else:
            pieces.append((first, last))
    return pieces


def worker_text(rows: "SplitRows", stream_rows: int, unroll: int, vocab: Vocabulary, rank: int,
                world_size: int) -> RunningText:
    """Worker ``rank``'s running text of a split: its index (`SplitRows.lengths`,
    `SplitRows.text_order`) read whole, then only the sentences under the worker's rows."""
    order = rows.text_order()
    lengths = rows.lengths()[order]
    pieces = stream_pieces(lengths, stream_rows, unroll, rank, world_size)
    wanted = np.concatenate([order[first:last + 1] for first, last in pieces])
    sorted_rows = np.unique(wanted)
    table = rows.read(sorted_rows).take(pa.array(np.searchsorted(sorted_rows, wanted)))
    return partial_running_text(table, lengths, pieces, vocab)


def partial_running_text(table: pa.Table, lengths: np.ndarray, pieces: list[tuple[int, int]],
                         vocab: Vocabulary) -> RunningText:
    """The running text of the sentences whose lengths (text order) are ``lengths``, holding only
    ``pieces`` (`stream_pieces`): ``table`` has their rows, piece after piece, in text order."""
    bounds = text_boundaries(lengths)
    total = int(bounds[-1]) + 1
    counts = [last - first + 1 for first, last in pieces]
    if table.num_rows != sum(counts):
        raise ValueError(f"{table.num_rows} rows for pieces of {sum(counts)} sentences")
    expected = np.concatenate([lengths[first:last + 1] for first, last in pieces])
    got = pc.list_value_length(table.column("word_ids").combine_chunks()).to_numpy(zero_copy_only=False)
    if not np.array_equal(got, expected):
        raise ValueError("the rows' word ids disagree with their num_tokens column")
    forward, backward, _ = _text_arrays(table, vocab)
    # pieces lie one after another in the arrays, each sharing its first boundary with the previous one's last
    local_length = len(forward.word_ids)
    table_pieces, offset = [], 0
    for first, last in pieces:
        position, length = int(bounds[first]), int(bounds[last + 1] - bounds[first]) + 1
        table_pieces.append((position, offset, length))
        offset += length - 1
    fwd = np.asarray(table_pieces, np.int64).reshape(-1, 3)
    bwd = np.stack([total - fwd[:, 0] - fwd[:, 2], local_length - fwd[:, 1] - fwd[:, 2], fwd[:, 2]], axis=1)[::-1]
    return RunningText(TokenStream(forward.word_ids, forward.types, forward.type_chars, fwd, total),
                       TokenStream(backward.word_ids, backward.types, backward.type_chars, bwd.copy(), total),
                       sentences=len(lengths), words=int(np.sum(lengths)))


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

    def __init__(self, text: RunningText | None, rows: int, unroll: int, pairs: int | None = None) -> None:
        if rows < 1 or unroll < 1:
            raise ValueError("rows and unroll steps must be >= 1")
        self.text, self.rows, self.unroll = text, rows, unroll
        pairs = text.forward.num_pairs if pairs is None else pairs
        self.row_length = pairs // rows
        self.steps_per_epoch = self.row_length // unroll
        if self.steps_per_epoch == 0:
            raise ValueError(f"the training text has {pairs:,} tokens: too few for {rows} rows of "
                             f"{unroll}-token windows; use fewer --stream-rows or a shorter --unroll-steps")

    @classmethod
    def of_size(cls, pairs: int, rows: int, unroll: int) -> "StreamLayout":
        """The layout of a text of ``pairs`` (input, target) pairs, without the text (no batches)."""
        return cls(None, rows, unroll, pairs)

    def worker_rows(self, rank: int, world_size: int) -> np.ndarray:
        rows = np.arange(rank, self.rows, world_size)
        if len(rows) == 0:
            raise ValueError(f"{self.rows} stream rows cannot be shared by {world_size} workers")
        return rows

    def batch(self, step: int, rank: int, world_size: int) -> StreamBatch:
        epoch, k = divmod(step, self.steps_per_epoch)
        rows = self.worker_rows(rank, world_size)
        columns = k * self.unroll + np.arange(self.unroll)[None, :]
        forward = rows[:, None] * self.row_length + columns  # (R, T)
        backward = (self.rows - 1 - rows)[:, None] * self.row_length + columns  # the rows' mirrors
        chars, targets = _windows(self.text, (forward, backward), np.ones_like(forward, bool))
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
        index = np.where(valid, index, 0)
        chars, targets = _windows(text, (index, index), valid)
        yield chars, targets, k == 0


def _windows(text: RunningText, indices: tuple[np.ndarray, np.ndarray],
             valid: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions (R, T) of each direction -> char ids (2, R, T, 50) and targets (2, R, T)."""
    chars, targets = [], []
    for stream, index in zip((text.forward, text.backward), indices):
        chars.append(stream.type_chars[stream.types[stream.local(index)]])
        target = stream.word_ids[stream.local(index + 1)].astype(np.int64)
        target[~valid] = IGNORE
        targets.append(target)
    return torch.from_numpy(np.stack(chars)), torch.from_numpy(np.stack(targets))
