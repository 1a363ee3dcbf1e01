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
import os
import tempfile
from dataclasses import dataclass


@dataclass(frozen=True)
class ResolvedModel:
    uri: str  # as given
    source: str  # what was loaded: models:/NAME/V, runs:/..., an absolute path
    version: str  # lineage label: NAME/V for registry models, else the source
    digest: str  # sha256 of the embedding blob
    blob: bytes

    @property
    def version_key(self) -> str:
        """What outputs and the scheduler's ledger are keyed by: the registry version, or the
        weights' digest for models outside the registry."""
        return self.version if self.source.startswith("models:/") else f"sha256:{self.digest[:16]}"

    def describe(self) -> dict:
        return {"model_uri": self.uri, "model_source": self.source, "model_version": self.version,
                "model_digest": self.digest}


def resolve_model(spec: str) -> ResolvedModel:
    """Load MODEL once on the driver; ValueError names what is wrong with it."""
    from elmo_core.weights import WeightFileError, embedding_bytes, load_bilm_tf, load_checkpoint

    try:
        if spec.startswith(("models:/", "runs:/")):
            from workflows.registry import tracking

            source, version = tracking.pin_model_uri(spec)
            with tempfile.TemporaryDirectory(prefix="elmo-model-") as tmp:
                model, _ = load_checkpoint(tracking.download_model(source, tmp))
        elif "," in spec:
            options, weights = spec.split(",", 1)
            model = load_bilm_tf(options, weights)
            source = version = f"{os.path.abspath(options)},{os.path.abspath(weights)}"
        elif os.path.isdir(spec):
            model, _ = load_checkpoint(spec)
            source = version = os.path.abspath(spec)
        else:
            raise ValueError(f"{spec}: not a model URI (models:/, runs:/), directory or OPTIONS.json,WEIGHTS.hdf5")
    except (WeightFileError, OSError) as exc:
        raise ValueError(f"{spec}: cannot load the model: {exc}") from None
    blob = embedding_bytes(model)
    return ResolvedModel(spec, source, version, hashlib.sha256(blob).hexdigest(), blob)
