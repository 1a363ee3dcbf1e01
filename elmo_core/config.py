"""Model configuration: the one place where the biLM's numbers live.

`BiLMConfig` reads and writes bilm-tf's ``options.json`` and has named presets:

* ``tiny``: a few-thousand-parameter model for tests (builds in milliseconds).
* ``lm5m`` / ``lm20m``: language models of Kim et al. 2016's sizes (LSTM-Char-Small / -Large:
  forward LMs of about 5M / 20M parameters on a 10k vocabulary) in ELMo's cells, dropout 0.5.
* ``small`` / ``medium`` / ``original``: the three released ELMo configurations
  (``2x1024_128_2048cnn_1xhighway``, ``2x2048_256_2048cnn_1xhighway``,
  ``2x4096_512_2048cnn_2xhighway``; Peters et al. 2018 and the AllenNLP model zoo).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cli_fields import setting

# The released char-CNN filter bank: (width, n_filters), 2048 channels in all.
RELEASED_FILTERS: tuple[tuple[int, int], ...] = (
    (1, 32), (2, 32), (3, 64), (4, 128), (5, 256), (6, 512), (7, 1024),
)


@dataclass(frozen=True)
class CharCNNConfig:
    """Character-CNN token encoder (bilm-tf ``char_cnn`` block)."""

    char_dim: int = 16  # character embedding width (16 in released models)
    filters: tuple[tuple[int, int], ...] = RELEASED_FILTERS
    n_highway: int = 1
    activation: str = "relu"  # "relu" or "tanh", applied after max-over-positions
    n_characters: int = 262  # 256 bytes + 5 specials + 1 for the AllenNLP +1 offset
    max_characters_per_token: int = 50

    @property
    def n_filters(self) -> int:
        return sum(n for _, n in self.filters)

    def __post_init__(self) -> None:
        if self.activation not in ("relu", "tanh"):
            raise ValueError(f"char_cnn activation must be 'relu' or 'tanh', got {self.activation!r}")
        if not self.filters:
            raise ValueError("char_cnn needs at least one filter")
        for width, n in self.filters:
            if not (1 <= width <= self.max_characters_per_token) or n < 1:
                raise ValueError(f"bad char_cnn filter {[width, n]}")
        if self.n_characters not in (261, 262):
            raise ValueError(f"n_characters must be 261 or 262 (bilm-tf char ids), got {self.n_characters}")


@dataclass(frozen=True)
class LSTMConfig:
    """The two LSTM stacks (bilm-tf ``lstm`` block): TF LSTMCell with projection."""

    dim: int = 4096  # memory cell size D
    projection_dim: int = 512  # projection (and token embedding) size P
    n_layers: int = 2
    cell_clip: float | None = 3.0
    proj_clip: float | None = 3.0
    use_skip_connections: bool = True  # residual from layer 1 on (never into layer 0)


OPTIMIZERS = ("adam", "adagrad", "sgd")


@dataclass(frozen=True)
class TrainingConfig:
    """Language-model training numbers: what the model is trained on and how it is optimized.

    Defaults are the optimizer recipe measured on Penn Treebank (`benchmarks/bench_ptb.py`,
    `benchmarks/README.md`): Adam 2e-3, global-norm clip 5, the exact softmax for vocabularies
    of up to 16,384 words. Dropout depends on the corpus size: 0.1 (bilm-tf's, for billions of
    words) unless a preset says otherwise (the ``lm5m``/``lm20m`` presets: 0.5, for a
    PTB-sized corpus). bilm-tf's own recipe for the 1B Word Benchmark (Adagrad 0.2,
    accumulator 1.0, clip 10, dropout 0.1, 8,192 sampled negatives) was made for 128x20-token
    batches on 3 GPUs and a 793k-word vocabulary; on a 10k vocabulary and small batches it trained
    to twice a unigram model's perplexity in one epoch. Choose it with
    ``optimizer="adagrad", learning_rate=0.2, max_grad_norm=10, dropout=0.1``.
    """

    n_tokens_vocab: int = setting(0, "word vocabulary size of the softmax (0: no softmax)", flag=False)
    dropout: float = setting(0.1, "dropout on each LSTM layer's input and on the top output (before the softmax)")
    n_negative_samples_batch: int = setting(8192, "sampled-softmax negatives per batch (bilm-tf's)", flag=False)
    # Measured on a 10k vocabulary: the exact softmax trained faster than 8,192 sampled negatives
    # (2,660 vs 1,800 tokens/s) at equal perplexity.
    full_softmax_max_vocab: int = setting(16384, "vocabularies up to this size train with the exact softmax",
                                          flag=False)
    bilm_tf_unroll_steps: int = setting(20, "options.json `unroll_steps`: bilm-tf's window length (kept for "
                                            "round trips; the stream mode's window is TrainJobConfig.unroll_steps)",
                                        flag=False)
    bilm_tf_batch_size: int = setting(128, "options.json `batch_size`: bilm-tf's windows per device (kept for "
                                           "round trips)", flag=False)
    optimizer: str = setting("adam", "the optimizer: adam, adagrad (bilm-tf's) or sgd", choices=OPTIMIZERS)
    learning_rate: float = setting(2e-3, "the optimizer's step size (bilm-tf's Adagrad: 0.2)")
    initial_accumulator_value: float = setting(1.0, "Adagrad's initial accumulator", flag=False)
    max_grad_norm: float = setting(5.0, "global gradient-norm clip (of the mean loss per target token)")

    def for_vocabulary(self, vocab_size: int) -> "TrainingConfig":
        """This recipe for a softmax over ``vocab_size`` words (negatives capped by it)."""
        return dataclasses.replace(self, n_tokens_vocab=vocab_size,
                                   n_negative_samples_batch=min(self.n_negative_samples_batch, vocab_size))

    @property
    def train_negative_samples(self) -> int | None:
        """Negatives for the training softmax, or None for the exact softmax."""
        if self.n_tokens_vocab <= self.full_softmax_max_vocab:
            return None
        return min(self.n_negative_samples_batch, self.n_tokens_vocab)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.learning_rate <= 0 or self.max_grad_norm <= 0:
            raise ValueError("learning_rate and max_grad_norm must be > 0")


@dataclass(frozen=True)
class BiLMConfig:
    """Everything needed to build the biLM; round-trips through bilm-tf ``options.json``."""

    char_cnn: CharCNNConfig = field(default_factory=CharCNNConfig)
    lstm: LSTMConfig = field(default_factory=LSTMConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    # Keys of options.json that we do not interpret, kept so that export writes them back.
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def output_dim(self) -> int:
        """Width of every output layer: 2P (forward and backward halves)."""
        return 2 * self.lstm.projection_dim

    @property
    def n_output_layers(self) -> int:
        return self.lstm.n_layers + 1

    def replace(self, **changes: Any) -> "BiLMConfig":
        return dataclasses.replace(self, **changes)

    def with_recipe(self, recipe: dict[str, Any]) -> "BiLMConfig":
        """This model with `TrainingConfig` fields changed (the optimizer recipe, dropout, ...);
        sampled negatives stay capped by the vocabulary."""
        if not recipe:
            return self
        training = dataclasses.replace(self.training, **recipe)
        if training.n_tokens_vocab:
            training = training.for_vocabulary(training.n_tokens_vocab)
        return self.replace(training=training)

    # ----------------------------------------------------------------- options.json
    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "BiLMConfig":
        """Build from a parsed bilm-tf/AllenNLP ``options.json`` dict."""
        try:
            cnn, lstm = options["char_cnn"], options["lstm"]
            char_cnn = CharCNNConfig(
                char_dim=int(cnn["embedding"]["dim"]),
                filters=tuple((int(w), int(n)) for w, n in cnn["filters"]),
                n_highway=int(cnn["n_highway"]),
                activation=cnn.get("activation", "relu"),
                n_characters=int(cnn.get("n_characters", 262)),
                max_characters_per_token=int(cnn.get("max_characters_per_token", 50)),
            )
            lstm_cfg = LSTMConfig(
                dim=int(lstm["dim"]),
                projection_dim=int(lstm["projection_dim"]),
                n_layers=int(lstm.get("n_layers", 2)),
                cell_clip=_opt_float(lstm.get("cell_clip")),
                proj_clip=_opt_float(lstm.get("proj_clip")),
                use_skip_connections=bool(lstm.get("use_skip_connections", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a valid bilm-tf options.json: {exc!r}") from exc
        d = TrainingConfig()
        training = TrainingConfig(
            n_tokens_vocab=int(options.get("n_tokens_vocab", d.n_tokens_vocab)),
            dropout=float(options.get("dropout", d.dropout)),
            n_negative_samples_batch=int(options.get("n_negative_samples_batch", d.n_negative_samples_batch)),
            bilm_tf_unroll_steps=int(options.get("unroll_steps", d.bilm_tf_unroll_steps)),
            bilm_tf_batch_size=int(options.get("batch_size", d.bilm_tf_batch_size)),
        )
        optimization = {}  # written by us (not bilm-tf): the optimizer a model was trained with
        for key, kind in (("optimizer", str), ("learning_rate", float), ("initial_accumulator_value", float),
                          ("max_grad_norm", float), ("full_softmax_max_vocab", int)):
            if key in options:
                optimization[key] = kind(options[key])
        training = dataclasses.replace(training, **optimization)
        known = {"char_cnn", "lstm", "n_tokens_vocab", "dropout", "n_negative_samples_batch",
                 "unroll_steps", "batch_size", *optimization}
        extra = {k: v for k, v in options.items() if k not in known}
        return cls(char_cnn=char_cnn, lstm=lstm_cfg, training=training, extra=extra)

    def to_options(self) -> dict[str, Any]:
        """The bilm-tf ``options.json`` dict (readable by bilm-tf and AllenNLP)."""
        c, l, t = self.char_cnn, self.lstm, self.training
        lstm: dict[str, Any] = {
            "dim": l.dim, "projection_dim": l.projection_dim, "n_layers": l.n_layers,
            "use_skip_connections": l.use_skip_connections,
        }
        if l.cell_clip is not None:
            lstm["cell_clip"] = l.cell_clip
        if l.proj_clip is not None:
            lstm["proj_clip"] = l.proj_clip
        options: dict[str, Any] = {
            "char_cnn": {
                "activation": c.activation,
                "embedding": {"dim": c.char_dim},
                "filters": [[w, n] for w, n in c.filters],
                "max_characters_per_token": c.max_characters_per_token,
                "n_characters": c.n_characters,
                "n_highway": c.n_highway,
            },
            "lstm": lstm,
            "dropout": t.dropout,
            "n_negative_samples_batch": t.n_negative_samples_batch,
            "unroll_steps": t.bilm_tf_unroll_steps,
            "batch_size": t.bilm_tf_batch_size,
            "optimizer": t.optimizer,
            "learning_rate": t.learning_rate,
            "initial_accumulator_value": t.initial_accumulator_value,
            "max_grad_norm": t.max_grad_norm,
            "full_softmax_max_vocab": t.full_softmax_max_vocab,
        }
        if t.n_tokens_vocab:
            options["n_tokens_vocab"] = t.n_tokens_vocab
        options.update(self.extra)
        return options

    @classmethod
    def load(cls, path: str | Path) -> "BiLMConfig":
        try:
            with open(path, encoding="utf-8") as f:
                options = json.load(f)
        except OSError as exc:
            raise ValueError(f"cannot read options file {path}: {exc.strerror}") from exc
        except json.JSONDecodeError as exc:
            raise ValueError(f"options file {path} is not JSON: {exc}") from exc
        return cls.from_options(options)

    def save(self, path: str | Path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_options(), f, indent=2, sort_keys=True)
            f.write("\n")

    # ----------------------------------------------------------------- presets
    @classmethod
    def preset(cls, name: str, **training: Any) -> "BiLMConfig":
        """A named preset (`PRESETS`); ``training`` overrides the preset's training numbers."""
        try:
            char_cnn, lstm = PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}") from None
        return cls(char_cnn=char_cnn, lstm=lstm, training=TrainingConfig(**{**PRESET_TRAINING.get(name, {}), **training}))


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def from_known_fields(cls, values: dict):
    """A config dataclass from a dict (a manifest, a job's JSON), ignoring keys it has no field for
    (written by another version of the project)."""
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in known})


PRESETS: dict[str, tuple[CharCNNConfig, LSTMConfig]] = {
    # For tests: every code path (2 layers, skip connections, highway, clipping), tiny sizes.
    "tiny": (CharCNNConfig(char_dim=4, filters=((1, 4), (2, 8), (3, 16)), n_highway=1),
             LSTMConfig(dim=32, projection_dim=16)),
    # Language models of Kim et al. 2016's sizes (ELMo's cells: LSTMs with projection, clipping,
    # residual): the char CNN of LSTM-Char-Small (widths 1-6, 25 x width filters, 15-dim chars) /
    # -Large (widths 1-7, min(200, 50 x width) filters, 2 highway layers). Forward LM (token
    # encoder + forward LSTMs + softmax) over a 10,002-word vocabulary: 4,553,763 / 19,828,589
    # parameters (tests/test_config.py), within the 5M / 20M budgets.
    "lm5m": (CharCNNConfig(char_dim=15, filters=tuple((w, 25 * w) for w in range(1, 7)), n_highway=1),
             LSTMConfig(dim=512, projection_dim=200)),
    "lm20m": (CharCNNConfig(char_dim=15, filters=tuple((w, min(200, 50 * w)) for w in range(1, 8)), n_highway=2),
              LSTMConfig(dim=1536, projection_dim=384)),
    # Released ELMo configurations (parameter counts checked in tests/test_config.py).
    "small": (CharCNNConfig(n_highway=1), LSTMConfig(dim=1024, projection_dim=128)),
    "medium": (CharCNNConfig(n_highway=1), LSTMConfig(dim=2048, projection_dim=256)),
    "original": (CharCNNConfig(n_highway=2), LSTMConfig(dim=4096, projection_dim=512)),
}

# Training numbers a preset brings with it (overridable). The two language-model presets are
# sized to the parameter budgets of Kim et al. 2016's LSTM-Char-Small (5M) and -Large (19M),
# counted as the forward LM (token encoder + forward LSTMs + softmax) over a 10k vocabulary,
# and regularized for a corpus of that size (Penn Treebank, ~1M words): dropout 0.5.
PRESET_TRAINING: dict[str, dict[str, Any]] = {
    "lm5m": {"dropout": 0.5},
    "lm20m": {"dropout": 0.5},
}
