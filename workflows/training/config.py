"""Settings of the training workflows (pretraining, adaptation): the one place their numbers live.

Model and optimizer numbers (optimizer, learning rate, clip, dropout, softmax) come from
`elmo_core.config.TrainingConfig` (and the model preset); this file holds how a run is batched,
scheduled, checkpointed, evaluated and placed on the cluster.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from elmo_core.cli_fields import setting

TRAINING_MODES = ("sentence", "stream")
SHARES = ("blocks", "stride")  # sentence mode: which sentences of a global batch a worker computes
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")  # Ray's


@dataclass(frozen=True)
class TrainJobConfig:
    """How a training run (`elmo pretrain`, `elmo adapt`) is batched, scheduled, checkpointed,
    evaluated and placed on the cluster."""

    # --- data and batching -------------------------------------------------------------------
    data: str = setting("", "an `elmo preprocess` output directory (local or s3://)", metavar="DIR", required=True)
    # The train split of stream mode is held in memory (~8 bytes a token). Validation perplexity,
    # the LR schedule and the best model follow the training mode.
    mode: str = setting("sentence", "sentence: length-bucketed full sentences, each from a zero LSTM state (as "
                        "`elmo embed` uses the model), any corpus size; stream: windows of the running text in "
                        "corpus order, the state carried from window to window (truncated BPTT; bilm-tf and Kim "
                        "et al. 2016), the train split held in memory", choices=TRAINING_MODES)
    stream_rows: int = setting(20, "stream mode: rows of running text per global batch (Kim et al.: 20)")
    unroll_steps: int = setting(35, "stream mode: tokens per window (Kim et al.: 35; bilm-tf: 20)")
    eval_stream_rows: int = setting(10, "stream evaluation: contiguous rows the held-out text is cut into",
                                    flag=False)
    # bilm-tf's 128 windows x 20 tokens = 2,560 tokens a batch: the same budget here.
    batch_tokens: int = setting(2560, "sentence mode: padded tokens of a global batch, sentences x (longest + 2); "
                                "sentences of similar length are batched together")
    shuffle_buffer: int = setting(20000, "sentences shuffled and bucketed together (deterministic by seed)",
                                  flag=False)
    # Either way the global batches and the summed gradient are the same (`workflows.training.batch_plan`).
    # blocks: with 4 workers and 2,560-token batches the largest share is ~1.2x the mean (benchmarks/README.md).
    share: str = setting("blocks", "sentence mode: which sentences of a global batch each worker computes: blocks: "
                         "those in its own blocks of the split's rows (each worker reads about 1/N of the split; "
                         "the shares of a batch differ by chance); stride: every N-th by length (equal shares; "
                         "every worker reads the whole split)", choices=SHARES)
    block_rows: int = setting(1024, "sentence mode, share=blocks: rows of a block (blocks are also cut where a "
                              "Parquet row group starts; `elmo preprocess` writes row groups of 1,024 rows)",
                              flag=False)
    # Sentence mode: the row groups a worker reads are kept (`SplitRows`), so a small (e.g.
    # domain-adaptation) corpus is not read again every epoch.
    cache_train_mb: int = setting(256, "keep a train split of up to this many MB of Parquet in each worker's "
                                  "memory after the first epoch, instead of reading it again every epoch (0: never)")
    seed: int = setting(0, "data order, shuffling, dropout and sampled negatives all follow from it")
    # --- schedule ------------------------------------------------------------------------------
    max_steps: int = setting(1000, "optimizer steps")
    max_epochs: int | None = setting(None, "also stop at the end of this epoch (None: max_steps only)")
    eval_each_epoch: bool = setting(False, "evaluate (and apply the schedule) at the end of every epoch as well")
    # Validation-driven schedule (`workflows/training/lr_schedule.py`). The model of the best
    # evaluation is kept (`best_model/` in the checkpoint) and is the one registered.
    lr_decay: float = setting(0.5, "learning-rate factor after lr_decay_patience evaluations without improving by "
                              "more than plateau_threshold (1: never)")
    lr_decay_patience: int = setting(1, "evaluations without improvement before the learning rate is decayed")
    plateau_threshold: float = setting(0.0, "relative validation improvement an evaluation must beat to count as "
                                       "one")
    early_stop_patience: int = setting(0, "stop after this many evaluations without improvement (0: never)")
    lr_decay_start_epoch: int | None = setting(None, "instead of the plateau rule: multiply the learning rate by "
                                               "lr_decay at the end of every epoch from this one (1-based) on "
                                               "(Zaremba et al. 2014; anneals within a fixed max_epochs budget)")
    warmup_steps: int = setting(0, "linear learning-rate warm-up: step s (0-based) trains at (s + 1) / warmup_steps "
                                "of the rate, for the first warmup_steps steps (0: none)")
    grad_accum: int = setting(1, "micro-batches per optimizer step on each worker")
    eval_every: int = setting(200, "steps between held-out perplexity evaluations (and at the end)")
    eval_max_sentences: int | None = setting(20000, "cap on validation sentences per evaluation", flag=False)
    checkpoint_every: int = setting(200, "steps between checkpoints (and at the end)")
    keep_checkpoints: int = setting(2, "newest checkpoints kept in the storage path", flag=False)
    report_every: int = setting(10, "steps between metric reports (Ray Train report + MLflow)", flag=False)
    # --- placement -----------------------------------------------------------------------------
    num_workers: int = setting(1, "DDP workers (Ray Train), one process each")
    use_gpu: bool = setting(False, "one GPU per worker (NCCL); CPU: gloo")
    cpus_per_worker: float = setting(1.0, "CPUs Ray reserves per worker")
    torch_threads: int | None = setting(None, "torch threads per worker (None: cpus_per_worker rounded up)")
    placement_strategy: str = setting("PACK", "Ray placement of the workers (SPREAD, STRICT_SPREAD: one per node)",
                                      choices=PLACEMENT_STRATEGIES)
    # Off by default: on an H200 the steps are bound by the host, and autocast's casts made
    # `small` 0.7-1.0x and `original` 0.9-1.0x of TF32 alone (4 runs, benchmarks/README.md).
    bf16: bool = setting(False, "GPU: autocast to bfloat16 (ignored on CPU; measured no faster than TF32 on an "
                         "H200)")
    # 1.4-1.6x an `original` step of 128 sentences on an H200 (benchmarks/README.md).
    tf32: bool = setting(True, "GPU: TF32 tensor cores for float32 products (~1e-3 relative error; "
                         "--no-tf32: exact float32 products)")
    max_failures: int = setting(2, "worker failures survived by resuming from the last checkpoint", flag=False)
    # --- testing hook --------------------------------------------------------------------------
    fail_at_step: int | None = setting(None, "fault tests: the last worker raises once at this step", flag=False)

    def __post_init__(self) -> None:
        for name in ("batch_tokens", "shuffle_buffer", "block_rows", "max_steps", "grad_accum", "eval_every",
                     "checkpoint_every", "keep_checkpoints", "report_every", "num_workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.cache_train_mb < 0 or self.warmup_steps < 0:
            raise ValueError("cache_train_mb and warmup_steps must be >= 0")
        if self.mode not in TRAINING_MODES:
            raise ValueError(f"mode must be one of {TRAINING_MODES}, got {self.mode!r}")
        if self.share not in SHARES:
            raise ValueError(f"share must be one of {SHARES}, got {self.share!r}")
        if self.placement_strategy not in PLACEMENT_STRATEGIES:
            raise ValueError(f"placement_strategy must be one of {PLACEMENT_STRATEGIES}, got {self.placement_strategy!r}")
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
