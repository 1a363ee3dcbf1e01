"""`ElmoEmbedder`: allennlp 0.9's ``allennlp.commands.elmo.ElmoEmbedder``, the API most ELMo
tutorials use, with its numbers and its HDF5 file.

Stateful by default, as AllenNLP's: row k of a batch starts from the LSTM state row k of the
previous batch (of this embedder) ended in, so a sentence's vectors depend on what was embedded
before it, and `embed_sentence` twice on one sentence gives two different results.
``stateful=False`` starts every sentence from a zero state (as `elmo_core.embedder.Embedder`
and ``elmo embed`` do by default).
"""

from __future__ import annotations

import os
from typing import IO, Iterable, Iterator

import numpy as np
import torch

from .atomic import atomic_file
from .bilm import BiLM
from .characters import batch_to_ids
from .embed_command import write_sentence_index
from .lstm import CarriedState
from .weights import load_model

DEFAULT_BATCH_SIZE = 64
OUTPUT_FORMATS = ("all", "top", "average")


class ElmoEmbedder:
    """Tokenized sentences -> numpy arrays of all biLM layers, (L+1, n_tokens, 2P) float32.

    Parameters
    ----------
    options_file, weight_file : str
        A bilm-tf/AllenNLP options.json + weights.hdf5 pair (AllenNLP's defaults, URLs of the
        released model, are not downloaded: give the files). A `BiLM` as ``options_file``
        uses that model.
    cuda_device : int, default -1
        The GPU to run on; -1 for the CPU.
    stateful : bool, default True
        Carry LSTM state across batches (AllenNLP). False: every sentence from a zero state.
    """

    def __init__(self, options_file: str | os.PathLike | BiLM | None = None,
                 weight_file: str | os.PathLike | None = None, cuda_device: int = -1,
                 stateful: bool = True) -> None:
        device = torch.device("cpu" if cuda_device < 0 else f"cuda:{cuda_device}")
        if isinstance(options_file, BiLM):
            model = options_file
        elif options_file is None or weight_file is None:
            raise ValueError("ElmoEmbedder needs options_file and weight_file (the released model's URLs are "
                             "not downloaded)")
        else:
            model = load_model(options_file=options_file, weight_file=weight_file)
        self.model = model.to(device).eval()
        self.device = device
        self.stateful = stateful
        self._carried = CarriedState()

    def reset_states(self) -> None:
        """Forget the carried LSTM state: the next batch starts from zeros."""
        self._carried.reset()

    @torch.no_grad()
    def batch_to_embeddings(self, batch: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch -> activations (B, L+1, T, 2P) and mask (B, T) bool; ``<S>``/``</S>`` removed,
        zero at padding."""
        ids = batch_to_ids(batch, add_boundaries=True).to(self.device)
        state = self._carried.get(ids.shape[0]) if self.stateful else None
        out = self.model(ids, state)
        if self.stateful:
            self._carried.put(out.state)
        lengths = torch.tensor([len(s) for s in batch], device=self.device)
        mask = torch.arange(ids.shape[1] - 2, device=self.device)[None, :] < lengths[:, None]
        layers = out.layers[:, :, 1:-1].float() * mask[None, :, :, None]  # the </S> of shorter rows: zero
        return layers.transpose(0, 1), mask

    def empty_embedding(self) -> np.ndarray:
        """What an empty sentence gets: (L+1, 0, 2P)."""
        config = self.model.config
        return np.zeros((config.n_output_layers, 0, config.output_dim), dtype=np.float32)

    def embed_batch(self, batch: list[list[str]]) -> list[np.ndarray]:
        """One batch (one LSTM call) -> one (L+1, n_i, 2P) float32 array per sentence."""
        if all(len(s) == 0 for s in batch):
            return [self.empty_embedding() for _ in batch]
        embeddings, mask = self.batch_to_embeddings(batch)
        embeddings = embeddings.cpu().numpy()
        return [embeddings[i, :, :len(s)] if len(s) else self.empty_embedding() for i, s in enumerate(batch)]

    def embed_sentence(self, sentence: list[str]) -> np.ndarray:
        """One sentence -> (L+1, n_tokens, 2P) float32 (a batch of one: stateful, it continues row 0)."""
        return self.embed_batch([sentence])[0]

    def embed_sentences(self, sentences: Iterable[list[str]], batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[np.ndarray]:
        """Sentences in input order, in batches of `batch_size` consecutive sentences."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        batch: list[list[str]] = []
        for sentence in sentences:
            batch.append(sentence)
            if len(batch) == batch_size:
                yield from self.embed_batch(batch)
                batch = []
        if batch:
            yield from self.embed_batch(batch)

    def embed_file(self, input_file: IO[str] | str | os.PathLike, output_file_path: str | os.PathLike,
                   output_format: str = "all", batch_size: int = DEFAULT_BATCH_SIZE,
                   forget_sentences: bool = False, use_sentence_keys: bool = False) -> None:
        """One whitespace-tokenized sentence per line -> HDF5, AllenNLP's layout (that of ``elmo embed``):
        dataset ``str(line index)`` (or the sentence, with `use_sentence_keys`) holding (L+1, n, 2P)
        (``all``) or (n, 2P) (``top``, ``average``) float32, and ``sentence_to_index``, one JSON
        string sentence -> key (unless `forget_sentences` or `use_sentence_keys`). An open file is
        closed, as AllenNLP does. The file appears only when complete."""
        if output_format not in OUTPUT_FORMATS:
            raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}, got {output_format!r}")
        if isinstance(input_file, (str, os.PathLike)):
            with open(input_file, encoding="utf-8") as f:
                sentences = [line.strip() for line in f]
        else:
            with input_file:
                sentences = [line.strip() for line in input_file]
        blank = [i for i, line in enumerate(sentences) if line == ""]
        if blank:
            raise ValueError(f"the input file has empty lines at indexes {blank[:10]}; remove them")
        if use_sentence_keys and len(set(sentences)) < len(sentences):
            raise ValueError("use_sentence_keys: the input holds a sentence twice (keys must be unique)")
        keys = sentences if use_sentence_keys else [str(i) for i in range(len(sentences))]
        vectors = self.embed_sentences((s.split() for s in sentences), batch_size)

        import h5py

        with atomic_file(output_file_path, suffix=".part") as tmp, h5py.File(tmp, "w") as fout:
            for key, layers in zip(keys, vectors):
                if output_format == "top":
                    layers = layers[-1]
                elif output_format == "average":
                    layers = layers.mean(axis=0)
                fout.create_dataset(key, data=layers.astype(np.float32, copy=False))
            if not forget_sentences and not use_sentence_keys:
                write_sentence_index(fout, {sentence: key for sentence, key in zip(sentences, keys)})

