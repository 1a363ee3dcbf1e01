"""Sentences -> the requested biLM layers, fast: batching, length bucketing and a per-chunk token
cache. The one embedding path: `elmo embed`, the MLflow pyfunc and the embedding jobs all call it.

`Embedder.embed` yields ``(index, array)`` for each input sentence, the array chosen by the
`LayerSelection` (default ``all``: (L+1, n, 2P) float32), ``<S>``/``</S>`` positions removed.

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
from .characters import BOS_TOKEN, EOS_TOKEN, token_to_ids, wrap_padded
from .layer_selection import LayerSelection
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
    layers : LayerSelection or str
        What each sentence yields (``all``, ``top``, ``average``, ``mix:...``) and its dtype.
    batch_tokens : int, optional
        Stateless only: a batch also holds at most this many positions (sentences x the longest
        one's length, ``<S>``/``</S>`` included), so long sentences go in smaller batches.
    """

    def __init__(self, model: BiLM, batch_size: int = 64, stateful: bool = False,
                 chunk_size: int = 4096, layers: LayerSelection | str = "all",
                 batch_tokens: int | None = None) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if batch_tokens is not None and batch_tokens < 1:
            raise ValueError("batch_tokens must be >= 1")
        self.batch_tokens = batch_tokens
        self.layers = layers if isinstance(layers, LayerSelection) else LayerSelection.parse(layers)
        self.layers.check(model.config.n_output_layers)
        self.model = model.eval()
        self.batch_size = batch_size
        self.stateful = stateful
        self.chunk_size = max(chunk_size, batch_size)
        self.device = next(model.parameters()).device
        self._carried = CarriedState()

    @torch.inference_mode()
    def embed(self, sentences: Iterable[Sequence[str]]) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (input index, selected layers) for every sentence (n >= 1 tokens)."""
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

    def _batches(self, chunk: list[Sequence[str]]) -> list[list[int]]:
        """Positions of the chunk's sentences, batch by batch: consecutive groups (stateful), or
        longest first, at most `batch_size` sentences and `batch_tokens` positions (stateless)."""
        if self.stateful:
            return [list(range(b, min(b + self.batch_size, len(chunk)))) for b in range(0, len(chunk), self.batch_size)]
        order = sorted(range(len(chunk)), key=lambda i: -len(chunk[i]))
        batches: list[list[int]] = []
        for i in order:
            current = batches[-1] if batches else None
            if (current is None or len(current) == self.batch_size or
                    (self.batch_tokens and (len(current) + 1) * (len(chunk[current[0]]) + 2) > self.batch_tokens)):
                batches.append([i])
            else:
                current.append(i)
        return batches

    def _embed_chunk(self, chunk: list[Sequence[str]], start: int) -> Iterator[tuple[int, np.ndarray]]:
        # distinct tokens of the chunk -> one char-CNN pass
        type_index: dict[str, int] = {BOS_TOKEN: 0, EOS_TOKEN: 1}
        rows = [[type_index.setdefault(tok, len(type_index)) for tok in s] for s in chunk]
        char_ids = torch.from_numpy(np.stack([token_to_ids(t) for t in type_index])).to(self.device)
        vectors = self.model.token_encoder(char_ids)  # (n_types, P)

        for members in self._batches(chunk):
            # type 0 is <S>, type 1 </S> (also the padding: its vector is masked anyway)
            ids, lengths = wrap_padded([np.asarray(rows[i], np.int64) for i in members], 0, 1, 1)
            index = torch.from_numpy(ids).to(self.device)
            mask = torch.arange(ids.shape[1], device=self.device)[None, :] < torch.from_numpy(lengths).to(self.device)[:, None]
            state = self._carried.get(len(members)) if self.stateful else None
            out = self.model.contextualize(vectors[index], mask, state)
            if self.stateful:
                self._carried.put(out.state)
            layers = out.layers.float().cpu().numpy()  # (L+1, B, T, 2P)
            for r, i in enumerate(members):
                yield start + i, self.layers.apply(layers[:, r, 1:lengths[r] - 1])
