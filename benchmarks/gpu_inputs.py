"""What `bench_gpu.py` measures on: pydoc sentences, models with random weights, synthetic
vocabularies and training batches, a training step's context, and another version's LSTM loop."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from elmo_core.bilm import BiLM
from elmo_core.characters import token_to_ids
from elmo_core.config import BiLMConfig
from elmo_core.vocabulary import Vocabulary
from gpu_device import log

RELEASED_VOCAB = 793_471


def load_sentences(n: int) -> list[list[str]]:
    try:
        from preprocessing.sample_text import pydoc_sentences
        base = pydoc_sentences()
    except Exception as e:  # pydoc_data missing: generated words, same length range
        log(f"pydoc sentences unavailable ({e!r}); generated sentences instead")
        rng = np.random.default_rng(0)
        words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), rng.integers(2, 10))) for _ in range(5000)]
        base = [[words[i] for i in rng.integers(0, len(words), rng.integers(10, 41))] for _ in range(2000)]
    return [base[i % len(base)] for i in range(n)]


def model_of(preset: str, vocab: int, device, seed: int = 0) -> BiLM:
    torch.manual_seed(seed)
    return BiLM(BiLMConfig.preset(preset, n_tokens_vocab=vocab)).to(device)


def vocab_of(size: int) -> Vocabulary:
    from elmo_core.vocabulary import SPECIALS

    return Vocabulary(list(SPECIALS) + [f"w{i}" for i in range(size - len(SPECIALS))])


def synthetic_batch(sentences, vocab_size: int, rng) -> list:
    from workflows.training.batches import Sentence

    return [Sentence(word_ids=rng.integers(3, vocab_size, len(s)).astype(np.int32),
                     char_ids=np.stack([token_to_ids(t) for t in s]).astype(np.uint16)) for s in sentences]


def step_context(vocab, model, device, bf16: bool, rank=0, world=1):
    from workflows.training.config import TrainJobConfig
    from workflows.training.step import StepContext

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    return StepContext(vocab, rank, world, TrainJobConfig(), model.config.training, device, autocast)


@contextlib.contextmanager
def recurrence_from(path: str | None):
    """Run the biLM with the LSTM time loop of another version of `elmo_core/lstm_recurrence.py`
    (side-by-side timing of a change in one run); None: this version's."""
    if path is None:
        yield "this"
        return
    import importlib.util

    from elmo_core import lstm

    spec = importlib.util.spec_from_file_location("baseline_recurrence", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    before = lstm.recurrence
    lstm.recurrence = module.recurrence
    try:
        yield "baseline"
    finally:
        lstm.recurrence = before
