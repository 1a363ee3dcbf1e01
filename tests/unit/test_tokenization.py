"""A model records how its text was tokenized (`elmo_core.tokenization`), and its consumers (the
pyfunc, the embedding jobs' settings) tokenize raw text that way unless told otherwise."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from elmo_core.bilm import BiLM
from elmo_core.config import BiLMConfig
from elmo_core.embedder import Embedder
from elmo_core.tokenization import (FALLBACK, TOKENIZATION_NAME, Tokenization, read_tokenization,
                                    resolve_tokenization, tokenization_of_preprocessing, write_tokenization)
from elmo_core.weights import save_model_folder
from tests.helpers.random_inputs import seeded

FRENCH = "L'homme qu'on aime."


def test_the_record_round_trips_and_a_folder_without_one_reads_none(tmp_path):
    assert read_tokenization(tmp_path) is None and read_tokenization(None) is None
    write_tokenization(tmp_path, Tokenization("moses", "fr"))
    assert read_tokenization(tmp_path) == Tokenization("moses", "fr")
    (tmp_path / TOKENIZATION_NAME).write_text('{"tokenizer": "spacy"}')
    with pytest.raises(ValueError, match="not a tokenization record"):
        read_tokenization(tmp_path)
    assert tokenization_of_preprocessing({"tokenizer": "whitespace", "language": "en"}) == Tokenization("whitespace")
    with pytest.raises(ValueError, match="language must be"):
        Tokenization("moses", "model")


def test_the_language_changes_the_tokens():
    english, french = Tokenization("moses", "en").tokenizer_fn(), Tokenization("moses", "fr").tokenizer_fn()
    assert english(FRENCH) == ["L", "'homme", "qu", "'on", "aime", "."]
    assert french(FRENCH) == ["L'", "homme", "qu'", "on", "aime", "."]
    assert Tokenization("whitespace").tokenizer_fn()(" don't  stop. ") == ["don't", "stop."]


def test_the_model_s_record_is_followed_overridden_or_replaced_by_the_fallback_with_a_warning():
    recorded = Tokenization("moses", "de")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_tokenization(recorded) == recorded
        assert resolve_tokenization(recorded, "model", "model") == recorded
        assert resolve_tokenization(recorded, language="fr") == Tokenization("moses", "fr")
        assert resolve_tokenization(recorded, "whitespace") == Tokenization("whitespace", "de")
        # nothing recorded, but the user said what to use: no warning
        assert resolve_tokenization(None, "whitespace") == Tokenization("whitespace", "en")
        assert resolve_tokenization(None, "moses", "fr") == Tokenization("moses", "fr")
    said = []
    assert resolve_tokenization(None, model_name="old-model/3", warn=said.append) == FALLBACK == Tokenization("moses", "en")
    assert len(said) == 1 and "old-model/3 records no tokenization" in said[0] and "--tokenizer" in said[0]
    with pytest.warns(UserWarning, match="records no tokenization"):
        resolve_tokenization(None, "model", "model")


def test_the_embedding_jobs_settle_the_tokenization_from_the_model():
    from workflows.embedding.config import EmbedJobConfig

    config = EmbedJobConfig()
    assert (config.tokenizer, config.language) == ("model", "model") and not config.tokenization_settled
    with pytest.raises(ValueError, match="settle it first"):
        config.preprocess_config()
    french = config.for_model(Tokenization("moses", "fr"), "m/1")
    assert (french.tokenizer, french.language) == ("moses", "fr")
    assert french.preprocess_config().language == "fr" and french.output_settings()["language"] == "fr"
    english = config.for_model(Tokenization("moses", "en"), "m/1")
    assert "language" not in english.output_settings()  # as outputs recorded before the setting existed
    said = []
    old = config.for_model(None, "old/1", said.append)
    assert (old.tokenizer, old.language) == ("moses", "en") and len(said) == 1
    assert config.replace(tokenizer="whitespace").for_model(Tokenization("moses", "fr"), "m/1").tokenizer == "whitespace"
    said.clear()
    config.replace(input_format="parquet").for_model(None, "old/1", said.append)
    assert said == []  # parquet input is tokenized already
    with pytest.raises(ValueError, match="tokenizer must be"):
        EmbedJobConfig(tokenizer="spacy")


def _pyfunc(folder):
    from workflows.registry.pyfunc_model import ElmoEmbeddingModel

    model = ElmoEmbeddingModel()
    model.load_context(SimpleNamespace(artifacts={"model": str(folder)}))
    return model


def test_the_pyfunc_tokenizes_as_the_model_records(tmp_path):
    torch.manual_seed(0)
    bilm = seeded(BiLM(BiLMConfig.preset("tiny")), seed=3).eval()
    save_model_folder(bilm, tmp_path / "fr")
    write_tokenization(tmp_path / "fr", Tokenization("moses", "fr"))
    out = _pyfunc(tmp_path / "fr").predict(None, [FRENCH], params={"layers": "top"})
    assert out["tokens"][0] == ["L'", "homme", "qu'", "on", "aime", "."]
    expected = Embedder(bilm, layers="top").embed_all([out["tokens"][0]])[0]
    np.testing.assert_allclose(out["embedding"][0], expected, atol=1e-6)
    assert out["shape"][0] == list(expected.shape) and out["dtype"][0] == "float32"
    english = _pyfunc(tmp_path / "fr").predict(None, [FRENCH], params={"language": "en"})
    assert english["tokens"][0] == ["L", "'homme", "qu", "'on", "aime", "."]

    save_model_folder(bilm, tmp_path / "old")  # records nothing: the fallback, with a warning
    with pytest.warns(UserWarning, match="records no tokenization"):
        old = _pyfunc(tmp_path / "old")
    assert old.predict(None, ["don't stop."])["tokens"][0] == ["don", "'t", "stop", "."]
