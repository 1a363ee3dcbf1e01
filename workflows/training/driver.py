"""The driver side of a training run: datasets, the Ray Train `TorchTrainer`, the result.

Used by `workflows.training.pretrain` and `workflows.training.adapt`; the per-worker loop is
`workflows.training.worker`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from preprocessing.dataset import Dataset

from workflows.training.batches import COLUMNS
from workflows.training.config import TrainJobConfig


@dataclass
class TrainingResult:
    checkpoint_dir: str  # training checkpoint (model/, optimizer.pt, train_state.json)
    history: list[dict]  # every reported metrics dict, in order
    final: dict  # the last reported metrics


def ensure_ray(address: str | None) -> None:
    """`preprocessing.ray_session.ensure_ray`, with ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` at 0.2 s
    unless set: `ray.train.report` waits for the Train controller's poll (2 s by default), and 20
    reports took 63 s at the default and 24 s at 0.2 s (Ray 2.60, 2 vCPUs)."""
    from preprocessing.ray_session import ensure_ray as connect

    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    connect(address)


FOOTER_READER_ENV = "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"
FILES_PER_FOOTER_READER = 10  # Ray Data's footer batch: one actor per 10 files is enough


@contextlib.contextmanager
def _footer_readers(num_files: int):
    """Ray Data 2.60's Parquet reader lists files by reading their footers on a pool of 32 new
    actor processes (``RAY_DATA_PARQUET_FOOTER_NUM_ACTORS``), each time a dataset is executed:
    for a training run's two one-file splits, 64 actor starts and 17-28 s more to the first
    batch on 2 vCPUs. The pool is sized to the files while the dataset is made (the reader reads
    the variable then); a value the user set is kept."""
    if FOOTER_READER_ENV in os.environ:
        yield
        return
    os.environ[FOOTER_READER_ENV] = str(max(1, -(-num_files // FILES_PER_FOOTER_READER)))
    try:
        yield
    finally:
        del os.environ[FOOTER_READER_ENV]


def split_dataset(dataset: Dataset, split: str):
    """A Ray Dataset over a split's Parquet files (only the columns training reads)."""
    import ray.data

    files = dataset.split_files(split)
    with _footer_readers(len(files)):
        return ray.data.read_parquet(files).select_columns(COLUMNS)


def run_training(job: TrainJobConfig, dataset: Dataset, storage: str, name: str, *, model_config: dict | None = None,
                 init_model: str | None = None, recipe: dict | None = None,
                 tracking: dict | None = None) -> TrainingResult:
    """Train with Ray Train on ``job.num_workers`` workers on ``dataset`` (its train and
    validation splits, its vocabulary); returns the final checkpoint. The model starts from
    ``model_config`` (options, a new model) or ``init_model`` (a model folder or training
    checkpoint); ``recipe``: `TrainingConfig` fields changed on it (the optimizer recipe, dropout,
    ...). The workers get the splits as Ray Datasets and the vocabulary's tokens, not the handle."""
    import ray.train
    from ray.data import ExecutionOptions
    from ray.train.torch import TorchTrainer

    from workflows.training.worker import train_loop_per_worker

    splits = dataset.manifest["splits"]
    for split in ("train", "validation"):
        if splits[split]["sentences"] == 0:
            raise ValueError(f"{dataset.uri} has no {split} sentences: rerun `elmo preprocess` with more text "
                             "or a larger --validation-fraction")
    datasets = {"validation": split_dataset(dataset, "validation")}
    # each worker reads only its rows of the train files (`SplitRows`), in both modes
    train_split = {"root": dataset.uri, "paths": [entry["path"] for entry in splits["train"]["files"]]}
    data_config = ray.train.DataConfig(datasets_to_split=[], execution_options=ExecutionOptions(preserve_order=True))
    resources = {"CPU": job.cpus_per_worker, **({"GPU": 1} if job.use_gpu else {})}
    loop_config = {"job": job.to_dict(), "vocab": dataset.vocabulary.tokens, "model_config": model_config,
                   "init_model": init_model, "tracking": tracking,
                   "recipe": recipe or {}, "train_split": train_split,
                   "fault_marker": os.path.join(storage, f"{name}.fault-injected"),
                   "cache_train": sum(f["bytes"] for f in splits["train"]["files"]) <= job.cache_train_mb << 20}
    trainer = TorchTrainer(
        train_loop_per_worker, train_loop_config=loop_config, datasets=datasets, dataset_config=data_config,
        scaling_config=ray.train.ScalingConfig(num_workers=job.num_workers, use_gpu=job.use_gpu,
                                               resources_per_worker=resources,
                                               placement_strategy=job.placement_strategy),
        run_config=ray.train.RunConfig(name=name, storage_path=storage,
                                       failure_config=ray.train.FailureConfig(max_failures=job.max_failures),
                                       checkpoint_config=ray.train.CheckpointConfig(num_to_keep=job.keep_checkpoints)))
    result = trainer.fit()
    if result.error:
        raise result.error
    history = result.metrics_dataframe.to_dict("records") if result.metrics_dataframe is not None else []
    target = Path(tempfile.mkdtemp(prefix=f"{name}-final-"))
    result.checkpoint.to_directory(str(target))
    return TrainingResult(str(target), history, dict(result.metrics))


def unique_name(prefix: str) -> str:
    """Ray Train resumes a run that reuses a name: every training run gets a fresh one."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
