"""The hand-written LSTM backward against finite differences and against plain autograd."""

import pytest
import torch

from elmo_core import lstm_recurrence
from elmo_core.lstm_recurrence import _steps, recurrence

# the backward's element-wise derivatives formed a step at a time (the CPU's way), two steps
# at a time, and for all steps at once (the GPU's way)
BLOCKS = pytest.mark.parametrize("block", [1, 2, None])


def _inputs(T=5, B=4, D=3, P=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    xw = torch.randn(2, T, B, 4 * D, generator=gen, dtype=torch.float64) * 1.5
    w_h = torch.randn(2, P, 4 * D, generator=gen, dtype=torch.float64)
    w_p = torch.randn(2, D, P, generator=gen, dtype=torch.float64)
    c0 = torch.randn(2, B, D, generator=gen, dtype=torch.float64)
    h0 = torch.randn(2, B, P, generator=gen, dtype=torch.float64)
    return [t.requires_grad_() for t in (xw, w_h, w_p, c0, h0)]


@BLOCKS
def test_gradcheck_with_clipping_and_rows_finishing_early(monkeypatch, block):
    monkeypatch.setitem(lstm_recurrence.BACKWARD_BLOCK_STEPS, "cpu", block)
    active = [4, 4, 3, 1, 1]  # rows sorted by length: 5, 3, 3, 2... steps past a row's end skip it
    for clips in ((None, None), (0.7, 0.6)):
        def fn(*args):
            out, c, h = recurrence(*args, active, *clips)
            return out, c, h
        assert torch.autograd.gradcheck(fn, _inputs(), eps=1e-6, atol=1e-6)


@BLOCKS
def test_matches_autograd_through_the_plain_loop(monkeypatch, block):
    """Same forward values and gradients as letting autograd differentiate the step math."""
    monkeypatch.setitem(lstm_recurrence.BACKWARD_BLOCK_STEPS, "cpu", block)
    active = [4, 4, 4, 2, 1]
    args = _inputs(seed=1)

    def plain(xw, w_h, w_p, c, h):
        D = w_p.shape[1]
        outs = []
        for t, n in enumerate(active):
            z = torch.sigmoid(xw[:, t, :n] + torch.bmm(h[:, :n], w_h))
            i, f, o, g = z.split(D, dim=2)
            c_t = (f * c[:, :n] + i * (2 * g - 1)).clamp(-0.8, 0.8)
            h_t = torch.bmm(o * torch.tanh(c_t), w_p).clamp(-0.5, 0.5)
            c = torch.cat([c_t, c[:, n:]], 1)
            h = torch.cat([h_t, h[:, n:]], 1)
            outs.append(torch.cat([h_t, h_t.new_zeros(2, h.shape[1] - n, h.shape[2])], 1))
        return torch.stack(outs, 1), c, h

    ours = recurrence(*args, active, 0.8, 0.5)
    ref = plain(*args)
    weights = [torch.randn_like(t) for t in ref]
    g_ours = torch.autograd.grad(sum((a * w).sum() for a, w in zip(ours, weights)), args)
    g_ref = torch.autograd.grad(sum((a * w).sum() for a, w in zip(ref, weights)), args)
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, atol=1e-12)
    for a, b in zip(g_ours, g_ref):
        assert torch.allclose(a, b, atol=1e-10)
    with torch.no_grad():  # the inference path computes the same values
        again = _steps(*[t.detach() for t in args], active, 0.8, 0.5)
    assert all(torch.allclose(a, b) for a, b in zip(again, ours))


def test_the_fused_cell_gives_the_eager_loops_outputs():
    """`use_fused_cell`: the compiled elementwise step (the GPU's fast inference path; on this CPU
    a C++ loop) within 1e-5 of the eager loop in float32: the recurrence alone, with clipping and
    rows finishing early, and a whole biLM's layers."""
    from tests.helpers.random_inputs import random_sentences, seeded
    from elmo_core.bilm import BiLM
    from elmo_core.characters import batch_to_ids
    from elmo_core.config import BiLMConfig
    from elmo_core.lstm_recurrence import use_fused_cell

    args = [t.detach().float() for t in _inputs(T=7, B=5, D=8, P=4, seed=2)]
    active = [5, 5, 4, 4, 2, 1, 1]
    model = seeded(BiLM(BiLMConfig.preset("tiny")), seed=6).eval()
    ids = batch_to_ids(random_sentences(9, seed=3, max_len=11), add_boundaries=True)
    with torch.no_grad():
        eager = [recurrence(*args, active, 0.9, 0.7), model(ids).layers]
        use_fused_cell(True)
        try:
            fused = [recurrence(*args, active, 0.9, 0.7), model(ids).layers]
        finally:
            use_fused_cell(False)
    for a, b in zip(eager[0], fused[0]):
        assert (a - b).abs().max() < 1e-5
    assert eager[0][0].abs().max() > 0.1  # something to compare
    assert (eager[1] - fused[1]).abs().max() < 1e-5
