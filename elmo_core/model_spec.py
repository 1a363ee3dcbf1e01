"""MODEL, as every command takes it, parsed in one place:

    models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model   a registered or logged model
                                                              (downloaded by `workflows.registry`)
    DIR                                                       a model folder (`elmo_core.weights`)
    OPTIONS.json,WEIGHTS.hdf5                                 bilm-tf / AllenNLP files
"""

from __future__ import annotations

import os
from dataclasses import dataclass

REGISTRY_PREFIXES = ("models:/", "runs:/")


@dataclass(frozen=True)
class ModelSpec:
    """One of the three kinds of MODEL: exactly one of ``registry_uri``, ``folder``, or
    ``options_file`` with ``weight_file``, is set."""

    text: str  # as given
    registry_uri: str | None = None
    folder: str | None = None
    options_file: str | None = None
    weight_file: str | None = None

    @classmethod
    def parse(cls, text: str) -> "ModelSpec":
        """MODEL -> its kind; ValueError if it names none of them (a DIR must exist)."""
        if text.startswith(REGISTRY_PREFIXES):
            return cls(text, registry_uri=text)
        if "," in text:
            options, weights = text.split(",", 1)
            return cls(text, options_file=options, weight_file=weights)
        if os.path.isdir(text):
            return cls(text, folder=text)
        raise ValueError(f"{text}: not a model URI (models:/, runs:/), directory or OPTIONS.json,WEIGHTS.hdf5")

    @classmethod
    def of_files(cls, folder: str | os.PathLike | None = None, options_file: str | os.PathLike | None = None,
                 weight_file: str | os.PathLike | None = None) -> "ModelSpec":
        """A model folder, or an options + weights pair (`elmo embed`'s --model / --options-file,
        --weight-file); ValueError if both or neither are given."""
        if folder is not None:
            if options_file or weight_file:
                raise ValueError("give either a model directory or --options-file/--weight-file, not both")
            return cls(str(folder), folder=str(folder))
        if not (options_file and weight_file):
            raise ValueError("need a model directory, or both an options file and a weight file")
        return cls(f"{options_file},{weight_file}", options_file=str(options_file), weight_file=str(weight_file))

    def local_path(self) -> str:
        """The local files, as absolute paths (a folder, or ``OPTIONS,WEIGHTS``)."""
        if self.folder is not None:
            return os.path.abspath(self.folder)
        if self.options_file is not None:
            return f"{os.path.abspath(self.options_file)},{os.path.abspath(self.weight_file)}"
        raise ValueError(f"{self.text}: a registry URI, resolved by workflows.registry")
