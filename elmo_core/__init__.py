"""ELMo biLM in plain PyTorch.

AllenNLP's names, importable from here (loaded on first use, so that importing a torch-free
module such as `elmo_core.characters` does not import torch)::

    from elmo_core import Elmo, ElmoEmbedder, batch_to_ids
"""

from importlib import import_module

_EXPORTS = {"Elmo": "elmo", "ElmoEmbedder": "elmo_embedder", "batch_to_ids": "characters"}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_EXPORTS)
