"""The global batch plan of sentence mode, computed from sentence lengths alone.

`workflows.training.batches.global_batches` defines the global batches from the rows themselves;
the plan gives the same batches as row numbers of the split (dataset order), knowing only each
row's length (the ``num_tokens`` column, `workflows.training.split_rows.SplitRows.lengths`).
So every worker can compute every batch without reading the rows, read only the rows of its
share of each batch (`worker_batches`), and a run resumed at step ``k`` starts reading at step
``k``'s buffer: the rows before it are never read.

A worker's share of a batch is either the sentences of its own row blocks (`block_share`: each
reads about 1/N of the split, the shares of a batch differ by chance, and a worker may have none)
or every N-th sentence by length (`stride_share`: balanced, every worker reads every row group).
The global batches are the same either way; the loss is scaled by the global target count, so
the summed gradient is the same (up to the order of float additions).

The rules are those of `global_batches` (the module docstring of `workflows.training.batches`):
buffers of ``shuffle_buffer`` rows in dataset order (with the previous buffer's leftover in
front), each permuted by ``rng(seed, epoch, buffer)``, sorted by length, cut into batches whose
padded size stays within ``batch_tokens`` (at least ``world_size`` sentences), the batches
shuffled; a leftover of fewer than ``world_size`` rows moves to the next buffer (or epoch).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa

from workflows.training.batches import Sentence, sentences_from_table


@dataclass(frozen=True)
class PlannedBuffer:
    """One shuffle buffer's batches: ``batches[i]`` is global step ``first_step + i``, its rows
    (split row numbers, int64) sorted by length as `GlobalBatch.sentences` are."""

    epoch: int
    first_step: int
    batches: list[np.ndarray]

    @property
    def end_step(self) -> int:
        return self.first_step + len(self.batches)


def plan_buffers(lengths: np.ndarray, batch_tokens: int, shuffle_buffer: int, world_size: int,
                 seed: int) -> Iterator[PlannedBuffer]:
    """Endless plan over the split whose row ``i`` has ``lengths[i]`` tokens (epochs repeat);
    buffers without batches are skipped."""
    lengths = np.asarray(lengths, np.int64)
    if len(lengths) == 0:
        raise ValueError("the training data has no sentences")
    step, epoch, carry = 0, 0, np.zeros(0, np.int64)
    while True:
        index, start = 0, 0
        while True:
            take = max(1, shuffle_buffer - len(carry))  # a buffer is cut when a row fills it
            if len(lengths) - start < take:
                break
            rows = np.concatenate([carry, np.arange(start, start + take, dtype=np.int64)])
            start += take
            batches, carry = bucket_rows(rows, lengths, batch_tokens, world_size, (seed, epoch, index))
            index += 1
            if batches:
                yield PlannedBuffer(epoch, step, batches)
                step += len(batches)
        rows = np.concatenate([carry, np.arange(start, len(lengths), dtype=np.int64)])
        batches, carry = bucket_rows(rows, lengths, batch_tokens, world_size, (seed, epoch, index))
        if batches:
            yield PlannedBuffer(epoch, step, batches)
            step += len(batches)
        epoch += 1


def bucket_rows(rows: np.ndarray, lengths: np.ndarray, batch_tokens: int, world_size: int,
                key: tuple[int, int, int]) -> tuple[list[np.ndarray], np.ndarray]:
    """`batches._bucket` on row numbers: (shuffled batches, leftover of fewer than world_size rows).
    Sorted ascending, a batch's longest sentence is its last, so each cut is a binary search."""
    if len(rows) == 0:
        return [], rows
    rng = np.random.default_rng(list(key))
    perm = rng.permutation(len(rows))
    order = perm[np.argsort(lengths[rows[perm]], kind="stable")]
    sizes = (lengths[rows[order]] + 2).tolist()  # <S> ... </S>
    n, cuts, begin = len(order), [], 0
    while n - begin >= world_size:
        # the first j >= begin + world_size with (j - begin + 1) * sizes[j] > batch_tokens ends the batch
        first = begin + world_size
        end = bisect.bisect_right(range(first, n), batch_tokens,
                                  key=lambda j: (j - begin + 1) * sizes[j]) + first
        cuts.append((begin, end))
        begin = end
    batches = [rows[order[a:b]] for a, b in cuts]
    leftover = rows[order[begin:]]
    return [batches[j] for j in rng.permutation(len(batches))], leftover


def buffers_from(plan: Iterator[PlannedBuffer], start_step: int) -> Iterator[PlannedBuffer]:
    """The plan from the buffer holding ``start_step`` on (lengths only: nothing is read)."""
    for buffer in plan:
        if buffer.end_step > start_step:
            yield buffer


@dataclass(frozen=True)
class WorkerBatch:
    """A worker's view of global batch ``step``: its share of the sentences and the lengths of
    all of them (the global token and target counts the loss is scaled by)."""

    step: int
    epoch: int
    mine: list[Sentence]  # this worker's share, sorted by length
    lengths: np.ndarray  # (B,) every sentence's length, the whole global batch

    def share(self, rank: int, world_size: int) -> list[Sentence]:
        return self.mine

    def num_tokens(self) -> int:
        return int(self.lengths.sum())

    def num_targets(self) -> int:
        """Targets per direction over the whole global batch (every word and the sentence end)."""
        return int(self.lengths.sum() + len(self.lengths))


Share = Callable[[np.ndarray], np.ndarray]  # a batch's rows (sorted by length) -> this worker's, in that order


def stride_share(rank: int, world_size: int) -> Share:
    """Sentences ``rank, rank + world_size, ...`` of the batch (`GlobalBatch.share`)."""
    return lambda rows: rows[rank::world_size]


def block_share(block_starts: np.ndarray, rank: int, world_size: int) -> Share:
    """The batch's rows in worker ``rank``'s blocks: block ``b`` (rows ``block_starts[b]`` up to the
    next block's first, `SplitRows.block_starts`) is worker ``b mod world_size``'s."""
    block_starts = np.asarray(block_starts, np.int64)

    def share(rows: np.ndarray) -> np.ndarray:
        owner = (np.searchsorted(block_starts, rows, side="right") - 1) % world_size
        return rows[owner == rank]

    return share


def worker_batches(lengths: np.ndarray, read_rows: Callable[[np.ndarray], pa.Table], batch_tokens: int,
                   shuffle_buffer: int, rank: int, world_size: int, seed: int,
                   start_step: int = 0, share: Share | None = None) -> Iterator[WorkerBatch]:
    """Endless stream of worker ``rank``'s batches from ``start_step`` on: of global batch ``s``,
    the sentences ``share`` picks (default `stride_share`). Per buffer, one call
    ``read_rows(rows)`` (sorted split row numbers -> those rows, columns ``word_ids`` and
    ``tokens``) reads this worker's rows; each batch's are turned into sentences when it is due."""
    share = share or stride_share(rank, world_size)
    plan = plan_buffers(lengths, batch_tokens, shuffle_buffer, world_size, seed)
    for buffer in buffers_from(plan, start_step):
        skip = max(0, start_step - buffer.first_step)
        shares = [share(rows) for rows in buffer.batches[skip:]]
        wanted = np.unique(np.concatenate(shares))
        table = read_rows(wanted)
        for i, (rows, share_rows) in enumerate(zip(buffer.batches[skip:], shares)):
            mine = list(sentences_from_table(table.take(pa.array(np.searchsorted(wanted, share_rows))))) \
                if len(share_rows) else []
            if [len(s) for s in mine] != lengths[share_rows].tolist():
                raise ValueError("the rows' word ids disagree with their num_tokens column")
            yield WorkerBatch(buffer.first_step + skip + i, buffer.epoch, mine, lengths[rows])
