"""Every layer and the token encoder against an independent float64 numpy forward (tests/reference_numpy.py)."""

import json

import numpy as np
import pytest
import torch

from tests.helpers import reference_numpy as ref
from tests.helpers.random_inputs import random_sentences, seeded
from elmo_core.bilm import BiLM
from elmo_core.characters import batch_to_ids
from elmo_core.config import BiLMConfig, CharCNNConfig, LSTMConfig
from elmo_core.weights import load_bilm_tf, save_bilm_tf_weights

ATOL = 1e-5


def _compare(model, weights_path, options, sentences):
    weights = ref.load_bilm_tf_weights(str(weights_path))
    with torch.no_grad():
        out = model(batch_to_ids(sentences, add_boundaries=True))  # one batch, stateless: every row from zero state
        ids = batch_to_ids(sentences, add_boundaries=True)
        mask = ids[:, :, 0] != 0
        encoded = model.encode_tokens(ids)
    worst_layers, worst_encoder = 0.0, 0.0
    for b, tokens in enumerate(sentences):
        expected = ref.bilm_forward(weights, options, tokens)["layers"]
        got = out.layers[:, b, 1:len(tokens) + 1].double().numpy()
        assert got.shape == expected.shape
        worst_layers = max(worst_layers, float(np.abs(got - expected).max()))
        enc_ref = ref.token_encoder(weights, options, ids[b:b + 1, mask[b]].numpy())[0]
        worst_encoder = max(worst_encoder, float(np.abs(encoded[b, mask[b]].double().numpy() - enc_ref).max()))
    return worst_layers, worst_encoder


def test_all_layers_match_numpy_reference_on_fixture_model(bilm_tf):
    model = load_bilm_tf(bilm_tf.options, bilm_tf.weights)
    options = json.loads(bilm_tf.options.read_text())
    sentences = bilm_tf.sentence_lists[0][:4] + random_sentences(4, seed=1)
    worst_layers, worst_encoder = _compare(model, bilm_tf.weights, options, sentences)
    assert worst_layers < ATOL and worst_encoder < ATOL


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_skip_connections_wide_filters_and_long_tokens_match_numpy_reference(tmp_path, activation):
    """Released-style options (skip connections, width-7 filters, clipping) on random weights,
    with tokens of every length up to the 48-byte limit (padding-skip edge cases)."""
    config = BiLMConfig(
        char_cnn=CharCNNConfig(char_dim=4, filters=((1, 4), (2, 4), (5, 6), (7, 8)), n_highway=2,
                               activation=activation),
        lstm=LSTMConfig(dim=24, projection_dim=8, cell_clip=0.5, proj_clip=0.4, use_skip_connections=True))
    model = seeded(BiLM(config), seed=3).eval()
    save_bilm_tf_weights(model, tmp_path / "w.hdf5")
    config.save(tmp_path / "options.json")
    options = json.loads((tmp_path / "options.json").read_text())
    lengths = [1, 2, 40, 42, 43, 44, 45, 46, 47, 48, 49, 60]
    sentences = [["a" * n for n in lengths[:6]], ["b" * n for n in lengths[6:]], ["é" * 25, "c"]]
    sentences += random_sentences(5, seed=2)
    worst_layers, worst_encoder = _compare(model, tmp_path / "w.hdf5", options, sentences)
    assert worst_layers < ATOL and worst_encoder < ATOL
    # the encoder's grouped path (more tokens than one group) gives the same vectors
    encoder = model.token_encoder
    ids = batch_to_ids(random_sentences(200, seed=4, max_len=20), add_boundaries=False).reshape(-1, 50)
    ids = ids[ids[:, 0] != 0]
    with torch.no_grad():
        whole = encoder(ids)
        encoder.GROUP_SIZE = 37
        grouped = encoder(ids)
    assert torch.allclose(whole, grouped, atol=1e-6)
