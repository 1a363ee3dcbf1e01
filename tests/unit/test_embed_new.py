"""`elmo embed-new`'s parts without a cluster: the `--every` interval and the version folders."""

from __future__ import annotations

import pytest


def test_every_accepts_units_and_refuses_nonsense():
    import argparse

    from workflows.embedding.embed_new import parse_every, version_dir

    assert [parse_every(t) for t in ("90", "90s", "15m", "1h", "1.5d")] == [90, 90, 900, 3600, 129600]
    for bad in ("", "0", "-5m", "1w", "soon"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_every(bad)
    assert version_dir("elmo-news/12") == "elmo-news-v12" and version_dir("sha256:ab12") == "sha256-ab12"


class _Model:
    """What `EmbeddingRun` reads of a `ResolvedModel`."""

    def __init__(self, source: str) -> None:
        self.source = source

    def describe(self) -> dict:
        return {"model_uri": self.source, "model_source": self.source, "model_version": "elmo-x/1",
                "model_digest": "0" * 64}


def test_an_unreachable_mlflow_only_warns_and_a_local_model_logs_no_run_unless_asked(monkeypatch):
    import socket

    from workflows.embedding.job_run import EmbeddingRun

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    said = []
    run = EmbeddingRun("embed-new", _Model("models:/elmo-x/1"), ["in/"], "out/", {"layers": "top"}, said.append)
    assert run.run_id is None and len(said) == 1 and "WARNING: no MLflow run" in said[0]
    run.finish({"files": 1, "tokens": 10}, 1.0)  # nothing to finish, nothing raised
    assert len(said) == 1

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    said.clear()
    local = EmbeddingRun("embed-corpus", _Model("/models/x"), ["in/"], "out/", {}, said.append)
    assert local.run_id is None and said == []  # a local model without MLFLOW_TRACKING_URI: no run, no sqlite file
