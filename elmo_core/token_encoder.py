"""Character-CNN token encoder: character ids of one token -> a context-free token vector.

Low-level module; most users want `elmo_core.bilm.BiLM` or `elmo_core.elmo.Elmo`.

Math (bilm-tf): char embedding -> one valid 1-D convolution per filter width -> max over
positions -> activation -> concat (F channels) -> highway layers -> linear projection to P.

Speed without changing outputs:
* all filter widths run as ONE matrix product: each filter is zero-padded on the right to the
  widest width, positions a narrow filter may not use (past ``50 - width``) are masked to -inf
  before the max;
* padding characters are skipped: a token of ``n`` real positions (begin, bytes, end) has all
  windows starting at ``s >= n`` made of padding only, so they are all equal; computing
  positions ``0..n`` covers every distinct window. Tokens are grouped by length so that short
  tokens never pay for long ones;
* callers deduplicate tokens (`BiLM` and the embedder encode each distinct token once).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .characters import OFFSET, PAD_CHAR
from .config import CharCNNConfig

PAD_ID = PAD_CHAR + OFFSET  # id of the in-token padding character (after the +1 shift)


class Highway(nn.Module):
    """``g = sigmoid(x Wc + bc); x = g * relu(x Wt + bt) + (1 - g) * x`` (bilm-tf convention)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.w_transform = nn.Parameter(torch.empty(dim, dim))
        self.b_transform = nn.Parameter(torch.zeros(dim))
        self.w_carry = nn.Parameter(torch.empty(dim, dim))
        self.b_carry = nn.Parameter(torch.full((dim,), -2.0))  # bilm-tf initialises the carry bias to -2
        bound = 1.0 / math.sqrt(dim)
        nn.init.normal_(self.w_transform, std=bound)
        nn.init.normal_(self.w_carry, std=bound)

    def joined(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Both halves as one GEMM's operands: weight (F, 2F), bias (2F,)."""
        return torch.cat([self.w_transform, self.w_carry], dim=1), torch.cat([self.b_transform, self.b_carry])

    def forward(self, x: torch.Tensor, joined: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """x: (N, F) -> (N, F). ``joined``: `joined()`, when the caller applies the layer to many groups."""
        weight, bias = joined or self.joined()
        both = torch.addmm(bias, x, weight)  # (N, 2F): one GEMM for both halves
        transform, carry = both.chunk(2, dim=1)
        gate = torch.sigmoid(carry)
        return torch.addcmul(x - gate * x, gate, torch.relu(transform))


class CharCNNTokenEncoder(nn.Module):
    """Character-CNN token encoder of ELMo (Peters et al. 2018), as in bilm-tf.

    Parameters
    ----------
    config : CharCNNConfig
        Filters, highway layers, activation, character vocabulary.
    projection_dim : int
        Output width P (the LSTM projection size).

    Parameter layout follows the bilm-tf weight file, so import/export is a plain copy:
    ``char_embedding`` (n_characters - 1, C) is the stored table (row for id 0, the absent
    token, is an implicit zero row), ``conv_weights[i]`` (width_i, C, n_i), ``conv_biases[i]``
    (n_i,), ``projection`` (F, P) and ``projection_bias`` (P,).
    """

    # Tokens encoded per length group; bounds the (tokens x positions x F) activation and the
    # highways' (tokens x 2F). 128 measured fastest on CPU (inference 1.2x of 512; training equal).
    GROUP_SIZE = 128

    def __init__(self, config: CharCNNConfig, projection_dim: int) -> None:
        super().__init__()
        self.config = config
        c = config
        self.max_width = max(w for w, _ in c.filters)
        self.n_positions = c.max_characters_per_token
        self.char_embedding = nn.Parameter(torch.empty(c.n_characters - 1, c.char_dim).uniform_(-1.0, 1.0))
        self.conv_weights = nn.ParameterList()
        self.conv_biases = nn.ParameterList()
        for width, n in c.filters:
            w = torch.empty(width, c.char_dim, n)
            nn.init.normal_(w, std=1.0 / math.sqrt(width * c.char_dim))
            self.conv_weights.append(nn.Parameter(w))
            self.conv_biases.append(nn.Parameter(torch.zeros(n)))
        self.highways = nn.ModuleList(Highway(c.n_filters) for _ in range(c.n_highway))
        self.projection = nn.Parameter(torch.empty(c.n_filters, projection_dim))
        nn.init.normal_(self.projection, std=1.0 / math.sqrt(c.n_filters))
        self.projection_bias = nn.Parameter(torch.zeros(projection_dim))
        # last valid start position of each output channel: 50 - width  (F,)
        last_start = torch.cat([torch.full((n,), self.n_positions - w) for w, n in c.filters])
        self.register_buffer("last_start", last_start, persistent=False)
        self.min_last_start = self.n_positions - self.max_width  # the widest filter's (no device read)

    @property
    def output_dim(self) -> int:
        return self.projection.shape[1]

    def _filter_bank(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All filters as one matrix: (max_width * C, F), and the biases (F,)."""
        blocks = []
        for w in self.conv_weights:
            width, char_dim, n = w.shape
            if width < self.max_width:
                w = torch.cat([w, w.new_zeros(self.max_width - width, char_dim, n)])
            blocks.append(w.reshape(self.max_width * char_dim, n))
        return torch.cat(blocks, dim=1), torch.cat(list(self.conv_biases))

    def _conv_max(self, ids: torch.Tensor, table: torch.Tensor, bank: torch.Tensor,
                  bias: torch.Tensor, n_starts: int) -> torch.Tensor:
        """Max over window starts 0..n_starts-1 of all filters.

        ids: (N, >= n_starts + max_width - 1) char ids -> (N, F), before the activation.
        """
        width = self.max_width
        ids = ids[:, : n_starts + width - 1]
        if ids.shape[1] < n_starts + width - 1:  # windows that run past position 50 are masked below
            ids = nn.functional.pad(ids, (0, n_starts + width - 1 - ids.shape[1]), value=PAD_ID)
        chars = nn.functional.embedding(ids, table)  # (N, S + w - 1, C)
        windows = chars.unfold(1, width, 1)  # (N, S, C, w)
        windows = windows.transpose(2, 3).reshape(ids.shape[0], n_starts, -1)  # (N, S, w * C)
        conv = torch.matmul(windows, bank)  # (N, S, F)
        if n_starts - 1 > self.min_last_start:  # some windows run past position 50
            starts = torch.arange(n_starts, device=ids.device)
            invalid = starts[:, None] > self.last_start[None, :]  # (S, F)
            conv.masked_fill_(invalid, float("-inf"))  # in place: the (N, S, F) tensor is the peak
        # max with indices when training: its backward scatters, amax's compares the whole tensor
        pooled = conv.max(dim=1).values if torch.is_grad_enabled() else conv.amax(dim=1)
        return pooled + bias

    def forward(self, char_ids: torch.Tensor) -> torch.Tensor:
        """char_ids: (N, 50) ids of real tokens (no all-zero rows) -> (N, P) token vectors."""
        if char_ids.dim() != 2 or char_ids.shape[1] != self.n_positions:
            raise ValueError(f"expected (N, {self.n_positions}) character ids, got {tuple(char_ids.shape)}")
        n_tokens = char_ids.shape[0]
        if n_tokens == 0:
            return self.projection.new_zeros(0, self.output_dim)
        table = torch.cat([self.char_embedding.new_zeros(1, self.char_embedding.shape[1]), self.char_embedding])
        bank, bias = self._filter_bank()
        # real positions per token (begin, bytes, end); padding ids (and absent 0) excluded
        highways = [h.joined() for h in self.highways]
        lengths = ((char_ids != PAD_ID) & (char_ids != 0)).sum(dim=1)
        if n_tokens <= self.GROUP_SIZE:
            return self._encode(char_ids, table, bank, bias, highways, min(int(lengths.max()) + 1, self.n_positions))
        # whole groups (conv, highways, projection): the peak is one group's activations, however
        # many tokens come in (the highways on 5,000 tokens at once took ~300 MB more)
        order = torch.argsort(lengths)
        # each group's longest token, read from the device once (not once per group)
        ends = list(range(self.GROUP_SIZE - 1, n_tokens - 1, self.GROUP_SIZE)) + [n_tokens - 1]
        longest = lengths[order[torch.tensor(ends, device=order.device)]].tolist()
        encoded = []
        for start, group_longest in zip(range(0, n_tokens, self.GROUP_SIZE), longest):
            idx = order[start:start + self.GROUP_SIZE]
            n_starts = min(group_longest + 1, self.n_positions)
            encoded.append(self._encode(char_ids[idx], table, bank, bias, highways, n_starts))
        return torch.cat(encoded)[torch.argsort(order)]

    def _encode(self, char_ids: torch.Tensor, table: torch.Tensor, bank: torch.Tensor, bias: torch.Tensor,
                highways: list, n_starts: int) -> torch.Tensor:
        """char_ids: (N, 50) of tokens with at most ``n_starts - 1`` real positions -> (N, P)."""
        pooled = self._conv_max(char_ids, table, bank, bias, n_starts)
        x = torch.relu(pooled) if self.config.activation == "relu" else torch.tanh(pooled)
        for highway, joined in zip(self.highways, highways):
            x = highway(x, joined)
        return torch.addmm(self.projection_bias, x, self.projection)
