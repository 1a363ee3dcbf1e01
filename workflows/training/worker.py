"""The worker side of training: the loop each Ray Train worker runs (`train_loop_per_worker`),
its two training modes and held-out evaluation. The driver side is `workflows.training.driver`;
one step is `workflows.training.step`; checkpoints are `workflows.training.checkpoints`.

Every worker builds the same global batches (`workflows.training.batches`) and trains on its share. A run
resumed from a checkpoint at step k continues exactly as the uninterrupted run: the checkpoint
holds the model, the optimizer state, the step (the data position follows from the step), the
validation schedule (learning rate, best perplexity; `workflows.training.lr_schedule`), the best model so far
and, in stream mode, every row's carried LSTM state.

Two training modes (`TrainJobConfig.mode`): `SentenceTrainer` (full sentences, zero state) and
`StreamTrainer` (windows of running text, state carried; `workflows.training.streams`).
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from elmo_core.bilm import BiLM, Perplexity
from elmo_core.config import BiLMConfig
from elmo_core.lstm import LstmState
from elmo_core.vocabulary import Vocabulary
from elmo_core.weights import load_model_folder

from workflows import faults
from workflows.training.batch_plan import WorkerBatch, block_share, stride_share, worker_batches
from workflows.training.checkpoints import (is_training_checkpoint, load_best_state, load_stream_state, load_training_checkpoint,
                          save_training_checkpoint)
from workflows.training.config import TrainJobConfig
from workflows.training.evaluation import all_reduce, perplexity_of, sentence_sums, stream_sums
from workflows.training.read_ahead import ReadAhead
from workflows.training.split_rows import SplitRows
from workflows.training.lr_schedule import PlateauSchedule, warmup_factor
from workflows.training.streams import StreamBatch, StreamLayout, running_text, worker_text
from workflows.training.step import (LMLoss, StepContext, clip_gradients, configure_matmul_precision, make_optimizer,
                                     sentence_step, set_learning_rate)


def evaluate(model: BiLM, vocab: Vocabulary, tables, rank: int, world_size: int, batch_tokens: int,
             max_sentences: int | None, device) -> Perplexity:
    """Sentence-mode perplexity over held-out rows (each worker a share, sums all-reduced)."""
    sums = sentence_sums(model, vocab, tables, batch_tokens, max_sentences, device, rank, world_size)
    return perplexity_of(sums, device)


def train_loop_per_worker(loop_config: dict) -> None:
    """Ray Train entry; ``loop_config`` (built by `workflows.training.driver.run_training`) holds:

    ``job``                 the `TrainJobConfig` as a dict
    ``vocab``               the data's vocabulary (tokens)
    ``model_config``        bilm-tf options of a new model, or None
    ``init_model``          a training checkpoint or model folder to start from, or None (adapt)
    ``recipe``              `TrainingConfig` fields changed on the starting model (the optimizer
                            recipe, dropout, ...); never applied when resuming
    ``tracking``            MLflow run coordinates (rank 0 logs metrics there), or None
    ``fault_marker``        where ``job.fail_at_step``'s one failure is recorded (`workflows.faults`)
    ``cache_train``         keep the train split in memory after the first epoch
    ``train_split``         the train split's files, ``{"root": dataset URI,
                            "paths": [relative paths, manifest order]}`` (`SplitRows`)
    """
    job = TrainJobConfig.from_dict(loop_config["job"])
    place = _Placement.of_this_worker(job)
    loop = _TrainingLoop(job, place, _starting_point(loop_config, place.rank), loop_config)
    try:
        loop.run()
    finally:
        loop.close()


@dataclass(frozen=True)
class _Placement:
    """Where this worker runs: its rank among ``world`` workers, its device and the nodes spanned."""

    rank: int
    world: int
    device: torch.device
    num_nodes: int

    @classmethod
    def of_this_worker(cls, job: TrainJobConfig) -> "_Placement":
        """This worker's placement; also sets its seed, thread count and matmul precision."""
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        rank, world = ctx.get_world_rank(), ctx.get_world_size()
        device = ray.train.torch.get_device()
        configure_matmul_precision(device, job)
        torch.manual_seed(job.seed)
        torch.set_num_threads(job.torch_threads or max(1, math.ceil(job.cpus_per_worker)))
        return cls(rank, world, device, _count_nodes(world))


@dataclass
class _StartingPoint:
    """What training starts from: a new model, another model (adapt) or this run's last training
    checkpoint (resumed after a failure)."""

    model: BiLM
    vocab: Vocabulary
    step: int = 0
    optimizer_state: dict | None = None
    train_state: dict = field(default_factory=dict)  # step, epoch, validation schedule (resumed)
    best_state: dict | None = None  # the best model's parameters so far (resumed)
    stream_state: dict | None = None  # every row's carried LSTM state (resumed, stream mode)


def _starting_point(loop_config: dict, rank: int) -> _StartingPoint:
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # resuming this run after a failure
        with checkpoint.as_directory() as d:
            model, vocab, optimizer_state, state = load_training_checkpoint(Path(d))
            start = _StartingPoint(model, vocab, int(state["step"]), optimizer_state, state,
                                   load_best_state(Path(d)), load_stream_state(Path(d)))
        if rank == 0:
            print(f"resuming from the checkpoint of step {start.step}", flush=True)
        return start
    vocab = Vocabulary(loop_config["vocab"])
    optimizer_state = None
    if loop_config.get("init_model"):  # adaptation: start from another model
        init = Path(loop_config["init_model"])
        if is_training_checkpoint(init):
            model, _, optimizer_state, _ = load_training_checkpoint(init)
        else:
            model, _ = load_model_folder(init)
        if loop_config["recipe"]:
            model = _with_recipe(model, loop_config["recipe"])
    else:
        model = BiLM(BiLMConfig.from_options(loop_config["model_config"]).with_recipe(loop_config["recipe"]))
    return _StartingPoint(model, vocab, optimizer_state=optimizer_state)


@dataclass(frozen=True)
class _AfterStep:
    """What follows a step: evaluation, a training checkpoint, a report; whether it is the last."""

    epoch_end: bool
    last: bool
    evaluate: bool
    checkpoint: bool
    report: bool

    @classmethod
    def of(cls, job: TrainJobConfig, done: int, epoch: int, next_epoch: int) -> "_AfterStep":
        """After ``done`` steps, the last of them in ``epoch``, the next in ``next_epoch``."""
        epoch_end = next_epoch != epoch
        last = done == job.max_steps or (job.max_epochs is not None and epoch_end and next_epoch >= job.max_epochs)
        evaluate = done % job.eval_every == 0 or last or (job.eval_each_epoch and epoch_end)
        checkpoint = done % job.checkpoint_every == 0 or last
        report = done % job.report_every == 0 or evaluate or checkpoint
        return cls(epoch_end, last, evaluate, checkpoint, report)


class _TrainWindow:
    """Training loss and speed since the last report: evaluation, checkpoints and reports are
    left out of ``tokens_per_second``."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self.loss, self.tokens, self.steps, self.start = 0.0, 0, 0, time.perf_counter()
        self.grad_norm_sum, self.grad_norm_max, self.clipped = 0.0, 0.0, 0

    def add(self, loss: float, tokens: int, grad_norm: float, max_grad_norm: float) -> None:
        self.loss += loss
        self.tokens += tokens
        self.steps += 1
        self.grad_norm_sum += grad_norm
        self.grad_norm_max = max(self.grad_norm_max, grad_norm)
        self.clipped += grad_norm > max_grad_norm

    def metrics(self) -> dict:
        elapsed, steps = time.perf_counter() - self.start, max(1, self.steps)
        return {"train_loss": self.loss / steps, "tokens_per_second": self.tokens / elapsed,
                "grad_norm": self.grad_norm_sum / steps, "grad_norm_max": self.grad_norm_max,
                "clipped_fraction": self.clipped / steps}


class _TrainingLoop:
    """One worker's training run: steps, validation (learning-rate schedule, best model, early
    stop), metrics to Ray Train and MLflow, training checkpoints."""

    def __init__(self, job: TrainJobConfig, place: _Placement, start: _StartingPoint, loop_config: dict) -> None:
        import ray.train
        import ray.train.torch

        from workflows.registry import tracking

        self.job, self.place, self.start_step = job, place, start.step
        self.vocab, self.model = start.vocab, start.model
        self.schedule = _schedule(job, self.model, start.train_state)
        self.model.to(place.device).train()
        self.optimizer = make_optimizer(self.model)
        if start.optimizer_state is not None:
            self.optimizer.load_state_dict(start.optimizer_state)
        set_learning_rate(self.optimizer, self.schedule.learning_rate)
        self.best_model = None
        if place.rank == 0 and start.best_state is not None:
            self.best_model = BiLM(self.model.config)
            self.best_model.load_state_dict(start.best_state)
        self.ddp = (ray.train.torch.prepare_model(LMLoss(self.model), move_to_device=False) if place.world > 1
                    else LMLoss(self.model))
        self.autocast = torch.autocast(place.device.type, dtype=torch.bfloat16,
                                       enabled=job.bf16 and place.device.type == "cuda")
        self.trainer = _trainer(job, self.vocab, place, start.stream_state, loop_config)
        self.fault_marker = loop_config.get("fault_marker")
        self.tracker = tracking.WorkerTracker(loop_config.get("tracking")) if place.rank == 0 else None
        if self.tracker is not None and self.start_step:
            self.tracker.log({"resumed_from_step": self.start_step}, self.start_step)
        # the held-out rows (capped) are read once, in the background from the start, and reused
        # by every evaluation
        val_shard = ray.train.get_dataset_shard("validation")
        self.val_reader = ReadAhead(lambda: [_read_capped(val_shard, job.eval_max_sentences)], depth=1,
                                    name="validation")
        self.val_tables = None
        self.window = _TrainWindow()

    def run(self) -> None:
        job = self.job
        for batch, following in _with_next(self.trainer.batches(self.start_step)):
            if batch.step >= job.max_steps or (job.max_epochs is not None and batch.epoch >= job.max_epochs):
                break  # (a resumed run that had already finished)
            if job.fail_at_step == batch.step and self.place.rank == self.place.world - 1:
                faults.fail_once(self.fault_marker, f"injected failure at step {batch.step} (fault test)")
            if batch.step <= job.warmup_steps:  # the warm-up's rate, then (at warmup_steps) the schedule's
                set_learning_rate(self.optimizer, self._learning_rate(batch.step))
            loss = self.trainer.train_step(self.ddp, self.model, self.optimizer, batch, self.autocast)
            self.window.add(loss, batch.num_tokens(), self.trainer.last_grad_norm,
                            self.model.config.training.max_grad_norm)
            if self._after_step(batch, _AfterStep.of(job, batch.step + 1, batch.epoch, following.epoch)):
                break

    def _learning_rate(self, step: int) -> float:
        """The rate of 0-based ``step``: the schedule's, scaled by the linear warm-up."""
        return self.schedule.learning_rate * warmup_factor(step, self.job.warmup_steps)

    def _after_step(self, batch, when: _AfterStep) -> bool:
        """Evaluate, report and checkpoint as ``when`` says; True if training ends here."""
        done = batch.step + 1
        metrics = {"step": done, "epoch": batch.epoch, "num_workers": self.place.world,
                   "num_nodes": self.place.num_nodes}
        if when.report:
            metrics.update(self.window.metrics(), learning_rate=self._learning_rate(batch.step))
            if when.evaluate and self._evaluate(done, metrics):  # early stop
                metrics["early_stopped"] = 1
                when = dataclasses.replace(when, last=True, checkpoint=True)
            if self.tracker is not None:
                self.tracker.log(metrics, done)
        if when.epoch_end:  # after this step's evaluation: the decayed rate applies from the next epoch
            self.schedule.end_of_epoch(batch.epoch + 1)
            set_learning_rate(self.optimizer, self.schedule.learning_rate)
        if when.report:
            self._report(metrics, done, batch.epoch, when.checkpoint)
            self.window.restart()
        return when.last

    def _evaluate(self, done: int, metrics: dict) -> bool:
        """Validation perplexity into ``metrics``, the schedule and the best model; True to stop early."""
        if self.val_tables is None:
            self.val_tables = next(iter(self.val_reader))
        ppl = self.trainer.evaluate(self.model, self.val_tables)
        improved, stop = self.schedule.update(ppl.average, done)
        if improved and self.place.rank == 0:
            self.best_model = _copy_model(self.model, self.best_model)
        set_learning_rate(self.optimizer, self.schedule.learning_rate)
        metrics.update(val_ppl_forward=ppl.forward, val_ppl_backward=ppl.backward, val_ppl=ppl.average,
                       best_val_ppl=self.schedule.best, best_step=self.schedule.best_step)
        return stop

    def _report(self, metrics: dict, done: int, epoch: int, with_checkpoint: bool) -> None:
        """``ray.train.report`` of ``metrics``, with a training checkpoint (written by rank 0)."""
        import ray.train

        if not with_checkpoint:
            ray.train.report(metrics)
            return
        carried = self.trainer.carried_state()  # every rank takes part in gathering it
        if self.place.rank != 0:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as d:
            save_training_checkpoint(Path(d), self.model, self.vocab, self.optimizer, done,
                                     {"epoch": epoch, "schedule": self.schedule.state_dict()},
                                     best_model=self.best_model, stream_state=carried)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))

    def close(self) -> None:
        """Stop the background readers (next epoch, validation)."""
        self.trainer.close()
        self.val_reader.close()


def _schedule(job: TrainJobConfig, model: BiLM, train_state: dict) -> PlateauSchedule:
    """The validation schedule: a resumed run's, or a new one at the model's learning rate."""
    if "schedule" in train_state:
        return PlateauSchedule.from_state(train_state["schedule"])
    return PlateauSchedule(model.config.training.learning_rate, job.lr_decay, job.lr_decay_patience,
                           job.plateau_threshold, job.early_stop_patience, job.lr_decay_start_epoch)


def _trainer(job: TrainJobConfig, vocab: Vocabulary, place: _Placement, stream_state: dict | None,
             loop_config: dict) -> "SentenceTrainer | StreamTrainer":
    """The training mode's trainer over this worker's view of the train split."""
    split = loop_config["train_split"]
    if job.mode == "stream":
        return StreamTrainer(job, vocab, SplitRows(split["root"], split["paths"]), place.rank, place.world,
                             place.device, stream_state)
    rows = SplitRows(split["root"], split["paths"], cache=bool(loop_config.get("cache_train")))
    return SentenceTrainer(job, vocab, rows, place.rank, place.world, place.device)


class SentenceTrainer:
    """Sentence mode: length-bucketed global batches of full sentences (`workflows.training.batches`),
    planned from the split's sentence lengths (`workflows.training.batch_plan`); this worker reads
    only the rows of its shares (`workflows.training.split_rows`), which ``job.share`` picks."""

    def __init__(self, job: TrainJobConfig, vocab: Vocabulary, rows: SplitRows, rank: int, world: int,
                 device) -> None:
        self.job, self.vocab, self.rank, self.world, self.device = job, vocab, rank, world, device
        self.rows = rows
        self.lengths = rows.lengths()  # the index: one small column, no rows
        self.share = (block_share(rows.block_starts(job.block_rows), rank, world) if job.share == "blocks"
                      else stride_share(rank, world))
        self._reader: ReadAhead | None = None
        self.last_grad_norm = 0.0  # of the last step, before clipping

    def batches(self, start_step: int) -> Iterator[WorkerBatch]:
        """This worker's batches from ``start_step`` on, read in the background; the rows of
        earlier steps are never read."""
        job = self.job
        self.close()
        self._reader = ReadAhead(lambda: worker_batches(self.lengths, self.rows.read, job.batch_tokens,
                                                        job.shuffle_buffer, self.rank, self.world, job.seed,
                                                        start_step, self.share), name="train-rows")
        return iter(self._reader)

    def train_step(self, ddp, model, optimizer, batch: WorkerBatch, autocast) -> float:
        ctx = StepContext(self.vocab, self.rank, self.world, self.job, model.config.training, self.device, autocast)
        loss = sentence_step(ddp, model, optimizer, batch, ctx)
        self.last_grad_norm = ctx.grad_norm
        return loss

    def evaluate(self, model: BiLM, tables) -> Perplexity:
        return evaluate(model, self.vocab, tables, self.rank, self.world, self.job.batch_tokens,
                        self.job.eval_max_sentences, self.device)

    def carried_state(self) -> None:
        return None

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


class StreamTrainer:
    """Stream mode: windows of the running text with the LSTM state carried (`workflows.training.streams`).
    This worker reads only the sentences under its rows (`stream_pieces`), once: every epoch has
    the same rows. Its state: forward rows ``self.rows``, backward rows their mirrors."""

    def __init__(self, job: TrainJobConfig, vocab: Vocabulary, rows, rank: int, world: int, device,
                 carried: dict | None) -> None:
        """``rows``: the train split's `SplitRows`, or a Ray Data shard of the whole split."""
        self.job, self.vocab, self.rank, self.world, self.device = job, vocab, rank, world, device
        if isinstance(rows, SplitRows):  # only the sentences under this worker's rows
            text = worker_text(rows, job.stream_rows, job.unroll_steps, vocab, rank, world)
            rows.close()
        else:  # a Ray Data shard of the whole split (tests)
            text = running_text(list(rows.iter_batches(batch_size=4096, batch_format="pyarrow")), vocab)
        self.layout = StreamLayout(text, job.stream_rows, job.unroll_steps)
        self.rows = self.layout.worker_rows(rank, world)
        self.state: LstmState | None = None
        if carried is not None:  # the checkpoint holds every row's state: take this worker's
            layers = len([k for k in carried if k.startswith("c.")])
            self.state = LstmState([self._mine(carried[f"c.{i}"]).to(device) for i in range(layers)],
                                   [self._mine(carried[f"h.{i}"]).to(device) for i in range(layers)])
        self.val_text = None
        self.last_grad_norm = 0.0  # of the last step, before clipping

    def _directions_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This worker's rows of the forward and of the backward text, in its batches' order."""
        return torch.from_numpy(self.rows), torch.from_numpy(self.layout.rows - 1 - self.rows)

    def _mine(self, every_row: torch.Tensor) -> torch.Tensor:
        """(2, rows, H) state of every row -> (2, R, H) this worker's."""
        forward, backward = self._directions_rows()
        return torch.stack([every_row[0, forward], every_row[1, backward]])

    def batches(self, start_step: int) -> Iterator[StreamBatch]:
        return self.layout.batches(start_step, self.rank, self.world)

    def train_step(self, ddp, model, optimizer, batch: StreamBatch, autocast) -> float:
        if batch.step % self.layout.steps_per_epoch == 0:
            self.state = None  # an epoch starts every row from the beginning of its text
        tensors = {"char_ids": batch.char_ids.to(self.device), "targets": batch.targets.to(self.device)}
        job, t = self.job, model.config.training
        sampler = torch.Generator().manual_seed(job.seed * 1_000_003 + batch.step)
        torch.manual_seed((job.seed * 1_000_003 + batch.step) * 1_009 + self.rank)  # dropout masks
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            stats, final = ddp(tensors, t.train_negative_samples, sampler, self.state)
        loss = 0.5 * (stats["forward_nll"] + stats["backward_nll"]) / batch.global_targets
        (loss * self.world).backward()  # DDP averages over workers: undo it for a global mean
        self.state = final.detach()
        self.last_grad_norm = clip_gradients(model, t.max_grad_norm)
        optimizer.step()
        return all_reduce([float(loss.detach())], self.device)[0]

    def evaluate(self, model: BiLM, tables) -> Perplexity:
        if self.val_text is None:
            self.val_text = running_text(tables, self.vocab, self.job.eval_max_sentences)
        sums = stream_sums(model, self.val_text, self.job.eval_stream_rows, self.job.unroll_steps, self.device,
                           self.rank, self.world)
        return perplexity_of(sums, self.device)

    def carried_state(self) -> dict | None:
        """Every row's carried state, gathered from the workers (rank 0 gets it; others None)."""
        if self.state is None:
            return None
        import torch.distributed as dist

        local = {"c": [c.cpu() for c in self.state.c], "h": [h.cpu() for h in self.state.h]}
        parts = [self._directions_rows() + (local,)]
        if self.world > 1 and dist.is_initialized():
            parts = [None] * self.world
            dist.all_gather_object(parts, self._directions_rows() + (local,))
        if self.rank != 0:
            return None
        out = {}
        for name, layers in local.items():
            for i, mine in enumerate(layers):
                full = torch.zeros(2, self.layout.rows, mine.shape[2])
                for forward, backward, theirs in parts:
                    full[0, forward] = theirs[name][i][0]
                    full[1, backward] = theirs[name][i][1]
                out[f"{name}.{i}"] = full
        return out

    def close(self) -> None:
        pass


def _with_next(iterator: Iterator):
    """(item, the item after it) for an endless iterator."""
    iterator = iter(iterator)
    current = next(iterator)
    for following in iterator:
        yield current, following
        current = following


def _with_recipe(model: BiLM, recipe: dict) -> BiLM:
    """The same parameters in a model whose `TrainingConfig` has ``recipe``'s fields (dropout, optimizer, ...)."""
    rebuilt = BiLM(model.config.with_recipe(recipe))
    rebuilt.load_state_dict(model.state_dict())
    return rebuilt


def _copy_model(model: BiLM, into: BiLM | None) -> BiLM:
    """A CPU copy of ``model``'s parameters (reusing ``into``'s storage)."""
    if into is None:
        into = BiLM(model.config)
    into.load_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()})
    return into


def _read_capped(shard, max_sentences: int | None) -> list:
    """The held-out split's first ``max_sentences`` rows as Arrow tables (all if None)."""
    tables, rows = [], 0
    for table in shard.iter_batches(batch_size=1024, batch_format="pyarrow"):
        tables.append(table)
        rows += table.num_rows
        if max_sentences is not None and rows >= max_sentences:
            break
    return tables


def _count_nodes(world: int) -> int:
    """How many Ray nodes the worker group spans (reported with the metrics)."""
    import ray
    import torch.distributed as dist

    node = ray.get_runtime_context().get_node_id()
    if world == 1 or not dist.is_initialized():
        return 1
    nodes = [None] * world
    dist.all_gather_object(nodes, node)
    return len(set(nodes))
