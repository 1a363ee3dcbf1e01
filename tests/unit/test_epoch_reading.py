"""How training reads its epochs: the next epoch opened in the background (`workflows.training.read_ahead`)
without changing the batches. (A small train split kept in memory after the first epoch:
`tests/unit/test_batch_plan.py`, `SplitRows` with ``cache``.)"""

from __future__ import annotations

import threading
import time

import numpy as np
import pyarrow as pa
import pytest

from tests.helpers.waiting import wait_until
from workflows.training.batches import global_batches
from workflows.training.read_ahead import ReadAhead


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
