"""The registered MLflow model is portable and conventional: it loads and embeds in a Python
where this project is not installed (``elmo_core`` travels with it as code), carries a signature
with its params and typed outputs and an input example, tokenizes raw text as its training text
was (its recorded tokenization), and serves over REST (``mlflow models serve``) with the same
vectors as `Embedder` on the checkpoint and as `elmo embed-corpus` on the same raw text.

One tiny untrained biLM, logged once against a real ``mlflow server`` (recording Moses/English
tokenization) and registered as champion.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from infra.local.local_services import free_ports, stop_group
from tests.helpers import REPO

NAME = "elmo-portable"
MODEL_URI = f"models:/{NAME}@champion"
BIN = Path(sys.executable).parent
SITE_PACKAGES = sysconfig.get_paths()["purelib"]
# raw text, where Moses and whitespace splitting differ (a contraction, a final period, a comma)
SENTENCES = ["Don't stop.", "The U.S. economy grew 3.5% in 2019, didn't it?"]


def moses_tokens(text: str) -> list[str]:
    """sacremoses itself, unmodified (our tokenizer must agree with it)."""
    from sacremoses import MosesTokenizer

    return [piece for token in MosesTokenizer(lang="en").tokenize(text, escape=False) for piece in token.split()]


TOKENS = [moses_tokens(s) for s in SENTENCES]

# Runs under `python -S` (no site processing: the editable install's finder is never installed)
# with the venv's site-packages appended by hand, in an empty directory: mlflow, torch, ... are
# importable, this project is not.
PORTABLE_SCRIPT = r"""
import json, sys
sys.path.append(sys.argv[1])
for name in ("elmo_core", "workflows"):
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"{name} is importable here: the check would prove nothing")

import mlflow.pyfunc
import pandas as pd

sentences = json.loads(sys.argv[2])
model = mlflow.pyfunc.load_model(sys.argv[3])
import elmo_core  # now from the model's own code/ directory

meta = model.metadata
example = model.input_example
example_out = model.predict(example, params={"layers": "average"})
print("RESULT " + json.dumps({
    "elmo_core_file": elmo_core.__file__,
    "all": [e.tolist() for e in model.predict(pd.DataFrame({"sentence": sentences}))["embedding"]],
    "average": [e.tolist() for e in model.predict(sentences, params={"layers": "average"})["embedding"]],
    "tokens": model.predict(sentences, params={"layers": "top"})["tokens"].tolist(),
    "signature": meta.signature.to_dict(),
    "example_info": meta.saved_input_example_info,
    "example": example.to_dict("split"),
    "example_rows": len(example_out),
}))
"""


@pytest.fixture(scope="module")
def registered(mlflow_server, register_tiny):
    """(tracking URI, expected `all` layers per sentence) with NAME@champion registered on the
    session's server."""
    from elmo_core.embedder import Embedder
    from elmo_core.tokenization import Tokenization

    assert TOKENS[0] == ["Don", "'t", "stop", "."]  # not what whitespace splitting gives
    tiny = register_tiny(NAME, seed=11, val_ppl=10.0, experiment="pyfunc-portable",
                         tokenization=Tokenization("moses", "en"))
    assert tiny["promoted"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        yield mlflow_server, Embedder(tiny["model"]).embed_all(TOKENS)


def test_loads_and_embeds_without_the_project(registered, tmp_path):
    uri, expected = registered
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(MLFLOW_TRACKING_URI=uri, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-S", "-c", PORTABLE_SCRIPT, SITE_PACKAGES, json.dumps(SENTENCES), MODEL_URI],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    out = json.loads(next(line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT ")))

    # elmo_core came with the model, not from this checkout
    assert Path(out["elmo_core_file"]).parent.parent.name == "code"
    assert not Path(out["elmo_core_file"]).is_relative_to(REPO / "elmo_core")

    for got, exp in zip(out["all"], expected):  # default layers: all, (L+1, n, 2P)
        np.testing.assert_allclose(np.array(got), exp, atol=1e-5)
    for got, exp in zip(out["average"], expected):  # a list input with params
        np.testing.assert_allclose(np.array(got), exp.mean(axis=0), atol=1e-5)
    assert out["tokens"] == TOKENS  # Moses, as recorded with the model

    params = {p["name"]: p for p in json.loads(out["signature"]["params"])}
    assert {k: (v["type"], v["default"]) for k, v in params.items()} == {
        "layers": ("string", "all"), "dtype": ("string", "float32"), "tokenizer": ("string", "model"),
        "language": ("string", "model")}
    assert [c["type"] for c in json.loads(out["signature"]["inputs"])] == ["string"]
    outputs = {c["name"]: c for c in json.loads(out["signature"]["outputs"])}
    assert list(outputs) == ["tokens", "embedding", "shape", "dtype"]
    assert outputs["shape"]["items"]["type"] == "long" and outputs["dtype"]["type"] == "string"
    assert out["example_info"]["artifact_path"] == "input_example.json"
    assert out["example_info"].get("serving_input_path") == "serving_input_example.json"
    assert out["example"]["columns"] == ["sentence"] and out["example_rows"] == len(out["example"]["data"])


def test_input_forms_and_params(registered, monkeypatch):
    """What the signature lets through: lists, ``{"sentence": [...]}``, a DataFrame whose first
    column is ``sentence``; params checked against the layer count and dtype."""
    import mlflow
    import pandas as pd

    uri, expected = registered
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    model = mlflow.pyfunc.load_model(MODEL_URI)
    top = [e[-1] for e in expected]
    for data in ({"sentence": SENTENCES}, pd.DataFrame({"sentence": SENTENCES, "id": ["a", "b"]}), SENTENCES):
        out = model.predict(data, params={"layers": "top"})
        assert len(out) == 2
        for got, exp in zip(out["embedding"], top):
            np.testing.assert_allclose(np.array(got), exp, atol=1e-5)
    mixed = model.predict(SENTENCES, params={"layers": "mix:0.5,0,0.5", "dtype": "float16"})
    half = mixed["embedding"][0]
    assert isinstance(half, np.ndarray) and half.dtype == np.float16  # not a list of Python floats
    assert mixed["shape"][0] == [len(TOKENS[0]), expected[0].shape[-1]] and mixed["dtype"][0] == "float16"
    np.testing.assert_allclose(half.astype(np.float32), (expected[0][0] + expected[0][2]) / 2, atol=2e-3)
    everything = model.predict(SENTENCES)
    assert everything["embedding"][1].dtype == np.float32 and everything["shape"][1] == list(expected[1].shape)
    # the recorded tokenization, overridden: whitespace (pre-tokenized input)
    pre = model.predict([" ".join(t) for t in TOKENS] + ["don't"], params={"tokenizer": "whitespace", "layers": "top"})
    assert pre["tokens"].tolist()[:2] == TOKENS and pre["tokens"][2] == ["don't"]
    for got, exp in zip(pre["embedding"][:2], top):
        np.testing.assert_allclose(got, exp, atol=1e-5)
    with pytest.raises(ValueError, match="'sentence' column"):  # MLflow would keep only `id`
        model.predict(pd.DataFrame({"id": ["a", "b"], "sentence": SENTENCES}))
    with pytest.raises(ValueError, match="layers must be"):
        model.predict(SENTENCES, params={"layers": "bottom"})
    with pytest.raises(ValueError, match="needs 3 weights"):
        model.predict(SENTENCES, params={"layers": "mix:1,1"})
    with pytest.raises(ValueError, match="at least one token"):
        model.predict(["a b", " "])


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{exc.code}: {exc.read().decode()[:3000]}") from None


@pytest.fixture(scope="module")
def served(registered, tmp_path_factory):
    """``mlflow models serve`` of NAME@champion (a real server process): its base URL and log."""
    uri, _ = registered
    tmp_path = tmp_path_factory.mktemp("serve")
    port = free_ports(1)[0]
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # `uvicorn` is found on PATH
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(BIN / "mlflow"), "models", "serve", "-m", MODEL_URI, "--env-manager", "local",
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(base + "/ping", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise AssertionError("mlflow models serve did not come up:\n"
                                         + log_path.read_text(errors="replace")[-5000:]) from None
                time.sleep(0.1)
        yield base, log_path
    finally:
        stop_group(proc)


def _invoke(served, body: dict) -> list[dict]:
    base, log_path = served
    try:
        return _post(base + "/invocations", body)["predictions"]
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{log_path.read_text(errors='replace')[-5000:]}") from None


def test_serves_over_rest(registered, served):
    _, expected = registered
    data = {"columns": ["sentence"], "data": [[s] for s in SENTENCES]}
    everything = _invoke(served, {"dataframe_split": data})
    top = _invoke(served, {"dataframe_split": data, "params": {"layers": "top"}})
    average = _invoke(served, {"inputs": SENTENCES, "params": {"layers": "average"}})
    half = _invoke(served, {"inputs": SENTENCES, "params": {"dtype": "float16"}})
    assert [row["tokens"] for row in top] == TOKENS
    for row_all, row_top, row_average, row_half, exp in zip(everything, top, average, half, expected):
        np.testing.assert_allclose(np.array(row_all["embedding"]), exp, atol=1e-5)
        np.testing.assert_allclose(np.array(row_top["embedding"]), exp[-1], atol=1e-5)
        np.testing.assert_allclose(np.array(row_average["embedding"]), exp.mean(axis=0), atol=1e-5)
        assert row_all["shape"] == list(exp.shape) and row_all["dtype"] == "float32"
        # float16 honoured: the response carries float16 values (each one a float16 exactly) and says so
        assert row_half["dtype"] == "float16" and row_half["shape"] == list(exp.shape)
        values = np.array(row_half["embedding"], dtype=np.float64)
        assert values.shape == exp.shape
        np.testing.assert_array_equal(values.astype(np.float16).astype(np.float64), values)
        np.testing.assert_allclose(values, exp, atol=2e-3)
        assert np.any(values != np.array(row_all["embedding"]))  # rounded, not float32 values


def test_online_and_batch_vectors_of_the_same_raw_text_are_equal(registered, served, cluster, tmp_path):
    """The same raw sentences through the served model and through `elmo embed-corpus` (both
    following the model's recorded tokenization): the same tokens and vectors (1e-6)."""
    import pyarrow.parquet as pq

    from workflows.embedding.config import EmbedJobConfig
    from workflows.embedding.embed_corpus import run_embed_corpus
    from workflows.embedding.output import vectors_of

    online = _invoke(served, {"inputs": SENTENCES})
    (tmp_path / "raw.txt").write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    logs = []
    manifest = run_embed_corpus([str(tmp_path / "raw.txt")], str(tmp_path / "out"), MODEL_URI,
                                EmbedJobConfig(num_actors=1), log=logs.append)
    assert manifest["settings"]["tokenizer"] == "moses" and "language" not in manifest["settings"]
    assert not any("warning" in line for line in logs), logs
    table = pq.read_table(tmp_path / "out" / "raw.txt.parquet")
    assert table.column("tokens").to_pylist() == [row["tokens"] for row in online] == TOKENS
    for j in range(3):
        values, offsets = vectors_of(table.column(f"layer_{j}"))
        for i, row in enumerate(online):
            np.testing.assert_allclose(values[offsets[i]:offsets[i + 1]], np.array(row["embedding"])[j], atol=1e-6)
