"""The bidirectional language model: char-CNN token encoder + two LSTM stacks + shared softmax.

`BiLM` is the model that is pretrained, adapted and embedded with. Its inputs are character ids
of token sequences exactly as given (sentences are wrapped in ``<S>`` ... ``</S>`` by the
caller, e.g. `characters.batch_to_ids(..., add_boundaries=True)`); its outputs are the biLM layers at every position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .config import BiLMConfig
from .lstm import BiLstm, LstmState
from .softmax import IGNORE, Softmax
from .token_encoder import CharCNNTokenEncoder


@dataclass
class BiLMOutput:
    """layers: (L+1, B, T, 2P), layer 0 = [e; e], layer l = [forward_l; backward_l], zero at padding;
    mask: (B, T) bool; state: final LSTM state (per row, at its last real token)."""

    layers: torch.Tensor
    mask: torch.Tensor
    state: LstmState

    @property
    def top(self) -> torch.Tensor:
        return self.layers[-1]


class BiLM(nn.Module):
    """ELMo's biLM (Peters et al. 2018) in plain PyTorch, numerically equal to bilm-tf.

    Parameters
    ----------
    config : BiLMConfig
        Sizes; a softmax over ``config.training.n_tokens_vocab`` words is built when that is > 0.
    """

    def __init__(self, config: BiLMConfig) -> None:
        super().__init__()
        self.config = config
        P = config.lstm.projection_dim
        self.token_encoder = CharCNNTokenEncoder(config.char_cnn, P)
        self.lstm = BiLstm(config.lstm, P, dropout=config.training.dropout)
        vocab = config.training.n_tokens_vocab
        self.softmax = Softmax(vocab, P) if vocab > 0 else None

    # ------------------------------------------------------------------ encoding
    def encode_tokens(self, char_ids: torch.Tensor) -> torch.Tensor:
        """Context-free token vectors: char_ids (..., 50) -> (..., P); all-zero rows give zeros.

        Each distinct token is encoded once (outputs are unchanged by this).
        """
        shape = char_ids.shape[:-1]
        flat = char_ids.reshape(-1, char_ids.shape[-1])
        present = flat[:, 0] != 0
        if not bool(present.any()):
            return self.token_encoder.projection.new_zeros(*shape, self.token_encoder.output_dim)
        unique, inverse = torch.unique(flat[present], dim=0, return_inverse=True)
        encoded = self.token_encoder(unique)  # bfloat16 under autocast
        out = encoded.new_zeros(flat.shape[0], self.token_encoder.output_dim)
        out = out.index_put((present.nonzero().squeeze(1),), encoded[inverse])
        return out.reshape(*shape, -1)

    def contextualize(self, embeddings: torch.Tensor, mask: torch.Tensor,
                      state: LstmState | None = None) -> BiLMOutput:
        """Run the LSTMs over token vectors. embeddings (B, T, P), mask (B, T) right-padded."""
        lengths = mask.sum(dim=1)
        if bool((lengths == 0).any()):
            raise ValueError("every sequence needs at least one token")
        outputs, final = self.lstm(embeddings, lengths, state)
        embeddings = embeddings.to(outputs[0].dtype)  # the recurrence's float32 under autocast
        keep = mask[None, :, :, None].to(embeddings.dtype)
        layers = [torch.cat([embeddings, embeddings], dim=-1) * keep[0]]
        layers += [torch.cat([out[0], out[1]], dim=-1) * keep[0] for out in outputs]
        return BiLMOutput(torch.stack(layers), mask, final)

    def forward(self, char_ids: torch.Tensor, state: LstmState | None = None) -> BiLMOutput:
        """char_ids: (B, T, 50), right-padded with all-zero rows -> `BiLMOutput`."""
        if char_ids.dim() != 3:
            raise ValueError(f"expected (batch, tokens, chars) ids, got shape {tuple(char_ids.shape)}")
        mask = char_ids[:, :, 0] != 0
        return self.contextualize(self.encode_tokens(char_ids), mask, state)

    # ------------------------------------------------------------------ language model
    def lm_loss(self, char_ids: torch.Tensor, next_ids: torch.Tensor, prev_ids: torch.Tensor,
                state: LstmState | None = None, n_samples: int | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor], LstmState]:
        """Language-model loss: mean over the two directions of each one's mean token NLL.

        next_ids / prev_ids: (B, T) word ids that position t must predict going forward /
        backward (`IGNORE` where there is none). n_samples: sampled softmax with that many
        negatives (training); None: full softmax (exact). Returns (loss, stats, final state);
        stats has the NLL sums and target counts per direction (for perplexity).
        """
        if self.softmax is None:
            raise ValueError("this model has no softmax (config.training.n_tokens_vocab is 0)")
        out = self(char_ids, state)
        P = self.config.lstm.projection_dim
        loss, stats = self._directions_loss(out.top[..., :P], out.top[..., P:], next_ids, prev_ids, n_samples, generator)
        return loss, stats, out.state

    def stream_loss(self, char_ids: torch.Tensor, targets: torch.Tensor, state: LstmState | None = None,
                    n_samples: int | None = None,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor], LstmState]:
        """Language-model loss on windows of running text, the state carried from the previous
        windows (truncated backpropagation through time, as bilm-tf trains and Kim et al. 2016
        evaluate).

        char_ids: (2, B, T, 50), direction 0's windows of the text and direction 1's windows of
        the reversed text, each in its own reading order, every position a real token;
        targets: (2, B, T) the token that follows each position in its reading order (`IGNORE`
        where none). Returns (loss, stats, final state) as `lm_loss` does.
        """
        if self.softmax is None:
            raise ValueError("this model has no softmax (config.training.n_tokens_vocab is 0)")
        if char_ids.dim() != 4 or char_ids.shape[0] != 2 or targets.shape != char_ids.shape[:3]:
            raise ValueError(f"expected char ids (2, B, T, chars) and targets (2, B, T), got "
                             f"{tuple(char_ids.shape)} and {tuple(targets.shape)}")
        outputs, final = self.lstm.forward_streams(self.encode_tokens(char_ids), state)
        top = outputs[-1]
        loss, stats = self._directions_loss(top[0], top[1], targets[0], targets[1], n_samples, generator)
        return loss, stats, final

    def _directions_loss(self, forward_top: torch.Tensor, backward_top: torch.Tensor, next_ids: torch.Tensor,
                         prev_ids: torch.Tensor, n_samples: int | None,
                         generator: torch.Generator | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Both directions' top layers (..., P) and targets (...) -> (loss, stats), one softmax call."""
        dropout = self.config.training.dropout
        P = self.config.lstm.projection_dim
        hidden = torch.cat([forward_top.reshape(-1, P), backward_top.reshape(-1, P)])  # (2N, P)
        if self.training and dropout > 0:
            hidden = nn.functional.dropout(hidden, dropout, True)
        targets = torch.cat([next_ids.reshape(-1), prev_ids.reshape(-1)])
        n = next_ids.numel()
        if self.softmax.is_exact(n_samples):  # block by block
            forward_nll, backward_nll = self.softmax.full_nll_sums(hidden, targets, n).unbind()
        else:
            per_target = self.softmax.nll(hidden, targets, n_samples, generator)
            forward_nll, backward_nll = per_target[:n].sum(), per_target[n:].sum()
        stats = {"forward_nll": forward_nll, "forward_count": (next_ids != IGNORE).sum(),
                 "backward_nll": backward_nll, "backward_count": (prev_ids != IGNORE).sum()}
        loss = 0.5 * (stats["forward_nll"] / stats["forward_count"].clamp(min=1)
                      + stats["backward_nll"] / stats["backward_count"].clamp(min=1))
        return loss, stats

    def num_parameters(self, include_softmax: bool = False) -> int:
        return sum(p.numel() for name, p in self.named_parameters()
                   if include_softmax or not name.startswith("softmax."))

    def num_forward_lm_parameters(self) -> int:
        """The forward LM's share: token encoder + forward LSTMs + softmax (how Kim et al. 2016
        count); every LSTM tensor holds both directions in its first dimension."""
        return sum(p.numel() // 2 if name.startswith("lstm.") else p.numel() for name, p in self.named_parameters())


@dataclass(frozen=True)
class Perplexity:
    """Full-softmax perplexities: ``forward = exp(NLL_f / N_f)``, ``backward`` likewise, and
    ``average = exp((NLL_f / N_f + NLL_b / N_b) / 2)`` (the geometric mean; what bilm-tf reports)."""

    forward: float
    backward: float
    average: float
    tokens: int

    @classmethod
    def from_sums(cls, forward_nll: float, forward_count: int, backward_nll: float,
                  backward_count: int) -> "Perplexity":
        if forward_count == 0 or backward_count == 0:
            raise ValueError("no targets to compute a perplexity on")
        f, b = forward_nll / forward_count, backward_nll / backward_count
        return cls(math.exp(f), math.exp(b), math.exp(0.5 * (f + b)), int(forward_count))


def sentence_targets(word_ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets for sentences laid out as ``<S> w1 .. wn </S>``: word_ids (B, T) -> (next_ids, prev_ids).

    Forward position t predicts t+1; backward position t predicts t-1; positions without a
    neighbour inside the sentence get `IGNORE`.
    """
    B, T = word_ids.shape
    t = torch.arange(T, device=word_ids.device)[None, :]
    next_ids = torch.full_like(word_ids, IGNORE)
    prev_ids = torch.full_like(word_ids, IGNORE)
    next_ids[:, :-1] = word_ids[:, 1:]
    prev_ids[:, 1:] = word_ids[:, :-1]
    next_ids[t >= lengths[:, None] - 1] = IGNORE
    prev_ids[(t == 0) | (t >= lengths[:, None])] = IGNORE
    return next_ids, prev_ids
