"""The registered MLflow model is portable and conventional: it loads and embeds in a Python
where this project is not installed (``elmo_core`` travels with it as code), carries a signature
with the ``layers``/``dtype`` params and an input example, and serves over REST
(``mlflow models serve``) with the same vectors as `Embedder` on the checkpoint.

One tiny untrained biLM, logged once against a real ``mlflow server`` and registered as champion.
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
from tests.helpers.random_inputs import random_sentences

NAME = "elmo-portable"
MODEL_URI = f"models:/{NAME}@champion"
BIN = Path(sys.executable).parent
SITE_PACKAGES = sysconfig.get_paths()["purelib"]
SENTENCES = [" ".join(s) for s in random_sentences(2, seed=5, min_len=3, max_len=9)]

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
    "all": model.predict(pd.DataFrame({"sentence": sentences}))["embedding"].tolist(),
    "average": model.predict(sentences, params={"layers": "average"})["embedding"].tolist(),
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

    tiny = register_tiny(NAME, seed=11, val_ppl=10.0, experiment="pyfunc-portable")
    assert tiny["promoted"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        yield mlflow_server, Embedder(tiny["model"]).embed_all([s.split() for s in SENTENCES])


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
    assert out["tokens"] == [s.split() for s in SENTENCES]

    params = {p["name"]: p for p in json.loads(out["signature"]["params"])}
    assert {k: (v["type"], v["default"]) for k, v in params.items()} == {
        "layers": ("string", "all"), "dtype": ("string", "float32")}
    assert [c["type"] for c in json.loads(out["signature"]["inputs"])] == ["string"]
    assert [c["name"] for c in json.loads(out["signature"]["outputs"])] == ["tokens", "embedding"]
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
    mixed = model.predict(SENTENCES, params={"layers": "mix:0.5,0,0.5", "dtype": "float16"})["embedding"]
    np.testing.assert_allclose(np.array(mixed[0]), (expected[0][0] + expected[0][2]) / 2, atol=2e-3)
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


def test_serves_over_rest(registered, tmp_path):
    uri, expected = registered
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
        data = {"columns": ["sentence"], "data": [[s] for s in SENTENCES]}
        try:
            everything = _post(base + "/invocations", {"dataframe_split": data})["predictions"]
            top = _post(base + "/invocations", {"dataframe_split": data, "params": {"layers": "top"}})["predictions"]
            average = _post(base + "/invocations", {"inputs": SENTENCES, "params": {"layers": "average"}})["predictions"]
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log_path.read_text(errors='replace')[-5000:]}") from None
    finally:
        stop_group(proc)
    assert [row["tokens"] for row in top] == [s.split() for s in SENTENCES]
    for row_all, row_top, row_average, exp in zip(everything, top, average, expected):
        np.testing.assert_allclose(np.array(row_all["embedding"]), exp, atol=1e-5)
        np.testing.assert_allclose(np.array(row_top["embedding"]), exp[-1], atol=1e-5)
        np.testing.assert_allclose(np.array(row_average["embedding"]), exp.mean(axis=0), atol=1e-5)
