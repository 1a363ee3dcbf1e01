"""The language-model softmax, shared by both directions.

`Softmax.nll` gives per-target negative log-likelihoods, either
* sampled, for training (bilm-tf: ``tf.nn.sampled_softmax_loss`` with a log-uniform candidate
  sampler, unique candidates, accidental hits removed; one candidate set per call, shared by
  both directions). The sampler assumes word ids are ranks by descending frequency (the bilm-tf
  vocab order); or
* exact over the whole vocabulary, for evaluation and perplexity.
"""

from __future__ import annotations

import math

import torch
from torch import nn

IGNORE = -1  # target id of positions without a target (padding, sequence ends)


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
        if n_samples is None or n_samples >= self.vocab_size:
            per_target = nn.functional.cross_entropy(torch.addmm(self.bias, h, self.weight.t()), y, reduction="none")
        else:
            per_target = self._sampled_nll(h, y, n_samples, generator)
        return hidden.new_zeros(targets.shape[0]).index_put((keep.nonzero().squeeze(1),), per_target)

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
