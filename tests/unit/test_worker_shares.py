"""Sentence mode's shares by row blocks (`workflows.training.batch_plan.block_share`): each worker
reads about 1/N of a split written in small row groups, the workers together compute every
sentence of every global batch once, and a worker that owns none of a batch still takes part in
the DDP step with a zero gradient, so 1 and 2 workers end with the same parameters."""

from __future__ import annotations

import contextlib
import multiprocessing

import numpy as np
import pytest
import torch

from tests.unit.test_batch_plan import BATCH_TOKENS, SEED, SHUFFLE, _epoch_buffers, row_bytes, sentence_rows, take, write_split
from workflows.training.batch_plan import WorkerBatch, block_share, worker_batches
from workflows.training.split_rows import SplitRows


def epoch_zero(tmp_path, paths, world):
    lengths = SplitRows(str(tmp_path), paths).lengths()
    buffers = list(_epoch_buffers(lengths, world, 0))
    return buffers, sum(len(b.batches) for b in buffers)


def read_epoch_zero(tmp_path, paths, rank, world, block_rows):
    """(worker ``rank``'s batches of epoch 0, its reader)."""
    rows = SplitRows(str(tmp_path), paths)
    _, steps = epoch_zero(tmp_path, paths, world)
    share = block_share(rows.block_starts(block_rows), rank, world)
    batches = take(worker_batches(rows.lengths(), rows.read, BATCH_TOKENS, SHUFFLE, rank, world, SEED, 0, share), steps)
    return batches, rows


def test_blocks_are_cut_at_row_group_starts_and_every_block_rows_within_one(tmp_path):
    paths = write_split(tmp_path, sentence_rows(230, seed=1), files=2, row_group_rows=50)  # files of 115 rows
    rows = SplitRows(str(tmp_path), paths)
    # row groups start at 0, 50, 100 | 115, 165, 215
    assert rows.block_starts(1024).tolist() == [0, 50, 100, 115, 165, 215]
    assert rows.block_starts(20).tolist() == [0, 20, 40, 50, 70, 90, 100, 115, 135, 155, 165, 185, 205, 215]
    share = block_share(rows.block_starts(20), 1, 2)
    assert share(np.array([19, 20, 45, 60, 116, 140, 210])).tolist() == [20, 60, 116]  # blocks 1, 4, 7 of 0..13


@pytest.mark.parametrize("world", [1, 2, 4])
def test_each_worker_reads_about_a_worlds_share_of_the_row_bytes(tmp_path, world):
    table = sentence_rows(2400, seed=2)
    paths = write_split(tmp_path, table, files=3, row_group_rows=20)
    index = SplitRows(str(tmp_path), paths)
    index.lengths()
    buffers, steps = epoch_zero(tmp_path, paths, world)
    planned = sorted(int(r) for b in buffers for rows in b.batches for r in rows)
    seen, row_read = [], []
    for rank in range(world):
        batches, reader = read_epoch_zero(tmp_path, paths, rank, world, block_rows=20)
        assert [b.step for b in batches] == list(range(steps))
        seen.extend(len(b.mine) for b in batches)
        row_read.append(reader.bytes_read - index.bytes_read)  # beyond the index (lengths, footers)
        assert reader.rows_read == sum(len(b.mine) for b in batches)
    assert sum(seen) == len(planned)  # every sentence of the epoch's batches by one worker
    total = row_bytes(tmp_path, paths)
    # no row group read by two workers (a row carried into the next buffer may have its group read again)
    assert sum(row_read) <= total * 1.05
    assert max(row_read) < total * (1 / world + 0.1)


def test_the_shares_of_a_batch_are_its_sentences_once_and_a_worker_may_have_none(tmp_path):
    table = sentence_rows(900, seed=3)
    # large row groups (data written before small ones): blocks of block_rows rows within them
    paths = write_split(tmp_path, table, files=1, row_group_rows=900)
    world = 2
    buffers, steps = epoch_zero(tmp_path, paths, world)
    whole = [rows for b in buffers for rows in b.batches]
    # blocks of 100 rows, 120-row buffers: most batches lie in one worker's blocks
    shares = [read_epoch_zero(tmp_path, paths, rank, world, block_rows=100)[0] for rank in range(world)]
    empty = 0
    for step, rows in enumerate(whole):
        parts = [shares[rank][step] for rank in range(world)]
        assert all(p.step == step and p.num_targets() == int(table.column("num_tokens").to_numpy()[rows].sum()) + len(rows)
                   for p in parts)
        got = sorted(s.word_ids.tolist() for p in parts for s in p.mine)
        assert got == sorted(table.column("word_ids").to_pylist()[r] for r in rows)
        empty += sum(not p.mine for p in parts)
    assert empty > 0
    # the one row group is read by every worker here: correct, not cheaper
    index = SplitRows(str(tmp_path), paths)
    index.lengths()
    for rank in range(world):
        reader = read_epoch_zero(tmp_path, paths, rank, world, 100)[1]
        assert reader.bytes_read - index.bytes_read >= row_bytes(tmp_path, paths) and reader.rows_read < len(table)


# --- a worker without a share in a real DDP step ------------------------------------------------

WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran"]


def _model_and_batches():
    from elmo_core.bilm import BiLM
    from elmo_core.characters import token_to_ids
    from elmo_core.config import BiLMConfig
    from elmo_core.vocabulary import Vocabulary
    from workflows.training.batches import Sentence

    vocab = Vocabulary(["<S>", "</S>", "<UNK>", *WORDS])
    config = BiLMConfig.preset("tiny", n_tokens_vocab=len(vocab), n_negative_samples_batch=6, dropout=0.0,
                               full_softmax_max_vocab=0, optimizer="sgd", learning_rate=0.5)
    torch.manual_seed(0)
    model = BiLM(config).train()
    rng = np.random.default_rng(5)
    batches = []
    for step in range(3):
        sentences = []
        for _ in range(5):
            words = list(rng.choice(WORDS, size=int(rng.integers(1, 7))))
            sentences.append(Sentence(np.array([vocab.id(w) for w in words], np.int32),
                                      np.stack([token_to_ids(w) for w in words]).astype(np.uint16)))
        batches.append(sorted(sentences, key=len))
    return model, vocab, batches


def _train(rank: int, world: int, shares: list[list[list[int]]], grad_accum: int):
    """Three steps of `sentence_step`; ``shares[step][rank]``: the indices of this worker's sentences."""
    from workflows.training.config import TrainJobConfig
    from workflows.training.step import LMLoss, StepContext, make_optimizer, sentence_step

    model, vocab, batches = _model_and_batches()
    ddp = torch.nn.parallel.DistributedDataParallel(LMLoss(model)) if world > 1 else LMLoss(model)
    optimizer = make_optimizer(model)
    job = TrainJobConfig(grad_accum=grad_accum)
    losses = []
    for step, sentences in enumerate(batches):
        lengths = np.array([len(s) for s in sentences])
        batch = WorkerBatch(step, 0, [sentences[i] for i in shares[step][rank]], lengths)
        ctx = StepContext(vocab, rank, world, job, model.config.training, "cpu", contextlib.nullcontext())
        losses.append(sentence_step(ddp, model, optimizer, batch, ctx))
    return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}


def _ddp_worker(rank, world, init, shares, grad_accum, out):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        losses, state = _train(rank, world, shares, grad_accum)
        if rank == 0:
            out.put((losses, {k: v.numpy() for k, v in state.items()}))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_a_worker_without_a_share_steps_with_zero_gradient_and_the_parameters_match_one_worker(tmp_path, grad_accum):
    # step 0: worker 1 has nothing; step 1: worker 0 has nothing; step 2: both have some
    shares = [[[0, 1, 2, 3, 4], []], [[], [0, 1, 2, 3, 4]], [[0, 3], [1, 2, 4]]]
    one_losses, one_state = _train(0, 1, [[[0, 1, 2, 3, 4]]] * 3, grad_accum)
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    init = f"file://{tmp_path / 'rendezvous'}"
    workers = [context.Process(target=_ddp_worker, args=(r, 2, init, shares, grad_accum, out)) for r in range(2)]
    for w in workers:
        w.start()
    losses, state = out.get(timeout=300)
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    assert losses == pytest.approx(one_losses, rel=1e-5)
    moved = max(float((one_state[k] - _model_and_batches()[0].state_dict()[k]).abs().max()) for k in one_state)
    assert moved > 1e-3  # training moved the parameters
    worst = max(float(np.abs(state[k] - one_state[k].numpy()).max()) for k in one_state)
    assert worst < 1e-5
