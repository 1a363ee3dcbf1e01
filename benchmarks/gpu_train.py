"""`bench_gpu.py`'s training timings: `sentence_step`'s tokens/s, counted FLOPs and peak memory
by preset, batch and precision, and a profile of where a step's time goes."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

from flop_count import count_flops
from gpu_device import log, peak_mib, reset_peak, sync, tf32
from gpu_inputs import RELEASED_VOCAB, model_of, recurrence_from, step_context, synthetic_batch, vocab_of


def time_train(device, preset: str, vocab_size: int, sentences, batch_sentences: int, variants, steps: int,
               warmup: int, peaks: dict, baseline: str | None = None) -> list[dict]:
    from workflows.training.batches import GlobalBatch, to_tensors
    from workflows.training.step import LMLoss, make_optimizer, sentence_step

    vocab = vocab_of(vocab_size)
    rng = np.random.default_rng(3)
    n_batches = warmup + steps
    pool = synthetic_batch(sentences[: batch_sentences * n_batches], len(vocab), rng)
    batches = [GlobalBatch(i, 0, sorted(pool[i * batch_sentences:(i + 1) * batch_sentences], key=len))
               for i in range(n_batches)]
    rows = []
    for variant in variants:
        loop = "this"
        if variant.startswith("baseline:"):
            variant, loop = variant.split(":", 1)[1], "baseline"
        allow_tf32, bf16 = variant in ("tf32", "bf16+tf32"), variant.startswith("bf16")
        reset_peak(device)
        model = model_of(preset, len(vocab), device).train()
        optimizer = make_optimizer(model)
        ctx = step_context(vocab, model, device, bf16)
        times, tokens = [], []
        with tf32(allow_tf32), recurrence_from(baseline if loop == "baseline" else None):
            for i, batch in enumerate(batches):
                sync(device)
                t0 = time.perf_counter()
                sentence_step(LMLoss(model), model, optimizer, batch, ctx)  # returns a float: synchronizes
                sync(device)
                if i >= warmup:
                    times.append(time.perf_counter() - t0)
                    tokens.append(batch.num_tokens())
            # counted FLOPs of one step's forward + backward, on the last batch
            tensors = {k: v.to(device) for k, v in to_tensors(batches[-1].sentences, vocab).items()}

            def fwd_bwd():
                with ctx.autocast:
                    loss, _, _ = model.lm_loss(tensors["char_ids"], tensors["next_ids"], tensors["prev_ids"],
                                               n_samples=model.config.training.train_negative_samples,
                                               generator=torch.Generator().manual_seed(0))
                loss.backward()
            flops = count_flops(fwd_bwd) / batches[-1].num_tokens()
        step_s = statistics.median(times)
        tok_s = statistics.median(t / s for t, s in zip(tokens, times))
        peak_key = {"fp32": "fp32_tflops", "tf32": "tf32_tflops", "bf16+tf32": "bf16_tflops"}[variant]
        achieved = flops * tok_s / 1e12
        row = {"preset": preset, "vocab": vocab_size, "batch_sentences": batch_sentences,
               "tokens_per_step": int(statistics.median(tokens)), "variant": variant, "lstm_loop": loop,
               "step_ms": step_s * 1e3, "tokens_per_s": tok_s, "mflop_per_token": flops / 1e6,
               "achieved_tflops": achieved,
               "fraction_of_peak": achieved / peaks[peak_key] if peak_key in peaks else None,
               "peak_mib": peak_mib(device)}
        log(f"train {preset:8s} B={batch_sentences:4d} {variant:9s} {loop:8s} {step_s * 1e3:8.1f} ms/step "
            f"{tok_s:10.0f} tok/s  {flops / 1e6:6.1f} MFLOP/tok  {achieved:6.2f} TFLOP/s  peak {row['peak_mib']} MiB")
        rows.append(row)
        del model, optimizer
    return rows


def train_plan(device, sentences, quick: bool, peaks: dict, baseline: str | None) -> list[dict]:
    """The training timings: ``small`` and ``original``, 128 / 512 (/ 1,024) sentences a step."""
    base = [f"baseline:{v}" for v in ("tf32",)] if baseline else []
    if quick:
        return (time_train(device, "small", 10_000, sentences, 8, ["fp32"] + base, 2, 1, peaks, baseline)
                + time_train(device, "original", 2_000, sentences, 4, ["fp32"], 2, 1, peaks, baseline))
    return (time_train(device, "small", 10_000, sentences, 128, ["fp32", "tf32", "bf16+tf32"] + base, 10, 3, peaks, baseline)
            + time_train(device, "small", 10_000, sentences, 512, ["tf32", "bf16+tf32"], 10, 3, peaks, baseline)
            + time_train(device, "original", RELEASED_VOCAB, sentences, 128, ["fp32", "tf32", "bf16+tf32"] + base,
                         10, 3, peaks, baseline)
            + time_train(device, "original", RELEASED_VOCAB, sentences, 512, ["tf32", "bf16+tf32"] + base, 8, 2,
                         peaks, baseline)
            + time_train(device, "original", RELEASED_VOCAB, sentences, 1024, ["tf32"], 6, 2, peaks, baseline))


def profile_step(device, preset: str, vocab_size: int, sentences, batch_sentences: int, out_dir: Path) -> dict:
    """Where one training step's time goes (TF32): torch.profiler over 3 steps after warm-up;
    the table (top operators by device time and by host time) goes to ``profile_<preset>.txt``."""
    from torch.profiler import ProfilerActivity, profile

    from workflows.training.batches import GlobalBatch
    from workflows.training.step import LMLoss, make_optimizer, sentence_step

    vocab = vocab_of(vocab_size)
    pool = synthetic_batch(sentences[: batch_sentences * 6], len(vocab), np.random.default_rng(4))
    batches = [GlobalBatch(i, 0, sorted(pool[i * batch_sentences:(i + 1) * batch_sentences], key=len)) for i in range(6)]
    model = model_of(preset, len(vocab), device).train()
    optimizer = make_optimizer(model)
    ctx = step_context(vocab, model, device, False)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with tf32(True):
        for batch in batches[:3]:
            sentence_step(LMLoss(model), model, optimizer, batch, ctx)
        sync(device)
        t0 = time.perf_counter()
        with profile(activities=activities) as prof:
            for batch in batches[3:]:
                sentence_step(LMLoss(model), model, optimizer, batch, ctx)
            sync(device)
        wall = (time.perf_counter() - t0) / 3
    events = prof.key_averages()
    device_us = sum(e.self_device_time_total for e in events) / 3 if device.type == "cuda" else None
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC")) / 3
    table = (events.table(sort_by="self_device_time_total" if device.type == "cuda" else "self_cpu_time_total", row_limit=30)
             + "\n" + events.table(sort_by="self_cpu_time_total", row_limit=30))
    (out_dir / f"profile_{preset}.txt").write_text(table)
    return {"preset": preset, "batch_sentences": batch_sentences, "profiled_step_ms": wall * 1e3,
            "device_busy_ms_per_step": device_us / 1e3 if device_us is not None else None,
            "kernel_launches_per_step": launches, "aten_ops_per_step": sum(e.count for e in events if e.key.startswith("aten::")) / 3}
