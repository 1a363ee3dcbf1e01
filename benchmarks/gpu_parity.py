"""`bench_gpu.py`'s checks that the CUDA path computes what the CPU does: the biLM against
float64, the fused cell against the eager loop, the LSTM backward, bfloat16 autocast, and DDP."""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
import torch

from elmo_core import lstm_recurrence
from elmo_core.bilm import BiLM
from elmo_core.characters import batch_to_ids
from elmo_core.config import BiLMConfig
from gpu_device import sync, tf32
from gpu_inputs import model_of, recurrence_from, step_context, synthetic_batch, vocab_of


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    a, ref = a.double().cpu(), ref.double().cpu()
    return float((a - ref).norm() / ref.norm().clamp_min(1e-30))


def parity_embed(device, sentences) -> dict:
    """``original`` on the device (float32) against float64 on the CPU."""
    model = model_of("original", 0, "cpu").eval()
    chars = batch_to_ids(sentences, add_boundaries=True)
    with torch.no_grad(), tf32(False):
        ref = model.double()(chars).layers  # (L+1, B, T, 2P)
        got = model.float().to(device)(chars.to(device)).layers.cpu()
    return {"sentences": len(sentences),
            "layer_rel_err": [rel_err(got[i], ref[i]) for i in range(ref.shape[0])],
            "max_abs_diff": float((got.double() - ref).abs().max())}


def parity_fused(device, sentences) -> dict:
    """The compiled cell against the eager loop, same device, float32."""
    model = model_of("original", 0, device).eval()
    chars = batch_to_ids(sentences, add_boundaries=True).to(device)
    with torch.no_grad(), tf32(False):
        eager = model(chars).layers
        lstm_recurrence.use_fused_cell(True)
        try:
            t0 = time.perf_counter()
            fused = model(chars).layers
            sync(device)
            first = time.perf_counter() - t0
            fused2 = model(batch_to_ids(sentences[: len(sentences) // 2 + 1], add_boundaries=True).to(device)).layers  # another shape
        finally:
            lstm_recurrence.use_fused_cell(False)
        eager2 = model(batch_to_ids(sentences[: len(sentences) // 2 + 1], add_boundaries=True).to(device)).layers
    diff = max(float((fused - eager).abs().max()), float((fused2 - eager2).abs().max()))
    return {"max_abs_diff": diff, "within_1e-5": diff <= 1e-5, "first_call_s": first}


def parity_backward(device, baseline: str | None) -> dict:
    """The LSTM time loop's forward and hand-written backward on the device (float32, the
    device's block of steps) against float64 on the CPU; and against another version's loop."""
    from elmo_core import lstm

    T, B, D, P = 30, 48, 256, 64
    gen = torch.Generator().manual_seed(7)
    inputs = [torch.randn(2, T, B, 4 * D, generator=gen, dtype=torch.float64) * 1.5,
              torch.randn(2, P, 4 * D, generator=gen, dtype=torch.float64) * 0.2,
              torch.randn(2, D, P, generator=gen, dtype=torch.float64) * 0.2,
              torch.randn(2, B, D, generator=gen, dtype=torch.float64),
              torch.randn(2, B, P, generator=gen, dtype=torch.float64)]
    lengths = sorted(torch.randint(1, T + 1, (B,), generator=gen).tolist(), reverse=True)
    active = [sum(n > t for n in lengths) for t in range(T)]
    weights = [torch.randn(2, T, B, P, generator=gen, dtype=torch.float64), torch.randn(2, B, D, generator=gen, dtype=torch.float64),
               torch.randn(2, B, P, generator=gen, dtype=torch.float64)]

    def run(dev, dtype):
        args = [t.to(dev, dtype).requires_grad_() for t in inputs]
        outs = lstm.recurrence(*args, active, 0.9, 0.7)
        grads = torch.autograd.grad(sum((o * w.to(dev, dtype)).sum() for o, w in zip(outs, weights)), args)
        return [o.detach().double().cpu() for o in outs] + [g.double().cpu() for g in grads]

    with tf32(False):
        ref = run("cpu", torch.float64)
        got = run(device, torch.float32)
        result = {"vs_cpu_float64_rel_err": max(rel_err(a, b) for a, b in zip(got, ref))}
        if baseline:
            with recurrence_from(baseline):
                base = run(device, torch.float32)
            result["vs_baseline_max_abs_diff"] = max(float((a - b).abs().max()) for a, b in zip(got, base))
            result["baseline_vs_cpu_float64_rel_err"] = max(rel_err(a, b) for a, b in zip(base, ref))
    return result


def parity_bf16(device, sentences) -> dict:
    """One forward + backward of the ``small`` LM loss, bfloat16 autocast against float32, with
    dropout off (CUDA draws a dropout mask differently for bfloat16 and float32 tensors, so with
    dropout on the two runs would not share masks)."""
    from workflows.training.batches import to_tensors

    vocab = vocab_of(10_000)
    batch = synthetic_batch(sentences, len(vocab), np.random.default_rng(1))
    tensors = {k: v.to(device) for k, v in to_tensors(batch, vocab).items()}
    results = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        torch.manual_seed(0)
        model = BiLM(BiLMConfig.preset("small", n_tokens_vocab=len(vocab), dropout=0.0)).to(device)
        model.train()
        torch.manual_seed(5)  # the same dropout masks
        with tf32(False), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss, _, _ = model.lm_loss(tensors["char_ids"], tensors["next_ids"], tensors["prev_ids"],
                                       n_samples=None, generator=torch.Generator().manual_seed(0))
        loss.backward()
        results[name] = (float(loss.detach()), {n: p.grad.detach().float().cpu() for n, p in model.named_parameters()
                                       if p.grad is not None})
    (l32, g32), (l16, g16) = results["fp32"], results["bf16"]
    grad_errs = {n: rel_err(g16[n], g32[n]) for n in g32 if g32[n].norm() > 0}
    worst = max(grad_errs, key=grad_errs.get)
    return {"loss_fp32": l32, "loss_bf16": l16, "loss_rel_diff": abs(l16 - l32) / abs(l32),
            "grad_rel_err_max": grad_errs[worst], "grad_rel_err_max_param": worst,
            "grad_rel_err_median": statistics.median(grad_errs.values())}


def ddp_check(device, sentences) -> dict:
    """`sentence_step` through DDP (NCCL on a GPU, gloo on a CPU; world size 1) against the
    plain step from the same start: parameters after one Adagrad step."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from workflows.training.batches import GlobalBatch
    from workflows.training.step import LMLoss, make_optimizer, sentence_step

    vocab = vocab_of(10_000)
    batch = GlobalBatch(0, 0, sorted(synthetic_batch(sentences, len(vocab), np.random.default_rng(2)), key=len))
    after = {}
    backend = "nccl" if device.type == "cuda" else "gloo"
    for name in ("plain", "ddp"):
        model = model_of("small", len(vocab), device).train()
        optimizer = make_optimizer(model)
        wrapped = LMLoss(model)
        if name == "ddp":
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", "29531")
            dist.init_process_group(backend, rank=0, world_size=1)
            wrapped = DistributedDataParallel(wrapped, device_ids=[device.index or 0] if device.type == "cuda" else None)
        try:
            with tf32(False):
                loss = sentence_step(wrapped, model, optimizer, batch, step_context(vocab, model, device, False))
            sync(device)
        finally:
            if name == "ddp":
                dist.destroy_process_group()
        after[name] = (loss, {n: p.detach().cpu() for n, p in model.named_parameters()})
    (lp, pp), (ld, pd) = after["plain"], after["ddp"]
    diff = max(float((pp[n] - pd[n]).abs().max()) for n in pp)
    return {"backend": backend, "loss_plain": lp, "loss_ddp": ld, "param_max_abs_diff": diff}
