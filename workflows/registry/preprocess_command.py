"""``elmo preprocess``: `preprocessing.cli`, plus ``--vocab-from MODEL``: build the dataset with the
vocabulary of a model, e.g. the one `elmo adapt --from MODEL` will adapt (adaptation refuses data
with another vocabulary).

    elmo preprocess INPUT... --output DIR --vocab-from models:/NAME@ALIAS [preprocess's other flags]

MODEL is resolved as the embedding jobs and `elmo adapt` resolve it (`elmo_core.model_spec`; a
``models:/`` alias is pinned to one version, `tracking.download_pinned`), and its ``vocab.txt``
is used as ``--vocab FILE`` would be; the dataset's manifest records the pinned model as the
vocabulary's source. It lives here, not in preprocessing/, because resolving ``models:/`` needs
the registry, which preprocessing does not import (``python -m preprocessing`` has every flag but
this one).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from preprocessing import cli as preprocess_cli
from preprocessing.entry_point import entry_point


def add_arguments(p: argparse.ArgumentParser) -> None:
    preprocess_cli.add_arguments(p)
    p.add_argument("--vocab-from", metavar="MODEL",
                   help="use the vocabulary of this model (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model, "
                        "or a model directory), e.g. the model `elmo adapt --from` starts from")


def model_vocabulary(model: str, workdir: str) -> tuple[str, str]:
    """MODEL -> (its vocabulary file, what to record as the vocabulary's source: the pinned model
    URI, or the model directory). A registered model is downloaded under ``workdir``; ValueError
    names what is wrong."""
    from elmo_core.model_spec import ModelSpec
    from elmo_core.weights import VOCAB_NAME

    from workflows.registry import tracking

    spec = ModelSpec.parse(model)
    if spec.registry_uri is not None:
        folder, pinned, _ = tracking.download_pinned(spec.registry_uri, workdir)
        source = pinned if pinned == model else f"{pinned} ({model})"
    elif spec.folder is not None:
        folder, source = spec.folder, spec.local_path()
    else:
        raise ValueError(f"{model}: bilm-tf / AllenNLP files carry no vocabulary; pass its vocabulary file with --vocab")
    vocab = Path(folder) / VOCAB_NAME
    if not vocab.is_file():
        raise ValueError(f"{model}: the model has no vocabulary ({VOCAB_NAME})")
    return str(vocab), source


def run(args: argparse.Namespace) -> int:
    if args.vocab_from is None:
        return preprocess_cli.run(args)
    if args.vocab:
        print("elmo preprocess: error: --vocab-from and --vocab: give one of them", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="elmo-vocab-") as tmp:
        try:
            args.vocab, source = model_vocabulary(args.vocab_from, tmp)
        except ValueError as exc:
            print(f"elmo preprocess: error: {exc}", file=sys.stderr)
            return 2
        return preprocess_cli.run(args, vocab_source=source)


main = entry_point("elmo preprocess", __doc__, add_arguments, run)


if __name__ == "__main__":
    sys.exit(main())
