"""Pretraining and adaptation on a real local Ray (Ray Train, DDP on gloo), tracked by a real
`mlflow server` process on 127.0.0.1."""

from __future__ import annotations

import glob
import inspect
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from preprocessing.sample_text import pydoc_sentences
from preprocessing.config import PreprocessConfig
from preprocessing.dataset import Dataset
from workflows.training.config import TrainJobConfig

pytest.importorskip("ray")
LICENSES = "/usr/share/common-licenses"


def target_domain_lines() -> list[str]:
    """Real text of another domain present on the machine: licence texts (legal English), or
    the standard library's module docstrings where those are absent."""
    paragraphs = []
    files = sorted(glob.glob(os.path.join(LICENSES, "*")))
    if files:
        for path in files:
            if os.path.isfile(path):
                text = open(path, encoding="utf-8", errors="replace").read()
                paragraphs.extend(" ".join(p.split()) for p in text.split("\n\n"))
    else:
        import email, http, json as json_module, logging  # noqa: E401

        for module in (email, http, json_module, logging):
            paragraphs.extend(" ".join(p.split()) for p in (inspect.getdoc(module) or "").split("\n\n"))
    lines = []
    for p in paragraphs:
        words = p.split()
        lines.extend(" ".join(words[i:i + 30]) for i in range(0, len(words), 30) if len(words[i:i + 30]) >= 5)
    return lines


@pytest.fixture(scope="module")
def ray_storage(cluster, tmp_path_factory):
    """Where Ray Train keeps this module's runs, on the session's Ray."""
    return tmp_path_factory.mktemp("ray_storage")


@pytest.fixture(scope="module")
def data(cluster, tmp_path_factory):
    """Source domain: CPython's pydoc prose; target: licence texts, with the source vocabulary."""
    from preprocessing.driver import run_preprocess

    root = tmp_path_factory.mktemp("wf")
    (root / "source").mkdir()
    (root / "target").mkdir()
    (root / "source" / "pydoc.txt").write_text("".join(" ".join(s) + "\n" for s in pydoc_sentences(limit=1200)))
    (root / "target" / "licences.txt").write_text("".join(line + "\n" for line in target_domain_lines()))
    config = PreprocessConfig(tokenizer="whitespace", min_count=2, validation_fraction=0.1, test_fraction=0.05)
    run_preprocess([str(root / "source")], str(root / "source_data"), config, log=lambda m: None)
    run_preprocess([str(root / "target")], str(root / "target_data"), config, log=lambda m: None,
                   vocab_path=str(root / "source_data" / "vocab.txt"))
    return {"source": str(root / "source_data"), "target": str(root / "target_data")}


def tiny_options(vocab_size: int) -> dict:
    from workflows.training.pretrain import model_options

    return model_options("tiny", vocab_size, dropout=0.0)


def job(data_dir: str, **changes) -> TrainJobConfig:
    base = TrainJobConfig(data=data_dir, max_steps=4, batch_tokens=600, shuffle_buffer=400, eval_every=4,
                          checkpoint_every=2, report_every=2, eval_max_sentences=60, max_failures=1)
    return base.replace(**changes)


def final_state(result) -> dict[str, torch.Tensor]:
    from workflows.training.checkpoints import load_training_checkpoint

    model, _, _, state = load_training_checkpoint(Path(result.checkpoint_dir))
    assert state["step"] == result.final["step"]
    return model.state_dict()


def assert_same_parameters(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst <= atol, f"max parameter difference {worst}"


@pytest.fixture(scope="module")
def one_worker_run(ray_storage, data):
    from workflows.training.driver import run_training, unique_name

    dataset = Dataset.open(data["source"])

    vocab = dataset.vocabulary
    return run_training(job(data["source"]), dataset, str(ray_storage), unique_name("w1"),
                     model_config=tiny_options(len(vocab)))


def test_ddp_two_workers_match_one_worker(ray_storage, data, one_worker_run):
    from workflows.training.driver import run_training, unique_name

    dataset = Dataset.open(data["source"])

    vocab = dataset.vocabulary
    two = run_training(job(data["source"], num_workers=2), dataset, str(ray_storage), unique_name("w2"),
                    model_config=tiny_options(len(vocab)))
    assert two.final["step"] == one_worker_run.final["step"] == 4
    # training moved the parameters, identically on 1 and 2 workers
    assert_same_parameters(final_state(one_worker_run), final_state(two), atol=2e-5)
    assert two.final["train_loss"] == pytest.approx(one_worker_run.final["train_loss"], rel=1e-4)
    assert two.final["val_ppl"] == pytest.approx(one_worker_run.final["val_ppl"], rel=1e-4)


def test_the_warm_up_scales_the_rate_and_the_gradient_norm_is_reported(ray_storage, data):
    from workflows.training.driver import run_training, unique_name

    dataset = Dataset.open(data["source"])
    result = run_training(job(data["source"], warmup_steps=8), dataset, str(ray_storage),
                          unique_name("warm"), model_config=tiny_options(len(dataset.vocabulary)))
    reports = {int(m["step"]): m for m in result.history}  # the reports with a checkpoint: steps 2 and 4
    rate = tiny_options(len(dataset.vocabulary))["learning_rate"]
    assert reports[2]["learning_rate"] == pytest.approx(rate * 2 / 8)  # step 2's report: 0-based step 1
    assert reports[4]["learning_rate"] == pytest.approx(rate * 4 / 8)
    for step in (2, 4):
        mean, largest, clipped = (float(reports[step][k]) for k in ("grad_norm", "grad_norm_max", "clipped_fraction"))
        assert 0.0 < mean <= largest and clipped in (0.0, 0.5, 1.0)


def test_worker_failure_resumes_and_ends_equal(ray_storage, data, one_worker_run):
    from workflows.training.driver import run_training, unique_name

    dataset = Dataset.open(data["source"])

    vocab = dataset.vocabulary
    name = unique_name("fault")
    faulty = run_training(job(data["source"], num_workers=2, fail_at_step=3), dataset, str(ray_storage), name,
                       model_config=tiny_options(len(vocab)))
    assert os.path.exists(os.path.join(str(ray_storage), f"{name}.fault-injected"))  # it did fail once
    assert faulty.final["step"] == 4
    assert_same_parameters(final_state(one_worker_run), final_state(faulty), atol=2e-5)


def test_global_batches_cover_every_sentence_once_per_epoch(data):
    import pyarrow.parquet as pq

    from workflows.training.batches import COLUMNS, global_batches

    tables = [pq.read_table(u, columns=COLUMNS) for u in Dataset.open(data["source"]).split_files("train")]
    n = sum(t.num_rows for t in tables)
    for world in (1, 2, 3):
        seen, padded, real = 0, 0, 0
        stream = global_batches(lambda epoch: iter(tables), 600, 97, world, seed=5)
        while True:
            batch = next(stream)
            if batch.epoch > 0:
                break
            assert len(batch.sentences) >= world
            shares = [batch.share(r, world) for r in range(world)]
            assert sum(len(s) for s in shares) == len(batch.sentences)
            seen += len(batch.sentences)
            longest = max(len(s) for s in batch.sentences) + 2
            padded += longest * len(batch.sentences)
            real += sum(len(s) + 2 for s in batch.sentences)
        assert n - world < seen <= n  # at most world-1 carried into the next epoch, none dropped
        assert real / padded > 0.85  # length bucketing keeps padding small
    a = [b.num_tokens() for _, b in zip(range(5), global_batches(lambda e: iter(tables), 600, 97, 2, 5))]
    b = [b.num_tokens() for _, b in zip(range(5), global_batches(lambda e: iter(tables), 600, 97, 2, 5))]
    assert a == b


def footer_readers_started(address: str) -> int:
    """FooterReader actors Ray Data has started so far on the cluster at ``address`` (named, since
    other Rays may run on the machine; the state API lags by about a second)."""
    from ray.util.state import list_actors

    return len(list_actors(address, filters=[("class_name", "=", "FooterReader")], limit=10_000,
                           raise_on_missing_output=False))


def test_a_split_is_listed_by_one_footer_reader_per_ten_files(cluster, data, monkeypatch):
    from workflows.training.driver import FOOTER_READER_ENV, split_dataset

    def started_by_reading(split: str) -> int:
        before = footer_readers_started(cluster)
        rows = sum(t.num_rows for t in split_dataset(Dataset.open(data["source"]), split).iter_batches(batch_format="pyarrow"))
        assert rows > 0
        counts, deadline = [], time.time() + 2
        while time.time() < deadline:  # the largest count seen once the state API has caught up
            counts.append(footer_readers_started(cluster) - before)
            time.sleep(0.5)
        return max(counts)

    monkeypatch.delenv(FOOTER_READER_ENV, raising=False)
    assert len(Dataset.open(data["source"]).split_files("train")) <= 10
    assert started_by_reading("train") == 1  # Ray's default pool is 32 processes
    assert FOOTER_READER_ENV not in os.environ  # set only while the dataset is made
    monkeypatch.setenv(FOOTER_READER_ENV, "2")  # the user's setting wins
    assert started_by_reading("train") == 2


def test_stream_mode_on_two_workers_with_a_failure_ends_as_one_uninterrupted_worker(ray_storage, data):
    """Windows of running text with the state carried: the checkpoint holds every row's state
    (gathered from both workers), so a run that fails and resumes on 2 workers ends with the
    parameters of an uninterrupted 1-worker run."""
    from safetensors.torch import load_file

    from workflows.training.pretrain import model_options
    from workflows.training.driver import run_training, unique_name

    dataset = Dataset.open(data["source"])

    vocab = dataset.vocabulary
    stream = dict(mode="stream", stream_rows=4, unroll_steps=10, max_steps=6, eval_every=3, checkpoint_every=2)
    # plain SGD: Adam's per-parameter normalisation turns float-rounding noise in near-zero
    # gradients into whole steps, which would hide what this test checks
    options = model_options("tiny", len(vocab), dropout=0.0, optimizer="sgd", learning_rate=0.5)
    one = run_training(job(data["source"], **stream), dataset, str(ray_storage), unique_name("s1"), model_config=options)
    name = unique_name("s2fault")
    two = run_training(job(data["source"], num_workers=2, fail_at_step=3, **stream), dataset, str(ray_storage), name,
                    model_config=options)
    assert os.path.exists(os.path.join(str(ray_storage), f"{name}.fault-injected"))  # it did fail once
    assert one.final["step"] == two.final["step"] == 6
    assert_same_parameters(final_state(one), final_state(two), atol=1e-5)
    assert two.final["val_ppl"] == pytest.approx(one.final["val_ppl"], rel=1e-4)
    carried = load_file(os.path.join(one.checkpoint_dir, "stream_state.safetensors"))
    assert carried["c.0"].shape[:2] == (2, 4) and float(carried["h.1"].abs().sum()) > 0
    # the evaluations of 3 and 6 steps: the better one's model is kept beside the last one
    assert os.path.isdir(os.path.join(one.checkpoint_dir, "best_model"))
    assert one.final["best_step"] in (3, 6) and one.final["best_val_ppl"] <= one.final["val_ppl"]


@pytest.fixture(scope="module")
def registered(ray_storage, data, mlflow_server):
    """A pretrained model registered as elmo-test version 1 on the server (used by the registry
    and the adaptation tests, so each can also run alone)."""
    from workflows.training.pretrain import pretrain

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_server
    try:
        dataset = Dataset.open(data["source"])
        vocab = dataset.vocabulary
        yield pretrain(job(data["source"], max_steps=8, eval_every=4, checkpoint_every=4), "tiny", "elmo-test",
                       str(ray_storage), model_config=model_options_with_dropout(len(vocab)))
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous


def test_pretrain_registers_and_the_gate_refuses_a_worse_model(registered, mlflow_server, monkeypatch):
    import mlflow
    import numpy as np

    from elmo_core.embedder import Embedder
    from elmo_core.weights import load_model_folder

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    good = registered
    assert good["version"] == 1 and good["promoted"]
    client = mlflow.MlflowClient(mlflow_server)
    history = {m: [x.value for x in client.get_metric_history(good["run_id"], m)]
               for m in ("train_loss", "tokens_per_second", "val_ppl", "val_ppl_forward", "val_ppl_backward")}
    assert all(history.values()) and len(history["val_ppl"]) == 2
    f, b = history["val_ppl_forward"][-1], history["val_ppl_backward"][-1]
    assert history["val_ppl"][-1] == pytest.approx((f * b) ** 0.5, rel=1e-9)  # geometric mean
    version = client.get_model_version_by_alias("elmo-test", "champion")
    assert version.version == "1" and float(version.tags["val_ppl"]) == pytest.approx(good["val_ppl"])
    assert version.tags["data_manifest"] and "curves.png" in [a.path for a in client.list_artifacts(good["run_id"])]

    # the registered model loads back by alias and embeds like the checkpoint it came from
    pyfunc = mlflow.pyfunc.load_model("models:/elmo-test@champion")
    sentences = ["The quick brown fox jumps .", "Python is a language"]
    out = pyfunc.predict(__import__("pandas").DataFrame({"sentence": sentences}))
    model, _ = load_model_folder(good["model_dir"])  # the best evaluation's model is the one registered
    assert good["model_dir"].endswith("best_model") and good["val_ppl"] == min(history["val_ppl"])
    expected = Embedder(model.eval()).embed_all([s.split() for s in sentences])
    for row, exp in zip(out.to_dict("records"), expected):
        np.testing.assert_allclose(np.array(row["embedding"]), exp, atol=1e-5)  # default: all layers
    averaged = pyfunc.predict(sentences, params={"layers": "average"})
    np.testing.assert_allclose(np.array(averaged["embedding"][1]), expected[1].mean(axis=0), atol=1e-5)

    # the gate: a version whose held-out perplexity is worse becomes candidate, not champion
    from workflows.registry import tracking

    worse = tracking.register(good["model_uri"], "elmo-test", {"val_ppl": good["val_ppl"] * 1.5,
                                                               "data_manifest": "same"})
    assert worse["version"] == 2 and not worse["promoted"] and worse["previous_champion"] == 1
    assert client.get_model_version_by_alias("elmo-test", "champion").version == "1"
    assert client.get_model_version_by_alias("elmo-test", "candidate").version == "2"


def test_the_registered_version_carries_what_the_gate_compares(registered, data, mlflow_server, tmp_path,
                                                              monkeypatch):
    """The tags the champion gate compares (issue 27), from a real `elmo pretrain` run; the run's
    step, epoch and placement are tags, not metrics."""
    import mlflow

    from preprocessing.dataset import Dataset
    from workflows.registry.comparability import heldout_digest

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    client = mlflow.MlflowClient(mlflow_server)
    tags = client.get_model_version("elmo-test", "1").tags
    assert tags["heldout_digest"] == heldout_digest(Dataset.open(data["source"]).manifest) is not None
    assert tags["vocab_digest"] == Dataset.open(data["source"]).vocabulary.digest()
    assert (tags["eval_mode"], tags["eval_max_sentences"]) == ("sentence", "60")
    assert tags["gate"].startswith("promoted to champion")
    # how its training text was tokenized: a version tag, and recorded in the model folder that
    # every consumer reads (the pyfunc, the embedding jobs)
    from elmo_core.tokenization import Tokenization, read_tokenization
    from workflows.registry import tracking

    assert (tags["tokenizer"], tags["language"]) == ("whitespace", "en")
    assert read_tokenization(registered["model_dir"]) == Tokenization("whitespace", "en")
    logged = tracking.download_model("models:/elmo-test/1", str(tmp_path / "logged"))
    assert read_tokenization(logged) == Tokenization("whitespace", "en")
    run = client.get_run(registered["run_id"]).data
    assert not {"step", "epoch", "num_workers", "num_nodes"} & set(run.metrics)
    assert (run.tags["step"], run.tags["epoch"], run.tags["num_workers"], run.tags["num_nodes"]) == ("8", "0", "1", "1")


def model_options_with_dropout(vocab_size: int) -> dict:
    from workflows.training.pretrain import model_options

    return model_options("tiny", vocab_size)


def test_a_finished_run_is_registered_again_as_its_own_step(registered, mlflow_server, monkeypatch):
    """`elmo register RUN_ID`: every tag from the run, the gate applied (again, on the same version,
    for a run already registered); refusals name the problem."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    client = mlflow.MlflowClient(mlflow_server)
    original = client.get_model_version("elmo-test", "1")
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    cli = [sys.executable, "-m", "elmo_cli", "register"]
    done = subprocess.run([*cli, registered["run_id"], "--registered-model", "elmo-test-copy"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "registered elmo-test-copy version 1" in done.stdout, done.stderr[-2000:]
    copy = client.get_model_version_by_alias("elmo-test-copy", "champion")
    for tag in ("val_ppl", "data_manifest", "vocab_digest", "run_id", "training_mode"):
        assert copy.tags[tag] == original.tags[tag], tag
    assert copy.source == original.source  # the same logged model

    # re-gating: with the champion alias gone, registering the run again makes no new version;
    # the gate gives the alias back to that version
    client.delete_registered_model_alias("elmo-test-copy", "champion")
    again = subprocess.run([*cli, registered["run_id"], "--registered-model", "elmo-test-copy"], env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already registered as elmo-test-copy version 1" in again.stdout and "promoted" in again.stdout
    assert [v.version for v in client.search_model_versions("name = 'elmo-test-copy'")] == ["1"]
    assert client.get_model_version_by_alias("elmo-test-copy", "champion").version == "1"
    refused = subprocess.run([*cli, "0" * 32, "--registered-model", "elmo-test-copy"], env=env,
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "no run" in refused.stderr


def test_adaptation_lowers_target_perplexity(ray_storage, data, mlflow_server, registered, monkeypatch):
    import mlflow

    from workflows.training.adapt import adapt

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    assert registered["version"] == 1  # the champion this adaptation starts from
    out = adapt(job(data["target"], max_steps=12, eval_every=6, checkpoint_every=6), "models:/elmo-test@champion",
                "elmo-test-legal", str(ray_storage), source_data=data["source"])
    assert out["target_ppl_after"] < 0.8 * out["target_ppl_before"]
    # the source data's held-out perplexity before adapting is the parent's own, as registered
    assert out["source_ppl_before"] == pytest.approx(registered["val_ppl"], rel=1e-4)
    assert out["source_ppl_after"] != pytest.approx(out["source_ppl_before"], rel=1e-4)  # measured again
    version = mlflow.MlflowClient(mlflow_server).get_model_version("elmo-test-legal", str(out["version"]))
    assert version.tags["parent_model"] == "elmo-test/1"
    assert (version.tags["tokenizer"], version.tags["language"]) == ("whitespace", "en")  # the target data's
    history = mlflow.MlflowClient(mlflow_server).get_metric_history(out["run_id"], "target_ppl_after")
    assert history and history[-1].value == pytest.approx(out["target_ppl_after"])


def elmo_cli(command: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``elmo COMMAND ARGS`` in a new process, with ``env`` added to this one's environment."""
    return subprocess.run([sys.executable, "-m", "elmo_cli", command, *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=600)


def run_ids_named(client, run_name: str) -> list[str]:
    """The MLflow runs of Ray Train run ``run_name``, in every experiment."""
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string=f"tags.`elmo.train_run` = '{run_name}'")
    return [r.info.run_id for r in runs]


def registry_state(client, name: str) -> tuple[list[str], dict]:
    """(the versions of registered model ``name``, its aliases)."""
    versions = sorted(v.version for v in client.search_model_versions(f"name = '{name}'"))
    return versions, dict(client.get_registered_model(name).aliases) if versions else {}


def test_a_finished_pretraining_job_run_again_changes_nothing(registered, ray_storage, data, mlflow_server, cluster):
    """Issue 27, part 6: the same `elmo pretrain --run-name R --storage S` after R finished and was
    registered exits 0 with R's version: no second MLflow run, no new version, the aliases as they were."""
    import mlflow

    from workflows.registry.tracking import version_of_run

    client = mlflow.MlflowClient(mlflow_server)
    name = registered["run_name"]
    before = registry_state(client, "elmo-test")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        version = version_of_run("elmo-test", registered["run_id"])  # 1, or 2 after the gate test re-registered its model
    again = elmo_cli("pretrain", "--data", data["source"], "--registered-model", "elmo-test", "--preset", "tiny",
                     "--max-steps", "8", "--storage", str(ray_storage), "--run-name", name, "--address", cluster,
                     MLFLOW_TRACKING_URI=mlflow_server)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"nothing to train: already registered as elmo-test version {version} " in again.stdout
    assert run_ids_named(client, name) == [registered["run_id"]]
    assert registry_state(client, "elmo-test") == before


def test_a_driver_killed_before_registering_registers_once_when_run_again(ray_storage, data, mlflow_server, cluster):
    """Issue 27, part 6: a pretraining driver killed after its MLflow run finished and before it
    registered the model; the same command registers that run's model, once, without training or
    opening a run; once more, it reports that version and changes nothing."""
    import mlflow

    from workflows.faults import FAULT_ENV
    from workflows.training.driver import unique_name

    client = mlflow.MlflowClient(mlflow_server)
    name = unique_name("killed-before-register")
    command = ["--data", data["source"], "--registered-model", "elmo-rerun", "--preset", "tiny", "--max-steps", "4",
               "--batch-tokens", "600", "--eval-every", "4", "--checkpoint-every", "2", "--storage", str(ray_storage),
               "--run-name", name, "--address", cluster]
    killed = elmo_cli("pretrain", *command, MLFLOW_TRACKING_URI=mlflow_server, **{FAULT_ENV: "before_register:1"})
    assert killed.returncode == -9, killed.stderr[-3000:]
    [run_id] = run_ids_named(client, name)
    assert client.get_run(run_id).info.status == "FINISHED" and not client.search_model_versions("name = 'elmo-rerun'")
    trained = client.get_run(run_id).data.metrics

    first = elmo_cli("pretrain", *command, MLFLOW_TRACKING_URI=mlflow_server)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "nothing to train: registered elmo-rerun version 1 " in first.stdout
    second = elmo_cli("pretrain", *command, MLFLOW_TRACKING_URI=mlflow_server)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "nothing to train: already registered as elmo-rerun version 1 " in second.stdout
    assert run_ids_named(client, name) == [run_id] and client.get_run(run_id).data.metrics == trained
    assert registry_state(client, "elmo-rerun") == (["1"], {"candidate": "1", "champion": "1"})
    version = client.get_model_version("elmo-rerun", "1")
    assert version.run_id == run_id and float(version.tags["val_ppl"]) == pytest.approx(trained["best_val_ppl"])


def test_a_finished_adaptation_job_run_again_changes_nothing(registered, ray_storage, data, mlflow_server, cluster,
                                                             monkeypatch):
    """Issue 27, part 6, for `elmo adapt`: run to the end, then the same command again: exit 0 with
    its version; no second run, no new version."""
    import mlflow

    from workflows.training.adapt import adapt
    from workflows.training.driver import unique_name

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    client = mlflow.MlflowClient(mlflow_server)
    name = unique_name("adapt-rerun")
    out = adapt(job(data["target"], max_steps=2, eval_every=2, checkpoint_every=2), "models:/elmo-test/1",
                "elmo-test-rerun", str(ray_storage), run_name=name)
    before = registry_state(client, "elmo-test-rerun")
    assert before[0] == [str(out["version"])]
    again = elmo_cli("adapt", "--from", "models:/elmo-test/1", "--data", data["target"], "--registered-model",
                     "elmo-test-rerun", "--max-steps", "2", "--storage", str(ray_storage), "--run-name", name,
                     "--address", cluster)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"nothing to train: already registered as elmo-test-rerun version {out['version']} " in again.stdout
    assert run_ids_named(client, name) == [out["run_id"]]
    assert registry_state(client, "elmo-test-rerun") == before
