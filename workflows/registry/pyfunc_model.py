"""The MLflow pyfunc that embeds sentences with a logged biLM ("models from code": nothing is
pickled; the weights are our model folder (safetensors), logged as the artifact ``model``).

Portable: this file imports only mlflow and `elmo_core`, and `elmo_core` is logged with the
model (``code_paths``; MLflow puts the model's ``code/`` on ``sys.path`` when loading), so the
model loads wherever its ``requirements.txt`` is installed, without this project.

Input: raw sentences, tokenized as the model's training text was (the model folder's
``tokenization.json``, `elmo_core.tokenization`: the tokenizer `embed-corpus` and `embed-new` use
by default too, so online and batch vectors of the same text are the same), as a DataFrame with
a ``sentence`` column (the first column, where there are others: the signature's one input
column is unnamed so that plain lists work, and MLflow passes on only the first column), a list
of strings or ``{"sentence": [...]}``.
Params: ``layers`` (``all``|``top``|``average``|``mix:W0,W1,W2``, `elmo_core.layer_selection`,
default ``all``), ``dtype`` (``float32``|``float16``), ``tokenizer`` (``model``: the model's
record; ``moses``; ``whitespace``: the input is already tokenized) and ``language`` (``model`` or
a Moses language code). The logged signature (`workflows.registry.tracking.TrackedRun.log_model`)
declares them, so MLflow passes them through (without a params schema it drops them).
Output: a DataFrame, one row per sentence: ``tokens``; ``embedding``, an array in ``dtype`` of
``shape`` ((L+1, n, 2P) for ``all``, (n, 2P) otherwise); ``shape``; ``dtype``. Computed by
`elmo_core.embedder.Embedder`, the same path as `elmo embed` and the embedding jobs.
"""

from __future__ import annotations

import mlflow.pyfunc
from mlflow.models import set_model

SENTENCE_COLUMN = "sentence"


class ElmoEmbeddingModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from elmo_core.tokenization import read_tokenization, resolve_tokenization
        from elmo_core.weights import load_model_folder

        folder = context.artifacts["model"]
        self.model, _ = load_model_folder(folder)
        self.model.eval()
        self.tokenization = resolve_tokenization(read_tokenization(folder), model_name="this logged model")
        self._embedders = {}
        self._tokenizers = {}

    def _embedder(self, layers: str, dtype: str):
        from elmo_core.embedder import Embedder
        from elmo_core.layer_selection import LayerSelection

        selection = LayerSelection.parse(layers, dtype)
        if selection not in self._embedders:
            self._embedders[selection] = Embedder(self.model, layers=selection)
        return self._embedders[selection]

    def _tokenizer(self, tokenizer: str | None, language: str | None):
        """text -> tokens: the model's tokenization, with the params given on top."""
        chosen = self.tokenization.with_overrides(tokenizer, language)
        if chosen not in self._tokenizers:
            self._tokenizers[chosen] = chosen.tokenizer_fn()
        return self._tokenizers[chosen]

    def predict(self, context, model_input, params=None):
        import numpy as np
        import pandas as pd

        from elmo_core.layer_selection import DEFAULT_LAYERS

        params = params or {}
        dtype = params.get("dtype") or "float32"
        embedder = self._embedder(params.get("layers") or DEFAULT_LAYERS, dtype)
        tokenize = self._tokenizer(params.get("tokenizer"), params.get("language"))
        if isinstance(model_input, pd.DataFrame):
            texts = self._column(model_input)
        elif isinstance(model_input, str):
            texts = [model_input]
        else:
            texts = list(model_input)
        # {"sentence": [...]} (the ``inputs`` JSON form) arrives as one row holding the list
        texts = [t for cell in texts for t in (cell if isinstance(cell, (list, tuple, np.ndarray)) else [cell])]
        sentences = [tokenize(str(t)) for t in texts]
        empty = [i for i, s in enumerate(sentences) if not s]
        if empty:
            raise ValueError(f"every sentence needs at least one token (row {empty[0]} has none)")
        outputs = embedder.embed_all(sentences)
        return pd.DataFrame({"tokens": sentences, "embedding": outputs,
                             "shape": [list(out.shape) for out in outputs], "dtype": [dtype] * len(outputs)})

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
