"""ScalarMix and the downstream `Elmo` module."""

import pytest
import torch

from tests.helpers.random_inputs import random_sentences, seeded
from elmo_core.bilm import BiLM
from elmo_core.characters import batch_to_ids
from elmo_core.config import BiLMConfig
from elmo_core.characters import add_sentence_boundaries
from elmo_core.elmo import Elmo
from elmo_core.scalar_mix import ScalarMix


def test_scalar_mix_is_gamma_times_softmax_weighted_sum():
    mix = ScalarMix(3, initial_scalar_parameters=[0.0, 1.0, 2.0])
    with torch.no_grad():
        mix.gamma.fill_(0.5)
    layers = torch.randn(3, 2, 4, 6)
    w = torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0)
    expected = 0.5 * (w[0] * layers[0] + w[1] * layers[1] + w[2] * layers[2])
    assert torch.allclose(mix(layers), expected, atol=1e-6)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    assert (mix(layers, mask)[0, 2:] == 0).all()


def test_layer_norm_is_per_token_so_batch_mates_do_not_matter():
    mix = ScalarMix(3, do_layer_norm=True)
    layers = torch.randn(3, 2, 4, 6)
    both = mix(layers)
    alone = mix(layers[:, :1])
    assert torch.allclose(both[:1], alone, atol=1e-6)
    normed = torch.nn.functional.layer_norm(layers, (6,)).mean(0)
    assert torch.allclose(both, normed, atol=1e-5)


def test_add_sentence_boundaries_follows_each_rows_length():
    ids = batch_to_ids([["a", "b"], ["c"]], add_boundaries=False)
    assert torch.equal(add_sentence_boundaries(ids), batch_to_ids([["a", "b"], ["c"]], add_boundaries=True))


def test_elmo_outputs_frozen_bilm_and_stateless_mode():
    bilm = seeded(BiLM(BiLMConfig.preset("tiny")), seed=4)
    elmo = Elmo(bilm, num_output_representations=2, dropout=0.0, stateful=False)
    assert not any(p.requires_grad for p in elmo.bilm.parameters())
    assert sum(p.numel() for p in elmo.parameters() if p.requires_grad) == 2 * 4  # 3 scalars + gamma, twice
    elmo.train()
    assert not elmo.bilm.training  # frozen biLM never runs dropout
    sentences = random_sentences(6, seed=1)
    out = elmo.embed_sentences(sentences)
    reps, mask = out["elmo_representations"], out["mask"]
    assert len(reps) == 2 and reps[0].shape == (6, max(map(len, sentences)), 32)
    assert mask.sum().item() == sum(map(len, sentences))
    # equal weights, gamma 1: the mean of the three biLM layers at the real tokens
    with torch.no_grad():
        layers = bilm(batch_to_ids(sentences, add_boundaries=True)).layers
    for b, s in enumerate(sentences):
        expected = layers[:, b, 1:len(s) + 1].mean(0)
        assert torch.allclose(reps[0][b, :len(s)], expected, atol=1e-5)
        assert (reps[0][b, len(s):] == 0).all()
    again = elmo.embed_sentences(sentences[::-1])["elmo_representations"][0]
    assert torch.allclose(again.flip(0)[0, :len(sentences[0])], reps[0][0, :len(sentences[0])], atol=1e-5)
    reps[0].sum().backward()
    assert elmo.scalar_mixes[0].gamma.grad is not None


def test_fine_tuning_flag_lets_gradients_reach_the_bilm():
    bilm = seeded(BiLM(BiLMConfig.preset("tiny")), seed=4)
    elmo = Elmo(bilm, num_output_representations=1, dropout=0.0, requires_grad=True)
    elmo.embed_sentences([["a", "b"]])["elmo_representations"][0].sum().backward()
    assert bilm.lstm.recurrent_weights[0].grad is not None


def test_wrong_input_shape_is_explained():
    elmo = Elmo(BiLM(BiLMConfig.preset("tiny")), num_output_representations=1)
    with pytest.raises(ValueError, match="expected"):
        elmo(torch.zeros(2, 3, dtype=torch.long))


def test_stateful_elmo_carries_state_until_reset_states():
    """stateful=True: a second call starts from the state the first left; `reset_states` goes
    back to a zero state (the first call's output again)."""
    bilm = seeded(BiLM(BiLMConfig.preset("tiny")), seed=5)
    elmo = Elmo(bilm, num_output_representations=1, dropout=0.0, stateful=True).eval()
    ids = batch_to_ids(random_sentences(4, seed=2, min_len=3), add_boundaries=False)
    stateless = Elmo(bilm, num_output_representations=1, dropout=0.0, stateful=False).eval()
    with torch.no_grad():
        first = elmo(ids)["elmo_representations"][0]
        second = elmo(ids)["elmo_representations"][0]
        elmo.reset_states()
        after_reset = elmo(ids)["elmo_representations"][0]
        zero_state = stateless(ids)["elmo_representations"][0]
    assert torch.allclose(first, zero_state, atol=1e-6)  # nothing carried yet
    assert (second - first).abs().max() > 1e-3  # the carried state changes the vectors
    assert torch.equal(after_reset, first)
