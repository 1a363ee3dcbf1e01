import json

import pytest

from elmo_core.bilm import BiLM
from elmo_core.config import BiLMConfig


@pytest.mark.parametrize("preset, expected", [
    ("small", 13_593_296), ("medium", 28_027_728), ("original", 93_600_848)])
def test_released_parameter_counts(preset, expected):
    assert BiLM(BiLMConfig.preset(preset)).num_parameters() == expected


@pytest.mark.parametrize("preset, expected, budget", [("lm5m", 4_553_763, 5_000_000), ("lm20m", 19_828_589, 20_000_000)])
def test_language_model_presets_fit_their_budgets_on_a_10k_vocabulary(preset, expected, budget):
    model = BiLM(BiLMConfig.preset(preset, n_tokens_vocab=10_002))  # Penn Treebank's 10k words + 2 specials
    assert model.num_forward_lm_parameters() == expected <= budget
    assert model.lstm.input_weights[0].shape[0] == 2  # (the halving above is per direction)
    assert model.config.training.dropout == 0.5
    assert BiLMConfig.preset(preset, dropout=0.2).training.dropout == 0.2  # overridable


def test_training_recipe_round_trips_through_options_json(tmp_path):
    config = BiLMConfig.preset("tiny", n_tokens_vocab=50, optimizer="sgd", learning_rate=1.0, max_grad_norm=2.5)
    config.save(tmp_path / "options.json")
    again = BiLMConfig.load(tmp_path / "options.json")
    assert again.training == config.training
    with pytest.raises(ValueError, match="optimizer"):
        BiLMConfig.preset("tiny", optimizer="lbfgs")


def test_small_vocabularies_train_with_the_exact_softmax():
    assert BiLMConfig.preset("tiny", n_tokens_vocab=10_002).training.train_negative_samples is None
    assert BiLMConfig.preset("tiny", n_tokens_vocab=793_471).training.train_negative_samples == 8192


def test_softmax_is_counted_separately():
    model = BiLM(BiLMConfig.preset("tiny", n_tokens_vocab=100))
    P = model.config.lstm.projection_dim
    assert model.num_parameters(include_softmax=True) - model.num_parameters() == 100 * P + 100


def test_options_json_round_trip(tmp_path):
    config = BiLMConfig.preset("original", n_tokens_vocab=793471)
    config.save(tmp_path / "options.json")
    again = BiLMConfig.load(tmp_path / "options.json")
    assert again == config
    options = json.loads((tmp_path / "options.json").read_text())
    assert options["lstm"]["dim"] == 4096 and options["char_cnn"]["n_highway"] == 2
    assert options["char_cnn"]["filters"][-1] == [7, 1024]


def test_reads_bilm_tf_options_and_keeps_unknown_keys(bilm_tf, tmp_path):
    config = BiLMConfig.load(bilm_tf.options)
    assert config.lstm.dim == 64 and config.lstm.projection_dim == 16
    assert config.char_cnn.n_filters == 124 and config.char_cnn.n_highway == 2
    assert config.lstm.use_skip_connections is False
    options = json.loads(bilm_tf.options.read_text())
    options["some_future_key"] = {"x": 1}
    config = BiLMConfig.from_options(options)
    assert config.to_options()["some_future_key"] == {"x": 1}


def test_bilm_tf_training_shape_keeps_its_option_names():
    """bilm-tf's ``unroll_steps``/``batch_size`` (not used here) are read and written under
    bilm-tf's names; in the code they are ``bilm_tf_*`` (``unroll_steps`` is the stream mode's)."""
    options = BiLMConfig.preset("tiny").to_options()
    assert (options["unroll_steps"], options["batch_size"]) == (20, 128)
    config = BiLMConfig.from_options({**options, "unroll_steps": 7, "batch_size": 3})
    assert (config.training.bilm_tf_unroll_steps, config.training.bilm_tf_batch_size) == (7, 3)
    assert config.to_options()["unroll_steps"] == 7 and config.to_options()["batch_size"] == 3
    assert "bilm_tf_unroll_steps" not in config.to_options() and not config.extra


def test_a_recipe_on_a_built_config_equals_the_recipe_given_to_the_preset():
    """The one route of the recipe (`BiLMConfig.with_recipe`, applied by the training worker) gives
    the model the preset with the recipe would have had; negatives stay capped by the vocabulary."""
    recipe = {"dropout": 0.3, "learning_rate": 0.01, "n_negative_samples_batch": 5000}
    direct = BiLMConfig.preset("tiny", **recipe)
    direct = direct.replace(training=direct.training.for_vocabulary(4000))
    built = BiLMConfig.preset("tiny").with_recipe({"n_tokens_vocab": 4000})
    assert built.with_recipe(recipe) == direct and direct.training.n_negative_samples_batch == 4000
    assert built.with_recipe({}) is built


@pytest.mark.parametrize("options, message", [
    ({"lstm": {}}, "not a valid bilm-tf options.json"),
    ({"char_cnn": {"embedding": {"dim": 4}, "filters": [[1, 4]], "n_highway": 0, "activation": "gelu"},
      "lstm": {"dim": 4, "projection_dim": 2}}, "activation"),
])
def test_bad_options_are_explained(options, message):
    with pytest.raises(ValueError, match=message):
        BiLMConfig.from_options(options)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset"):
        BiLMConfig.preset("huge")
