"""The language-model softmax, shared by both directions.

`Softmax.nll` gives per-target negative log-likelihoods, either
* sampled, for training (bilm-tf: ``tf.nn.sampled_softmax_loss`` with a log-uniform candidate
  sampler, unique candidates, accidental hits removed; one candidate set per call, shared by
  both directions). The sampler assumes word ids are ranks by descending frequency (the bilm-tf
  vocab order); or
* exact over the whole vocabulary, for evaluation and perplexity.

`Softmax.full_nll_sums` is the exact full softmax as the language-model loss uses it (NLL sums
of two row groups, the two directions), computed a block of rows at a time with the gradient
formed in the same pass (`_ChunkedFullNLL`): the (rows, V) logits never exist whole, each block
stays in cache, and no (rows, V) gradient is zero-filled, scattered and read back. On this 2-core
CPU that is 2.4-3x faster than ``cross_entropy`` for a 16-dim projection over 10k words and
1.3x for 128 dims (`benchmarks/README.md`); the FLOPs are the same.
"""

from __future__ import annotations

import math

import torch
from torch import nn

IGNORE = -1  # target id of positions without a target (padding, sequence ends)

# `_ChunkedFullNLL` block size: on a CPU rows = clamp(2 x projection dim, 32, 512) (thin products
# are memory-bound: small blocks stay in cache), elsewhere all rows; at most this many logits a
# block per device type.
CHUNK_MAX_LOGITS = {"cpu": 1 << 22, "cuda": 1 << 26}


class LogUniformSampler:
    """Draws distinct word ids with P(k) = log((k+2)/(k+1)) / log(V+1) (Zipfian ranks)."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        self.log_range = math.log(vocab_size + 1)

    def probability(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.double()
        return (torch.log1p(1.0 / (ids + 1.0)) / self.log_range)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
        """n distinct ids (int64) and the number of draws it took (for expected counts)."""
        n = min(n, self.vocab_size)
        draws = torch.empty(0, dtype=torch.int64)
        while True:
            u = torch.rand(max(2 * n, 1024), generator=generator, dtype=torch.float64)
            new = (torch.exp(u * self.log_range).floor().long() - 1).clamp_(0, self.vocab_size - 1)
            draws = torch.cat([draws, new])
            uniq, first = _first_occurrence(draws)
            if uniq.numel() >= n:
                first = first.sort().values[:n]  # draws that introduced each new id, in order
                return draws[first], int(first[-1]) + 1

    def expected_count(self, ids: torch.Tensor, tries: int) -> torch.Tensor:
        """Expected number of times each id appears among `tries` draws, as float64."""
        p = self.probability(ids)
        return -torch.expm1(tries * torch.log1p(-p))


def _first_occurrence(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique values of x and the index of each one's first occurrence."""
    uniq, inverse = torch.unique(x, return_inverse=True)
    first = torch.full((uniq.numel(),), x.numel(), dtype=torch.int64)
    first.scatter_reduce_(0, inverse, torch.arange(x.numel()), reduce="amin")
    return uniq, first


class Softmax(nn.Module):
    """Output layer ``logits = h W^T + b`` over the word vocabulary: W (V, P), b (V,)."""

    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_size, dim).normal_(std=1.0 / math.sqrt(dim)))
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        self.sampler = LogUniformSampler(vocab_size)

    @property
    def vocab_size(self) -> int:
        return self.weight.shape[0]

    def nll(self, hidden: torch.Tensor, targets: torch.Tensor, n_samples: int | None = None,
            generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-target negative log-likelihood: hidden (N, P), targets (N,) ids or `IGNORE` -> (N,).

        n_samples None (or >= vocabulary): exact full softmax. Otherwise sampled softmax with one
        candidate set of `n_samples` distinct ids for the whole call. IGNORE rows give 0.
        """
        keep = targets != IGNORE
        h, y = hidden[keep], targets[keep]
        if self.is_exact(n_samples):
            per_target = nn.functional.cross_entropy(torch.addmm(self.bias, h, self.weight.t()), y, reduction="none")
        else:
            per_target = self._sampled_nll(h, y, n_samples, generator)
        return hidden.new_zeros(targets.shape[0]).index_put((keep.nonzero().squeeze(1),), per_target)

    def is_exact(self, n_samples: int | None) -> bool:
        """Whether ``n_samples`` negatives mean the full softmax (None, or the whole vocabulary)."""
        return n_samples is None or n_samples >= self.vocab_size

    def full_nll_sums(self, hidden: torch.Tensor, targets: torch.Tensor, split: int) -> torch.Tensor:
        """Exact full-softmax NLL summed over rows ``[:split]`` and ``[split:]``: hidden (N, P),
        targets (N,) ids or `IGNORE` -> (2,) float32. Equal to summing `nll` (within float32
        rounding); faster, and the (N, V) logits are never held (see the module docstring)."""
        keep = targets != IGNORE
        n_first = int(keep[:split].sum())
        h, y = hidden[keep], targets[keep]
        rows = max(32, min(512, 2 * h.shape[1])) if h.device.type == "cpu" else h.shape[0]
        cap = CHUNK_MAX_LOGITS.get(h.device.type, CHUNK_MAX_LOGITS["cuda"]) // self.vocab_size
        rows = max(1, min(rows, cap))
        need_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (h, self.weight, self.bias))
        return _ChunkedFullNLL.apply(h, self.weight, self.bias, y, n_first, rows, need_grad)

    def _sampled_nll(self, h: torch.Tensor, y: torch.Tensor, n_samples: int,
                     generator: torch.Generator | None) -> torch.Tensor:
        """TF ``sampled_softmax_loss``: logits corrected by -log(expected count), hits removed."""
        sampled, tries = self.sampler.sample(n_samples, generator)
        sampled = sampled.to(h.device)
        log_q_true = torch.log(self.sampler.expected_count(y.cpu(), tries)).to(h)  # (N,)
        log_q_sampled = torch.log(self.sampler.expected_count(sampled.cpu(), tries)).to(h)  # (S,)
        true_logits = (h * self.weight[y]).sum(-1) + self.bias[y] - log_q_true  # (N,)
        sampled_logits = torch.addmm(self.bias[sampled], h, self.weight[sampled].t()) - log_q_sampled  # (N, S)
        # remove accidental hits: a sampled id equal to the row's own target is not a negative
        sampled_logits = sampled_logits.masked_fill(y[:, None] == sampled[None, :], float("-inf"))
        logits = torch.cat([true_logits[:, None], sampled_logits], dim=1)
        return torch.logsumexp(logits, dim=1) - true_logits


class _ChunkedFullNLL(torch.autograd.Function):
    """Sums of full-softmax NLL over two row groups, block by block, with the gradient.

    forward(h (N, P), W (V, P), b (V,), y (N,), split, rows, need) -> (2,): for each block of `rows`
    rows (never straddling `split`): logits = h W^T + b, nll = logsumexp - logit[y] (one exp
    per logit, reused by the gradient);
    if ``need`` (a gradient will be asked for), also G = softmax - onehot(y) and, per group g, dh = G W,
    dW_g += G^T h, db_g += sum G. backward scales those by the two incoming gradients. Runs in
    float32 with autocast off (the inputs' dtype if wider)."""

    @staticmethod
    def forward(ctx, h, weight, bias, y, split, rows, need):
        dtype = torch.promote_types(torch.promote_types(h.dtype, weight.dtype), torch.float32)
        with torch.autocast(h.device.type, enabled=False):
            hf, w, b = h.to(dtype), weight.to(dtype), bias.to(dtype)
            sums = hf.new_zeros(2)
            if need:
                dh = torch.empty_like(hf)
                dw = w.new_zeros(2, *w.shape)
                db = b.new_zeros(2, *b.shape)
            for g, (lo, hi) in enumerate(((0, split), (split, hf.shape[0]))):
                for start in range(lo, hi, rows):
                    end = min(start + rows, hi)
                    hc, yc = hf[start:end], y[start:end]
                    logits = torch.addmm(b, hc, w.t())  # (r, V)
                    true_logit = logits.gather(1, yc[:, None]).squeeze(1)
                    top = logits.amax(1, keepdim=True)
                    e = logits.sub_(top).exp_()  # in place: one exp per logit
                    total = e.sum(1)
                    sums[g] += (top.squeeze(1) + total.log() - true_logit).sum()
                    if need:
                        grad = e.mul_(total.reciprocal()[:, None])  # softmax, in place
                        grad[torch.arange(end - start, device=grad.device), yc] -= 1.0
                        torch.mm(grad, w, out=dh[start:end])
                        dw[g].addmm_(grad.t(), hc)
                        db[g] += grad.sum(0)
        if need:
            ctx.save_for_backward(dh, dw, db)
            ctx.split, ctx.dtypes = split, (h.dtype, weight.dtype, bias.dtype)
        return sums

    @staticmethod
    def backward(ctx, grad_sums):
        dh, dw, db = ctx.saved_tensors
        g = grad_sums.to(dh.dtype)
        scale = torch.cat([g[0].expand(ctx.split), g[1].expand(dh.shape[0] - ctx.split)])[:, None]
        h_dtype, w_dtype, b_dtype = ctx.dtypes
        return ((dh * scale).to(h_dtype), (dw * g[:, None, None]).sum(0).to(w_dtype),
                (db * g[:, None]).sum(0).to(b_dtype), None, None, None, None)
