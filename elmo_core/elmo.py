"""`Elmo`: the module a downstream model puts in front of its own layers.

Like AllenNLP's ``Elmo`` but without its pitfalls: stateless by default (a sentence's vectors
never depend on what was embedded before or beside it), the biLM frozen AND in eval mode when
frozen, per-token layer norm, and sentence boundaries handled inside.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from .bilm import BiLM
from .characters import MAX_CHARS_PER_TOKEN, add_sentence_boundaries, batch_to_ids
from .lstm import CarriedState
from .scalar_mix import ScalarMix
from .weights import load_model

class Elmo(nn.Module):
    """ELMo representations for a downstream model (Peters et al. 2018).

    Parameters
    ----------
    bilm : BiLM
        The pretrained biLM (see `elmo_core.weights.load_model`).
    num_output_representations : int
        How many independently mixed outputs (e.g. one for the input, one for the output layer).
    dropout : float, default 0.5
        Dropout on each mixed representation (training only).
    do_layer_norm : bool, default False
        Per-token layer norm of each biLM layer before mixing.
    requires_grad : bool, default False
        Fine-tune the biLM. When False the biLM is frozen and always runs in eval mode.
    stateful : bool, default False
        Carry LSTM state per batch row across calls (bilm-tf/AllenNLP behaviour, needed only to
        reproduce their numbers). Default: every sentence starts from a zero state.
    """

    def __init__(self, bilm: BiLM, num_output_representations: int, dropout: float = 0.5,
                 do_layer_norm: bool = False, requires_grad: bool = False, stateful: bool = False,
                 scalar_mix_parameters: list[float] | None = None) -> None:
        super().__init__()
        self.bilm = bilm
        self.requires_grad = requires_grad
        bilm.requires_grad_(requires_grad)
        self.dropout = nn.Dropout(dropout)
        self.stateful = stateful
        self._carried = CarriedState()
        n_layers = bilm.config.n_output_layers
        self.scalar_mixes = nn.ModuleList(
            ScalarMix(n_layers, do_layer_norm, scalar_mix_parameters, trainable=scalar_mix_parameters is None)
            for _ in range(num_output_representations))

    @classmethod
    def from_files(cls, model_dir: str | os.PathLike | None = None, options_file: str | None = None,
                   weight_file: str | None = None, **kwargs) -> "Elmo":
        """From a native model directory or a bilm-tf options.json + weights.hdf5 pair."""
        return cls(load_model(model_dir, options_file, weight_file), **kwargs)

    def train(self, mode: bool = True) -> "Elmo":
        super().train(mode)
        if not self.requires_grad:
            self.bilm.eval()  # a frozen biLM never runs dropout
        return self

    def reset_states(self) -> None:
        self._carried.reset()

    def forward(self, char_ids: torch.Tensor) -> dict[str, object]:
        """char_ids: (B, T, 50) from `characters.batch_to_ids(sentences, add_boundaries=False)`.

        Returns ``{"elmo_representations": [(B, T, 2P)] * N, "mask": (B, T) bool}``.
        """
        if char_ids.dim() != 3 or char_ids.shape[-1] != MAX_CHARS_PER_TOKEN:
            raise ValueError(f"expected (batch, tokens, {MAX_CHARS_PER_TOKEN}) ids, got {tuple(char_ids.shape)}")
        with torch.set_grad_enabled(self.requires_grad and torch.is_grad_enabled()):
            state = self._carried.get(char_ids.shape[0]) if self.stateful else None
            out = self.bilm(add_sentence_boundaries(char_ids), state)
        if self.stateful:
            self._carried.put(out.state)
        layers = out.layers[:, :, 1:-1]  # drop <S>/</S> positions: (L, B, T, 2P)
        mask = char_ids[:, :, 0] != 0
        # the </S> of shorter rows sits inside T: zero it
        layers = layers * mask[None, :, :, None].to(layers.dtype)
        reps = [self.dropout(mix(layers, mask)) for mix in self.scalar_mixes]
        return {"elmo_representations": reps, "mask": mask}

    def embed_sentences(self, sentences: list[list[str]]) -> dict[str, object]:
        """Convenience: token lists -> `forward` output."""
        device = next(self.bilm.parameters()).device
        return self(batch_to_ids(sentences, add_boundaries=False).to(device))
