"""`elmo embed-corpus` on a real local Ray, with a model registered in a real `mlflow server`:
vectors equal `elmo_core` run directly, HDF5 equal to `elmo embed`, the pinned version recorded,
bad input reported, nothing committed on failure."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers.random_inputs import random_sentences

ray = pytest.importorskip("ray")
NAME = "elmo-embed"


@pytest.fixture(scope="module")
def registry(mlflow_server, register_tiny):
    """A tiny seeded biLM registered as NAME version 1 (champion) on the session's server: its
    URI, the model, its native checkpoint and the logged model's URI."""
    tiny = register_tiny(NAME, seed=21, val_ppl=10.0, experiment="embed-tests")
    assert tiny["version"] == 1
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        yield {"uri": mlflow_server, "model": tiny["model"], "dir": tiny["dir"], "model_uri": tiny["model_uri"]}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two text files (one gzip'd, in a sub-directory, with blank lines) of generated sentences."""
    root = tmp_path_factory.mktemp("corpus")
    sentences = random_sentences(160, seed=4, max_len=30)
    (root / "in" / "sub").mkdir(parents=True)
    (root / "in" / "a.txt").write_text("".join(" ".join(s) + "\n" for s in sentences[:100]), encoding="utf-8")
    lines = []
    for i, s in enumerate(sentences[100:]):
        lines.append(" ".join(s))
        if i % 9 == 0:
            lines.append("   ")  # blank: skipped and counted
    with gzip.open(root / "in" / "sub" / "b.txt.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return root, sentences, lines


def config(**changes):
    from workflows.embedding.config import EmbedJobConfig

    return EmbedJobConfig(tokenizer="whitespace", lines_per_block=32, **changes)


def rows_of(path):
    table = pq.read_table(path)
    return table, table.schema.metadata


def test_vectors_equal_elmo_core_from_the_registry_whatever_the_actors(cluster, registry, corpus, tmp_path,
                                                                       monkeypatch):
    from elmo_core.embedder import Embedder
    from workflows.embedding.embed_corpus import run_embed_corpus
    from workflows.embedding.output import read_description, vectors_of

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry["uri"])
    root, sentences, _ = corpus
    expected = Embedder(registry["model"]).embed_all(sentences)
    outputs, manifests = {}, {}
    for actors, batch_tokens in ((1, 6000), (2, 40)):  # other batches and actors: the same vectors
        out = tmp_path / f"out{actors}"
        manifest = run_embed_corpus([str(root / "in")], str(out), f"models:/{NAME}@champion",
                                    config(num_actors=actors, batch_tokens=batch_tokens, cpus_per_actor=1))
        assert manifest["model_version"] == f"{NAME}/1" and manifest["model_source"] == f"models:/{NAME}/1"
        assert manifest["sentences"] == 160 and manifest["blank_lines"] == 7
        files = {e["key"]: e for e in manifest["files"]}
        assert set(files) == {"a.txt", "sub/b.txt.gz"} and files["sub/b.txt.gz"]["lines"] == 67
        assert files["a.txt"]["tokens"] == sum(len(s) for s in sentences[:100])
        table_a = pq.read_table(out / "a.txt.parquet")
        table_b = pq.read_table(out / "sub" / "b.txt.gz.parquet")
        table = pa.concat_tables([table_a, table_b])
        assert table.column_names == ["sentence_id", "source", "line", "sentence_index", "tokens",
                                      "layer_0", "layer_1", "layer_2"]
        assert table.column("tokens").to_pylist() == [list(s) for s in sentences]
        assert table_b.column("line").to_pylist()[:3] == [1, 3, 4]  # line numbers count the blank lines
        for j in range(3):
            values, offsets = vectors_of(table.column(f"layer_{j}"))
            for i in range(len(sentences)):
                np.testing.assert_allclose(values[offsets[i]:offsets[i + 1]], expected[i][j], atol=1e-5)
        outputs[actors] = table
        manifests[actors] = manifest
        description = read_description(str(out / "a.txt.parquet"))
        assert description["model_version"] == f"{NAME}/1" and description["layers"] == "all"
        assert description["input"]["sha256"] == files["a.txt"]["sha256"]
    # the job is stateless: 1 actor with big batches and 2 actors with tiny ones agree to 1e-6
    for j in range(3):
        a = vectors_of(outputs[1].column(f"layer_{j}"))[0]
        b = vectors_of(outputs[2].column(f"layer_{j}"))[0]
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert_embedding_runs(registry["uri"], tmp_path, manifests, sentences, str(root / "in"))


def assert_embedding_runs(tracking_uri: str, tmp_path, manifests: dict, sentences, source: str) -> None:
    """Each run is an MLflow run linked to version 1: "which model made these vectors?" and "what
    did version 1 embed?" are one query each."""
    import mlflow

    from workflows.registry import tracking

    client = mlflow.MlflowClient(tracking_uri)
    model_id = tracking.logged_model_id(client.get_model_version(NAME, "1"))
    assert model_id and model_id.startswith("m-")
    for actors, manifest in manifests.items():
        out = str(tmp_path / f"out{actors}")
        (run,) = tracking.embedding_runs_of_output(out)  # which model made these vectors?
        assert run.info.run_id == manifest["mlflow_run_id"] and run.info.status == "FINISHED"
        tags, metrics = run.data.tags, run.data.metrics
        assert tags[tracking.EMBED_MODEL_TAG] == f"{NAME}/1" and tags[tracking.EMBED_JOB_TAG] == "embed-corpus"
        assert (tags[tracking.EMBED_MODEL_NAME_TAG], tags[tracking.EMBED_MODEL_VERSION_TAG]) == (NAME, "1")
        assert tags[tracking.EMBED_INPUT_TAG] == source and tags[tracking.EMBED_OUTPUT_TAG] == out
        assert metrics["sentences"] == 160 and metrics["files"] == 2 and metrics["quarantined"] == 0
        assert metrics["tokens"] == sum(len(s) for s in sentences) and metrics["tokens_per_second"] > 0
        assert run.data.params["model_source"] == f"models:/{NAME}/1" and run.data.params["layers"] == "all"
        linked = [m.model_id for m in client.get_run(run.info.run_id).inputs.model_inputs]
        assert linked == [model_id]  # MLflow's lineage: the run's model input is the version's logged model
    by_version = tracking.embedding_runs_of_version(NAME, 1)  # what did version 1 embed?
    outputs_of_version = [r.data.tags[tracking.EMBED_OUTPUT_TAG] for r in by_version]
    assert [o for o in outputs_of_version if o.startswith(str(tmp_path))] == [str(tmp_path / "out1"),
                                                                               str(tmp_path / "out2")]
    last = client.get_model_version(NAME, "1").tags[tracking.EMBED_LAST_RUN_TAG]
    assert last == manifests[2]["mlflow_run_id"]


def test_hdf5_is_what_elmo_embed_writes(cluster, registry, corpus, tmp_path):
    from workflows.embedding.embed_corpus import run_embed_corpus

    root, _, lines = corpus
    plain = tmp_path / "plain.txt"  # no blank lines: elmo embed accepts it
    plain.write_text("".join(line + "\n" for line in lines if line.strip()), encoding="utf-8")
    with_blanks = tmp_path / "blanks.txt"
    with_blanks.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    manifest = run_embed_corpus([str(plain), str(with_blanks)], str(out), str(registry["dir"]),
                                config(format="hdf5", layers="top", dtype="float16"))
    assert manifest["model_version"] == str(registry["dir"])  # outside the registry: the path and digest
    reference = tmp_path / "reference.hdf5"
    proc = subprocess.run([sys.executable, "-m", "elmo_cli", "embed", str(plain), str(reference), "--top",
                           "--dtype", "float16", "--model", str(registry["dir"])], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    with h5py.File(reference) as ref, h5py.File(out / "plain.txt.hdf5") as got:
        assert sorted(ref.keys()) == sorted(got.keys())
        assert ref["sentence_to_index"][0] == got["sentence_to_index"][0]
        for key in ref:
            if key != "sentence_to_index":
                assert got[key].dtype == np.float16 and got[key].shape == ref[key].shape
                np.testing.assert_allclose(got[key][...], ref[key][...], atol=2e-3)
    with h5py.File(out / "blanks.txt.hdf5") as got, h5py.File(out / "plain.txt.hdf5") as ref:
        nonblank = [i for i, line in enumerate(lines) if line.strip()]
        assert sorted(int(k) for k in got if k != "sentence_to_index") == nonblank  # keys keep line numbers
        for k, i in enumerate(nonblank):
            np.testing.assert_array_equal(got[str(i)][...], ref[str(k)][...])
    entry = {e["key"]: e for e in manifest["files"]}["blanks.txt"]
    assert entry["blank_lines"] == len(lines) - len(nonblank)


def test_parquet_input_mix_layers_and_reruns(cluster, registry, corpus, tmp_path):
    from elmo_core.embedder import Embedder
    from workflows.embedding.embed_corpus import run_embed_corpus
    from workflows.embedding.output import vectors_of
    from workflows.embedding.pipeline import EmbedError

    _, sentences, _ = corpus
    data = tmp_path / "data"
    data.mkdir()
    pq.write_table(pa.table({"sentence_id": [f"x:{i}:0" for i in range(20)], "source": ["x"] * 20,
                             "line": list(range(1, 21)), "sentence_index": pa.array([0] * 20, pa.int32()),
                             "tokens": [list(s) for s in sentences[:20]]}), data / "part-0.parquet")
    out = tmp_path / "out"
    weights = [0.2, 0.3, 0.5]
    manifest = run_embed_corpus([str(data)], str(out), str(registry["dir"]),
                                config(input_format="parquet", layers="mix:0.2,0.3,0.5"))
    table = pq.read_table(out / "part-0.parquet.parquet")
    assert table.column("sentence_id").to_pylist()[3] == "x:3:0"
    values, offsets = vectors_of(table.column("embedding"))
    for i, layers in enumerate(Embedder(registry["model"]).embed_all(sentences[:20])):
        np.testing.assert_allclose(values[offsets[i]:offsets[i + 1]], np.tensordot(weights, layers, 1), atol=1e-5)
    # the same again: nothing to do; other settings into the same OUT: refused without --overwrite
    again = run_embed_corpus([str(data)], str(out), str(registry["dir"]),
                             config(input_format="parquet", layers="mix:0.2,0.3,0.5"))
    assert again["created"] == manifest["created"]
    with pytest.raises(EmbedError, match="--overwrite"):
        run_embed_corpus([str(data)], str(out), str(registry["dir"]), config(input_format="parquet", layers="top"))


def test_bad_input_is_named_and_nothing_is_committed(cluster, registry, corpus, tmp_path):
    root, _, _ = corpus
    good = root / "in" / "a.txt"
    bad = tmp_path / "bad.txt.gz"
    packed = gzip.compress("".join(" ".join(s) + "\n" for s in random_sentences(300, seed=5)).encode())
    bad.write_bytes(packed[:len(packed) // 2])  # truncated gzip
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "blank.txt").write_text("\n  \n\n", encoding="utf-8")

    def cli(*args):
        env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
        return subprocess.run([sys.executable, "-m", "workflows.embedding.embed_corpus", *map(str, args), "--model", registry["dir"],
                               "--tokenizer", "whitespace"], capture_output=True, text=True, env=env, timeout=300)

    proc = cli(good, bad, "--output", tmp_path / "out1")
    assert proc.returncode == 2 and "bad.txt.gz" in proc.stderr and "--quarantine-bad-files" in proc.stderr
    assert not (tmp_path / "out1" / "_manifest.json").exists()
    proc = cli(good, bad, "--output", tmp_path / "out2", "--quarantine-bad-files")
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((tmp_path / "out2" / "_manifest.json").read_text())
    assert manifest["quarantined"] == [str(bad)] and (tmp_path / "out2" / "a.txt.parquet").exists()
    assert not (tmp_path / "out2" / "bad.txt.gz.parquet").exists()
    proc = cli(empty, "--output", tmp_path / "out3")
    assert proc.returncode == 2 and "no sentences" in proc.stderr
    proc = cli(good, "--output", tmp_path / "out4", "--layers", "mix:1,2")
    assert proc.returncode == 2 and "3 weights" in proc.stderr


def test_an_input_split_over_actors_and_parts_reads_back_in_line_order(cluster, registry, corpus, tmp_path,
                                                                      monkeypatch):
    """The actors write the parts; the driver iterates only their small records (no vector
    columns); the folder, its parts and `read_description` give the input back in line order."""
    from ray.data import Dataset

    from elmo_core.embedder import Embedder
    from workflows.embedding.embed_corpus import run_embed_corpus
    from workflows.embedding.output import read_description, vectors_of
    from workflows.embedding.pipeline import RECORDS

    seen = []  # (columns, bytes) of every block the driver iterates
    iter_batches = Dataset.iter_batches

    def recording(self, *args, **kwargs):
        for block in iter_batches(self, *args, **kwargs):
            seen.append((block.schema.names, block.nbytes))
            yield block

    monkeypatch.setattr(Dataset, "iter_batches", recording)
    root, sentences, _ = corpus
    out = tmp_path / "out"
    manifest = run_embed_corpus([str(root / "in" / "a.txt")], str(out), str(registry["dir"]),
                                config(num_actors=2, batch_tokens=200).replace(lines_per_block=8))
    assert seen and all(names == RECORDS.names for names, _ in seen)  # parts' records, no vectors
    assert sum(n for _, n in seen) < 100 * 1024  # vs ~1 MB of vectors
    (entry,) = manifest["files"]
    parts = entry["parts"]
    assert len(parts) >= 2 and sum(p["rows"] for p in parts) == entry["sentences"] == 100
    assert [p["first_line"] for p in parts] == sorted(p["first_line"] for p in parts)
    assert [p["first_line"] for p in parts[1:]] == [p["last_line"] + 1 for p in parts[:-1]]  # every line once
    assert sorted(os.listdir(out / "a.txt.parquet")) == sorted(
        ["_common_metadata", *(os.path.basename(p["path"]) for p in parts)])
    assert not (out / "_tmp").exists()  # nothing left staged
    expected = Embedder(registry["model"]).embed_all(sentences[:100])
    table = pq.read_table(out / "a.txt.parquet")  # the folder: its parts in line order
    assert table.column("line").to_pylist() == list(range(1, 101))
    rows = 0
    for part in parts:  # each part alone: its lines, and the same vectors
        piece = pq.read_table(out / part["path"])
        assert piece.column("line").to_pylist() == list(range(part["first_line"], part["last_line"] + 1))
        assert read_description(str(out / part["path"]))["part"]["rows"] == piece.num_rows == part["rows"]
        rows += piece.num_rows
    for j in range(3):
        values, offsets = vectors_of(table.column(f"layer_{j}"))
        for i in range(100):
            np.testing.assert_allclose(values[offsets[i]:offsets[i + 1]], expected[i][j], atol=1e-5)
    description = read_description(str(out / "a.txt.parquet"))
    assert (description["sentences"], description["tokens"]) == (100, entry["tokens"])
    assert description["input"]["sha256"] == entry["sha256"] and rows == 100
