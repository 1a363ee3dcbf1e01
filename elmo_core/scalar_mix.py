"""Task-specific weighted sum of biLM layers: ``gamma * sum_j softmax(s)_j * h_j`` (Peters et al. 2018)."""

from __future__ import annotations

import torch
from torch import nn


class ScalarMix(nn.Module):
    """Learned softmax-weighted mix of L layers, scaled by gamma.

    Parameters
    ----------
    n_layers : int
        Number of layers mixed (3 for a 2-layer biLM).
    do_layer_norm : bool, default False
        Normalise each layer first. Unlike AllenNLP (one mean/variance over the whole masked
        batch, so a token's vector depends on its batch mates), the norm here is per token over
        its features, so results never depend on batch composition.
    initial_scalar_parameters : list of float, optional
        Starting ``s`` (default zeros: equal weights); ``trainable=False`` freezes s and gamma.
    """

    def __init__(self, n_layers: int, do_layer_norm: bool = False,
                 initial_scalar_parameters: list[float] | None = None, trainable: bool = True) -> None:
        super().__init__()
        init = initial_scalar_parameters or [0.0] * n_layers
        if len(init) != n_layers:
            raise ValueError(f"{len(init)} initial scalar parameters for {n_layers} layers")
        self.do_layer_norm = do_layer_norm
        self.scalar_parameters = nn.Parameter(torch.tensor(init, dtype=torch.float32), requires_grad=trainable)
        self.gamma = nn.Parameter(torch.tensor(1.0), requires_grad=trainable)

    def forward(self, layers: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """layers: (L, B, T, H); mask: (B, T) bool -> (B, T, H), zero at masked positions."""
        if layers.shape[0] != self.scalar_parameters.shape[0]:
            raise ValueError(f"got {layers.shape[0]} layers, built for {self.scalar_parameters.shape[0]}")
        if self.do_layer_norm:
            layers = nn.functional.layer_norm(layers, layers.shape[-1:])
        weights = torch.softmax(self.scalar_parameters, dim=0).to(layers.dtype)
        mixed = self.gamma * torch.einsum("l,l...->...", weights, layers)
        if mask is not None:
            mixed = mixed * mask[..., None].to(mixed.dtype)
        return mixed
