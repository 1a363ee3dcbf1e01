"""The MLflow pyfunc that embeds sentences with a logged biLM ("models from code": nothing is
pickled; the weights are our model folder (safetensors), logged as the artifact ``model``).

Portable: this file imports only mlflow and `elmo_core`, and `elmo_core` is logged with the
model (``code_paths``; MLflow puts the model's ``code/`` on ``sys.path`` when loading), so the
model loads wherever its ``requirements.txt`` is installed, without this project.

Input: whitespace-tokenized sentences, as a DataFrame with a ``sentence`` column (the first
column, where there are others: the signature's one input column is unnamed so that plain lists
work, and MLflow passes on only the first column), a list of strings or ``{"sentence": [...]}``.
Output: a DataFrame with ``tokens`` and ``embedding``, the layers chosen by
``params={"layers": "all"|"top"|"average"|"mix:W0,W1,W2", "dtype": "float32"|"float16"}``
(`elmo_core.layer_selection`, default ``all``: (3, n, 2P) per sentence), computed by
`elmo_core.embedder.Embedder`, the same path as `elmo embed` and the embedding jobs. The logged
signature (`workflows.registry.tracking.TrackedRun.log_model`) declares these params, so MLflow passes them
through (without a params schema it drops them).
"""

from __future__ import annotations

import mlflow.pyfunc
from mlflow.models import set_model

SENTENCE_COLUMN = "sentence"


class ElmoEmbeddingModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from elmo_core.weights import load_model_folder

        self.model, _ = load_model_folder(context.artifacts["model"])
        self.model.eval()
        self._embedders = {}

    def _embedder(self, layers: str, dtype: str):
        from elmo_core.embedder import Embedder
        from elmo_core.layer_selection import LayerSelection

        selection = LayerSelection.parse(layers, dtype)
        if selection not in self._embedders:
            self._embedders[selection] = Embedder(self.model, layers=selection)
        return self._embedders[selection]

    def predict(self, context, model_input, params=None):
        import numpy as np
        import pandas as pd

        from elmo_core.layer_selection import DEFAULT_LAYERS

        params = params or {}
        embedder = self._embedder(params.get("layers") or DEFAULT_LAYERS, params.get("dtype") or "float32")
        if isinstance(model_input, pd.DataFrame):
            texts = self._column(model_input)
        elif isinstance(model_input, str):
            texts = [model_input]
        else:
            texts = list(model_input)
        # {"sentence": [...]} (the ``inputs`` JSON form) arrives as one row holding the list
        texts = [t for cell in texts for t in (cell if isinstance(cell, (list, tuple, np.ndarray)) else [cell])]
        sentences = [str(t).split() for t in texts]
        empty = [i for i, s in enumerate(sentences) if not s]
        if empty:
            raise ValueError(f"every sentence needs at least one token (row {empty[0]} has none)")
        outputs = embedder.embed_all(sentences)
        return pd.DataFrame({"tokens": sentences, "embedding": [out.tolist() for out in outputs]})

    @staticmethod
    def _column(frame) -> list:
        """The sentences of a DataFrame: its ``sentence`` column. Under the signature (one unnamed
        input column) MLflow passes on only the first column, under its own name: ``0`` where the
        input was a list; any name but ``sentence`` means the sentences were not first, or absent."""
        if SENTENCE_COLUMN in frame.columns:
            return frame[SENTENCE_COLUMN].tolist()
        if list(frame.columns) == [0]:
            return frame[0].tolist()
        raise ValueError(f"expected the sentences in a {SENTENCE_COLUMN!r} column (the first one), "
                         f"got columns {list(frame.columns)}")


set_model(ElmoEmbeddingModel())
