"""MODEL (as the embedding jobs accept it) -> the exact weights to embed with, resolved once.

MODEL is ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/ID/model``, a native model
directory, or ``OPTIONS.json,WEIGHTS.hdf5``. An alias is pinned to one version when the job
starts (`tracking.pin_model_uri`); that version, never the alias alone, is what outputs record.
The weights travel to the workers as one blob (`elmo_core.weights.embedding_bytes`: no softmax,
config in its metadata) through Ray's object store: fetched once per node, whatever the number of
actors there, and loaded by each actor from shared memory.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass

from elmo_core.config import BiLMConfig
from elmo_core.tokenization import Tokenization


@dataclass(frozen=True)
class ResolvedModel:
    uri: str  # as given
    source: str  # what was loaded: models:/NAME/V, runs:/..., an absolute path
    version: str  # lineage label: NAME/V for registry models, else the source
    digest: str  # sha256 of the embedding blob
    blob: bytes
    config: BiLMConfig  # the model's sizes (layers, vector size)
    tokenization: Tokenization | None = None  # how its training text was tokenized, if it records it

    @property
    def version_key(self) -> str:
        """What outputs and the scheduler's ledger are keyed by: the registry version, or the
        weights' digest for models outside the registry."""
        return self.version if self.source.startswith("models:/") else f"sha256:{self.digest[:16]}"

    def describe(self) -> dict:
        return {"model_uri": self.uri, "model_source": self.source, "model_version": self.version,
                "model_digest": self.digest}


def resolve_model(text: str) -> ResolvedModel:
    """Load MODEL once on the driver; ValueError names what is wrong with it."""
    from elmo_core.model_spec import ModelSpec
    from elmo_core.tokenization import read_tokenization
    from elmo_core.weights import WeightFileError, embedding_bytes, load_local_model

    spec = ModelSpec.parse(text)
    try:
        if spec.registry_uri is not None:
            from workflows.registry import tracking

            with tempfile.TemporaryDirectory(prefix="elmo-model-") as tmp:
                folder, source, version = tracking.download_pinned(spec.registry_uri, tmp)
                model = load_local_model(ModelSpec.of_files(folder))
                tokenization = read_tokenization(folder)
        else:
            model = load_local_model(spec)
            source = version = spec.local_path()
            tokenization = read_tokenization(spec.folder)  # bilm-tf files record none
    except (WeightFileError, OSError) as exc:
        raise ValueError(f"{text}: cannot load the model: {exc}") from None
    blob = embedding_bytes(model)
    return ResolvedModel(text, source, version, hashlib.sha256(blob).hexdigest(), blob, model.config, tokenization)
