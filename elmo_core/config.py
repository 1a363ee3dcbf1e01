"""Model configuration: the one place where the biLM's numbers live.

`BiLMConfig` reads and writes bilm-tf's ``options.json`` and has named presets:

* ``tiny``: a few-thousand-parameter model for tests (builds in milliseconds).
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


@dataclass(frozen=True)
class TrainingConfig:
    """Language-model training numbers (bilm-tf's ``train_elmo.py`` recipe as defaults)."""

    n_tokens_vocab: int = 0  # word vocabulary size of the softmax (0: no softmax)
    dropout: float = 0.1  # on each LSTM layer's input and on the top output
    n_negative_samples_batch: int = 8192  # sampled-softmax negatives per batch
    unroll_steps: int = 20  # tokens per training window
    batch_size: int = 128  # windows per step per device
    learning_rate: float = 0.2  # Adagrad
    initial_accumulator_value: float = 1.0  # Adagrad
    max_grad_norm: float = 10.0  # global gradient-norm clip


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
            unroll_steps=int(options.get("unroll_steps", d.unroll_steps)),
            batch_size=int(options.get("batch_size", d.batch_size)),
        )
        known = {"char_cnn", "lstm", "n_tokens_vocab", "dropout", "n_negative_samples_batch",
                 "unroll_steps", "batch_size"}
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
            "unroll_steps": t.unroll_steps,
            "batch_size": t.batch_size,
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
        """A named preset: ``tiny``, ``small``, ``medium`` or ``original``."""
        try:
            char_cnn, lstm = PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}") from None
        return cls(char_cnn=char_cnn, lstm=lstm, training=TrainingConfig(**training))


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


PRESETS: dict[str, tuple[CharCNNConfig, LSTMConfig]] = {
    # For tests: every code path (2 layers, skip connections, highway, clipping), tiny sizes.
    "tiny": (CharCNNConfig(char_dim=4, filters=((1, 4), (2, 8), (3, 16)), n_highway=1),
             LSTMConfig(dim=32, projection_dim=16)),
    # Released ELMo configurations (parameter counts checked in tests/test_config.py).
    "small": (CharCNNConfig(n_highway=1), LSTMConfig(dim=1024, projection_dim=128)),
    "medium": (CharCNNConfig(n_highway=1), LSTMConfig(dim=2048, projection_dim=256)),
    "original": (CharCNNConfig(n_highway=2), LSTMConfig(dim=4096, projection_dim=512)),
}
