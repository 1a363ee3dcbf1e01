"""The MLflow pyfunc that embeds sentences with a logged biLM ("models from code": nothing is
pickled; the weights are our native safetensors checkpoint, logged as the artifact ``model``).

Input: a DataFrame with a ``sentence`` column (whitespace-tokenized text) or a list of strings.
Output: a DataFrame with ``tokens`` and ``embedding``, the layers chosen by
``params={"layers": "all"|"top"|"average"|"mix:W0,W1,W2", "dtype": "float32"|"float16"}``
(`elmo_core.layer_selection`, default ``all``: (3, n, 2P) per sentence), computed by
`elmo_core.embedder.Embedder`, the same path as `elmo embed` and the embedding jobs.
"""

from __future__ import annotations

import mlflow.pyfunc
from mlflow.models import set_model


class ElmoEmbeddingModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from elmo_core.weights import load_checkpoint

        self.model, _ = load_checkpoint(context.artifacts["model"])
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
        import pandas as pd

        from elmo_core.layer_selection import DEFAULT_LAYERS

        params = params or {}
        embedder = self._embedder(params.get("layers") or DEFAULT_LAYERS, params.get("dtype") or "float32")
        if isinstance(model_input, pd.DataFrame):
            texts = model_input["sentence"].tolist()
        else:
            texts = list(model_input)
        sentences = [str(t).split() for t in texts]
        empty = [i for i, s in enumerate(sentences) if not s]
        if empty:
            raise ValueError(f"every sentence needs at least one token (row {empty[0]} has none)")
        outputs = embedder.embed_all(sentences)
        return pd.DataFrame({"tokens": sentences, "embedding": [out.tolist() for out in outputs]})


set_model(ElmoEmbeddingModel())
