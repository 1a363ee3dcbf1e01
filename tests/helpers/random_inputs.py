"""Generated sentences and randomly initialised modules."""

from __future__ import annotations

import numpy as np
import torch


def random_sentences(n: int, seed: int = 0, min_len: int = 1, max_len: int = 12) -> list[list[str]]:
    """Generated sentences over a small Zipf-ish vocabulary with repeats, odd scripts and long tokens."""
    rng = np.random.default_rng(seed)
    words = ["the", "of", "a", "model", "ELMo", "é", "naïve", "日本語", "Москва", "x" * 47, "y" * 48,
             "z" * 60, "ü" * 30, ".", ",", "ran", "quickly", "42", "<unk>", "token"]
    p = 1.0 / np.arange(1, len(words) + 1)
    p /= p.sum()
    return [list(rng.choice(words, size=rng.integers(min_len, max_len + 1), p=p)) for _ in range(n)]


def seeded(module: torch.nn.Module, seed: int = 0, scale: float = 1.0) -> torch.nn.Module:
    """Give every parameter random values, biases included (so every gate and clip is exercised).

    Matrices get std scale/sqrt(fan in), so activations keep realistic magnitudes (~1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            fan_in = p.shape[-2] if p.dim() >= 2 else 4
            p.copy_(torch.randn(p.shape, generator=gen) * scale / fan_in ** 0.5)
    return module
