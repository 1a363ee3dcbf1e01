"""The per-worker training loop (Ray Train), its checkpoints and held-out evaluation.

Every worker builds the same global batches (`workflows.batches`) and trains on its share;
DDP averages gradients, and each worker's loss is scaled by the *global* target count, so W
workers compute exactly the gradient of one worker on the whole batch. Randomness (dropout,
sampled-softmax candidates) is drawn from generators seeded by (seed, step[, rank]), so a run
resumed from a checkpoint at step k continues exactly as the uninterrupted run: the checkpoint
holds the model, the optimizer state and the step (the data position follows from the step).
"""

from __future__ import annotations

import json
import posixpath
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import torch

from elmo_core.bilm import BiLM, Perplexity
from elmo_core.config import BiLMConfig
from elmo_core.vocabulary import Vocabulary
from elmo_core.weights import load_checkpoint, save_checkpoint

from .batches import GlobalBatch, global_batches, split_micro, to_tensors
from .config import TrainJobConfig
from .read_ahead import ReadAhead

OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "train_state.json"
MODEL_DIR = "model"


class LMLoss(torch.nn.Module):
    """Wraps the biLM so that DDP sees the language-model loss as ``forward``."""

    def __init__(self, bilm: BiLM) -> None:
        super().__init__()
        self.bilm = bilm

    def forward(self, char_ids, next_ids, prev_ids, n_samples, generator):
        _, stats, _ = self.bilm.lm_loss(char_ids, next_ids, prev_ids, n_samples=n_samples, generator=generator)
        return stats


def make_optimizer(model: BiLM) -> torch.optim.Optimizer:
    t = model.config.training
    return torch.optim.Adagrad(model.parameters(), lr=t.learning_rate, initial_accumulator_value=t.initial_accumulator_value)


def save_training_checkpoint(directory: Path, model: BiLM, vocab: Vocabulary, optimizer, step: int, extra: dict) -> None:
    save_checkpoint(model, directory / MODEL_DIR, vocab)
    torch.save(optimizer.state_dict(), directory / OPTIMIZER_FILE)
    (directory / STATE_FILE).write_text(json.dumps({"step": step, **extra}, indent=2))


def load_training_checkpoint(directory: Path) -> tuple[BiLM, Vocabulary, dict | None, dict]:
    """(model, vocabulary, optimizer state or None, train state); nothing is unpickled except
    the optimizer's tensors, read with ``weights_only=True``."""
    model, vocab = load_checkpoint(directory / MODEL_DIR)
    optimizer = None
    if (directory / OPTIMIZER_FILE).exists():
        optimizer = torch.load(directory / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
    state = json.loads((directory / STATE_FILE).read_text()) if (directory / STATE_FILE).exists() else {}
    return model, vocab, optimizer, state


def _all_reduce(values: list[float], device) -> list[float]:
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


@torch.no_grad()
def evaluate(model: BiLM, vocab: Vocabulary, tables, rank: int, world_size: int, batch_tokens: int,
             max_sentences: int | None, device) -> Perplexity:
    """Full-softmax perplexity over held-out sentences (each worker a share, sums all-reduced)."""
    from .batches import sentences_from_table

    was_training = model.training
    model.eval()
    sums = [0.0, 0.0, 0.0, 0.0]
    pending, seen, pending_tokens = [], 0, 0

    def flush():
        nonlocal pending_tokens
        pending_tokens = 0
        if not pending:
            return
        batch = {k: v.to(device) for k, v in to_tensors(pending, vocab).items()}
        _, stats, _ = model.lm_loss(batch["char_ids"], batch["next_ids"], batch["prev_ids"])
        for i, key in enumerate(("forward_nll", "forward_count", "backward_nll", "backward_count")):
            sums[i] += float(stats[key])
        pending.clear()

    for table in tables:
        for sentence in sentences_from_table(table):
            if max_sentences is not None and seen >= max_sentences:
                break
            if seen % world_size == rank:
                pending.append(sentence)
                pending_tokens += len(sentence) + 2
                if pending_tokens >= batch_tokens:
                    flush()
            seen += 1
    flush()
    model.train(was_training)
    f_nll, f_n, b_nll, b_n = _all_reduce(sums, device)
    return Perplexity.from_sums(f_nll, int(f_n), b_nll, int(b_n))


def train_loop_per_worker(loop_config: dict) -> None:
    """Ray Train entry: ``loop_config`` has ``job`` (TrainJobConfig dict), ``model_config``
    (options dict) or ``init_checkpoint`` (a training/native checkpoint dir), ``vocab`` (tokens),
    ``tracking`` (MLflow run coordinates or None)."""
    import ray.train
    import ray.train.torch

    from . import tracking

    job = TrainJobConfig.from_dict(loop_config["job"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(job.seed)
    vocab = Vocabulary(loop_config["vocab"])

    optimizer_state, start_step = None, 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # resuming this run after a failure
        with checkpoint.as_directory() as d:
            model, vocab, optimizer_state, state = load_training_checkpoint(Path(d))
        start_step = int(state["step"])
        if rank == 0:
            print(f"resuming from the checkpoint of step {start_step}", flush=True)
    elif loop_config.get("init_checkpoint"):  # adaptation: start from another model
        init = Path(loop_config["init_checkpoint"])
        if (init / MODEL_DIR).exists():
            model, _, optimizer_state, _ = load_training_checkpoint(init)
        else:
            model, _ = load_checkpoint(init)
    else:
        model = BiLM(BiLMConfig.from_options(loop_config["model_config"]))
    model.to(device).train()
    optimizer = make_optimizer(model)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    ddp = ray.train.torch.prepare_model(LMLoss(model), move_to_device=False) if world > 1 else LMLoss(model)
    t = model.config.training
    autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=job.bf16 and device.type == "cuda")

    num_nodes = _count_nodes(world)
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("validation")
    open_epoch = epoch_reader(train_shard, cache=bool(loop_config.get("cache_train")))
    batches = global_batches(open_epoch, job.batch_tokens, job.shuffle_buffer, world, job.seed)
    tracker = tracking.WorkerTracker(loop_config.get("tracking")) if rank == 0 else None
    if tracker is not None and start_step:
        tracker.log({"resumed_from_step": start_step}, start_step)

    # the held-out rows (capped) are read once, in the background from the start, and reused by
    # every evaluation
    val_reader = ReadAhead(lambda: [_read_capped(val_shard, job.eval_max_sentences)], depth=1, name="validation")
    val_tables = None
    window_loss, window_tokens, window_start = 0.0, 0, time.perf_counter()
    try:
        for batch in batches:
            step = batch.step
            if step < start_step:
                continue  # replayed to reach the checkpoint's data position; no compute
            if step >= job.max_steps:
                break
            if job.fail_at_step is not None and step == job.fail_at_step and rank == world - 1:
                if _first_failure(loop_config["fault_marker"]):
                    raise RuntimeError(f"injected failure at step {step} (fault test)")
            loss_sum = _train_step(ddp, model, optimizer, batch, vocab, rank, world, job, t, device, autocast)
            window_loss += loss_sum
            window_tokens += batch.num_tokens()
            done = step + 1
            last = done == job.max_steps
            metrics = {"step": done, "epoch": batch.epoch, "num_workers": world, "num_nodes": num_nodes}
            if done % job.report_every == 0 or last or done % job.eval_every == 0 or done % job.checkpoint_every == 0:
                elapsed = time.perf_counter() - window_start
                metrics.update(train_loss=window_loss / max(1, _steps_since(done, job.report_every, start_step)),
                               tokens_per_second=window_tokens / elapsed, learning_rate=t.learning_rate)
                if done % job.eval_every == 0 or last:
                    if val_tables is None:
                        val_tables = next(iter(val_reader))
                    ppl = evaluate(model, vocab, val_tables, rank, world, job.batch_tokens, job.eval_max_sentences, device)
                    metrics.update(val_ppl_forward=ppl.forward, val_ppl_backward=ppl.backward, val_ppl=ppl.average)
                if tracker is not None:
                    tracker.log(metrics, done)
                if (done % job.checkpoint_every == 0 or last) and rank == 0:
                    with tempfile.TemporaryDirectory() as d:
                        save_training_checkpoint(Path(d), model, vocab, optimizer, done, {"epoch": batch.epoch})
                        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
                else:
                    ray.train.report(metrics)
                # tokens_per_second measures training alone: evaluation, checkpoints and reports are
                # left out of the next window
                window_loss, window_tokens, window_start = 0.0, 0, time.perf_counter()
            if last:
                break
    finally:  # stop the background readers (next epoch, validation)
        batches.close()
        val_reader.close()


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
    """Fault injection happens once per run: a marker file (local or on the storage's
    filesystem) records that it did."""
    from preprocessing.storage import OutputLocation

    location, name = OutputLocation(posixpath.dirname(marker)), posixpath.basename(marker)
    if location.exists(name):
        return False
    location.write_text("failed once\n", name)
    return True


def _steps_since(done: int, every: int, start_step: int) -> int:
    previous = ((done - 1) // every) * every
    return done - max(previous, start_step)


def _train_step(ddp, model: BiLM, optimizer, batch: GlobalBatch, vocab, rank, world, job, t, device, autocast) -> float:
    """One optimizer step on this worker's share; returns the global loss of the batch."""
    n_targets = sum(len(s) + 1 for s in batch.sentences)  # per direction, whole global batch
    share = batch.share(rank, world)
    micro = split_micro(share, job.grad_accum)
    sampler = torch.Generator().manual_seed(job.seed * 1_000_003 + batch.step)
    torch.manual_seed((job.seed * 1_000_003 + batch.step) * 1_009 + rank)  # dropout masks
    optimizer.zero_grad(set_to_none=True)
    local = 0.0
    for i, sentences in enumerate(micro):
        tensors = {k: v.to(device) for k, v in to_tensors(sentences, vocab).items()}
        sync = i == len(micro) - 1
        context = ddp.no_sync() if (not sync and hasattr(ddp, "no_sync")) else _null()
        with context:
            with autocast:
                # the same candidate set for every micro-batch and worker of this step
                generator = torch.Generator().set_state(sampler.get_state())
                stats = ddp(tensors["char_ids"], tensors["next_ids"], tensors["prev_ids"],
                            t.n_negative_samples_batch, generator)
            loss = 0.5 * (stats["forward_nll"] + stats["backward_nll"]) / n_targets
            (loss * world).backward()  # DDP averages over workers: undo it for a global mean
        local += float(loss.detach())
    torch.nn.utils.clip_grad_norm_(model.parameters(), t.max_grad_norm)
    optimizer.step()
    return _all_reduce([local], device)[0]


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
