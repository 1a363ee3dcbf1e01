"""AllenNLP's ELMo API as its users write it (`from elmo_core import Elmo, ElmoEmbedder, batch_to_ids`):
bilm-tf's reference outputs (../shared fixture), and generated weights against our own `Embedder`.
(AllenNLP's own code against these, side by side: benchmarks/allennlp_parity.py, a recorded check.)"""

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from elmo_core import Elmo, ElmoEmbedder, batch_to_ids
from elmo_core.bilm import BiLM
from elmo_core.characters import token_to_ids
from elmo_core.config import BiLMConfig
from elmo_core.embedder import Embedder
from elmo_core.weights import save_bilm_tf_weights
from tests.helpers.random_inputs import random_sentences, seeded

ATOL = 1e-5
TOP_ONLY = [-1e4, -1e4, 1e4]  # scalar_mix_parameters whose softmax is (0, 0, 1): the top layer


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    """A generated tiny biLM as an AllenNLP user holds it: options.json + weights.hdf5."""
    model = seeded(BiLM(BiLMConfig.preset("tiny")), seed=11).eval()
    folder = tmp_path_factory.mktemp("tiny")
    (folder / "options.json").write_text(json.dumps(model.config.to_options()))
    save_bilm_tf_weights(model, folder / "weights.hdf5")
    return str(folder / "options.json"), str(folder / "weights.hdf5"), model


def batches_of(sentences, size):
    return [sentences[i:i + size] for i in range(0, len(sentences), size)]


# ------------------------------------------------------------------ batch_to_ids
def test_batch_to_ids_is_allennlps_one_row_per_token_no_boundaries():
    ids = batch_to_ids([["The", "cat", "sat", "."], ["Hi"]])
    assert ids.shape == (2, 4, 50) and ids.dtype == torch.int64
    assert torch.equal(ids[0, 0], torch.from_numpy(token_to_ids("The").copy()))
    assert torch.equal(ids[1, 0], torch.from_numpy(token_to_ids("Hi").copy()))
    assert (ids[1, 1:] == 0).all()  # padding: all-zero rows


def test_ids_with_boundaries_are_refused_not_embedded_twice(tiny_files):
    options, weights, _ = tiny_files
    elmo = Elmo(options, weights, 1, dropout=0)
    with pytest.raises(ValueError, match="already start with <S>"):
        elmo(batch_to_ids([["a", "b"]], add_boundaries=True))


# ------------------------------------------------------------------ bilm-tf fixture
def test_allennlp_snippet_reproduces_bilm_tf(bilm_tf):
    """The documented lines, stateful by default as AllenNLP's, over the fixture's 10 batches:
    top-layer mix = bilm-tf's expected outputs; each sentence gets one vector per token."""
    elmo = Elmo(str(bilm_tf.options), str(bilm_tf.weights), 2, dropout=0, scalar_mix_parameters=TOP_ONLY)
    worst = 0.0
    for i, batch in enumerate(bilm_tf.batches()):
        character_ids = batch_to_ids(batch)
        embeddings = elmo(character_ids)
        reps, mask = embeddings["elmo_representations"], embeddings["mask"]
        assert len(reps) == 2 and reps[0].shape == (3, max(map(len, batch)), 32)
        assert mask.sum(1).tolist() == [len(s) for s in batch]
        for k, sentence in enumerate(batch):
            expected = bilm_tf.expected_top(k, i)
            assert expected.shape[0] == len(sentence)
            worst = max(worst, float(np.abs(reps[0][k, :len(sentence)].detach().numpy() - expected).max()))
    assert worst < ATOL


def test_allennlp_snippet_equal_mix_is_the_mean_of_our_embedders_layers(bilm_tf):
    """The snippet verbatim (equal weights, gamma 1) = the mean over the layers of `Embedder`
    (stateful, batches of 3) on the same batches; a 4-token sentence gets 4 vectors."""
    elmo = Elmo(str(bilm_tf.options), str(bilm_tf.weights), 2, dropout=0)
    sentences = [s for batch in bilm_tf.batches() for s in batch]
    ours = Embedder(elmo.bilm, batch_size=3, stateful=True).embed_all(sentences)
    worst = 0.0
    for i, batch in enumerate(bilm_tf.batches()):
        reps = elmo(batch_to_ids(batch))["elmo_representations"]
        for k, sentence in enumerate(batch):
            got = reps[1][k, :len(sentence)].detach().numpy()
            assert (reps[0][k, len(sentence):] == 0).all()
            worst = max(worst, float(np.abs(got - ours[3 * i + k].mean(0)).max()))
    assert worst < ATOL
    four = sentences[0][:4]
    alone = Elmo(str(bilm_tf.options), str(bilm_tf.weights), 1, dropout=0)(batch_to_ids([four]))
    assert alone["elmo_representations"][0].shape == (1, 4, 32) and alone["mask"].tolist() == [[True] * 4]


def test_stateless_mode_is_one_argument_away(bilm_tf):
    """stateful=False: from batch 1 on, no longer bilm-tf's numbers (they carry state)."""
    elmo = Elmo(str(bilm_tf.options), str(bilm_tf.weights), 1, dropout=0, scalar_mix_parameters=TOP_ONLY,
                stateful=False)
    batch = bilm_tf.batches()[1]
    reps = elmo(batch_to_ids(batch))["elmo_representations"][0]
    assert np.abs(reps[0, :len(batch[0])].detach().numpy() - bilm_tf.expected_top(0, 1)).max() > 0.1


def test_elmo_embedder_reproduces_bilm_tf(bilm_tf, tmp_path):
    """`embed_sentences` (batches of 3) and `embed_file` (``top``) give bilm-tf's outputs."""
    sentences = [s for batch in bilm_tf.batches() for s in batch]
    vectors = list(ElmoEmbedder(str(bilm_tf.options), str(bilm_tf.weights)).embed_sentences(sentences, batch_size=3))
    assert [v.shape for v in vectors] == [(3, len(s), 32) for s in sentences]
    assert max(float(np.abs(vectors[3 * i + k][-1] - bilm_tf.expected_top(k, i)).max())
               for i in range(10) for k in range(3)) < ATOL
    (tmp_path / "in.txt").write_text("\n".join(" ".join(s) for s in sentences) + "\n", encoding="utf-8")
    embedder = ElmoEmbedder(str(bilm_tf.options), str(bilm_tf.weights))
    with open(tmp_path / "in.txt", encoding="utf-8") as f:
        embedder.embed_file(f, str(tmp_path / "out.hdf5"), output_format="top", batch_size=3)
    with h5py.File(tmp_path / "out.hdf5", "r") as f:
        assert max(float(np.abs(f[str(3 * i + k)][...] - bilm_tf.expected_top(k, i)).max())
                   for i in range(10) for k in range(3)) < ATOL


# ------------------------------------------------------------------ generated weights vs Embedder
def test_elmo_from_files_equals_embedder_stateful_and_stateless(tiny_files):
    options, weights, model = tiny_files
    sentences = random_sentences(12, seed=3, min_len=1, max_len=9)
    for stateful in (True, False):
        elmo = Elmo(options, weights, 1, dropout=0, scalar_mix_parameters=[0.0, 0.0, 0.0], stateful=stateful)
        expected = Embedder(model, batch_size=4, stateful=stateful).embed_all(sentences)
        worst = 0.0
        for b, batch in enumerate(batches_of(sentences, 4)):
            reps = elmo(batch_to_ids(batch))["elmo_representations"][0]
            for k, sentence in enumerate(batch):
                worst = max(worst, float(np.abs(reps[k, :len(sentence)].detach().numpy()
                                                - expected[4 * b + k].mean(0)).max()))
        assert worst < ATOL, stateful


def test_elmo_carries_state_across_calls_by_default_until_reset(tiny_files):
    options, weights, _ = tiny_files
    elmo = Elmo(options, weights, 1, dropout=0)
    ids = batch_to_ids([["a", "b", "c"], ["d"]])
    first = elmo(ids)["elmo_representations"][0]
    second = elmo(ids)["elmo_representations"][0]
    elmo.reset_states()
    assert (second - first).abs().max() > 1e-3
    assert torch.equal(elmo(ids)["elmo_representations"][0], first)


def test_elmo_keeps_sentence_boundaries_on_request(tiny_files):
    options, weights, model = tiny_files
    elmo = Elmo(options, weights, 1, dropout=0, keep_sentence_boundaries=True, stateful=False)
    out = elmo(batch_to_ids([["a", "b", "c"], ["d"]]))
    assert out["elmo_representations"][0].shape == (2, 5, 32)
    assert out["mask"].sum(1).tolist() == [5, 3]
    with torch.no_grad():
        layers = model(batch_to_ids([["a", "b", "c"], ["d"]], add_boundaries=True)).layers
    assert torch.allclose(out["elmo_representations"][0], layers.mean(0), atol=1e-6)


def test_elmo_arguments_as_allennlp_names_them(tiny_files):
    options, weights, model = tiny_files
    elmo = Elmo(options_file=options, weight_file=weights, num_output_representations=3, requires_grad=True,
                dropout=0.25)
    assert len(elmo.scalar_mixes) == 3 and elmo.dropout.p == 0.25 and elmo.get_output_dim() == 32
    assert all(p.requires_grad for p in elmo.bilm.parameters())
    assert Elmo(module=model, num_output_representations=1).bilm is model
    with pytest.raises(ValueError, match="vocab_to_cache"):
        Elmo(options, weights, 1, vocab_to_cache=["a"])
    with pytest.raises(ValueError, match="not both"):
        Elmo(options, weights, 1, module=model)


def test_elmo_embedder_equals_embedder(tiny_files):
    """`embed_sentences` = `Embedder` with the same batches (stateful: AllenNLP's default;
    stateless); `embed_sentence` twice differs unless stateless or after `reset_states`."""
    options, weights, model = tiny_files
    sentences = random_sentences(10, seed=5, min_len=1, max_len=8)
    for stateful in (True, False):
        got = list(ElmoEmbedder(options, weights, stateful=stateful).embed_sentences(sentences, batch_size=3))
        expected = Embedder(model, batch_size=3, stateful=stateful).embed_all(sentences)
        assert all(g.dtype == np.float32 and g.shape == (3, len(s), 32) for g, s in zip(got, sentences))
        assert max(float(np.abs(g - e).max()) for g, e in zip(got, expected)) < ATOL, stateful
    embedder = ElmoEmbedder(options, weights)
    first, second = embedder.embed_sentence(["a", "b", "c", "d"]), embedder.embed_sentence(["a", "b", "c", "d"])
    assert first.shape == (3, 4, 32) and np.abs(second - first).max() > 1e-3
    embedder.reset_states()
    assert np.array_equal(embedder.embed_sentence(["a", "b", "c", "d"]), first)
    stateless = ElmoEmbedder(options, weights, stateful=False)
    assert np.array_equal(stateless.embed_sentence(["a", "b", "c", "d"]), stateless.embed_sentence(["a", "b", "c", "d"]))
    assert embedder.embed_batch([["x"], []])[1].shape == (3, 0, 32)


def test_embed_file_writes_the_layout_of_elmo_embed(tiny_files, tmp_path):
    """`embed_file` (AllenNLP's keys, float32 datasets, ``sentence_to_index``) = ``elmo embed
    --stateful`` with the same batch size, dataset for dataset."""
    options, weights, _ = tiny_files
    sentences = random_sentences(7, seed=8, min_len=1, max_len=6) + [["a", "b"], ["a", "b"]]  # a repeat
    (tmp_path / "in.txt").write_text("\n".join(" ".join(s) for s in sentences) + "\n", encoding="utf-8")
    ElmoEmbedder(options, weights).embed_file(str(tmp_path / "in.txt"), tmp_path / "ours.hdf5", batch_size=4)
    proc = subprocess.run([sys.executable, "-m", "elmo_cli", "embed", str(tmp_path / "in.txt"), str(tmp_path / "cli.hdf5"),
                           "--all", "--stateful", "--batch-size", "4", "--options-file", options,
                           "--weight-file", weights, "--no-progress"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    with h5py.File(tmp_path / "ours.hdf5", "r") as a, h5py.File(tmp_path / "cli.hdf5", "r") as b:
        assert sorted(a.keys()) == sorted(b.keys()) == sorted([*map(str, range(len(sentences))), "sentence_to_index"])
        index = json.loads(a["sentence_to_index"][0])
        assert index == json.loads(b["sentence_to_index"][0]) and index["a b"] == str(len(sentences) - 1)
        for i, s in enumerate(sentences):
            assert a[str(i)].dtype == np.float32 and a[str(i)].shape == (3, len(s), 32)
            assert np.abs(a[str(i)][...] - b[str(i)][...]).max() < ATOL
    ElmoEmbedder(options, weights).embed_file(open(tmp_path / "in.txt", encoding="utf-8"), tmp_path / "avg.hdf5",
                                              output_format="average", batch_size=4, forget_sentences=True)
    with h5py.File(tmp_path / "avg.hdf5", "r") as f:
        assert "sentence_to_index" not in f and f["0"].shape == (len(sentences[0]), 32)
    (tmp_path / "blank.txt").write_text("a b\n\nc\n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty lines at indexes \\[1\\]"):
        ElmoEmbedder(options, weights).embed_file(str(tmp_path / "blank.txt"), tmp_path / "x.hdf5")
    assert not (tmp_path / "x.hdf5").exists()
