"""The MLflow pyfunc that embeds sentences with a logged biLM ("models from code": nothing is
pickled; the weights are our native safetensors checkpoint, logged as the artifact ``model``).

Input: a DataFrame with a ``sentence`` column (whitespace-tokenized text) or a list of strings.
Output: a DataFrame with ``tokens`` and ``embedding`` (per token: the average of the three
layers, ``--average`` in `elmo embed` terms; ``params={"layers": "all"|"top"|"average"}``).
"""

from __future__ import annotations

import mlflow.pyfunc
from mlflow.models import set_model


class ElmoEmbeddingModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from elmo_core.embedder import Embedder
        from elmo_core.weights import load_checkpoint

        model, _ = load_checkpoint(context.artifacts["model"])
        self.embedder = Embedder(model.eval())

    def predict(self, context, model_input, params=None):
        import pandas as pd

        layers = (params or {}).get("layers", "average")
        if isinstance(model_input, pd.DataFrame):
            texts = model_input["sentence"].tolist()
        else:
            texts = list(model_input)
        sentences = [str(t).split() for t in texts]
        if any(not s for s in sentences):
            raise ValueError("every sentence needs at least one token")
        outputs = self.embedder.embed_all(sentences)  # each (3, n, 2P)
        rows = []
        for tokens, out in zip(sentences, outputs):
            array = out if layers == "all" else (out[-1] if layers == "top" else out.mean(axis=0))
            rows.append({"tokens": tokens, "embedding": array.tolist()})
        return pd.DataFrame(rows)


set_model(ElmoEmbeddingModel())
