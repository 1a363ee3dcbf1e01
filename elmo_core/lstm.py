"""The biLM's two LSTM stacks (forward and backward), run together step by step.

Low-level module; most users want `elmo_core.bilm.BiLM`.

Each layer of each direction is a TensorFlow ``LSTMCell(D, num_proj=P, cell_clip, proj_clip)``:

    z = x W_x + h_prev W_h + B                       gates i, j, f, o  (TF order; stored as i, f, o, j)
    c = sigmoid(f + 1) * c_prev + sigmoid(i) * tanh(j),  clipped to +-cell_clip
    h = clip((sigmoid(o) * tanh(c)) W_P, +-proj_clip)

with skip connections (``h += x``) from layer 1 on. Parameters are stored exactly as in the
bilm-tf weight file (``B`` without the forget bias; the +1 is added at run time), stacked over
the two directions, so import and export are exact copies.

Speed: the input half of every gate product is one large matrix product over all time steps;
only ``h_prev W_h`` and the projection run per step, for both directions in one batched call;
rows are kept sorted by length so finished sentences drop out of the per-step work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .config import LSTMConfig
from .lstm_recurrence import recurrence


@dataclass
class LstmState:
    """Per-layer LSTM state of both directions: c[l] (2, B, D), h[l] (2, B, P); direction 0 = forward."""

    c: list[torch.Tensor]
    h: list[torch.Tensor]

    @property
    def batch_size(self) -> int:
        return self.c[0].shape[1]

    def rows(self, index: torch.Tensor | slice) -> "LstmState":
        return LstmState([c[:, index] for c in self.c], [h[:, index] for h in self.h])

    def detach(self) -> "LstmState":
        return LstmState([c.detach() for c in self.c], [h.detach() for h in self.h])

    def resized(self, batch_size: int) -> "LstmState":
        """The first `batch_size` rows; rows this state never had start from zero."""
        have = self.batch_size
        if have >= batch_size:
            return self.rows(slice(0, batch_size))
        pad = batch_size - have
        return LstmState([torch.cat([c, c.new_zeros(2, pad, c.shape[2])], 1) for c in self.c],
                         [torch.cat([h, h.new_zeros(2, pad, h.shape[2])], 1) for h in self.h])

    def updated_with(self, new: "LstmState") -> "LstmState":
        """`new` for its rows; rows beyond its batch keep this state's values (AllenNLP semantics)."""
        new = new.detach()
        if new.batch_size >= self.batch_size:
            return new
        keep = self.rows(slice(new.batch_size, None))
        return LstmState([torch.cat([a, b], 1) for a, b in zip(new.c, keep.c)],
                         [torch.cat([a, b], 1) for a, b in zip(new.h, keep.h)])


class CarriedState:
    """Stateful mode: LSTM state kept per batch row across calls (row k continues row k)."""

    def __init__(self) -> None:
        self.state: LstmState | None = None

    def reset(self) -> None:
        self.state = None

    def get(self, batch_size: int) -> LstmState | None:
        return None if self.state is None else self.state.resized(batch_size)

    def put(self, new: LstmState) -> None:
        self.state = new.detach() if self.state is None else self.state.updated_with(new)


class BiLstm(nn.Module):
    """Forward and backward LSTM stacks with projection, clipping and skip connections.

    Parameters (per layer ``l``, leading dim 2 = forward/backward; gate columns in the order
    i, f, o, j: the three sigmoid gates first, a fixed permutation of TF's i, j, f, o):
    ``input_weight`` (2, in, 4D), ``recurrent_weight`` (2, P, 4D), ``bias`` (2, 4D),
    ``projection`` (2, D, P).
    """

    def __init__(self, config: LSTMConfig, input_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.config = config
        self.dropout = dropout
        D, P = config.dim, config.projection_dim
        self.input_weights = nn.ParameterList()
        self.recurrent_weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.projections = nn.ParameterList()
        for layer in range(config.n_layers):
            in_dim = input_dim if layer == 0 else P
            bound = 1.0 / math.sqrt(in_dim + P)
            self.input_weights.append(nn.Parameter(torch.empty(2, in_dim, 4 * D).uniform_(-bound, bound)))
            self.recurrent_weights.append(nn.Parameter(torch.empty(2, P, 4 * D).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.zeros(2, 4 * D)))
            self.projections.append(nn.Parameter(torch.empty(2, D, P).uniform_(-1 / math.sqrt(D), 1 / math.sqrt(D))))
        forget = torch.zeros(4 * D)
        forget[D:2 * D] = 1.0  # TF LSTMCell forget_bias, added at run time
        self.register_buffer("forget_bias", forget, persistent=False)

    def zero_state(self, batch_size: int, like: torch.Tensor) -> LstmState:
        D, P, n = self.config.dim, self.config.projection_dim, self.config.n_layers
        return LstmState([like.new_zeros(2, batch_size, D) for _ in range(n)],
                         [like.new_zeros(2, batch_size, P) for _ in range(n)])

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor,
                state: LstmState | None = None) -> tuple[list[torch.Tensor], LstmState]:
        """Run both directions over right-padded sequences.

        inputs: (B, T, in) token vectors; lengths: (B,) int, each >= 1; state: None (zeros) or
        an `LstmState` of batch B. Returns per-layer outputs (2, B, T, P) in sentence order
        (direction 1 already re-reversed; padded positions are zero) and the final state, taken
        at each row's last real step.
        """
        B, T, _ = inputs.shape
        if state is None:
            state = self.zero_state(B, inputs)
        elif state.batch_size != B:
            raise ValueError(f"state has {state.batch_size} rows, batch has {B}")
        # sort rows by length (longest first) so that step t touches only rows still running
        lengths = lengths.to(inputs.device)
        order = torch.argsort(lengths, descending=True, stable=True)
        sorted_lengths = lengths[order]
        is_sorted = bool((order == torch.arange(B, device=order.device)).all())
        if not is_sorted:
            inputs = inputs[order]
            state = state.rows(order)
        reverse = _reverse_index(sorted_lengths, T)  # (B, T)
        # reading order per direction: (2, B, T, in)
        x = torch.stack([inputs, inputs.gather(1, reverse[..., None].expand_as(inputs))])
        active = (sorted_lengths[None, :] > torch.arange(T, device=lengths.device)[:, None]).sum(1).tolist()

        outputs, final = self._run_layers(x, active, state)

        # back to sentence order: re-reverse direction 1, undo the row sort
        results = []
        for out in outputs:
            out = torch.stack([out[0], out[1].gather(1, reverse[..., None].expand_as(out[1]))])
            results.append(out)
        if not is_sorted:
            inverse = torch.argsort(order)
            results = [out[:, inverse] for out in results]
            final = final.rows(inverse)
        return results, final

    def forward_streams(self, inputs: torch.Tensor, state: LstmState | None = None) -> tuple[list[torch.Tensor], LstmState]:
        """Run each direction over its own full-length windows of running text (stream training).

        inputs: (2, B, T, in), direction 0's windows in forward reading order and direction 1's
        in *its* reading order (windows of the reversed text), every row T real tokens; state:
        None (zeros) or the final state of the previous windows. Returns per-layer outputs
        (2, B, T, P) in each direction's reading order and the final state.
        """
        _, B, T, _ = inputs.shape
        if state is None:
            state = self.zero_state(B, inputs)
        elif state.batch_size != B:
            raise ValueError(f"state has {state.batch_size} rows, batch has {B}")
        return self._run_layers(inputs, [B] * T, state)

    def _run_layers(self, x: torch.Tensor, active: list[int], state: LstmState) -> tuple[list[torch.Tensor], LstmState]:
        """x: (2, B, T, in) in reading order, rows sorted by length -> per-layer (2, B, T, P), state."""
        outputs, final_c, final_h = [], [], []
        for layer in range(self.config.n_layers):
            if self.training and self.dropout > 0:
                x = nn.functional.dropout(x, self.dropout, True)
            out, c, h = self._run_layer(layer, x, active, state.c[layer], state.h[layer])
            if self.config.use_skip_connections and layer > 0:
                out = out + x
            outputs.append(out)
            final_c.append(c)
            final_h.append(h)
            x = out
        return outputs, LstmState(final_c, final_h)

    def _run_layer(self, layer: int, x: torch.Tensor, active: list[int], c: torch.Tensor,
                   h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (2, B, T, in) in reading order -> outputs (2, B, T, P), final c (2, B, D), h (2, B, P).

        tanh is computed as ``2 sigmoid(2x) - 1`` (one sigmoid over all four gates; torch's CPU
        tanh is ~3x slower than its sigmoid): the j block of the weights is doubled here, on the
        fly, so the parameters (and their gradients) stay those of the TF cell.
        """
        cfg = self.config
        D = cfg.dim
        _, B, T, _ = x.shape
        scale = x.new_ones(4 * D)
        scale[3 * D:] = 2.0  # j -> 2j, so that sigmoid(z_j) gives tanh(j) = 2 sigmoid(2j) - 1
        w_h = self.recurrent_weights[layer] * scale  # (2, P, 4D)
        w_p = self.projections[layer]  # (2, D, P)
        bias = ((self.biases[layer] + self.forget_bias) * scale)[:, None, :]  # (2, 1, 4D)
        # input half of the gates for all steps at once, time-major so each step is contiguous
        x_tm = x.transpose(1, 2).reshape(2, T * B, -1)
        xw = torch.baddbmm(bias, x_tm, self.input_weights[layer] * scale).view(2, T, B, 4 * D)
        out, c, h = recurrence(xw, w_h, w_p, c, h, active, cfg.cell_clip, cfg.proj_clip)
        return out.transpose(1, 2), c, h


def _reverse_index(lengths: torch.Tensor, T: int) -> torch.Tensor:
    """(B, T) index that reverses each row within its length and leaves padding in place."""
    t = torch.arange(T, device=lengths.device)[None, :]
    lengths = lengths[:, None]
    return torch.where(t < lengths, lengths - 1 - t, t)
