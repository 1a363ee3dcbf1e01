"""Language-model training: gradients, sampled softmax, and perplexity checked by hand."""

import math

import numpy as np
import pytest
import torch

from tests.helpers.random_inputs import seeded
from elmo_core.bilm import BiLM, Perplexity, sentence_targets
from elmo_core.characters import batch_to_ids
from elmo_core.config import BiLMConfig
from elmo_core.softmax import IGNORE, LogUniformSampler, Softmax
from elmo_core.vocabulary import Vocabulary


def _toy(vocab_words, n_tokens_vocab=None, **training):
    vocab = Vocabulary(["<S>", "</S>", "<UNK>", *vocab_words])
    config = BiLMConfig.preset("tiny", n_tokens_vocab=n_tokens_vocab or len(vocab), **training)
    return BiLM(config), vocab


def test_full_softmax_perplexity_matches_hand_computation():
    """Softmax W = 0 and b = log p: every position predicts distribution p, so the NLL is
    -sum(log p[target]) over the targets, which we count by hand from the text."""
    model, vocab = _toy(["cat", "dog", "sat"])
    p = np.array([0.05, 0.15, 0.1, 0.3, 0.25, 0.15])  # <S> </S> <UNK> cat dog sat
    with torch.no_grad():
        model.softmax.weight.zero_()
        model.softmax.bias.copy_(torch.from_numpy(np.log(p)))
    model.eval()
    sentences = [["cat", "sat"], ["dog", "sat", "cat", "bird"]]
    idx = vocab.index
    # forward: <S> w1 .. wn predict w1 .. wn </S>; backward: w1 .. wn </S> predict <S> w1 .. wn
    forward_targets = ["cat", "sat", "</S>", "dog", "sat", "cat", "<UNK>", "</S>"]
    backward_targets = ["<S>", "cat", "sat", "<S>", "dog", "sat", "cat", "<UNK>"]
    nll_f = -sum(math.log(p[idx[w]]) for w in forward_targets)
    nll_b = -sum(math.log(p[idx[w]]) for w in backward_targets)
    word_ids = vocab.batch_ids(sentences)
    lengths = (word_ids != -1).sum(1)
    next_ids, prev_ids = sentence_targets(word_ids, lengths)
    with torch.no_grad():
        loss, stats, _ = model.lm_loss(batch_to_ids(sentences, add_boundaries=True), next_ids, prev_ids)
    assert int(stats["forward_count"]) == 8 and int(stats["backward_count"]) == 8
    assert float(stats["forward_nll"]) == pytest.approx(nll_f, rel=1e-5)
    assert float(stats["backward_nll"]) == pytest.approx(nll_b, rel=1e-5)
    ppl = perplexity_of_stats(stats)
    assert ppl.forward == pytest.approx(math.exp(nll_f / 8), rel=1e-5)
    assert ppl.backward == pytest.approx(math.exp(nll_b / 8), rel=1e-5)
    assert ppl.average == pytest.approx(math.sqrt(ppl.forward * ppl.backward), rel=1e-6)
    assert float(loss) == pytest.approx(0.5 * (nll_f + nll_b) / 8, rel=1e-5)


def test_full_softmax_nll_matches_explicit_float64_loop():
    torch.manual_seed(0)
    softmax = seeded(Softmax(11, 5), seed=3)
    hidden = torch.randn(3, 4, 5)
    targets = torch.tensor([[1, 2, IGNORE, 10], [0, 0, 3, IGNORE], [IGNORE, IGNORE, 7, 4]])
    per_target = softmax.nll(hidden.reshape(-1, 5), targets.reshape(-1))
    nll, count = per_target.sum(), (targets != IGNORE).sum()
    assert (per_target[targets.reshape(-1) == IGNORE] == 0).all()
    W, b = softmax.weight.double().detach(), softmax.bias.double().detach()
    expected = 0.0
    for i in range(3):
        for j in range(4):
            t = int(targets[i, j])
            if t == IGNORE:
                continue
            logits = [float(hidden[i, j].double() @ W[k] + b[k]) for k in range(11)]
            expected -= logits[t] - math.log(sum(math.exp(x) for x in logits))
    assert int(count) == 8
    assert float(nll.detach()) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("dtype, max_logits", [(torch.float64, 1 << 22), (torch.float32, 1 << 22), (torch.float32, 150)])
def test_chunked_full_softmax_sums_and_gradients_equal_cross_entropy(monkeypatch, dtype, max_logits):
    """`full_nll_sums` (block by block, gradient formed in the forward pass) against
    `cross_entropy` on whole logits: both groups' sums, and the gradients of hidden, W and b for
    two different weights on the groups; IGNORE rows count nowhere. A cap of 150 logits forces
    blocks of 3 rows over the 50 words (many blocks; none may straddle the groups' split)."""
    from elmo_core import softmax as softmax_module

    monkeypatch.setitem(softmax_module.CHUNK_MAX_LOGITS, "cpu", max_logits)
    torch.manual_seed(0)
    softmax = seeded(Softmax(50, 8), seed=2).to(dtype)
    hidden = torch.randn(41, 8, dtype=dtype)
    targets = torch.randint(0, 50, (41,))
    targets[[0, 7, 20, 21, 40]] = IGNORE
    split = 21

    def grads(fn):
        h = hidden.clone().requires_grad_()
        softmax.zero_grad()
        sums = fn(h)
        (3.0 * sums[0] - 0.5 * sums[1]).backward()
        return sums.detach(), h.grad, softmax.weight.grad.clone(), softmax.bias.grad.clone()

    def reference(h):
        per = torch.nn.functional.cross_entropy(h @ softmax.weight.t() + softmax.bias, targets.clamp(min=0),
                                                reduction="none") * (targets != IGNORE)
        return torch.stack([per[:split].sum(), per[split:].sum()])

    tol = 1e-10 if dtype == torch.float64 else 2e-5
    for got, want in zip(grads(lambda h: softmax.full_nll_sums(h, targets, split)), grads(reference)):
        assert got.dtype == want.dtype
        assert torch.allclose(got, want, rtol=tol, atol=tol)
    with torch.no_grad():  # evaluation: sums only, the same values
        assert torch.allclose(softmax.full_nll_sums(hidden, targets, split), reference(hidden), rtol=tol)


def test_log_uniform_sampler():
    sampler = LogUniformSampler(1000)
    assert float(sampler.probability(torch.arange(1000)).sum()) == pytest.approx(1.0, abs=1e-9)
    ids, tries = sampler.sample(100, torch.Generator().manual_seed(0))
    assert ids.numel() == 100 and ids.unique().numel() == 100 and tries >= 100
    assert int(ids.min()) >= 0 and int(ids.max()) < 1000
    # frequent (low-rank) ids are drawn far more often
    draws = torch.cat([sampler.sample(20, torch.Generator().manual_seed(s))[0] for s in range(200)])
    assert (draws < 10).float().mean() > (draws >= 500).float().mean()
    expected = sampler.expected_count(torch.tensor([0, 999]), tries)
    assert 0 < float(expected[1]) < float(expected[0]) <= 1


def test_sampled_softmax_removes_accidental_hits_and_equals_full_when_sampling_everything():
    softmax = seeded(Softmax(6, 4), seed=1)
    hidden = torch.randn(5, 4)
    targets = torch.tensor([0, 1, 2, 3, 5])
    full = softmax.nll(hidden, targets)
    assert torch.allclose(full, softmax.nll(hidden, targets, n_samples=6))
    # sampled: one candidate set; a candidate equal to a row's own target is not counted as a negative
    gen = torch.Generator().manual_seed(0)
    sampled, tries = softmax.sampler.sample(4, torch.Generator().manual_seed(0))
    loss = softmax.nll(hidden, targets, n_samples=4, generator=gen).detach()
    W, b = softmax.weight.detach(), softmax.bias.detach()
    log_q = lambda ids: torch.log(softmax.sampler.expected_count(ids, tries)).float()
    for r in range(5):
        y = int(targets[r])
        true = hidden[r] @ W[y] + b[y] - log_q(torch.tensor([y]))[0]
        negatives = [hidden[r] @ W[k] + b[k] - log_q(torch.tensor([k]))[0] for k in sampled.tolist() if k != y]
        expected = torch.logsumexp(torch.stack([true, *negatives]), 0) - true
        assert float(loss[r]) == pytest.approx(float(expected), rel=1e-5)


def test_gradients_match_finite_differences():
    model, vocab = _toy(["a", "b", "c"], dropout=0.0)
    seeded(model, seed=11)
    model = model.double()
    sentences = [["a", "b", "c"], ["c", "a"]]
    word_ids = vocab.batch_ids(sentences)
    next_ids, prev_ids = sentence_targets(word_ids, (word_ids != -1).sum(1))
    ids = batch_to_ids(sentences, add_boundaries=True)

    def loss_fn():
        return model.lm_loss(ids, next_ids, prev_ids)[0]

    loss_fn().backward()
    for name in ["token_encoder.conv_weights.1", "token_encoder.highways.0.w_carry", "lstm.recurrent_weights.1",
                 "lstm.biases.0", "lstm.projections.0", "softmax.weight", "token_encoder.char_embedding"]:
        param = dict(model.named_parameters())[name]
        flat_grad = param.grad.reshape(-1)
        gen = torch.Generator().manual_seed(0)
        for k in torch.randint(0, param.numel(), (3,), generator=gen).tolist():
            if name == "token_encoder.char_embedding":
                k = (ord("a") + 1 - 1) * param.shape[1]  # a row the input uses (id 98 -> stored row 97)
            with torch.no_grad():
                flat = param.view(-1)
                old = float(flat[k])
                flat[k] = old + 1e-6
                up = float(loss_fn())
                flat[k] = old - 1e-6
                down = float(loss_fn())
                flat[k] = old
            assert float(flat_grad[k]) == pytest.approx((up - down) / 2e-6, rel=1e-4, abs=1e-8), name


def _train(model, optimizer, steps, ids, next_ids, prev_ids, n_samples):
    """Sampled-softmax training steps with global-norm clip 10; returns the losses."""
    model.train()
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss, _, _ = model.lm_loss(ids, next_ids, prev_ids, n_samples=n_samples, generator=gen)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def perplexity_of_stats(stats) -> Perplexity:
    """From the stats of `BiLM.lm_loss` computed with the full softmax."""
    return Perplexity.from_sums(float(stats["forward_nll"]), int(stats["forward_count"]),
                                float(stats["backward_nll"]), int(stats["backward_count"]))


def _full_softmax_perplexity(model, ids, next_ids, prev_ids):
    model.eval()
    with torch.no_grad():
        _, stats, _ = model.lm_loss(ids, next_ids, prev_ids)
    return perplexity_of_stats(stats)


def test_tiny_model_overfits_with_sampled_softmax():
    """Four windows of distinct words (bilm-tf style: every target lies inside the window), so every
    prediction is determined by the context: sampled-softmax training must drive the loss to ~0 and
    full-softmax perplexity to ~1."""
    torch.manual_seed(0)
    words = [f"w{i}" for i in range(40)]
    model, vocab = _toy(words, dropout=0.0, n_negative_samples_batch=16)
    windows = [words[i:i + 10] for i in range(0, 40, 10)]
    word_ids = vocab.batch_ids(windows, add_boundaries=False)
    next_ids = torch.full_like(word_ids, IGNORE)
    prev_ids = torch.full_like(word_ids, IGNORE)
    next_ids[:, :-1] = word_ids[:, 1:]
    prev_ids[:, 1:] = word_ids[:, :-1]
    ids = batch_to_ids(windows, add_boundaries=False)
    losses = _train(model, torch.optim.Adam(model.parameters(), lr=0.01), 300, ids, next_ids, prev_ids, 16)
    assert losses[0] > 2.0
    assert np.mean(losses[-10:]) < 0.05
    ppl = _full_softmax_perplexity(model, ids, next_ids, prev_ids)
    assert ppl.average < 1.1 and ppl.tokens == 36


def test_bilm_tf_training_smoke_text_reaches_low_perplexity(bilm_tf):
    """bilm-tf's own training smoke test: a short run on its 4 sentences should reach a training
    perplexity well under 20 (full softmax, average of the two directions)."""
    torch.manual_seed(0)
    vocab = Vocabulary.load(bilm_tf.root / "train" / "vocab.txt")
    lines = (bilm_tf.root / "train" / "data.txt").read_text(encoding="utf-8").splitlines()
    sentences = [line.split() for line in lines if line.strip()]
    config = BiLMConfig.preset("tiny", n_tokens_vocab=len(vocab), dropout=0.0, n_negative_samples_batch=8)
    model = BiLM(config).train()
    word_ids = vocab.batch_ids(sentences)
    next_ids, prev_ids = sentence_targets(word_ids, (word_ids != -1).sum(1))
    ids = batch_to_ids(sentences, add_boundaries=True)
    # the bilm-tf recipe: Adagrad 0.2, initial accumulator 1.0, global norm clip 10
    optimizer = torch.optim.Adagrad(model.parameters(), lr=0.2, initial_accumulator_value=1.0)
    _train(model, optimizer, 60, ids, next_ids, prev_ids, 8)
    ppl = _full_softmax_perplexity(model, ids, next_ids, prev_ids)
    print(f"bilm-tf smoke text: perplexity {ppl}")
    assert ppl.average < 20 and ppl.forward < 20 and ppl.backward < 20
