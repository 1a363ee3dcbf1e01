"""Settings of the training workflows (pretraining, adaptation): the one place their numbers live.

Model and optimizer numbers (optimizer, learning rate, clip, dropout, softmax) come from
`elmo_core.config.TrainingConfig` (and the model preset); this file holds how a run is batched,
scheduled, checkpointed, evaluated and placed on the cluster.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

TRAINING_MODES = ("sentence", "stream")


@dataclass(frozen=True)
class TrainJobConfig:
    # --- data and batching -------------------------------------------------------------------
    data: str = ""  # an `elmo preprocess` output directory (local or s3://)
    # "sentence": length-bucketed full sentences, each from a zero LSTM state (as `elmo embed`
    # uses the model); any corpus size. "stream": windows of the running text in corpus order,
    # the state carried from window to window (truncated BPTT; bilm-tf and Kim et al. 2016); the
    # train split is held in memory (~8 bytes a token). Validation perplexity, the LR schedule and
    # the best model follow the training mode; `--evaluate-test` scores the test split in both.
    mode: str = "sentence"
    stream_rows: int = 20  # stream mode: rows of running text per global batch (Kim et al.: 20)
    unroll_steps: int = 35  # stream mode: tokens per window (Kim et al.: 35; bilm-tf: 20)
    eval_stream_rows: int = 10  # stream evaluation: contiguous rows the held-out text is cut into
    # Full sentences, length-bucketed: a global batch holds sentences of similar length whose
    # padded size ((longest + 2) x count) stays within this many tokens. bilm-tf's 128 windows x
    # 20 tokens = 2,560 tokens a batch; the same budget here.
    batch_tokens: int = 2560
    shuffle_buffer: int = 20000  # sentences shuffled and bucketed together (deterministic by seed)
    # A train split of up to this many MB of Parquet is read once per worker and kept in memory
    # for later epochs: each Ray Data pass costs a restart (~10 s or more on 2 vCPUs), paid every
    # epoch of a small (e.g. domain-adaptation) corpus otherwise. 0 turns the cache off.
    cache_train_mb: int = 256
    seed: int = 0  # data order, shuffling, dropout and sampled negatives all follow from it
    # --- schedule ------------------------------------------------------------------------------
    max_steps: int = 1000
    max_epochs: int | None = None  # also stop at the end of this epoch (None: max_steps only)
    eval_each_epoch: bool = False  # evaluate (and schedule) at the end of every epoch as well
    # Validation-driven schedule (`workflows/training/lr_schedule.py`): LR times lr_decay after lr_decay_patience
    # evaluations without improving by more than plateau_threshold (relative); stop after
    # early_stop_patience such evaluations (0: never). The model of the best evaluation is kept
    # (`best_model/` in the checkpoint) and is the one registered.
    lr_decay: float = 0.5
    lr_decay_patience: int = 1  # evaluations without improvement before the LR is decayed
    plateau_threshold: float = 0.0  # relative improvement an evaluation must beat to count as one
    early_stop_patience: int = 0  # stop after this many evaluations without improvement (0: never)
    # Per-epoch decay instead of the plateau rule: LR times lr_decay at the end of every epoch from
    # this one (1-based) on (Zaremba et al. 2014); anneals within a fixed --max-epochs budget.
    lr_decay_start_epoch: int | None = None
    grad_accum: int = 1  # micro-batches per optimizer step on each worker
    eval_every: int = 200  # steps between held-out perplexity evaluations (and at the end)
    eval_max_sentences: int | None = 20000  # cap on validation sentences per evaluation
    checkpoint_every: int = 200  # steps between checkpoints (and at the end)
    keep_checkpoints: int = 2  # newest checkpoints kept in the storage path
    report_every: int = 10  # steps between metric reports (Ray Train report + MLflow)
    # --- placement -----------------------------------------------------------------------------
    num_workers: int = 1  # DDP workers (Ray Train), one process each
    use_gpu: bool = False  # one GPU per worker (NCCL); CPU: gloo
    cpus_per_worker: float = 1.0  # CPUs Ray reserves per worker
    torch_threads: int | None = None  # per worker; None: cpus_per_worker rounded up
    placement_strategy: str = "PACK"  # Ray placement of workers; "SPREAD"/"STRICT_SPREAD": one per node
    # Autocast to bfloat16 on GPU (ignored on CPU). Off: on an H200 the steps are bound by the
    # host, and autocast's casts made `small` 0.7-1.0x and `original` 0.9-1.0x of TF32 alone
    # (4 runs, benchmarks/README.md)
    bf16: bool = False
    # TF32 tensor cores for float32 products on GPU: 1.4-1.6x an `original` step of 128
    # sentences on an H200 (benchmarks/README.md); products then carry ~1e-3 relative error
    tf32: bool = True
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
        if self.mode not in TRAINING_MODES:
            raise ValueError(f"mode must be one of {TRAINING_MODES}, got {self.mode!r}")
        for name in ("stream_rows", "unroll_steps", "eval_stream_rows", "lr_decay_patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.max_epochs is not None and self.max_epochs < 1:
            raise ValueError("max_epochs must be >= 1")
        if not 0.0 < self.lr_decay <= 1.0:
            raise ValueError("lr_decay must be in (0, 1]")
        if self.early_stop_patience < 0 or not 0.0 <= self.plateau_threshold < 1.0:
            raise ValueError("early_stop_patience must be >= 0 and plateau_threshold in [0, 1)")
        if self.mode == "stream" and self.grad_accum != 1:
            raise ValueError("stream mode trains without gradient accumulation (grad_accum must be 1)")
        if self.mode == "stream" and self.stream_rows < self.num_workers:
            raise ValueError(f"{self.stream_rows} stream rows cannot be shared by {self.num_workers} workers")

    def replace(self, **changes) -> "TrainJobConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainJobConfig":
        from elmo_core.config import from_known_fields

        return from_known_fields(cls, values)
