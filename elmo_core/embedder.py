"""Sentences -> biLM layers, fast: batching, length bucketing and a per-chunk token cache.

`Embedder.embed` yields ``(index, layers)`` with layers (L+1, n, 2P) float32 for each input
sentence (``<S>``/``</S>`` positions removed).

* stateless (default): every sentence starts from a zero LSTM state, so results do not depend
  on batch mates, batch size, order or padding. Sentences are read in chunks, sorted by length
  inside a chunk (little padding) and yielded in that order; callers key them by index.
* stateful: batches are consecutive groups of `batch_size` sentences in input order, and row k
  of each batch starts from the final state of row k of the previous batch (bilm-tf/AllenNLP).

Either way each distinct token of a chunk goes through the char CNN once (its vector does not
depend on context), which removes most of the encoder's work on real text.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from .bilm import BiLM
from .characters import BOS_TOKEN, EOS_TOKEN, token_to_ids
from .lstm import CarriedState


class Embedder:
    """Embeds tokenized sentences with a `BiLM`.

    Parameters
    ----------
    model : BiLM
    batch_size : int
        Sentences per LSTM batch.
    stateful : bool
        Carry state across batches (see module docstring).
    chunk_size : int
        Sentences whose distinct tokens are encoded together (and, stateless, sorted together).
    """

    def __init__(self, model: BiLM, batch_size: int = 64, stateful: bool = False,
                 chunk_size: int = 4096) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.model = model.eval()
        self.batch_size = batch_size
        self.stateful = stateful
        self.chunk_size = max(chunk_size, batch_size)
        self.device = next(model.parameters()).device
        self._carried = CarriedState()

    def reset_state(self) -> None:
        self._carried.reset()

    @torch.inference_mode()
    def embed(self, sentences: Iterable[Sequence[str]]) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (input index, (L+1, n, 2P) float32 array) for every sentence (n >= 1 tokens)."""
        chunk: list[Sequence[str]] = []
        start = 0
        for sentence in sentences:
            if len(sentence) == 0:
                raise ValueError(f"sentence {start + len(chunk)} is empty")
            chunk.append(sentence)
            if len(chunk) == self.chunk_size:
                yield from self._embed_chunk(chunk, start)
                start += len(chunk)
                chunk = []
        if chunk:
            yield from self._embed_chunk(chunk, start)

    def embed_all(self, sentences: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """All sentences, in input order."""
        out: list[np.ndarray | None] = [None] * len(sentences)
        for i, layers in self.embed(sentences):
            out[i] = layers
        return out  # type: ignore[return-value]

    def _embed_chunk(self, chunk: list[Sequence[str]], start: int) -> Iterator[tuple[int, np.ndarray]]:
        # distinct tokens of the chunk -> one char-CNN pass
        type_index: dict[str, int] = {BOS_TOKEN: 0, EOS_TOKEN: 1}
        rows = [[type_index.setdefault(tok, len(type_index)) for tok in s] for s in chunk]
        char_ids = torch.from_numpy(np.stack([token_to_ids(t) for t in type_index])).to(self.device)
        vectors = self.model.token_encoder(char_ids)  # (n_types, P)

        order = range(len(chunk)) if self.stateful else sorted(range(len(chunk)), key=lambda i: -len(chunk[i]))
        order = list(order)
        for b in range(0, len(order), self.batch_size):
            members = order[b:b + self.batch_size]
            lengths = [len(rows[i]) + 2 for i in members]
            T = max(lengths)
            ids = np.ones((len(members), T), dtype=np.int64)  # padding -> EOS vector, masked anyway
            for r, i in enumerate(members):
                ids[r, 0] = 0
                ids[r, 1:lengths[r] - 1] = rows[i]
            index = torch.from_numpy(ids).to(self.device)
            mask = torch.arange(T, device=self.device)[None, :] < torch.tensor(lengths, device=self.device)[:, None]
            state = self._carried.get(len(members)) if self.stateful else None
            out = self.model.contextualize(vectors[index], mask, state)
            if self.stateful:
                self._carried.put(out.state)
            layers = out.layers.float().cpu().numpy()  # (L+1, B, T, 2P)
            for r, i in enumerate(members):
                yield start + i, np.ascontiguousarray(layers[:, r, 1:lengths[r] - 1])
