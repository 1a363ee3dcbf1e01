"""`elmo preprocess --vocab-from models:/NAME@ALIAS` end to end: a model registered on a real MLflow
server (with its vocabulary), the dataset built on a real local Ray with that vocabulary, the
pinned version recorded; the same data with `--vocab FILE` of the same words is the same dataset."""

from __future__ import annotations

import argparse

import pytest

from elmo_core.bilm import BiLM
from elmo_core.config import BiLMConfig
from elmo_core.vocabulary import Vocabulary
from elmo_core.weights import save_model_folder
from tests.helpers.random_inputs import seeded

pytest.importorskip("ray")
WORDS = ["<S>", "</S>", "<UNK>", "the", "a", "license", "software", "of", "to", "and"]


def _args(*argv: str) -> argparse.Namespace:
    from workflows.registry.preprocess_command import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_a_registered_models_vocabulary_builds_the_dataset(cluster, mlflow_server, tmp_path, monkeypatch):
    from preprocessing.dataset import Dataset
    from workflows.registry.preprocess_command import run
    from workflows.registry.tracking import TrackedRun, register

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    model_dir = tmp_path / "model"
    save_model_folder(seeded(BiLM(BiLMConfig.preset("tiny", n_tokens_vocab=len(WORDS))), seed=5).eval(), model_dir,
                      Vocabulary(WORDS))
    tracked = TrackedRun("vocab-from", "tiny-with-vocab", {"preset": "tiny"}, {})
    model_uri = tracked.log_model(str(model_dir))
    tracked.finish()
    answer = register(model_uri, "elmo-vocab-from", {"val_ppl": 100.0})
    assert answer["promoted"]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"the license {i} of the software and a copy to {i % 7}\n" for i in range(200)))

    out = str(tmp_path / "ds")
    assert run(_args(str(corpus), "--output", out, "--vocab-from", "models:/elmo-vocab-from@champion",
                     "--tokenizer", "whitespace")) == 0
    dataset = Dataset.open(out)
    assert dataset.vocabulary == Vocabulary(WORDS)
    version = answer["version"]
    assert dataset.manifest["vocab"]["source"] == \
        f"models:/elmo-vocab-from/{version} (models:/elmo-vocab-from@champion)"
    # the same words from a file: the same dataset version, so nothing is done again
    (tmp_path / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    assert run(_args(str(corpus), "--output", out, "--vocab", str(tmp_path / "vocab.txt"),
                     "--tokenizer", "whitespace")) == 0
    assert Dataset.open(out).manifest["version"] == dataset.manifest["version"]
