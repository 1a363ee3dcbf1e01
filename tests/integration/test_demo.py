"""`elmo demo --quick`, the main job, run as a user runs it: a subprocess in a fresh directory,
no service running. Then run again, to show that it reuses what it did."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")
mlflow = pytest.importorskip("mlflow")
pq = pytest.importorskip("pyarrow.parquet")

from tests.helpers import REPO  # noqa: E402
from tests.helpers.console import assert_one_line_per_step  # noqa: E402


def run_demo(out: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_ADDRESS"))}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "workflows.demo", "--quick", "--output-dir", str(out)], cwd=out.parent,
                          env=env, capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    proc = run_demo(out)
    assert proc.returncode == 0, proc.stderr[-4000:] + (out / "demo.log").read_text()[-4000:]
    return out, proc.stderr, json.loads((out / "summary.json").read_text())


def test_output_is_one_line_per_step_and_ray_stays_in_the_log(demo):
    out, stderr, _ = demo
    lines = assert_one_line_per_step(stderr, 8)
    noisy = [line for line in lines if "INFO" in line or "WARNING" in line or "core_worker" in line]
    assert not noisy, noisy[:5]
    log = (out / "demo.log").read_text()
    assert "[embed]" in log and "Ray Train run" in log  # the stages' own output went to the log


def test_a_champion_is_registered_and_adaptation_lowers_domain_perplexity(demo):
    out, _, summary = demo
    client = mlflow.MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    champion = client.get_model_version_by_alias("elmo-demo", "champion")
    assert int(champion.version) == summary["pretrain"]["version"] == 1
    assert float(champion.tags["val_ppl"]) == pytest.approx(summary["pretrain"]["val_ppl"])
    adapted = client.get_model_version_by_alias("elmo-demo-python", "champion")
    assert int(adapted.version) == summary["adapt"]["version"]
    assert adapted.tags["parent_model"] == f"elmo-demo/{champion.version}"
    adapt = summary["adapt"]
    assert adapt["target_ppl_after"] < adapt["target_ppl_before"], adapt
    assert float(adapted.tags["val_ppl"]) == pytest.approx(adapt["target_ppl_after"])
    # exported as a native model directory, the registered version's weights
    from elmo_core.weights import load_model_folder

    assert (out / "model" / "source.txt").read_text().strip() == f"models:/elmo-demo-python/{adapted.version}"
    model, vocab = load_model_folder(out / "model")
    assert vocab is not None and len(vocab) == model.config.training.n_tokens_vocab
    # the general held-out text was measured before and after as well (forgetting)
    assert adapt["source_ppl_before"] == pytest.approx(summary["pretrain"]["val_ppl"], rel=1e-4)
    assert adapt["source_ppl_after"] != pytest.approx(adapt["source_ppl_before"], rel=1e-4)


def test_every_input_sentence_has_an_embedding(demo):
    from preprocessing.text import LineProcessor
    from workflows.embedding.config import EmbedJobConfig

    out, _, summary = demo
    root = out / "embeddings" / "corpus"
    manifest = json.loads((root / "_manifest.json").read_text())
    assert manifest["model_version"] == f"elmo-demo-python/{summary['adapt']['version']}"
    assert len(manifest["files"]) == 2
    # each line (a paragraph; numbered from 1) split into sentences and tokenized as `elmo preprocess` does,
    # sentences over 256 tokens cut into pieces: every one must have its row
    sentences_of = LineProcessor(EmbedJobConfig(input_format="document", tokenizer="moses", language="en").preprocess_config())
    for entry in manifest["files"]:
        lines = Path(entry["uri"].removeprefix("file://")).read_text(encoding="utf-8").splitlines()
        expected = [(i, tokens) for i, line in enumerate(lines, start=1) for tokens in sentences_of(line)[0]]
        table = pq.read_table(root / entry["output"])
        assert table.num_rows == len(expected) == entry["sentences"]
        rows = sorted(zip(table.column("line").to_pylist(), table.column("sentence_index").to_pylist(),
                          table.column("tokens").to_pylist()))
        assert [(line, tokens) for line, _, tokens in rows] == expected
        for name in ("layer_0", "layer_1", "layer_2"):
            vectors = table.column(name).to_pylist()
            assert all(len(v) == len(t) for v, t in zip(vectors, table.column("tokens").to_pylist()))
            assert {len(token) for v in vectors for token in v} == {32}  # tiny preset: 2 x 16


def test_the_schedulers_second_pass_embeds_only_the_added_file(demo):
    out, _, summary = demo
    first, second = summary["embed_new"]["passes"]
    assert first["status"] == "done" and len(first["embedded"]) == 2
    assert second["status"] == "done" and len(second["embedded"]) == 1
    assert Path(second["embedded"][0]).name.startswith("python-modules-2.txt.")
    assert not set(second["embedded"]) & set(first["embedded"])
    ledger = sorted((out / "embeddings" / "scheduled" / "_ledger").glob("*.json"))
    assert len(ledger) == 3


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_the_plots_are_written(demo):
    out, _, summary = demo
    for name in ("perplexity", "contexts"):
        path = Path(summary["plots"][name])
        width, height = png_size(path)
        assert width >= 800 and height >= 400 and path.stat().st_size > 20_000, (name, width, height)


def test_running_it_again_reuses_every_stage(demo):
    out, _, summary = demo
    proc = run_demo(out)
    assert proc.returncode == 0, proc.stderr[-4000:]
    err = proc.stderr
    assert "reused elmo-demo v1" in err and f"reused elmo-demo-python v{summary['adapt']['version']}" in err
    assert "reused: same inputs, model and settings" in err
    assert "pass 1: nothing new; pass 2: nothing new" in err
    client = mlflow.MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    assert len(client.search_model_versions("name='elmo-demo'")) == 1
    assert len(client.search_model_versions("name='elmo-demo-python'")) == 1
