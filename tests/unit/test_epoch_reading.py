"""How training reads its epochs: the next epoch opened in the background (`workflows.training.read_ahead`),
a small train split kept in memory after the first (`workflows.training.worker.epoch_reader`); neither
changes the batches."""

from __future__ import annotations

import threading
import time

import numpy as np
import pyarrow as pa
import pytest

from tests.helpers.waiting import wait_until
from workflows.training.batches import global_batches
from workflows.training.read_ahead import ReadAhead
from workflows.training.worker import epoch_reader


def test_items_arrive_in_order_and_errors_after_them():
    def stream():
        yield from range(5)
        raise OSError("shard 3 unreadable")

    seen = []
    with pytest.raises(OSError, match="shard 3 unreadable"):
        for item in ReadAhead(stream, depth=2):
            seen.append(item)
    assert seen == [0, 1, 2, 3, 4]


def test_reads_ahead_at_most_depth_items_and_stops_when_closed():
    produced = []

    def stream():
        for i in range(1000):
            produced.append(i)
            yield i

    reader = ReadAhead(stream, depth=3, name="bounded")
    time.sleep(0.3)  # the reader fills the queue, then waits
    assert 3 <= len(produced) <= 4  # depth in the queue + one waiting to be put
    iterator = iter(reader)
    assert [next(iterator) for _ in range(2)] == [0, 1]
    reader.close()
    assert wait_until(lambda: not any(t.name == "bounded" for t in threading.enumerate()))  # the thread ended
    assert len(produced) < 10


def tables(num_sentences: int, seed: int) -> list[pa.Table]:
    """Rows of the preprocessing schema: sentences of 1-30 tokens, 50 rows a table."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(num_sentences):
        n = int(rng.integers(1, 31))
        ids = rng.integers(3, 100, n).tolist()
        rows.append({"num_tokens": n, "word_ids": ids, "tokens": [f"w{w}" for w in ids]})
    table = pa.Table.from_pylist(rows, schema=pa.schema([("num_tokens", pa.int32()), ("word_ids", pa.list_(pa.int32())),
                                                         ("tokens", pa.list_(pa.string()))]))
    return [table.slice(i, 50) for i in range(0, num_sentences, 50)]


def signature(batch):
    return batch.step, batch.epoch, [s.word_ids.tolist() for s in batch.sentences]


def test_read_ahead_gives_the_same_batches_and_opens_the_next_epoch_early():
    data = tables(430, seed=1)
    events = []

    def open_epoch(epoch):
        events.append(("open", epoch))
        return iter(data)

    plain = global_batches(lambda e: iter(data), 400, 120, 2, seed=3, read_ahead=False)
    ahead = global_batches(open_epoch, 400, 120, 2, seed=3)
    epochs_seen = set()
    for _ in range(200):
        a, b = next(plain), next(ahead)
        assert signature(a) == signature(b)
        events.append(("batch", b.epoch))
        epochs_seen.add(b.epoch)
    assert {0, 1, 2} <= epochs_seen
    # epoch 1 was opened while batches of epoch 0 were still to come (its last buffer's)
    opened = events.index(("open", 1))
    assert ("batch", 0) in events[opened:]
    ahead.close()  # stopping early ends the background reader
    assert wait_until(lambda: not any(t.name.startswith("epoch-") for t in threading.enumerate()))


class CountingShard:
    """Stands for a Ray Train dataset shard: every ``iter_batches`` call is a new Ray Data pass."""

    def __init__(self, data: list[pa.Table], fail_first_pass_after: int | None = None) -> None:
        self.data, self.passes, self.fail_after = data, 0, fail_first_pass_after

    def iter_batches(self, batch_size: int, batch_format: str):
        self.passes += 1
        for i, table in enumerate(self.data):
            if self.passes == 1 and self.fail_after is not None and i == self.fail_after:
                raise ConnectionError("object store lost")
            yield table


def test_a_cached_train_split_is_read_once_and_replayed_unchanged():
    data = tables(430, seed=2)
    cached, uncached = CountingShard(data), CountingShard(data)
    a = global_batches(epoch_reader(cached, cache=True), 400, 120, 2, seed=3)
    b = global_batches(epoch_reader(uncached, cache=False), 400, 120, 2, seed=3)
    epochs = set()
    for _ in range(200):
        x, y = next(a), next(b)
        assert signature(x) == signature(y)
        epochs.add(x.epoch)
    assert len(epochs) >= 3
    assert cached.passes == 1
    assert uncached.passes >= len(epochs)


def test_an_interrupted_first_pass_is_not_kept():
    data = tables(200, seed=4)
    shard = CountingShard(data, fail_first_pass_after=2)
    read = epoch_reader(shard, cache=True)
    with pytest.raises(ConnectionError):
        list(read(0))
    first = [t.num_rows for t in read(0)]  # read again, completely
    assert first == [t.num_rows for t in data]
    assert [t.num_rows for t in read(1)] == first and shard.passes == 2
