"""Deterministic, length-bucketed global batches of full sentences, and each worker's share.

Why full sentences and length buckets (not bilm-tf's packed 20-token windows with carried
state): every sentence starts from a zero LSTM state, exactly as `elmo embed` uses the model
(stateless), and no batch depends on the previous one, so a resumed run or a run on a different
number of workers sees exactly the same batches. Bucketing sentences of similar length keeps
padding small (measured in tests: a few percent).

Global batch ``s`` is a function of (dataset order, seed, s) only: rows are read in dataset
order into buffers of ``shuffle_buffer`` sentences; each buffer is permuted by
``rng(seed, epoch, buffer)``, sorted by length (ties in permuted order), cut into batches whose
padded size stays within ``batch_tokens`` (at least one sentence per worker), and the batches are
shuffled. Worker ``r`` of ``W`` takes sentences ``r, r + W, ...`` of each batch (sorted by
length, so the shares are balanced). Fewer than ``W`` sentences left at a buffer's end move to the
next buffer, and at an epoch's end to the next epoch: nothing is skipped or repeated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import torch

from elmo_core.bilm import sentence_targets
from elmo_core.characters import BOS_TOKEN, EOS_TOKEN, token_to_ids, wrap_padded
from elmo_core.vocabulary import Vocabulary

from workflows.training.read_ahead import ReadAhead

COLUMNS = ["num_tokens", "word_ids", "tokens", "source", "line", "sentence_index"]  # the last three: corpus order (stream mode)


@dataclass(frozen=True)
class Sentence:
    word_ids: np.ndarray  # (n,) int32
    char_ids: np.ndarray  # (n, 50) uint16

    def __len__(self) -> int:
        return len(self.word_ids)


@dataclass(frozen=True)
class GlobalBatch:
    step: int  # 0-based optimizer step this batch is for
    epoch: int
    sentences: list[Sentence]  # sorted by length

    def share(self, rank: int, world_size: int) -> list[Sentence]:
        return self.sentences[rank::world_size]

    def num_tokens(self) -> int:
        return sum(len(s) for s in self.sentences)

    def num_targets(self) -> int:
        """Targets per direction (every word and the sentence end)."""
        return sum(len(s) + 1 for s in self.sentences)


def sentences_from_table(table: pa.Table) -> Iterator[Sentence]:
    """Rows of the preprocessing schema -> sentences; character ids are computed for the whole
    table at once from the tokens' bytes (`preprocessing.encode.char_ids_of`), no per-token Python."""
    from preprocessing.encode import char_ids_of

    words = table.column("word_ids").combine_chunks()
    tokens = table.column("tokens").combine_chunks()
    w_values = words.values.to_numpy(zero_copy_only=False)
    w_off = words.offsets.to_numpy()
    chars = char_ids_of(tokens.flatten())
    t_off = tokens.offsets.to_numpy() - tokens.offsets[0].as_py()
    for i in range(len(words)):
        if t_off[i + 1] - t_off[i] != w_off[i + 1] - w_off[i]:
            raise ValueError("a row's tokens and word_ids differ in length")
        yield Sentence(w_values[w_off[i]:w_off[i + 1]], chars[t_off[i]:t_off[i + 1]])


def global_batches(open_epoch: Callable[[int], Iterable[pa.Table]], batch_tokens: int, shuffle_buffer: int,
                   world_size: int, seed: int, read_ahead: bool = True) -> Iterator[GlobalBatch]:
    """Endless stream of global batches (epochs repeat); see the module docstring.

    With ``read_ahead``, epoch ``e + 1`` is opened in a background thread (`ReadAhead`) as soon
    as epoch ``e``'s rows are all read, so its start-up overlaps with training on ``e``'s last
    buffer; the batches are the same either way.
    """
    step, epoch, carry = 0, 0, []
    tables: Iterable[pa.Table] = open_epoch(0)
    try:
        while True:
            buffer, index, seen = carry, 0, 0
            for table in tables:
                for sentence in sentences_from_table(table):
                    seen += 1
                    buffer.append(sentence)
                    if len(buffer) >= shuffle_buffer:
                        batches, buffer = _bucket(buffer, batch_tokens, world_size, (seed, epoch, index))
                        index += 1
                        for sentences in batches:
                            yield GlobalBatch(step, epoch, sentences)
                            step += 1
            if seen == 0 and epoch == 0:
                raise ValueError("the training data has no sentences")
            following = epoch + 1
            tables = ReadAhead(lambda: open_epoch(following), name=f"epoch-{following}") if read_ahead \
                else open_epoch(following)
            batches, carry = _bucket(buffer, batch_tokens, world_size, (seed, epoch, index))
            for sentences in batches:
                yield GlobalBatch(step, epoch, sentences)
                step += 1
            epoch += 1
    finally:
        if isinstance(tables, ReadAhead):
            tables.close()


def _bucket(buffer: list[Sentence], batch_tokens: int, world_size: int,
            key: tuple[int, int, int]) -> tuple[list[list[Sentence]], list[Sentence]]:
    """One buffer -> (shuffled batches, leftover of fewer than world_size sentences)."""
    if not buffer:
        return [], []
    rng = np.random.default_rng(list(key))
    perm = rng.permutation(len(buffer))
    lengths = np.array([len(buffer[i]) for i in perm])
    order = perm[np.argsort(lengths, kind="stable")]
    batches, current, longest = [], [], 0
    for i in order:
        size = len(buffer[i]) + 2  # <S> ... </S>
        if len(current) >= world_size and (len(current) + 1) * max(longest, size) > batch_tokens:
            batches.append(current)
            current, longest = [], 0
        current.append(buffer[i])
        longest = max(longest, size)
    leftover = []
    if len(current) >= world_size:
        batches.append(current)
    else:
        leftover = current
    return [batches[j] for j in rng.permutation(len(batches))], leftover


_BOS = token_to_ids(BOS_TOKEN).astype(np.int64)
_EOS = token_to_ids(EOS_TOKEN).astype(np.int64)


def to_tensors(sentences: list[Sentence], vocab: Vocabulary) -> dict[str, torch.Tensor]:
    """Sentences -> ``<S> w1 .. wn </S>`` tensors: char_ids (B, T, 50), next_ids / prev_ids (B, T)
    (targets, -1 where none), tokens (number of real words)."""
    char_ids, lengths = wrap_padded([s.char_ids for s in sentences], _BOS, _EOS, 0)
    word_ids, _ = wrap_padded([s.word_ids for s in sentences], vocab.bos, vocab.eos, 0)
    word = torch.from_numpy(word_ids)
    next_ids, prev_ids = sentence_targets(word, torch.from_numpy(lengths))
    return {"char_ids": torch.from_numpy(char_ids), "next_ids": next_ids, "prev_ids": prev_ids}


def split_micro(sentences: list[Sentence], parts: int) -> list[list[Sentence]]:
    """A worker's share -> up to ``parts`` non-empty micro-batches (gradient accumulation)."""
    parts = max(1, min(parts, len(sentences)))
    return [sentences[i::parts] for i in range(parts)]
