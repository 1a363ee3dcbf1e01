"""Settings of the training workflows (pretraining, adaptation): the one place their numbers live.

Model and optimizer numbers (Adagrad 0.2, clip 10, dropout 0.1, 8192 sampled negatives) come
from `elmo_core.config.TrainingConfig`, which holds bilm-tf's ``train_elmo.py`` recipe; this file
holds how a run is batched, scheduled, checkpointed, evaluated and placed on the cluster.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class TrainJobConfig:
    # --- data and batching -------------------------------------------------------------------
    data: str = ""  # an `elmo preprocess` output directory (local or s3://)
    # Full sentences, length-bucketed: a global batch holds sentences of similar length whose
    # padded size ((longest + 2) x count) stays within this many tokens. bilm-tf's 128 windows x
    # 20 tokens = 2,560 tokens a batch; the same budget here.
    batch_tokens: int = 2560
    shuffle_buffer: int = 20000  # sentences shuffled and bucketed together (deterministic by seed)
    # A train split of up to this many MB of Parquet is read once per worker and kept in memory
    # for later epochs: each Ray Data pass costs a restart (~10 s or more on 2 vCPUs), paid every
    # epoch of a small (e.g. domain-adaptation) corpus otherwise. 0 turns the cache off.
    cache_train_mb: int = 256
    seed: int = 0
    # --- schedule ------------------------------------------------------------------------------
    max_steps: int = 1000
    grad_accum: int = 1  # micro-batches per optimizer step on each worker
    eval_every: int = 200  # steps between held-out perplexity evaluations (and at the end)
    eval_max_sentences: int | None = 20000  # cap on validation sentences per evaluation
    checkpoint_every: int = 200  # steps between checkpoints (and at the end)
    keep_checkpoints: int = 2  # newest checkpoints kept in the storage path
    report_every: int = 10  # steps between metric reports (Ray Train report + MLflow)
    # --- placement -----------------------------------------------------------------------------
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    placement_strategy: str = "PACK"  # Ray placement of workers; "SPREAD"/"STRICT_SPREAD": one per node
    bf16: bool = True  # autocast to bfloat16 on GPU (ignored on CPU)
    max_failures: int = 2  # worker failures survived by resuming from the last checkpoint
    # --- testing hook --------------------------------------------------------------------------
    fail_at_step: int | None = None  # the last worker raises once at this step (fault tests)

    def __post_init__(self) -> None:
        for name in ("batch_tokens", "shuffle_buffer", "max_steps", "grad_accum", "eval_every",
                     "checkpoint_every", "keep_checkpoints", "report_every", "num_workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.cache_train_mb < 0:
            raise ValueError("cache_train_mb must be >= 0")

    def replace(self, **changes) -> "TrainJobConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainJobConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})
