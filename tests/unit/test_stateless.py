"""Stateless mode: a sentence's outputs do not depend on batch mates, batch size, order or padding."""

import numpy as np
import pytest
import torch

from tests.helpers.random_inputs import random_sentences, seeded
from elmo_core.bilm import BiLM
from elmo_core.characters import batch_to_ids
from elmo_core.config import BiLMConfig
from elmo_core.embedder import Embedder

ATOL = 1e-5


@pytest.fixture(scope="module")
def model():
    return seeded(BiLM(BiLMConfig.preset("tiny")), seed=7).eval()


@pytest.fixture(scope="module")
def sentences():
    return random_sentences(40, seed=5, min_len=1, max_len=15)


def _alone(model, sentence):
    with torch.no_grad():
        return model(batch_to_ids([sentence], add_boundaries=True)).layers[:, 0, 1:-1].numpy()


def test_bilm_output_independent_of_batch_mates_and_padding(model, sentences):
    alone = [_alone(model, s) for s in sentences]
    with torch.no_grad():
        out = model(batch_to_ids(sentences, add_boundaries=True))
        # the same batch reversed, and with extra padding columns
        rev = model(batch_to_ids(sentences[::-1], add_boundaries=True))
        ids = batch_to_ids(sentences, add_boundaries=True)
        padded = model(torch.cat([ids, torch.zeros(ids.shape[0], 7, 50, dtype=ids.dtype)], dim=1))
    for b, s in enumerate(sentences):
        n = len(s)
        for result, row in ((out, b), (rev, len(sentences) - 1 - b), (padded, b)):
            got = result.layers[:, row, 1:n + 1].numpy()
            assert np.abs(got - alone[b]).max() < ATOL
            assert (result.layers[:, row, n + 2:] == 0).all()  # padding positions are zero


@pytest.mark.parametrize("batch_size", [1, 3, 16, 64])
def test_embedder_independent_of_batch_size_and_chunking(model, sentences, batch_size):
    alone = [_alone(model, s) for s in sentences]
    embedder = Embedder(model, batch_size=batch_size, chunk_size=max(batch_size, 8))
    seen = set()
    for index, layers in embedder.embed(sentences):
        assert index not in seen
        seen.add(index)
        assert layers.shape == (3, len(sentences[index]), 32) and layers.dtype == np.float32
        assert np.abs(layers - alone[index]).max() < ATOL
    assert seen == set(range(len(sentences)))


def test_repeated_calls_are_identical(model, sentences):
    embedder = Embedder(model, batch_size=8)
    first = embedder.embed_all(sentences)
    second = embedder.embed_all(sentences[::-1])[::-1]
    for a, b in zip(first, second):
        assert np.abs(a - b).max() < ATOL


def test_stateful_embedder_differs_and_depends_on_history(model, sentences):
    stateless = Embedder(model, batch_size=4).embed_all(sentences)
    stateful = Embedder(model, batch_size=4, stateful=True).embed_all(sentences)
    assert np.abs(stateful[0] - stateless[0]).max() < ATOL  # first batch starts from zero state
    assert max(np.abs(a - b).max() for a, b in zip(stateful[4:], stateless[4:])) > 1e-3


def test_empty_sentence_is_rejected(model):
    with pytest.raises(ValueError, match="sentence 1 is empty"):
        Embedder(model).embed_all([["a"], []])
