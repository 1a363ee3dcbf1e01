"""Model files: bilm-tf/AllenNLP hdf5 import and export, and the native model folder.

Model files are untrusted input, so nothing here unpickles: weights are read from hdf5
(h5py) or safetensors, configs from JSON.

Model folder = a directory::

    config.json        bilm-tf options.json (readable by AllenNLP/bilm-tf too)
    model.safetensors  every parameter, our names (softmax included when present)
    vocab.txt          optional word vocabulary (one token a line, bilm-tf order)
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import h5py
import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .atomic import atomic_directory, atomic_file
from .bilm import BiLM
from .config import BiLMConfig, TrainingConfig
from .model_spec import ModelSpec
from .vocabulary import Vocabulary

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
VOCAB_NAME = "vocab.txt"


class WeightFileError(ValueError):
    """A weight file that cannot be read or does not fit its options."""


def _tf_pairs(model: BiLM) -> list[tuple[str, torch.Tensor, callable, callable]]:
    """(hdf5 name, our tensor, to_ours(array) -> array, to_tf(array) -> array) for every weight."""
    ident = (lambda a: a, lambda a: a)
    enc, cfg = model.token_encoder, model.config
    pairs = [("char_embed", enc.char_embedding, *ident)]
    for i, (w, b) in enumerate(zip(enc.conv_weights, enc.conv_biases)):
        pairs.append((f"CNN/W_cnn_{i}", w, lambda a: a[0], lambda a: a[None]))  # (1, w, C, n) <-> (w, C, n)
        pairs.append((f"CNN/b_cnn_{i}", b, *ident))
    for k, hw in enumerate(enc.highways):
        for name, p in (("W_carry", hw.w_carry), ("b_carry", hw.b_carry),
                        ("W_transform", hw.w_transform), ("b_transform", hw.b_transform)):
            pairs.append((f"CNN_high_{k}/{name}", p, *ident))
    pairs.append(("CNN_proj/W_proj", enc.projection, *ident))
    pairs.append(("CNN_proj/b_proj", enc.projection_bias, *ident))
    lstm = model.lstm
    for d in range(2):
        for layer in range(cfg.lstm.n_layers):
            prefix = f"RNN_{d}/RNN/MultiRNNCell/Cell{layer}/LSTMCell/"
            pairs.append((prefix + "W_0", _LstmW0(lstm, layer, d), tf_to_gate_order, gate_order_to_tf))
            pairs.append((prefix + "B", lstm.biases[layer][d], tf_to_gate_order, gate_order_to_tf))
            pairs.append((prefix + "W_P_0", lstm.projections[layer][d], *ident))
    return pairs


def tf_to_gate_order(a: np.ndarray) -> np.ndarray:
    """Gate column blocks from TF's (i, j, f, o) to ours (i, f, o, j): an exact permutation."""
    i, j, f, o = np.split(a, 4, axis=-1)
    return np.concatenate([i, f, o, j], axis=-1)


def gate_order_to_tf(a: np.ndarray) -> np.ndarray:
    i, f, o, j = np.split(a, 4, axis=-1)
    return np.concatenate([i, j, f, o], axis=-1)


class _LstmW0:
    """bilm-tf's W_0 (in + P, 4D) is our input_weight (in, 4D) stacked on recurrent_weight (P, 4D)."""

    def __init__(self, lstm, layer: int, direction: int) -> None:
        self.parts = (lstm.input_weights[layer][direction], lstm.recurrent_weights[layer][direction])

    @property
    def shape(self) -> tuple[int, ...]:
        a, b = self.parts
        return (a.shape[0] + b.shape[0], a.shape[1])

    def numpy_value(self) -> np.ndarray:
        return torch.cat([p.detach() for p in self.parts]).cpu().numpy()

    def copy_(self, value: torch.Tensor) -> None:
        a, b = self.parts
        a.copy_(value[: a.shape[0]])
        b.copy_(value[a.shape[0]:])


def load_bilm_tf_weights(model: BiLM, path: str | os.PathLike) -> None:
    """Copy a bilm-tf ``dump_weights`` hdf5 file (AllenNLP's ``*_weights.hdf5``) into `model`.

    Accepts the stored 261-row char table (bilm-tf) as well as a 262-row one with the padding
    row first. Every dataset must be present with the shape the options imply.
    """
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise WeightFileError(f"cannot read weight file {path}: {exc}") from exc
    with f, torch.no_grad():
        for name, ours, to_ours, _ in _tf_pairs(model):
            if name not in f:
                raise WeightFileError(f"weight file {path} has no dataset {name!r}: it does not "
                                      "match these options (wrong options file?)")
            value = np.asarray(f[name][...])
            if name == "char_embed" and value.shape[0] == ours.shape[0] + 1:
                value = value[1:]  # 262-row table with its padding row: drop it
            value = to_ours(value)
            if tuple(value.shape) != tuple(ours.shape):
                raise WeightFileError(
                    f"weight file {path}: {name} has shape {tuple(f[name].shape)}, but the options "
                    f"imply {tuple(_tf_shape(ours, name))}: the options and weights do not belong together")
            ours.copy_(torch.from_numpy(value.astype(np.float32, copy=False)))


def _tf_shape(ours, name: str) -> tuple[int, ...]:
    shape = tuple(ours.shape)
    return (1, *shape) if name.startswith("CNN/W_cnn_") else shape


def save_bilm_tf_weights(model: BiLM, path: str | os.PathLike) -> None:
    """Write the bilm-tf hdf5 layout (261-row char table, no softmax), atomically."""
    with atomic_file(path) as tmp, h5py.File(tmp, "w") as f:
        for name, ours, _, to_tf in _tf_pairs(model):
            value = ours.numpy_value() if isinstance(ours, _LstmW0) else ours.detach().cpu().numpy()
            f.create_dataset(name, data=to_tf(value).astype(np.float32, copy=False))


def load_bilm_tf(options_file: str | os.PathLike, weight_file: str | os.PathLike) -> BiLM:
    """Build a `BiLM` from a bilm-tf/AllenNLP options.json + weights.hdf5 pair (eval mode)."""
    config = BiLMConfig.load(options_file)
    config = config.replace(training=_no_softmax(config))
    model = BiLM(config)
    load_bilm_tf_weights(model, weight_file)
    return model.eval()


def _no_softmax(config: BiLMConfig) -> TrainingConfig:
    """The file holds no softmax weights: do not build an untrained one."""
    return dataclasses.replace(config.training, n_tokens_vocab=0)


# ---------------------------------------------------------------------- model folder
def save_model_folder(model: BiLM, directory: str | os.PathLike, vocab: Vocabulary | None = None) -> Path:
    """Write config.json + model.safetensors (+ vocab.txt) into `directory`, atomically."""
    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        model.config.save(tmp / CONFIG_NAME)
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "elmo_core/1"})
        if vocab is not None:
            vocab.save(tmp / VOCAB_NAME)
    return directory


def load_model_folder(directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[BiLM, Vocabulary | None]:
    """Read a model folder -> (model in eval mode, vocabulary or None)."""
    directory = Path(directory)
    if not (directory / CONFIG_NAME).is_file() or not (directory / WEIGHTS_NAME).is_file():
        raise WeightFileError(f"{directory} is not a model directory (needs {CONFIG_NAME} and {WEIGHTS_NAME})")
    config = BiLMConfig.load(directory / CONFIG_NAME)
    try:
        tensors = load_file(str(directory / WEIGHTS_NAME), device=str(map_location))
    except Exception as exc:  # safetensors raises its own error types
        raise WeightFileError(f"cannot read {directory / WEIGHTS_NAME}: {exc}") from exc
    if not any(k.startswith("softmax.") for k in tensors):
        config = config.replace(training=_no_softmax(config))
    model = BiLM(config).to(map_location)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise WeightFileError(f"{directory}: weights do not match its config "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    vocab_path = directory / VOCAB_NAME
    vocab = Vocabulary.load(vocab_path) if vocab_path.is_file() else None
    return model.eval(), vocab


def load_model(path: str | os.PathLike | None = None, options_file: str | os.PathLike | None = None,
               weight_file: str | os.PathLike | None = None, map_location: str | torch.device = "cpu") -> BiLM:
    """One entry point: a native directory (`path`) or a bilm-tf options + hdf5 pair."""
    return load_local_model(ModelSpec.of_files(path, options_file, weight_file), map_location)


def load_local_model(spec: ModelSpec, map_location: str | torch.device = "cpu") -> BiLM:
    """The model (eval mode) of a model folder or a bilm-tf pair; a registry URI is downloaded
    into a folder first (`workflows.registry`)."""
    if spec.folder is not None:
        return load_model_folder(spec.folder, map_location)[0]
    if spec.options_file is not None:
        return load_bilm_tf(spec.options_file, spec.weight_file).to(map_location)
    raise ValueError(f"{spec.text}: a registry model is loaded from the folder workflows.registry downloads")


# ---------------------------------------------------------------------- embedding-only bytes
def embedding_bytes(model: BiLM) -> bytes:
    """The weights an embedder needs (no softmax) and the config, as one safetensors blob: what
    an embedding job ships to its workers, and what its digest is taken of (deterministic: the
    same weights give the same bytes)."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
               if not k.startswith("softmax.")}
    config = model.config.replace(training=_no_softmax(model.config))
    import json

    # one metadata entry: safetensors writes several in a random order, which would change the bytes
    return save(tensors, metadata={"elmo_core": json.dumps({"format": 1, "config": config.to_options()},
                                                           sort_keys=True)})


def model_from_embedding_bytes(data: bytes, map_location: str | torch.device = "cpu") -> BiLM:
    """`embedding_bytes` -> the model (eval mode, no softmax)."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load

    with tempfile.NamedTemporaryFile(suffix=".safetensors") as f:  # metadata is read from a file
        f.write(data)
        f.flush()
        with safe_open(f.name, framework="pt") as handle:
            metadata = handle.metadata() or {}
    if "elmo_core" not in metadata:
        raise WeightFileError("not an embedding blob (no elmo_core entry in its metadata)")
    model = BiLM(BiLMConfig.from_options(json.loads(metadata["elmo_core"])["config"]))
    model.load_state_dict(load(data), strict=True)
    return model.to(map_location).eval()

