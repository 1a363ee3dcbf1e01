"""Sentence mode's batch plan from lengths alone (`workflows.training.batch_plan`) and the split read
by row number (`workflows.training.split_rows`): the same global batches as
`workflows.training.batches.global_batches`, each worker reading only its rows, a resume reading
nothing before its step."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from preprocessing import schema
from workflows.training.batch_plan import block_share, plan_buffers, worker_batches
from workflows.training.batches import global_batches
from workflows.training.split_rows import SplitRows

BATCH_TOKENS, SHUFFLE, SEED = 400, 120, 3


def sentence_rows(num_sentences: int, seed: int) -> pa.Table:
    """Rows of the dataset schema (`preprocessing.schema.SENTENCES`): sentences of 1-30 tokens."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(num_sentences):
        n = int(rng.integers(1, 31))
        ids = rng.integers(3, 100, n).tolist()
        rows.append({"sentence_id": f"k:{i + 1}:0", "source": "a.txt", "line": i + 1, "sentence_index": 0,
                     "num_tokens": n, "tokens": [f"w{w}" for w in ids], "word_ids": ids})
    return pa.Table.from_pylist(rows, schema=schema.SENTENCES)


def write_split(root, table: pa.Table, files: int = 3, row_group_rows: int = 40) -> list[str]:
    """``table`` as ``files`` Parquet files of row groups of ``row_group_rows`` rows (like `elmo preprocess`)."""
    (root / "train").mkdir(exist_ok=True)
    paths, cut = [], np.linspace(0, table.num_rows, files + 1).astype(int)
    for i in range(files):
        rel = f"train/part-{i:05d}.parquet"
        pq.write_table(table.slice(cut[i], cut[i + 1] - cut[i]), root / rel, row_group_size=row_group_rows,
                       compression="zstd")
        paths.append(rel)
    return paths


def words(sentences) -> list[list[int]]:
    return [s.word_ids.tolist() for s in sentences]


def take(iterator, n: int) -> list:
    return [next(iterator) for _ in range(n)]


@pytest.mark.parametrize("world", [1, 2, 3])
def test_workers_get_the_shares_of_the_same_global_batches_from_lengths_alone(tmp_path, world):
    table = sentence_rows(430, seed=1)
    rows = SplitRows(str(tmp_path), write_split(tmp_path, table))
    reference = take(global_batches(lambda e: iter([table]), BATCH_TOKENS, SHUFFLE, world, SEED, read_ahead=False), 90)
    assert reference[-1].epoch >= 3  # epochs, buffers and leftovers carried across them are covered
    for rank in range(world):
        mine = take(worker_batches(rows.lengths(), rows.read, BATCH_TOKENS, SHUFFLE, rank, world, SEED), 90)
        for whole, part in zip(reference, mine):
            assert (part.step, part.epoch) == (whole.step, whole.epoch)
            assert words(part.share(rank, world)) == words(whole.share(rank, world))
            assert part.num_tokens() == whole.num_tokens() and part.num_targets() == whole.num_targets()


def epoch_zero_steps(lengths: np.ndarray, world: int) -> int:
    return sum(len(b.batches) for b in _epoch_buffers(lengths, world, 0))


def _epoch_buffers(lengths, world, epoch):
    for buffer in plan_buffers(lengths, BATCH_TOKENS, SHUFFLE, world, SEED):
        if buffer.epoch > epoch:
            return
        if buffer.epoch == epoch:
            yield buffer


def test_each_worker_decodes_only_its_rows_and_the_workers_together_each_row_once(tmp_path):
    table = sentence_rows(1200, seed=2)
    paths = write_split(tmp_path, table)
    decoded = {}
    for world in (1, 2, 4):
        lengths = SplitRows(str(tmp_path), paths).lengths()
        steps = epoch_zero_steps(lengths, world)
        planned = np.concatenate([rows for b in _epoch_buffers(lengths, world, 0) for rows in b.batches])
        counts, seen = [], []
        for rank in range(world):
            reader = SplitRows(str(tmp_path), paths)
            got = []
            read = lambda rows: (got.append(rows), reader.read(rows))[1]  # noqa: E731
            take(worker_batches(reader.lengths(), read, BATCH_TOKENS, SHUFFLE, rank, world, SEED), steps)
            counts.append(reader.rows_read)
            seen.append(np.concatenate(got))
        # every row of the epoch's batches decoded by exactly one worker, none twice
        assert sorted(np.concatenate(seen).tolist()) == sorted(planned.tolist())
        assert max(counts) - min(counts) <= steps  # the shares of a batch differ by at most one row
        decoded[world] = counts
    assert decoded[1] == [len(planned_rows(tmp_path, paths, 1))]
    assert max(decoded[4]) < 0.3 * decoded[1][0] and max(decoded[2]) < 0.55 * decoded[1][0]


def planned_rows(tmp_path, paths, world) -> np.ndarray:
    lengths = SplitRows(str(tmp_path), paths).lengths()
    return np.concatenate([rows for b in _epoch_buffers(lengths, world, 0) for rows in b.batches])


def test_the_length_index_is_a_small_part_of_the_bytes(tmp_path):
    table = sentence_rows(1200, seed=5)
    paths = write_split(tmp_path, table, files=2, row_group_rows=400)
    index = SplitRows(str(tmp_path), paths)
    index.lengths()
    everything = SplitRows(str(tmp_path), paths)
    everything.read(np.arange(table.num_rows))
    footers = sum(pq.ParquetFile(tmp_path / p).metadata.serialized_size for p in paths)  # read by both
    assert index.bytes_read - footers < 0.1 * (everything.bytes_read - footers)
    assert everything.rows_read == table.num_rows


def test_a_resume_at_step_k_reads_no_row_of_an_earlier_buffer_and_continues_as_the_uninterrupted_run(tmp_path):
    table = sentence_rows(900, seed=3)
    paths = write_split(tmp_path, table, row_group_rows=30)
    world = 2
    lengths = SplitRows(str(tmp_path), paths).lengths()
    buffers = list(_epoch_buffers(lengths, world, 0))
    k = buffers[3].first_step + 2  # inside the fourth buffer of epoch 0
    earlier_rows = set(np.concatenate([rows for b in buffers[:3] for rows in b.batches]).tolist())
    left = sum(len(b.batches) for b in buffers[3:]) - 2  # the steps of epoch 0 from k on
    for rank in range(world):
        whole = take(worker_batches(lengths, SplitRows(str(tmp_path), paths).read, BATCH_TOKENS, SHUFFLE, rank,
                                    world, SEED), k + left)
        reader = SplitRows(str(tmp_path), paths)
        got = []
        read = lambda rows: (got.append(rows), reader.read(rows))[1]  # noqa: E731
        resumed = worker_batches(reader.lengths(), read, BATCH_TOKENS, SHUFFLE, rank, world, SEED, start_step=k)
        first = next(resumed)
        assert first.step == k
        # the first read: only this worker's rows of steps k .. the buffer's end
        wanted = {int(r) for rows in buffers[3].batches[2:] for r in rows[rank::world]}
        assert set(got[0].tolist()) == wanted and reader.rows_read == len(wanted)
        rest = [first] + take(resumed, left - 1)
        assert not earlier_rows & set(np.concatenate(got).tolist())
        assert len(rest) == len(whole[k:]) > 5
        for a, b in zip(whole[k:], rest):
            assert (a.step, a.epoch) == (b.step, b.epoch) and words(a.mine) == words(b.mine)


def test_a_dataset_whose_row_lengths_disagree_with_num_tokens_is_refused(tmp_path):
    table = sentence_rows(50, seed=4)
    wrong = table.set_column(table.schema.get_field_index("num_tokens"), "num_tokens",
                             pa.array([n + 1 for n in table.column("num_tokens").to_pylist()], pa.int32()))
    rows = SplitRows(str(tmp_path), write_split(tmp_path, wrong, files=1))
    with pytest.raises(ValueError, match="num_tokens"):
        next(worker_batches(rows.lengths(), rows.read, BATCH_TOKENS, 20, 0, 1, SEED))


def test_a_cached_split_is_read_from_the_files_once(tmp_path):
    table = sentence_rows(430, seed=6)
    paths = write_split(tmp_path, table)
    cached, plain = SplitRows(str(tmp_path), paths, cache=True), SplitRows(str(tmp_path), paths)
    a = take(worker_batches(cached.lengths(), cached.read, BATCH_TOKENS, SHUFFLE, 0, 1, SEED), 60)
    b = take(worker_batches(plain.lengths(), plain.read, BATCH_TOKENS, SHUFFLE, 0, 1, SEED), 60)
    assert a[-1].epoch >= 2 and [words(x.mine) for x in a] == [words(x.mine) for x in b]
    index = SplitRows(str(tmp_path), paths)
    index.lengths()
    assert cached.bytes_read == index.bytes_read + row_bytes(tmp_path, paths)
    assert plain.bytes_read > index.bytes_read + 2 * row_bytes(tmp_path, paths)


def row_bytes(root, paths) -> int:
    """Bytes of the row columns (word_ids, tokens) of every row group: reading every row once."""
    total = 0
    for path in paths:
        meta = pq.ParquetFile(root / path).metadata
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            total += sum(group.column(c).total_compressed_size for c in range(group.num_columns)
                         if group.column(c).path_in_schema.split(".")[0] in ("word_ids", "tokens"))
    return total


def test_read_returns_the_rows_asked_for_in_split_order(tmp_path):
    table = sentence_rows(200, seed=7)
    rows = SplitRows(str(tmp_path), write_split(tmp_path, table))
    wanted = [0, 5, 79, 80, 199]
    got = rows.read(np.array(wanted))
    assert got.column_names == ["word_ids", "tokens"] and rows.rows_read == 5
    assert got.to_pylist() == table.select(["word_ids", "tokens"]).take(wanted).to_pylist()


def test_the_sentence_trainer_reads_its_batches_in_the_background_from_the_resumed_step(tmp_path):
    from elmo_core.vocabulary import Vocabulary
    from workflows.training.config import TrainJobConfig
    from workflows.training.worker import SentenceTrainer

    paths = write_split(tmp_path, sentence_rows(430, seed=8))
    job = TrainJobConfig(data=str(tmp_path), batch_tokens=BATCH_TOKENS, shuffle_buffer=SHUFFLE, seed=SEED,
                         num_workers=2)
    trainer = SentenceTrainer(job, Vocabulary(["<S>", "</S>", "<UNK>"] + [f"w{i}" for i in range(100)]), SplitRows(str(tmp_path), paths), 1, 2,
                              "cpu")
    got = take(trainer.batches(17), 20)
    rows = SplitRows(str(tmp_path), paths)
    expected = take(worker_batches(rows.lengths(), rows.read, BATCH_TOKENS, SHUFFLE, 1, 2, SEED, 17,
                                   block_share(rows.block_starts(job.block_rows), 1, 2)), 20)
    assert [b.step for b in got] == list(range(17, 37))
    assert [words(b.mine) for b in got] == [words(b.mine) for b in expected]
    trainer.close()
