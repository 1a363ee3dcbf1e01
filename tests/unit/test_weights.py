"""Weight import/export: bilm-tf hdf5 round trip and the native (safetensors) checkpoint."""

import os

import h5py
import numpy as np
import pytest
import torch

from tests.helpers.random_inputs import random_sentences, seeded
from elmo_core.bilm import BiLM
from elmo_core.characters import batch_to_ids
from elmo_core.config import BiLMConfig
from elmo_core.vocabulary import Vocabulary
from elmo_core.weights import (WeightFileError, load_bilm_tf, load_model_folder, load_model,
                               save_bilm_tf_weights, save_model_folder)


def _outputs(model, sentences):
    with torch.no_grad():
        return model(batch_to_ids(sentences, add_boundaries=True)).layers


def test_fixture_weights_export_is_identical_to_the_original_file(bilm_tf, tmp_path):
    model = load_bilm_tf(bilm_tf.options, bilm_tf.weights)
    save_bilm_tf_weights(model, tmp_path / "out.hdf5")
    with h5py.File(bilm_tf.weights, "r") as a, h5py.File(tmp_path / "out.hdf5", "r") as b:
        names_a, names_b = [], []
        a.visititems(lambda n, o: names_a.append(n) if isinstance(o, h5py.Dataset) else None)
        b.visititems(lambda n, o: names_b.append(n) if isinstance(o, h5py.Dataset) else None)
        assert sorted(names_a) == sorted(names_b)
        for name in names_a:
            assert a[name].shape == b[name].shape and a[name].dtype == b[name].dtype, name
            assert np.array_equal(a[name][...], b[name][...]), name


def test_export_import_round_trip_is_bit_exact(tmp_path):
    model = seeded(BiLM(BiLMConfig.preset("tiny")), seed=1).eval()
    save_bilm_tf_weights(model, tmp_path / "w.hdf5")
    model.config.save(tmp_path / "options.json")
    again = load_bilm_tf(tmp_path / "options.json", tmp_path / "w.hdf5")
    sentences = random_sentences(12, seed=3)
    assert torch.equal(_outputs(model, sentences), _outputs(again, sentences))


def test_native_checkpoint_round_trip_is_bit_exact_and_keeps_softmax_and_vocab(tmp_path):
    model = seeded(BiLM(BiLMConfig.preset("tiny", n_tokens_vocab=7)), seed=2).eval()
    vocab = Vocabulary(["<S>", "</S>", "<UNK>", "the", "a", "of", "model"])
    save_model_folder(model, tmp_path / "ckpt", vocab)
    again, vocab_again = load_model_folder(tmp_path / "ckpt")
    assert vocab_again == vocab and again.config == model.config
    sentences = random_sentences(12, seed=4)
    assert torch.equal(_outputs(model, sentences), _outputs(again, sentences))
    assert torch.equal(model.softmax.weight, again.softmax.weight)
    # no pickle anywhere: the weights file is safetensors (a JSON header, then raw tensors)
    raw = (tmp_path / "ckpt" / "model.safetensors").read_bytes()
    assert raw[8:9] == b"{" and b"\x80\x04" not in raw[:64]


def test_261_and_262_row_char_tables_both_load(tmp_path):
    model = seeded(BiLM(BiLMConfig.preset("tiny")), seed=5).eval()
    save_bilm_tf_weights(model, tmp_path / "w261.hdf5")
    model.config.save(tmp_path / "options.json")
    with h5py.File(tmp_path / "w261.hdf5", "r") as src, h5py.File(tmp_path / "w262.hdf5", "w") as dst:
        names = []
        src.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        for name in names:
            value = src[name][...]
            if name == "char_embed":  # AllenNLP-style table: padding row first
                value = np.concatenate([np.zeros((1, value.shape[1]), np.float32), value])
            dst[name] = value
    a = load_bilm_tf(tmp_path / "options.json", tmp_path / "w261.hdf5")
    b = load_bilm_tf(tmp_path / "options.json", tmp_path / "w262.hdf5")
    assert torch.equal(a.token_encoder.char_embedding, b.token_encoder.char_embedding)


def test_mismatched_options_and_weights_are_explained(tmp_path):
    small_lstm = seeded(BiLM(BiLMConfig.preset("tiny")), seed=1)
    save_bilm_tf_weights(small_lstm, tmp_path / "w.hdf5")
    other = BiLMConfig.preset("tiny")
    other = other.replace(lstm=type(other.lstm)(dim=48, projection_dim=16))
    other.save(tmp_path / "options.json")
    with pytest.raises(WeightFileError, match="options and weights do not belong together"):
        load_bilm_tf(tmp_path / "options.json", tmp_path / "w.hdf5")
    (tmp_path / "junk.hdf5").write_bytes(b"not an hdf5 file")
    with pytest.raises(WeightFileError, match="cannot read weight file"):
        load_bilm_tf(tmp_path / "options.json", tmp_path / "junk.hdf5")
    with pytest.raises(WeightFileError, match="not a model directory"):
        load_model_folder(tmp_path)
    with pytest.raises(ValueError, match="not both"):
        load_model(tmp_path, options_file=tmp_path / "options.json")


def test_one_parser_reads_every_kind_of_model_argument(tmp_path):
    from elmo_core.model_spec import ModelSpec

    assert ModelSpec.parse("models:/m@champion").registry_uri == "models:/m@champion"
    assert ModelSpec.parse("runs:/abc/model").registry_uri == "runs:/abc/model"
    pair = ModelSpec.parse("o.json,w.hdf5")
    assert (pair.options_file, pair.weight_file) == ("o.json", "w.hdf5")
    assert pair.local_path() == f"{os.path.abspath('o.json')},{os.path.abspath('w.hdf5')}"
    assert ModelSpec.parse(str(tmp_path)).folder == str(tmp_path)
    with pytest.raises(ValueError, match="not a model URI"):
        ModelSpec.parse(str(tmp_path / "missing"))
    assert ModelSpec.of_files(tmp_path).folder == str(tmp_path)
    with pytest.raises(ValueError, match="not both"):
        ModelSpec.of_files(tmp_path, options_file="o.json")
