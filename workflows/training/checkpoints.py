"""Training checkpoints: what a Ray Train checkpoint directory holds, written by rank 0 and read
when a run resumes, when adaptation starts from one, and when a finished run is registered.

    DIR/model/            the model (native: config.json, model.safetensors, vocab.txt)
    DIR/best_model/       the model of the best validation evaluation so far (registered at the end)
    DIR/optimizer.pt      the optimizer's state (tensors only; read with weights_only=True)
    DIR/train_state.json  the step, epoch and validation schedule
    DIR/stream_state.safetensors  stream mode: every row's carried LSTM state
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from elmo_core.bilm import BiLM
from elmo_core.vocabulary import Vocabulary
from elmo_core.weights import load_model_folder, save_model_folder

OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "train_state.json"
MODEL_DIR = "model"
BEST_MODEL_DIR = "best_model"  # the model of the best validation evaluation so far
STREAM_STATE_FILE = "stream_state.safetensors"  # stream mode: every row's carried LSTM state


def is_training_checkpoint(directory: str | Path) -> bool:
    """A training checkpoint (``model/`` inside), rather than a model folder."""
    return (Path(directory) / MODEL_DIR).is_dir()


def model_folder(directory: str | Path) -> Path:
    """The model folder of a training checkpoint (its last, ``model/``), or ``directory`` itself."""
    directory = Path(directory)
    return directory / MODEL_DIR if is_training_checkpoint(directory) else directory


def load_model_and_vocab(directory: str | Path) -> tuple[BiLM, Vocabulary | None]:
    """The model and vocabulary of a training checkpoint (its last, ``model/``) or of a model folder."""
    return load_model_folder(model_folder(directory))


def save_training_checkpoint(directory: Path, model: BiLM, vocab: Vocabulary, optimizer, step: int, extra: dict,
                             best_model: BiLM | None = None, stream_state: dict | None = None) -> None:
    save_model_folder(model, directory / MODEL_DIR, vocab)
    if best_model is not None:
        save_model_folder(best_model, directory / BEST_MODEL_DIR, vocab)
    if stream_state is not None:
        save_file(stream_state, str(directory / STREAM_STATE_FILE))
    torch.save(optimizer.state_dict(), directory / OPTIMIZER_FILE)
    (directory / STATE_FILE).write_text(json.dumps({"step": step, **extra}, indent=2))


def load_training_checkpoint(directory: Path) -> tuple[BiLM, Vocabulary, dict | None, dict]:
    """(model, vocabulary, optimizer state or None, train state); nothing is unpickled except
    the optimizer's tensors, read with ``weights_only=True``."""
    model, vocab = load_model_folder(directory / MODEL_DIR)
    optimizer = None
    if (directory / OPTIMIZER_FILE).exists():
        optimizer = torch.load(directory / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
    state = json.loads((directory / STATE_FILE).read_text()) if (directory / STATE_FILE).exists() else {}
    return model, vocab, optimizer, state


def final_model_dir(checkpoint_dir: str | Path) -> Path:
    """The model a finished run stands for: its best evaluation's (``best_model/``) if recorded,
    else its last (``model/``)."""
    best = Path(checkpoint_dir) / BEST_MODEL_DIR
    return best if best.exists() else Path(checkpoint_dir) / MODEL_DIR


def load_best_state(directory: Path) -> dict | None:
    """The best model's parameters, if the checkpoint records one."""
    best = directory / BEST_MODEL_DIR
    return load_model_folder(best)[0].state_dict() if best.exists() else None


def load_stream_state(directory: Path) -> dict | None:
    """Stream mode's carried state of every row, if the checkpoint holds one."""
    path = directory / STREAM_STATE_FILE
    return load_file(str(path)) if path.exists() else None
