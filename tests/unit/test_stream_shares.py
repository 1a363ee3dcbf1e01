"""Stream mode's reading (`workflows.training.streams.stream_pieces`, `partial_running_text`):
each worker reads only the sentences under its rows, about 1/W of the split, and its windows are
exactly those of the whole running text; the rows' state gathers into the same checkpoint layout."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from elmo_core.vocabulary import Vocabulary
from preprocessing import schema
from tests.unit.test_batch_plan import row_bytes
from workflows.training.config import TrainJobConfig
from workflows.training.split_rows import SplitRows
from workflows.training.streams import StreamLayout, running_text
from workflows.training.streams import worker_text
from workflows.training.worker import StreamTrainer

WORDS = [f"w{i}" for i in range(40)]


def corpus_rows(num_sentences: int, seed: int) -> pa.Table:
    """Rows of the dataset schema from two sources, 1-25 tokens a sentence, some lines of two sentences."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(num_sentences):
        source, line = ("b.txt", i // 2) if i % 3 else ("a.txt", i)
        n = int(rng.integers(1, 26))
        ids = rng.integers(3, 3 + len(WORDS), n).tolist()
        rows.append({"sentence_id": f"{source}:{line}:{i % 2}", "source": source, "line": line,
                     "sentence_index": i % 2, "num_tokens": n, "tokens": [WORDS[w - 3] for w in ids], "word_ids": ids})
    return pa.Table.from_pylist(rows, schema=schema.SENTENCES)


def write_shuffled_split(root, table: pa.Table, row_group_rows: int) -> list[str]:
    """``table`` in an order other than the corpus order (as the dataset's, whose sources are
    ordered by a hash), in two files of small row groups."""
    order = np.random.default_rng(0).permutation(table.num_rows)
    shuffled = table.take(order)
    (root / "train").mkdir(exist_ok=True)
    paths, half = [], table.num_rows // 2
    for i, part in enumerate((shuffled.slice(0, half), shuffled.slice(half))):
        rel = f"train/part-{i:05d}.parquet"
        pq.write_table(part, root / rel, row_group_size=row_group_rows, compression="zstd")
        paths.append(rel)
    return paths


@pytest.fixture
def vocab() -> Vocabulary:
    return Vocabulary(["<S>", "</S>", "<UNK>", *WORDS])


def contiguous_split(root, table: pa.Table, row_group_rows: int) -> list[str]:
    """``table`` in corpus order (one source), one file of small row groups."""
    (root / "train").mkdir(exist_ok=True)
    pq.write_table(table, root / "train/part-00000.parquet", row_group_size=row_group_rows, compression="zstd")
    return ["train/part-00000.parquet"]


@pytest.mark.parametrize("world,rows,unroll", [(1, 4, 7), (2, 4, 7), (3, 5, 9), (4, 8, 5)])
def test_each_workers_windows_are_those_of_the_whole_text(tmp_path, vocab, world, rows, unroll):
    table = corpus_rows(300, seed=world)
    paths = write_shuffled_split(tmp_path, table, row_group_rows=16)
    whole = StreamLayout(running_text([table], vocab), rows, unroll)
    job = TrainJobConfig(mode="stream", stream_rows=rows, unroll_steps=unroll, num_workers=world)
    for rank in range(world):
        text = worker_text(SplitRows(str(tmp_path), paths), job.stream_rows, job.unroll_steps, vocab, rank, world)
        assert (text.sentences, text.words, text.forward.num_pairs) == \
            (whole.text.sentences, whole.text.words, whole.text.forward.num_pairs)
        mine = StreamLayout(text, rows, unroll)
        for step in range(whole.steps_per_epoch):
            a, b = whole.batch(step, rank, world), mine.batch(step, rank, world)
            assert torch.equal(a.targets, b.targets) and torch.equal(a.char_ids, b.char_ids)
            assert a.global_targets == b.global_targets


def test_a_worker_holds_no_window_of_another_workers_rows(tmp_path, vocab):
    table = corpus_rows(300, seed=5)
    paths = write_shuffled_split(tmp_path, table, row_group_rows=16)
    job = TrainJobConfig(mode="stream", stream_rows=4, unroll_steps=7, num_workers=2)
    text = worker_text(SplitRows(str(tmp_path), paths), job.stream_rows, job.unroll_steps, vocab, 0, 2)
    with pytest.raises(IndexError, match="not read"):
        StreamLayout(text, 4, 7).batch(0, 1, 2)  # rank 1's rows


@pytest.mark.parametrize("world", [1, 2, 4])
def test_each_worker_reads_about_a_worlds_share_of_the_rows(tmp_path, vocab, world):
    table = corpus_rows(4000, seed=7).sort_by([("source", "ascending"), ("line", "ascending"),
                                                ("sentence_index", "ascending")])
    paths = contiguous_split(tmp_path, table, row_group_rows=50)
    job = TrainJobConfig(mode="stream", stream_rows=8, unroll_steps=20, num_workers=world)
    index = SplitRows(str(tmp_path), paths)
    index.text_order()  # the index: lengths and corpus order columns
    total = row_bytes(tmp_path, paths)
    read = []
    for rank in range(world):
        rows = SplitRows(str(tmp_path), paths)
        worker_text(rows, job.stream_rows, job.unroll_steps, vocab, rank, world)
        read.append(rows.bytes_read - index.bytes_read)
        assert rows.rows_read < len(table) / world + 2 * 8 / world * 50  # its rows and their edges' row groups
    # each row of the text (500 sentences) spans ~10 row groups: at most two more at its edges
    assert max(read) < total * (1 / world) * 1.25


def test_the_carried_state_of_each_workers_rows_gathers_into_every_rows_state(tmp_path, vocab):
    """Worker r's state is its forward rows r, r + W, ... and their backward mirrors; a checkpoint
    holds (2, rows, H) per layer in each direction's own row order, restored unchanged."""
    table = corpus_rows(300, seed=9)
    paths = write_shuffled_split(tmp_path, table, row_group_rows=16)
    world, rows = 2, 4
    job = TrainJobConfig(mode="stream", stream_rows=rows, unroll_steps=7, num_workers=world)
    every = {"c.0": torch.arange(2 * rows * 3, dtype=torch.float32).reshape(2, rows, 3)}
    every["h.0"] = -every["c.0"]
    trainers = [StreamTrainer(job, vocab, SplitRows(str(tmp_path), paths), r, world, "cpu", every) for r in range(world)]
    assert trainers[0].state.c[0][0].tolist() == every["c.0"][0, [0, 2]].tolist()
    assert trainers[0].state.c[0][1].tolist() == every["c.0"][1, [3, 1]].tolist()  # the mirrors of rows 0, 2
    # gathering: each worker's rows back in their places (no process group: one part at a time)
    gathered = torch.zeros(2, rows, 3)
    for t in trainers:
        t.world = 1  # gather this worker's part alone
        t.rank = 0
        part = t.carried_state()
        forward, backward = t._directions_rows()
        gathered[0, forward] = part["c.0"][0, forward]
        gathered[1, backward] = part["c.0"][1, backward]
    assert torch.equal(gathered, every["c.0"])
