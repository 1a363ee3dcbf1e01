"""`elmo preprocess --vocab-from MODEL`: the dataset is built with the vocabulary of a model (a model
directory here; a registered model through the same download the embedding jobs and `elmo adapt`
use, stubbed), as `--vocab FILE` would build it. The preprocessing itself is stubbed: what it is
handed is checked (the Ray run of `--vocab` is tested in tests/integration/test_preprocessing.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from elmo_core.bilm import BiLM
from elmo_core.config import BiLMConfig
from elmo_core.vocabulary import Vocabulary
from elmo_core.weights import save_bilm_tf_weights, save_model_folder

WORDS = ["<S>", "</S>", "<UNK>", "the", "clinic", "dose", "patient"]


@pytest.fixture
def model_dir(tmp_path) -> Path:
    folder = tmp_path / "model"
    save_model_folder(BiLM(BiLMConfig.preset("tiny", n_tokens_vocab=len(WORDS))), folder, Vocabulary(WORDS))
    return folder


@pytest.fixture
def handed(monkeypatch) -> list[dict]:
    """What `run_preprocess` is called with (and the vocabulary file's content, read at the call)."""
    import preprocessing.driver

    calls = []

    def fake(inputs, output, config, options=None, vocab_path=None, log=None, vocab_source=None):
        calls.append({"inputs": inputs, "output": output, "vocab": Vocabulary.load(vocab_path) if vocab_path else None,
                      "vocab_source": vocab_source})
        return {}

    monkeypatch.setattr(preprocessing.driver, "run_preprocess", fake)
    return calls


def test_the_model_directory_vocabulary_is_the_datasets(model_dir, tmp_path, handed):
    from elmo_cli import main

    corpus = tmp_path / "med.txt"
    corpus.write_text("the patient .\n")
    assert main(["preprocess", str(corpus), "--output", str(tmp_path / "out"), "--vocab-from", str(model_dir)]) == 0
    (call,) = handed
    assert call["vocab"] == Vocabulary(WORDS) and call["vocab"].digest() == Vocabulary(WORDS).digest()
    assert call["vocab_source"] == str(model_dir.resolve()) and call["output"] == str(tmp_path / "out")


def test_a_registered_model_is_pinned_and_recorded(model_dir, tmp_path, monkeypatch):
    from workflows.registry import tracking
    from workflows.registry.preprocess_command import model_vocabulary

    asked = []

    def download_pinned(uri, destination):
        asked.append(uri)
        return str(model_dir), "models:/elmo-news/3", "elmo-news/3"

    monkeypatch.setattr(tracking, "download_pinned", download_pinned)
    path, source = model_vocabulary("models:/elmo-news@champion", str(tmp_path))
    assert asked == ["models:/elmo-news@champion"]
    assert Vocabulary.load(path) == Vocabulary(WORDS)
    assert source == "models:/elmo-news/3 (models:/elmo-news@champion)"
    _, source = model_vocabulary("models:/elmo-news/3", str(tmp_path))
    assert source == "models:/elmo-news/3"


def test_models_without_a_vocabulary_and_conflicting_flags_exit_2(model_dir, tmp_path, handed, capsys):
    from elmo_cli import main

    bare = tmp_path / "bare"
    save_model_folder(BiLM(BiLMConfig.preset("tiny")), bare)
    weights = tmp_path / "w.hdf5"
    save_bilm_tf_weights(BiLM(BiLMConfig.preset("tiny")), weights)
    BiLMConfig.preset("tiny").save(tmp_path / "options.json")
    corpus = tmp_path / "c.txt"
    corpus.write_text("a\n")
    common = ["preprocess", str(corpus), "--output", str(tmp_path / "out")]
    assert main([*common, "--vocab-from", str(bare)]) == 2
    assert "has no vocabulary (vocab.txt)" in capsys.readouterr().err
    assert main([*common, "--vocab-from", f"{tmp_path / 'options.json'},{weights}"]) == 2
    assert "carry no vocabulary" in capsys.readouterr().err
    assert main([*common, "--vocab-from", str(tmp_path / "nowhere")]) == 2
    assert main([*common, "--vocab-from", str(model_dir), "--vocab", str(model_dir / "vocab.txt")]) == 2
    assert "give one of them" in capsys.readouterr().err
    assert main([*common, "--vocab-from", str(model_dir), "--max-vocab", "100"]) == 2
    assert handed == []
