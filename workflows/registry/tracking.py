"""MLflow: runs, metrics, the logged model, registration and the champion gate.

With `pyfunc_model.py` (the logged model's own code), the only module that imports mlflow. Runs are created and closed by the driver; rank 0 adds
metrics to the driver's run while training (`WorkerTracker`). The tracking URI comes from
``MLFLOW_TRACKING_URI`` (default: a local sqlite store, ``sqlite:///mlflow.db``).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from workflows.registry.comparability import heldout_digest

CANDIDATE, CHAMPION = "candidate", "champion"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")
# What the logged pyfunc needs where it is loaded (this project need not be installed there: the
# model carries elmo_core as code): elmo_core imports torch, numpy, safetensors and h5py, and
# sacremoses to tokenize as the model's training text was; the pyfunc itself mlflow and pandas.
# Bounds as in pyproject.toml.
PIP_REQUIREMENTS = ["torch>=2.13,<2.15", "numpy>=2.0", "safetensors>=0.4", "h5py>=3.10", "sacremoses>=0.1",
                    "pandas", "mlflow==3.17.2"]
# The pyfunc's params (name -> default), declared in its signature: MLflow passes on only the
# params a signature declares, and fills in these defaults where a request leaves one out.
PYFUNC_PARAMS = {"layers": "all", "dtype": "float32", "tokenizer": "model", "language": "model"}
# Saved with the model (input_example.json / serving_input_example.json); MLflow also serves it
# once, through the logged model, while logging, to check it works.
PYFUNC_INPUT_EXAMPLE = (["The biLM reads characters .", "ELMo vectors depend on context"], {"layers": "average"})


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + os.path.abspath(uri[len("sqlite:///"):])  # workers may run elsewhere
    return uri


def _client():
    """An MlflowClient of `tracking_uri` (every module-level read and write here goes through it)."""
    import mlflow

    return mlflow.MlflowClient(tracking_uri())


# Where there is no git checkout (the project image: infra/docker/Dockerfile sets it from its
# GIT_COMMIT build argument), the commit the code was built from.
GIT_COMMIT_ENV = "ELMO_GIT_COMMIT"


def git_commit() -> str | None:
    """The commit of the running code: its git checkout's HEAD, else ``$ELMO_GIT_COMMIT``."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        head = ""
    return head or os.environ.get(GIT_COMMIT_ENV, "").strip() or None


TRAIN_RUN_TAG = "elmo.train_run"  # the Ray Train run name, the key to resume by
TRAIN_STORAGE_TAG = "elmo.train_storage"  # where that Ray Train run keeps its checkpoints (`storage_key`)
MODEL_URI_TAG = "elmo.model_uri"  # the model the run logged (what `elmo register` registers)


class TrackedRun:
    """The MLflow run of one training command (pretrain / adapt), optionally nested under a pipeline run."""

    def __init__(self, experiment: str, run_name: str, params: dict, tags: dict,
                 parent_run_id: str | None = None) -> None:
        """A new run named ``run_name``; or, where this experiment already has an unfinished run
        of that name (a driver that was killed: ``--run-name`` given again), that run continues."""
        import mlflow

        self.uri = tracking_uri()
        mlflow.set_tracking_uri(self.uri)
        self.client = mlflow.MlflowClient(self.uri)
        exp = self.client.get_experiment_by_name(experiment)
        experiment_id = exp.experiment_id if exp else self.client.create_experiment(experiment)
        earlier = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`{TRAIN_RUN_TAG}` = '{run_name}' and attributes.status != 'FINISHED'",
            max_results=1)
        if earlier:
            self.run_id = earlier[0].info.run_id
            self.resumed = True
            self.client.update_run(self.run_id, status="RUNNING")
            return
        self.resumed = False
        all_tags = {"mlflow.runName": run_name, TRAIN_RUN_TAG: run_name,
                    **{k: str(v) for k, v in tags.items() if v is not None}}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        commit = git_commit()
        if commit:
            all_tags["mlflow.source.git.commit"] = commit
        self.run_id = self.client.create_run(experiment_id, tags=all_tags).info.run_id
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def coordinates(self) -> dict:
        """What rank 0 needs to add metrics to this run."""
        return {"tracking_uri": self.uri, "run_id": self.run_id}

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        WorkerTracker(self.coordinates()).log(metrics, step or 0)

    def log_dataset_manifest(self, manifest: dict, context: str) -> None:
        """The preprocessing manifest as an artifact and its identity as tags."""
        self.client.log_dict(self.run_id, manifest, f"data/{context}_manifest.json")
        self.client.set_tag(self.run_id, f"data.{context}.version", manifest.get("version", ""))
        self.client.set_tag(self.run_id, f"data.{context}.vocab_digest", manifest["vocab"]["digest"])
        for key in ("tokenizer", "language"):  # how its text was tokenized: the model records it too
            if key in manifest.get("config", {}):
                self.client.set_tag(self.run_id, f"data.{context}.{key}", manifest["config"][key])
        heldout = heldout_digest(manifest)
        if heldout:
            self.client.set_tag(self.run_id, f"data.{context}.heldout_digest", heldout)

    def log_curves(self, history: list[dict]) -> None:
        """A PNG of training loss and held-out perplexity against step."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
        rows = [h for h in history if "train_loss" in h]
        a.plot([h["step"] for h in rows], [h["train_loss"] for h in rows])
        a.set(xlabel="step", ylabel="train loss")
        rows = [h for h in history if "val_ppl" in h]
        for key in ("val_ppl_forward", "val_ppl_backward", "val_ppl"):
            b.plot([h["step"] for h in rows], [h[key] for h in rows], marker="o", label=key)
        b.set(xlabel="step", ylabel="held-out perplexity (full softmax)")
        b.legend()
        fig.tight_layout()
        self.client.log_figure(self.run_id, fig, "curves.png")
        plt.close(fig)

    def log_model(self, native_model_dir: str, tokenization=None) -> str:
        """The biLM as a pyfunc that embeds sentences; our weights, config, vocab and tokenization
        (``tokenization``, an `elmo_core.tokenization.Tokenization`, if given: else the folder's
        own ``tokenization.json``, if any) as artifacts.

        Portable and self-describing: the `elmo_core` package goes with the model as code
        (``code_paths``), its requirements as ``requirements.txt``, and a signature (input: one
        string column, ``sentence``; output: ``tokens`` and ``embedding``; params ``layers`` and
        ``dtype``) and an input example with it. The input column is left unnamed in the
        signature: MLflow turns a plain list of strings into a column ``0``, which a named
        ``sentence`` column would refuse."""
        import shutil
        import tempfile

        import mlflow
        import pandas as pd
        from mlflow.models import ModelSignature
        from mlflow.types.schema import AnyType, Array, ColSpec, DataType, ParamSchema, ParamSpec, Schema

        import elmo_core

        signature = ModelSignature(
            inputs=Schema([ColSpec(DataType.string)]),
            # embedding: an array of `shape`, (L+1, n, 2P) for layers=all, (n, 2P) otherwise, in `dtype`
            # (float32 or float16: JSON carries the float16 values, `dtype` says how to read them back)
            outputs=Schema([ColSpec(Array(DataType.string), "tokens"), ColSpec(AnyType(), "embedding"),
                            ColSpec(Array(DataType.long), "shape"), ColSpec(DataType.string, "dtype")]),
            params=ParamSchema([ParamSpec(name, DataType.string, default)
                                for name, default in PYFUNC_PARAMS.items()]))
        sentences, example_params = PYFUNC_INPUT_EXAMPLE
        input_example = (pd.DataFrame({"sentence": sentences}), dict(example_params))
        with tempfile.TemporaryDirectory() as staging:
            # MLflow stores an artifact directory under its own name: always ``artifacts/model``
            # (what `download_model` reads), whether the run's chosen model is model/ or best_model/
            staged = os.path.join(staging, "model")
            shutil.copytree(native_model_dir, staged)
            if tokenization is not None:
                from elmo_core.tokenization import write_tokenization

                write_tokenization(staged, tokenization)
            with mlflow.start_run(run_id=self.run_id):
                info = mlflow.pyfunc.log_model(
                    name="model", python_model=str(PYFUNC_FILE), artifacts={"model": staged},
                    code_paths=[os.path.dirname(os.path.abspath(elmo_core.__file__))],
                    pip_requirements=PIP_REQUIREMENTS, signature=signature, input_example=input_example)
        self.client.set_tag(self.run_id, MODEL_URI_TAG, info.model_uri)
        return info.model_uri

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)


def storage_key(storage: str) -> str:
    """``--storage`` as recorded in `TRAIN_STORAGE_TAG`: a URI as given, a local path absolute."""
    return storage if "://" in storage else os.path.abspath(storage)


def finished_run_id(experiment: str, run_name: str, storage: str) -> str | None:
    """The FINISHED run of ``experiment`` that trained Ray Train run ``run_name`` under ``storage``
    (tags `TRAIN_RUN_TAG` and `TRAIN_STORAGE_TAG`; the first, if several), or None: a training
    command given the name of a finished job does not train it again (`elmo pretrain`, `elmo adapt`)."""
    client = _client()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id], max_results=1, order_by=["attributes.start_time ASC"],
        filter_string=f"tags.`{TRAIN_RUN_TAG}` = '{run_name}' and tags.`{TRAIN_STORAGE_TAG}` = "
                      f"'{storage_key(storage)}' and attributes.status = 'FINISHED'")
    return runs[0].info.run_id if runs else None


# What a training report carries that is not a measurement: stored as the run's tags (the latest
# report's values; a resumed run may run on another placement), not as metrics.
RUN_STATE_TAGS = ("step", "epoch", "num_workers", "num_nodes")


class WorkerTracker:
    """Metric logging from rank 0 into the driver's run (no-op without coordinates); the keys in
    `RUN_STATE_TAGS` become tags."""

    def __init__(self, coordinates: dict | None) -> None:
        self.coordinates = coordinates
        self.client = None
        if coordinates:
            import mlflow

            self.client = mlflow.MlflowClient(coordinates["tracking_uri"])

    def log(self, metrics: dict, step: int) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and k not in RUN_STATE_TAGS]
        tags = [RunTag(k, str(metrics[k])) for k in RUN_STATE_TAGS if k in metrics]
        self.client.log_batch(self.coordinates["run_id"], metrics=batch, tags=tags)


def register(model_uri: str, name: str, tags: dict, promote_anyway: bool = False) -> dict:
    """Register a new version of ``name`` from ``model_uri``, tag it, and gate it (`gate`)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    version = mlflow.register_model(model_uri, name).version
    set_version_tags(name, version, tags)
    return gate(name, version, promote_anyway)


def set_version_tags(name: str, version, tags: dict) -> None:
    client = _client()
    for key, value in tags.items():
        if value is not None:
            client.set_model_version_tag(name, str(version), key, str(value))


def version_of_run(name: str, run_id: str) -> int | None:
    """The version of ``name`` registered from run ``run_id`` (the newest, if several), or None."""
    versions = _client().search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    return max((int(v.version) for v in versions), default=None)


GATE_TAG = "gate"  # on each gated version: the gate's decision, in one line


def gated_version(name: str, run_id: str) -> dict | None:
    """The gate's outcome for run ``run_id``'s version of ``name``, read back without changing
    anything (the shape `gate` returns, ``promoted``: the version is champion now); None unless
    the run has a version that went through the gate (its `GATE_TAG`)."""
    import mlflow

    version = version_of_run(name, run_id)
    if version is None:
        return None
    client = _client()
    tags = client.get_model_version(name, str(version)).tags
    if GATE_TAG not in tags:
        return None  # registered, but killed before the gate: `gate` it again
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION).version
    except mlflow.exceptions.MlflowException:
        champion = None
    return {"name": name, "version": version, "promoted": champion == str(version), "val_ppl": float(tags["val_ppl"]),
            "reason": tags[GATE_TAG]}


def gate(name: str, version, promote_anyway: bool = False) -> dict:
    """The evaluation gate: ``candidate`` -> ``version``, and ``champion`` -> ``version`` if there is
    no champion, or if its held-out perplexity (tag ``val_ppl``) beats the champion's and the two
    are comparable (`comparability.decide`; ``promote_anyway``: also when they are not). The
    decision's one line is stored as the version's ``gate`` tag and returned as ``reason``."""
    import mlflow

    from workflows.registry.comparability import decide

    client = _client()
    version = str(version)
    tags = client.get_model_version(name, version).tags
    new_ppl = float(tags["val_ppl"])
    client.set_registered_model_alias(name, CANDIDATE, version)
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        champion = None
    decision = decide(version, tags, champion.version if champion else None, champion.tags if champion else None,
                      promote_anyway)
    if decision.promote:
        client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, GATE_TAG, decision.reason)
    old_ppl = champion.tags.get("val_ppl") if champion else None
    return {"name": name, "version": int(version), "promoted": decision.promote, "val_ppl": new_ppl,
            "comparable": decision.comparable, "reason": decision.reason,
            "previous_champion": int(champion.version) if champion else None,
            "previous_champion_val_ppl": float(old_ppl) if old_ppl is not None else None}


def get_run(run_id: str):
    """The MLflow run (`mlflow.entities.Run`); ValueError if the tracking store has none."""
    import mlflow

    try:
        return _client().get_run(run_id)
    except mlflow.exceptions.MlflowException as exc:
        raise ValueError(f"no run {run_id} in {tracking_uri()}") from exc


def download_model(model_uri: str, destination: str) -> str:
    """A logged/registered model (``models:/NAME@ALIAS``, ``runs:/ID/model``) -> our model
    folder (the pyfunc's ``model`` artifact)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=destination)
    native = Path(local) / "artifacts" / "model"
    if not (native / "config.json").exists():
        raise ValueError(f"{model_uri} does not hold an elmo native model (no artifacts/model/config.json)")
    return str(native)


def download_pinned(model_uri: str, destination: str) -> tuple[str, str, str]:
    """A model URI -> (its model folder under ``destination``, the pinned URI, its lineage label):
    `pin_model_uri`, then `download_model` of exactly that version."""
    pinned, lineage = pin_model_uri(model_uri)
    return download_model(pinned, destination), pinned, lineage


def pin_model_uri(model_uri: str) -> tuple[str, str]:
    """A model URI -> (the concrete URI to load, its lineage label), resolved once so that what is
    loaded and what is recorded cannot differ: ``models:/NAME@ALIAS`` -> (``models:/NAME/V``,
    ``NAME/V``); ``models:/NAME/V`` -> itself and ``NAME/V``; ``runs:/ID/PATH`` -> itself twice."""
    import mlflow

    if model_uri.startswith("models:/"):
        name, sep, alias = model_uri[len("models:/"):].partition("@")
        client = _client()
        if sep:
            try:
                version = client.get_model_version_by_alias(name, alias).version
            except mlflow.exceptions.MlflowException as exc:
                raise ValueError(f"{model_uri}: no such registered model alias ({exc.message})") from None
        else:
            name, _, version = name.partition("/")
            if not version.isdigit():
                raise ValueError(f"{model_uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
            try:
                client.get_model_version(name, version)
            except mlflow.exceptions.MlflowException as exc:
                raise ValueError(f"{model_uri}: no such registered model version ({exc.message})") from None
        return f"models:/{name}/{version}", f"{name}/{version}"
    return model_uri, model_uri


# --- reading the store back (the demo's progress bar, reuse checks and plots) --------------------
def model_version_exists(name: str, version) -> bool:
    import mlflow

    try:
        _client().get_model_version(name, str(version))
        return True
    except mlflow.exceptions.MlflowException:
        return False


def ensure_experiment(name: str, artifact_location: str) -> None:
    """Create experiment ``name`` with its artifacts at ``artifact_location`` unless it exists."""
    client = _client()
    if client.get_experiment_by_name(name) is None:
        client.create_experiment(name, artifact_location=artifact_location)


def latest_step(experiment: str, run_prefix: str, key: str) -> int | None:
    """The newest step of metric ``key`` in the latest run of ``experiment`` whose name starts with
    ``run_prefix``; None before there is one."""
    client = _client()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id], filter_string=f"attributes.run_name LIKE '{run_prefix}%'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return None
    return max((m.step for m in client.get_metric_history(runs[0].info.run_id, key)), default=0)


def metric_history(run_id: str, key: str) -> list[dict]:
    """[{"step": s, key: value}, ...] of an MLflow run, in step order (what the run recorded)."""
    history = _client().get_metric_history(run_id, key)
    return [{"step": m.step, key: m.value} for m in sorted(history, key=lambda m: m.step)]


# --- embedding jobs' runs (`elmo embed-corpus`, each `elmo embed-new` tick that embeds) ----------
EMBED_EXPERIMENT = "elmo-embedding"
EMBED_JOB_TAG = "elmo.embed.job"  # embed-corpus / embed-new
EMBED_MODEL_NAME_TAG = "elmo.embed.model_name"  # registered model name (registry models only)
EMBED_MODEL_VERSION_TAG = "elmo.embed.model_version"  # its version number (registry models only)
EMBED_MODEL_TAG = "elmo.embed.model"  # the lineage label: NAME/V, or the local model's path
EMBED_INPUT_TAG = "elmo.embed.input"  # the job's input(s), as given
EMBED_OUTPUT_TAG = "elmo.embed.output"  # the job's output (`storage_key`)
EMBED_LAST_RUN_TAG = "elmo.embed.last_run"  # on the model version: the newest embedding run that used it


def embedding_runs_enabled(model_source: str) -> bool:
    """Whether an embedding job logs a run: always for a registry model (the registry is the
    tracking store); for a local model only where ``MLFLOW_TRACKING_URI`` is set (no sqlite file
    appears in the working directory of a job that never asked for MLflow)."""
    return model_source.startswith("models:/") or bool(os.environ.get("MLFLOW_TRACKING_URI"))


def _registry_name_version(model_source: str) -> tuple[str, str] | None:
    if not model_source.startswith("models:/"):
        return None
    name, _, version = model_source[len("models:/"):].rpartition("/")
    return (name, version) if name and version.isdigit() else None


def logged_model_id(version) -> str | None:
    """A registered version's logged model (MLflow 3's ``m-...`` id): its ``model_id``, or where
    the server leaves that empty, the id in its ``models:/m-...`` source."""
    model_id = getattr(version, "model_id", None)
    source = version.source or ""
    if not model_id and source.startswith("models:/m-"):
        model_id = source[len("models:/"):].split("/")[0]
    return model_id or None


def start_embedding_run(job: str, model: dict, inputs: list[str], output: str, params: dict) -> str:
    """A RUNNING run of `EMBED_EXPERIMENT` for one embedding job; its id. ``model``:
    `ResolvedModel.describe()`. Tagged with the model (name and version for registry models,
    plus the registered version's logged model as the run's model input: MLflow's lineage) and
    the input/output URIs; the version gets `EMBED_LAST_RUN_TAG`."""
    from mlflow.entities import LoggedModelInput, Param

    client = _client()
    exp = client.get_experiment_by_name(EMBED_EXPERIMENT)
    experiment_id = exp.experiment_id if exp else client.create_experiment(EMBED_EXPERIMENT)
    registry = _registry_name_version(model["model_source"])
    tags = {"mlflow.runName": f"{job} {model['model_version']}", EMBED_JOB_TAG: job,
            EMBED_MODEL_TAG: model["model_version"], EMBED_INPUT_TAG: " ".join(inputs)[:5000],
            EMBED_OUTPUT_TAG: storage_key(output)}
    if registry:
        tags[EMBED_MODEL_NAME_TAG], tags[EMBED_MODEL_VERSION_TAG] = registry
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    run_id = client.create_run(experiment_id, tags=tags).info.run_id
    all_params = {"model_uri": model["model_uri"], "model_source": model["model_source"],
                  "model_digest": model["model_digest"], **params}
    client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in sorted(all_params.items())])
    if registry:
        model_id = logged_model_id(client.get_model_version(*registry))
        if model_id:
            client.log_inputs(run_id, models=[LoggedModelInput(model_id)])
        client.set_model_version_tag(*registry, EMBED_LAST_RUN_TAG, run_id)
    return run_id


def finish_embedding_run(run_id: str, counts: dict, seconds: float, status: str = "FINISHED") -> None:
    """The job's counts (files, sentences, tokens, ...) and throughput as metrics; then ``status``."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = {**counts, "seconds": seconds, "tokens_per_second": counts.get("tokens", 0) / max(seconds, 1e-9)}
    client = _client()
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in sorted(metrics.items())])
    client.set_terminated(run_id, status)


def _embedding_runs(filter_string: str) -> list:
    client = _client()
    exp = client.get_experiment_by_name(EMBED_EXPERIMENT)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], filter_string=filter_string,
                              order_by=["attributes.start_time ASC"], max_results=10000)


def embedding_runs_of_version(name: str, version) -> list:
    """"What did version V of NAME embed?": the embedding runs that used it, oldest first (their
    `EMBED_INPUT_TAG`, `EMBED_OUTPUT_TAG`, counts)."""
    return _embedding_runs(f"tags.`{EMBED_MODEL_NAME_TAG}` = '{name}' and "
                           f"tags.`{EMBED_MODEL_VERSION_TAG}` = '{version}'")


def embedding_runs_of_output(output: str) -> list:
    """"Which model made these vectors?": the embedding runs that wrote to ``output`` (as the job
    was given it: a local path or an s3:// prefix), oldest first; the model is each run's
    `EMBED_MODEL_TAG` (and name/version tags). An output's manifest or ledger entry also names its
    run (``mlflow_run_id``)."""
    return _embedding_runs(f"tags.`{EMBED_OUTPUT_TAG}` = '{storage_key(output)}'")
