"""Which biLM layers a user gets, and in which precision: the one place `elmo embed`, the MLflow
pyfunc and the embedding jobs (`workflows.embedding.embed_corpus`) choose them.

A selection is written as a string (the ``--layers`` / ``layers`` value):

* ``all``: every layer, (L+1, n, 2P): layer 0 the token encoding ``[e; e]``, then the biLSTM layers
* ``top``: the last layer, (n, 2P)
* ``average``: the mean of the L+1 layers, (n, 2P)
* ``mix:W0,W1,W2``: the weighted sum ``sum_j W_j h_j`` with the weights as given (not
  soft-maxed; ``average`` is ``mix`` with 1/(L+1) each), (n, 2P). A trained `ScalarMix`'s
  weights are ``gamma * softmax(s)``.

``dtype`` is the stored precision (``float32`` or ``float16``); computing stays float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_LAYERS = "all"
KINDS = ("all", "top", "average", "mix")
DTYPES = {"float32": np.float32, "float16": np.float16}


@dataclass(frozen=True)
class LayerSelection:
    kind: str = DEFAULT_LAYERS
    weights: tuple[float, ...] = ()
    dtype: str = "float32"

    @classmethod
    def parse(cls, spec: str = DEFAULT_LAYERS, dtype: str = "float32") -> "LayerSelection":
        """``"all" | "top" | "average" | "mix:W0,W1,..."`` -> a selection; ValueError names the problem."""
        spec = (spec or DEFAULT_LAYERS).strip()
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
        if spec.startswith("mix:"):
            try:
                weights = tuple(float(w) for w in spec[4:].split(","))
            except ValueError:
                raise ValueError(f"layers {spec!r}: mix weights must be numbers, e.g. mix:0.2,0.3,0.5") from None
            if not all(np.isfinite(weights)):
                raise ValueError(f"layers {spec!r}: mix weights must be finite")
            return cls("mix", weights, dtype)
        if spec not in KINDS or spec == "mix":
            raise ValueError(f"layers must be all, top, average or mix:W0,W1,...; not {spec!r}")
        return cls(spec, (), dtype)

    @property
    def spec(self) -> str:
        return f"mix:{','.join(repr(w) for w in self.weights)}" if self.kind == "mix" else self.kind

    def check(self, n_layers: int) -> None:
        """A mix needs one weight per layer (L+1)."""
        if self.kind == "mix" and len(self.weights) != n_layers:
            raise ValueError(f"layers {self.spec}: the model has {n_layers} layers, "
                             f"so mix needs {n_layers} weights, not {len(self.weights)}")

    @property
    def keeps_layer_axis(self) -> bool:
        return self.kind == "all"

    def bytes_per_token(self, n_layers: int, output_dim: int) -> int:
        """Stored bytes of one token's vectors: (L+1) * 2P values for ``all``, else 2P."""
        return (n_layers if self.kind == "all" else 1) * output_dim * np.dtype(DTYPES[self.dtype]).itemsize

    def column_names(self, n_layers: int) -> list[str]:
        """Output columns of the embedding jobs: ``layer_0..layer_L`` for ``all``, else ``embedding``."""
        return [f"layer_{j}" for j in range(n_layers)] if self.kind == "all" else ["embedding"]

    def apply(self, layers: np.ndarray) -> np.ndarray:
        """(L+1, n, 2P) float32 -> (L+1, n, 2P) for ``all``, else (n, 2P); in ``dtype``."""
        if self.kind == "all":
            out = layers
        elif self.kind == "top":
            out = layers[-1]
        elif self.kind == "average":
            out = layers.mean(axis=0)
        else:
            self.check(layers.shape[0])
            out = np.tensordot(np.asarray(self.weights, dtype=np.float32), layers, axes=1)
        return np.ascontiguousarray(out, dtype=DTYPES[self.dtype])
