"""One optimizer step, the same on every worker: the language-model loss as DDP sees it, the
optimizer, and the sentence-mode step (stream mode's is `StreamTrainer.train_step`).

Each worker's loss is scaled by the *global* target count and multiplied back by the world size
(DDP averages gradients), so W workers compute exactly the gradient of one worker on the whole
batch. A worker whose share of a batch is empty (sentence mode's row blocks,
`workflows.training.batch_plan.block_share`) still takes part in the gradient all-reduce, with a
zero-weighted pass over a placeholder sentence. Dropout masks and sampled-softmax candidates are drawn from generators seeded by
(seed, step[, rank]): a resumed run continues exactly as the uninterrupted one.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from elmo_core.bilm import BiLM
from elmo_core.characters import EOS_TOKEN, token_to_ids
from elmo_core.config import TrainingConfig
from elmo_core.vocabulary import Vocabulary

from workflows.training.batch_plan import WorkerBatch
from workflows.training.batches import GlobalBatch, Sentence, split_micro, to_tensors
from workflows.training.config import TrainJobConfig
from workflows.training.evaluation import all_reduce


class LMLoss(torch.nn.Module):
    """Wraps the biLM so that DDP sees the language-model loss as ``forward``: sentence batches
    (``next_ids``/``prev_ids``) or stream windows (``targets``, with the carried state)."""

    def __init__(self, bilm: BiLM) -> None:
        super().__init__()
        self.bilm = bilm

    def forward(self, tensors: dict, n_samples, generator, state=None):
        if "targets" in tensors:
            _, stats, final = self.bilm.stream_loss(tensors["char_ids"], tensors["targets"], state,
                                                    n_samples=n_samples, generator=generator)
            return stats, final
        _, stats, _ = self.bilm.lm_loss(tensors["char_ids"], tensors["next_ids"], tensors["prev_ids"],
                                        n_samples=n_samples, generator=generator)
        return stats, None


def make_optimizer(model: BiLM) -> torch.optim.Optimizer:
    """The optimizer `TrainingConfig` names, at its learning rate."""
    t = model.config.training
    if t.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=t.learning_rate)
    if t.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=t.learning_rate)
    return torch.optim.Adagrad(model.parameters(), lr=t.learning_rate,
                               initial_accumulator_value=t.initial_accumulator_value)


def configure_matmul_precision(device: torch.device, job: TrainJobConfig) -> None:
    """On a GPU, let float32 products use TF32 tensor cores when ``job.tf32`` (this process's
    setting; training only: embedding stays exact float32). Nothing changes on a CPU."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = job.tf32
        torch.backends.cudnn.allow_tf32 = job.tf32


def clip_gradients(model: torch.nn.Module, max_norm: float) -> float:
    """Clip the global gradient norm to ``max_norm``; returns the norm before clipping."""
    return float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))


def set_learning_rate(optimizer: torch.optim.Optimizer, learning_rate: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = learning_rate


@dataclass
class StepContext:
    """What a step needs besides the model, optimizer and batch: this worker's place, the job's
    batching and seed, the model's recipe, the device and the autocast context."""

    vocab: Vocabulary
    rank: int
    world: int
    job: TrainJobConfig
    training: TrainingConfig
    device: torch.device | str
    autocast: object  # a torch.autocast (disabled on CPU) or contextlib.nullcontext()
    grad_norm: float = 0.0  # set by the step: the global gradient norm before clipping


def sentence_step(ddp, model: BiLM, optimizer, batch: GlobalBatch | WorkerBatch, ctx: StepContext) -> float:
    """One optimizer step on this worker's share of a sentence batch; returns the batch's global loss."""
    job, t, device, world = ctx.job, ctx.training, ctx.device, ctx.world
    n_targets = batch.num_targets()  # per direction, whole global batch
    share, weight = batch.share(ctx.rank, world), 1.0
    if not share:  # none of this batch is this worker's: DDP's all-reduce still needs its (zero) gradient
        share, weight = [_placeholder(ctx.vocab)], 0.0
    micro = split_micro(share, job.grad_accum)
    sampler = torch.Generator().manual_seed(job.seed * 1_000_003 + batch.step)
    torch.manual_seed((job.seed * 1_000_003 + batch.step) * 1_009 + ctx.rank)  # dropout masks
    optimizer.zero_grad(set_to_none=True)
    local = 0.0
    for i, sentences in enumerate(micro):
        tensors = {k: v.to(device) for k, v in to_tensors(sentences, ctx.vocab).items()}
        sync = i == len(micro) - 1
        context = ddp.no_sync() if (not sync and hasattr(ddp, "no_sync")) else contextlib.nullcontext()
        with context:
            with ctx.autocast:
                # the same candidate set for every micro-batch and worker of this step
                generator = torch.Generator().set_state(sampler.get_state())
                stats, _ = ddp(tensors, t.train_negative_samples, generator)
            loss = weight * 0.5 * (stats["forward_nll"] + stats["backward_nll"]) / n_targets
            (loss * world).backward()  # DDP averages over workers: undo it for a global mean
        local += float(loss.detach())
    ctx.grad_norm = clip_gradients(model, t.max_grad_norm)
    optimizer.step()
    return all_reduce([local], device)[0]


def _placeholder(vocab: Vocabulary) -> Sentence:
    """A one-word sentence for a worker without a share: its pass is weighted 0."""
    return Sentence(np.array([vocab.eos], np.int32), token_to_ids(EOS_TOKEN)[None].astype(np.uint16))
