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

import math
import posixpath
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import torch

from elmo_core.bilm import BiLM, Perplexity
from elmo_core.config import BiLMConfig
from elmo_core.lstm import LstmState
from elmo_core.vocabulary import Vocabulary
from elmo_core.weights import load_checkpoint

from workflows.training.batches import GlobalBatch, global_batches
from workflows.training.checkpoints import (is_training_checkpoint, load_best_state, load_stream_state, load_training_checkpoint,
                          save_training_checkpoint)
from workflows.training.config import TrainJobConfig
from workflows.training.evaluation import all_reduce, perplexity_of, sentence_sums, stream_sums
from workflows.training.read_ahead import ReadAhead
from workflows.training.lr_schedule import PlateauSchedule
from workflows.training.streams import StreamBatch, StreamLayout, running_text
from workflows.training.step import (LMLoss, StepContext, configure_matmul_precision, make_optimizer, sentence_step,
                         set_learning_rate)


def evaluate(model: BiLM, vocab: Vocabulary, tables, rank: int, world_size: int, batch_tokens: int,
             max_sentences: int | None, device) -> Perplexity:
    """Sentence-mode perplexity over held-out rows (each worker a share, sums all-reduced)."""
    sums = sentence_sums(model, vocab, tables, batch_tokens, max_sentences, device, rank, world_size)
    return perplexity_of(sums, device)


def train_loop_per_worker(loop_config: dict) -> None:
    """Ray Train entry: ``loop_config`` has ``job`` (TrainJobConfig dict), ``model_config``
    (options dict) or ``init_checkpoint`` (a training/native checkpoint dir), ``recipe``
    (`TrainingConfig` fields changed on that starting model), ``vocab`` (tokens),
    ``tracking`` (MLflow run coordinates or None)."""
    import ray.train
    import ray.train.torch

    from workflows.registry import tracking

    job = TrainJobConfig.from_dict(loop_config["job"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    configure_matmul_precision(device, job)
    torch.manual_seed(job.seed)
    torch.set_num_threads(job.torch_threads or max(1, math.ceil(job.cpus_per_worker)))
    vocab = Vocabulary(loop_config["vocab"])

    optimizer_state, start_step, state = None, 0, {}
    checkpoint = ray.train.get_checkpoint()
    best_state = None
    stream_state = None
    if checkpoint is not None:  # resuming this run after a failure
        with checkpoint.as_directory() as d:
            model, vocab, optimizer_state, state = load_training_checkpoint(Path(d))
            best_state, stream_state = load_best_state(Path(d)), load_stream_state(Path(d))
        start_step = int(state["step"])
        if rank == 0:
            print(f"resuming from the checkpoint of step {start_step}", flush=True)
    elif loop_config.get("init_checkpoint"):  # adaptation: start from another model
        init = Path(loop_config["init_checkpoint"])
        if is_training_checkpoint(init):
            model, _, optimizer_state, _ = load_training_checkpoint(init)
        else:
            model, _ = load_checkpoint(init)
        if loop_config["recipe"]:
            model = _with_recipe(model, loop_config["recipe"])
    else:
        model = BiLM(BiLMConfig.from_options(loop_config["model_config"]).with_recipe(loop_config["recipe"]))
    t = model.config.training
    schedule = PlateauSchedule.from_state(state["schedule"]) if "schedule" in state else PlateauSchedule(
        t.learning_rate, job.lr_decay, job.lr_decay_patience, job.plateau_threshold, job.early_stop_patience,
        job.lr_decay_start_epoch)
    model.to(device).train()
    optimizer = make_optimizer(model)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    set_learning_rate(optimizer, schedule.learning_rate)
    best_model = None
    if rank == 0 and best_state is not None:
        best_model = BiLM(model.config)
        best_model.load_state_dict(best_state)
    ddp = ray.train.torch.prepare_model(LMLoss(model), move_to_device=False) if world > 1 else LMLoss(model)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=job.bf16 and device.type == "cuda")

    num_nodes = _count_nodes(world)
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("validation")
    if job.mode == "stream":
        trainer = StreamTrainer(job, vocab, train_shard, rank, world, device, stream_state)
    else:
        trainer = SentenceTrainer(job, vocab, train_shard, rank, world, device,
                                  cache=bool(loop_config.get("cache_train")))
    tracker = tracking.WorkerTracker(loop_config.get("tracking")) if rank == 0 else None
    if tracker is not None and start_step:
        tracker.log({"resumed_from_step": start_step}, start_step)

    # the held-out rows (capped) are read once, in the background from the start, and reused by
    # every evaluation
    val_reader = ReadAhead(lambda: [_read_capped(val_shard, job.eval_max_sentences)], depth=1, name="validation")
    val_tables = None
    window_loss, window_tokens, window_start = 0.0, 0, time.perf_counter()
    window_steps = 0
    try:
        for batch, following in _with_next(trainer.batches(start_step)):
            step = batch.step
            if step >= job.max_steps or (job.max_epochs is not None and batch.epoch >= job.max_epochs):
                break  # (a resumed run that had already finished)
            if job.fail_at_step is not None and step == job.fail_at_step and rank == world - 1:
                if _first_failure(loop_config["fault_marker"]):
                    raise RuntimeError(f"injected failure at step {step} (fault test)")
            window_loss += trainer.train_step(ddp, model, optimizer, batch, autocast)
            window_tokens += batch.num_tokens()
            window_steps += 1
            done = step + 1
            epoch_end = following.epoch != batch.epoch
            last = done == job.max_steps or (job.max_epochs is not None and epoch_end
                                             and following.epoch >= job.max_epochs)
            evaluate_now = done % job.eval_every == 0 or last or (job.eval_each_epoch and epoch_end)
            checkpoint_now = done % job.checkpoint_every == 0 or last
            report_now = done % job.report_every == 0 or evaluate_now or checkpoint_now
            metrics = {"step": done, "epoch": batch.epoch, "num_workers": world, "num_nodes": num_nodes}
            if report_now:
                elapsed = time.perf_counter() - window_start
                metrics.update(train_loss=window_loss / max(1, window_steps),
                               tokens_per_second=window_tokens / elapsed, learning_rate=schedule.learning_rate)
                if evaluate_now:
                    if val_tables is None:
                        val_tables = next(iter(val_reader))
                    ppl = trainer.evaluate(model, val_tables)
                    improved, stop = schedule.update(ppl.average, done)
                    if improved and rank == 0:
                        best_model = _copy_model(model, best_model)
                    set_learning_rate(optimizer, schedule.learning_rate)
                    metrics.update(val_ppl_forward=ppl.forward, val_ppl_backward=ppl.backward, val_ppl=ppl.average,
                                   best_val_ppl=schedule.best, best_step=schedule.best_step)
                    if stop:
                        metrics["early_stopped"] = 1
                        last = checkpoint_now = True
                if tracker is not None:
                    tracker.log(metrics, done)
            if epoch_end:  # after this step's evaluation: the decayed rate applies from the next epoch
                schedule.end_of_epoch(batch.epoch + 1)
                set_learning_rate(optimizer, schedule.learning_rate)
            if report_now:
                if checkpoint_now:
                    carried = trainer.carried_state()  # every rank takes part in gathering it
                    if rank == 0:
                        with tempfile.TemporaryDirectory() as d:
                            save_training_checkpoint(Path(d), model, vocab, optimizer, done,
                                                     {"epoch": batch.epoch, "schedule": schedule.state_dict()},
                                                     best_model=best_model, stream_state=carried)
                            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
                    else:
                        ray.train.report(metrics)
                else:
                    ray.train.report(metrics)
                # tokens_per_second measures training alone: evaluation, checkpoints and reports are
                # left out of the next window
                window_loss, window_tokens, window_steps, window_start = 0.0, 0, 0, time.perf_counter()
            if last:
                break
    finally:  # stop the background readers (next epoch, validation)
        trainer.close()
        val_reader.close()


class SentenceTrainer:
    """Sentence mode: length-bucketed global batches of full sentences (`workflows.training.batches`)."""

    def __init__(self, job: TrainJobConfig, vocab: Vocabulary, train_shard, rank: int, world: int, device,
                 cache: bool) -> None:
        self.job, self.vocab, self.rank, self.world, self.device = job, vocab, rank, world, device
        self._batches = global_batches(epoch_reader(train_shard, cache=cache), job.batch_tokens,
                                       job.shuffle_buffer, world, job.seed)

    def batches(self, start_step: int) -> Iterator[GlobalBatch]:
        for batch in self._batches:
            if batch.step >= start_step:  # earlier ones replay the data position; no compute
                yield batch

    def train_step(self, ddp, model, optimizer, batch: GlobalBatch, autocast) -> float:
        ctx = StepContext(self.vocab, self.rank, self.world, self.job, model.config.training, self.device, autocast)
        return sentence_step(ddp, model, optimizer, batch, ctx)

    def evaluate(self, model: BiLM, tables) -> Perplexity:
        return evaluate(model, self.vocab, tables, self.rank, self.world, self.job.batch_tokens,
                        self.job.eval_max_sentences, self.device)

    def carried_state(self) -> None:
        return None

    def close(self) -> None:
        self._batches.close()


class StreamTrainer:
    """Stream mode: windows of the running text with the LSTM state carried (`workflows.training.streams`)."""

    def __init__(self, job: TrainJobConfig, vocab: Vocabulary, train_shard, rank: int, world: int, device,
                 carried: dict | None) -> None:
        self.job, self.vocab, self.rank, self.world, self.device = job, vocab, rank, world, device
        tables = list(train_shard.iter_batches(batch_size=4096, batch_format="pyarrow"))
        self.layout = StreamLayout(running_text(tables, vocab), job.stream_rows, job.unroll_steps)
        self.rows = self.layout.worker_rows(rank, world)
        self.state: LstmState | None = None
        if carried is not None:  # the checkpoint holds every row's state: take this worker's
            layers = len([k for k in carried if k.startswith("c.")])
            index = torch.from_numpy(self.rows)
            self.state = LstmState([carried[f"c.{i}"][:, index].to(device) for i in range(layers)],
                                   [carried[f"h.{i}"][:, index].to(device) for i in range(layers)])
        self.val_text = None

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
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.max_grad_norm)
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
        parts = [(self.rows, local)]
        if self.world > 1 and dist.is_initialized():
            parts = [None] * self.world
            dist.all_gather_object(parts, (self.rows, local))
        if self.rank != 0:
            return None
        out = {}
        for name, layers in local.items():
            for i, mine in enumerate(layers):
                full = torch.zeros(2, self.layout.rows, mine.shape[2])
                for rows, theirs in parts:
                    full[:, torch.from_numpy(rows)] = theirs[name][i]
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


def epoch_reader(shard, cache: bool) -> Callable[[int], Iterator]:
    """``epoch -> the train split's Arrow tables``, in dataset order. With ``cache``, the first
    complete pass is kept and later epochs replay it without starting Ray Data again."""
    kept: list = []
    complete = False

    def read(epoch: int) -> Iterator:
        nonlocal complete
        if complete:
            yield from kept
            return
        kept.clear()  # an interrupted pass starts over
        for table in shard.iter_batches(batch_size=1024, batch_format="pyarrow"):
            if cache:
                kept.append(table)
            yield table
        complete = cache

    return read


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


def _first_failure(marker: str) -> bool:
    """Fault injection happens once per run: a marker file (local or on the storage's object
    store), created only if absent, records that it did."""
    from workflows.object_store import Store

    return Store(posixpath.dirname(marker)).put_if_absent(posixpath.basename(marker), b"failed once\n")


