"""The training step without Ray: gradient accumulation and worker shares give the same update
as one pass over the whole global batch; batch tensors follow the `<S> w .. </S>` layout."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from elmo_core.bilm import BiLM
from elmo_core.characters import MAX_CHARS_PER_TOKEN, token_to_ids
from elmo_core.config import BiLMConfig
from elmo_core.vocabulary import Vocabulary
from workflows.training.batches import GlobalBatch, Sentence, to_tensors
from workflows.training.config import TrainJobConfig
from workflows.training.step import LMLoss, StepContext, make_optimizer, sentence_step

WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran"]


def make_batch(rng: np.random.Generator, vocab: Vocabulary, n: int) -> GlobalBatch:
    sentences = []
    for _ in range(n):
        words = list(rng.choice(WORDS, size=int(rng.integers(1, 7))))
        sentences.append(Sentence(np.array([vocab.id(w) for w in words], np.int32),
                                  np.stack([token_to_ids(w) for w in words]).astype(np.uint16)))
    return GlobalBatch(0, 0, sorted(sentences, key=len))


def model_and_vocab(dropout: float) -> tuple[BiLM, Vocabulary]:
    vocab = Vocabulary(["<S>", "</S>", "<UNK>", *WORDS])
    # full_softmax_max_vocab=0: the sampled softmax (6 negatives), whose candidates every micro-batch shares
    config = BiLMConfig.preset("tiny", n_tokens_vocab=len(vocab), n_negative_samples_batch=6, dropout=dropout,
                               full_softmax_max_vocab=0)
    torch.manual_seed(0)
    return BiLM(config).train(), vocab


@pytest.mark.parametrize("accum", [2, 3])
def test_gradient_accumulation_equals_one_pass(accum):
    results = []
    for grad_accum in (1, accum):
        model, vocab = model_and_vocab(dropout=0.0)
        optimizer = make_optimizer(model)
        job = TrainJobConfig(grad_accum=grad_accum)
        batch = make_batch(np.random.default_rng(1), vocab, 7)
        ctx = StepContext(vocab, 0, 1, job, model.config.training, "cpu", contextlib.nullcontext())
        loss = sentence_step(LMLoss(model), model, optimizer, batch, ctx)
        # the step's (clipped) gradients: parameters after an Adam step would magnify rounding noise
        # in near-zero gradients into whole steps
        results.append((loss, {k: p.grad.clone() for k, p in model.named_parameters()}))
    (loss_a, a), (loss_b, b) = results
    assert loss_a == pytest.approx(loss_b, rel=1e-6)
    assert max(float(a[k].abs().max()) for k in a) > 1e-3  # there is something to compare
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6


def test_worker_shares_add_up_to_the_global_loss():
    """Without DDP, the per-worker losses (scaled by the global target count) sum to the loss of
    one worker on the whole batch: what makes DDP's averaged gradient exact."""
    model, vocab = model_and_vocab(dropout=0.0)
    batch = make_batch(np.random.default_rng(2), vocab, 9)
    n_targets = sum(len(s) + 1 for s in batch.sentences)
    generator = lambda: torch.Generator().manual_seed(7)
    whole = to_tensors(batch.sentences, vocab)
    _, stats, _ = model.lm_loss(whole["char_ids"], whole["next_ids"], whole["prev_ids"], n_samples=6, generator=generator())
    total = 0.5 * float(stats["forward_nll"] + stats["backward_nll"]) / n_targets
    parts = 0.0
    for rank in range(3):
        t = to_tensors(batch.share(rank, 3), vocab)
        _, s, _ = model.eval().lm_loss(t["char_ids"], t["next_ids"], t["prev_ids"], n_samples=6, generator=generator())
        parts += 0.5 * float(s["forward_nll"] + s["backward_nll"]) / n_targets
    assert parts == pytest.approx(total, rel=1e-5)


def test_tensors_layout():
    vocab = Vocabulary(["<S>", "</S>", "<UNK>", *WORDS])
    s = Sentence(np.array([vocab.id("the"), vocab.id("cat")], np.int32),
                 np.stack([token_to_ids("the"), token_to_ids("cat")]).astype(np.uint16))
    t = to_tensors([s, Sentence(s.word_ids[:1], s.char_ids[:1])], vocab)
    assert t["char_ids"].shape == (2, 4, MAX_CHARS_PER_TOKEN)
    assert torch.equal(t["char_ids"][0, 0], torch.from_numpy(token_to_ids("<S>").astype(np.int64)))
    assert torch.equal(t["char_ids"][0, 3], torch.from_numpy(token_to_ids("</S>").astype(np.int64)))
    assert int(t["char_ids"][1, 3].abs().sum()) == 0  # padding row
    assert t["next_ids"][0].tolist() == [vocab.id("the"), vocab.id("cat"), vocab.eos, -1]
    assert t["prev_ids"][0].tolist() == [-1, vocab.bos, vocab.id("the"), vocab.id("cat")]
    assert t["next_ids"][1].tolist() == [vocab.id("the"), vocab.eos, -1, -1]


def _step_gradients(autocast, dropout: float = 0.1) -> tuple[float, dict]:
    model, vocab = model_and_vocab(dropout=dropout)
    batch = make_batch(np.random.default_rng(4), vocab, 9)
    ctx = StepContext(vocab, 0, 1, TrainJobConfig(), model.config.training, "cpu", autocast)
    torch.manual_seed(3)
    loss = sentence_step(LMLoss(model), model, make_optimizer(model), batch, ctx)
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # float32 master weights
    return loss, {k: p.grad.clone() for k, p in model.named_parameters()}


def test_a_bfloat16_autocast_step_matches_float32():
    """The GPU's optional mixed precision (`--bf16`: autocast to bfloat16, float32
    weights, no loss scaling: bfloat16 has float32's exponent range), run through CPU autocast:
    the loss within 1e-3 and every gradient within 5% (measured: <= 1.1%) of float32's, under
    the same dropout masks and sampled candidates."""
    loss_32, grads_32 = _step_gradients(contextlib.nullcontext())
    loss_16, grads_16 = _step_gradients(torch.autocast("cpu", dtype=torch.bfloat16))
    assert loss_16 == pytest.approx(loss_32, rel=1e-3)
    for name, g in grads_32.items():
        assert grads_16[name].dtype == torch.float32, name
        assert float(g.norm()) > 0, name
        assert float((grads_16[name] - g).norm() / g.norm()) < 0.05, name


def test_the_stream_loss_runs_under_bfloat16_autocast():
    model, vocab = model_and_vocab(dropout=0.0)
    ids = torch.from_numpy(np.stack([token_to_ids(w) for w in WORDS]).astype(np.int64))
    windows = ids[torch.randint(len(WORDS), (2, 3, 5), generator=torch.Generator().manual_seed(0))]
    targets = torch.randint(3, len(vocab), (2, 3, 5), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        exact, _, _ = model.stream_loss(windows, targets)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed, _, state = model.stream_loss(windows, targets)
    assert float(mixed) == pytest.approx(float(exact), rel=1e-2)
    assert state.c[0].dtype == torch.float32  # the carried state stays float32


def test_tf32_is_allowed_on_a_gpu_only_and_as_the_job_says():
    """`configure_matmul_precision`: a CUDA device gets TF32 for float32 products when
    ``job.tf32`` (the default) and not otherwise; a CPU's settings are left alone."""
    from workflows.training.config import TrainJobConfig
    from workflows.training.step import configure_matmul_precision

    flags = torch.backends.cuda.matmul, torch.backends.cudnn
    before = tuple(f.allow_tf32 for f in flags)
    try:
        for f in flags:
            f.allow_tf32 = False
        configure_matmul_precision(torch.device("cpu"), TrainJobConfig())
        assert not any(f.allow_tf32 for f in flags)
        configure_matmul_precision(torch.device("cuda", 0), TrainJobConfig())
        assert all(f.allow_tf32 for f in flags)
        configure_matmul_precision(torch.device("cuda", 0), TrainJobConfig(tf32=False))
        assert not any(f.allow_tf32 for f in flags)
    finally:
        for f, value in zip(flags, before):
            f.allow_tf32 = value


def test_the_precision_flags_reach_the_job_config():
    """`elmo pretrain`/`adapt`: TF32 on and bfloat16 autocast off unless the flags say otherwise."""
    import argparse

    from workflows.training.pretrain import add_common_arguments, job_config

    parser = argparse.ArgumentParser()
    add_common_arguments(parser)
    required = ["--data", "d", "--registered-model", "m"]
    default = job_config(parser.parse_args(required))
    assert (default.tf32, default.bf16) == (True, False)
    flipped = job_config(parser.parse_args(required + ["--no-tf32", "--bf16"]))
    assert (flipped.tf32, flipped.bf16) == (False, True)
