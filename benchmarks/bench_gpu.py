"""The CUDA path, checked and timed on one GPU, in one run that fits a short GPU lease.

Checks (float32 unless named; TF32 off for every parity check):

* ``parity_embed``: the ``original`` biLM's three layers on the GPU against the same model in
  float64 on the CPU (relative Frobenius error and max |diff| per layer);
* ``parity_fused``: `use_fused_cell()` (the step's elementwise work as one compiled kernel)
  against the eager loop, on the GPU, max |diff| (the bar: 1e-5);
* ``parity_backward``: the LSTM time loop's forward and hand-written backward (float32 on the
  device) against float64 on the CPU, and against another version's loop (``--baseline-recurrence``);
* ``parity_bf16``: a training step under bfloat16 autocast against float32 (loss, gradients);
* ``ddp``: the real optimizer step (`workflows.training.step.sentence_step`) through
  DistributedDataParallel on NCCL (one process, world size 1: the machine has one GPU) against
  the same step without DDP: parameters after the step must match.

Timings (each after warm-up steps, synchronized, median of the timed steps; peak device memory
beside each figure):

* ``matmul``: the card's measured matrix-product peak in float32, TF32 and bfloat16;
* ``train``: `sentence_step` (forward, hand-written LSTM backward, clip, Adagrad) for ``small``
  (10k-word full softmax) and ``original`` (793,471 words, 8,192 sampled negatives), batches of
  128 and 512 sentences, in float32, TF32 and bfloat16 autocast (+TF32): tokens/s, counted FLOPs
  per token and the fraction of the matching peak;
* ``profile`` (only when named in ``--sections``): torch.profiler over training steps of
  ``original`` and ``small`` (128 sentences, TF32): device-busy time against the step's wall
  time, kernel launches and operators per step; tables written beside ``--out``;
* ``command``: ``python -m elmo_cli embed --device`` as a process (``original``, 8,192 sentences,
  batch 128), timed start to end, and its output on 64 sentences against ``--device cpu``;
* ``embed``: `Embedder` (stateless, what `elmo embed --device cuda` runs) for ``original``, 128
  and 512 sentences per batch, eager loop and fused cell.

Sentences: CPython's pydoc topics (`preprocessing.sample_text.pydoc_sentences`), cycled as needed.
No Ray and no MLflow are imported (the GPU machine has neither). A CPU dry run checks the
script itself: ``--device cpu --quick``.

    python3 benchmarks/bench_gpu.py --out $OUT/gpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from elmo_core import lstm_recurrence  # noqa: E402
from elmo_core.bilm import BiLM  # noqa: E402
from elmo_core.characters import batch_to_ids, token_to_ids  # noqa: E402
from elmo_core.config import BiLMConfig  # noqa: E402
from elmo_core.embedder import Embedder  # noqa: E402
from elmo_core.vocabulary import Vocabulary  # noqa: E402
from flop_count import count_flops  # noqa: E402

RELEASED_VOCAB = 793_471


def log(*parts) -> None:
    print(*parts, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return None


@contextlib.contextmanager
def tf32(enabled: bool):
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def load_sentences(n: int) -> list[list[str]]:
    try:
        from preprocessing.sample_text import pydoc_sentences
        base = pydoc_sentences()
    except Exception as e:  # pydoc_data missing: generated words, same length range
        log(f"pydoc sentences unavailable ({e!r}); generated sentences instead")
        rng = np.random.default_rng(0)
        words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), rng.integers(2, 10))) for _ in range(5000)]
        base = [[words[i] for i in rng.integers(0, len(words), rng.integers(10, 41))] for _ in range(2000)]
    return [base[i % len(base)] for i in range(n)]


def model_of(preset: str, vocab: int, device, seed: int = 0) -> BiLM:
    torch.manual_seed(seed)
    return BiLM(BiLMConfig.preset(preset, n_tokens_vocab=vocab)).to(device)


# --- peaks -------------------------------------------------------------------------------------

def matmul_peaks(device, n: int, reps: int) -> dict:
    out = {}
    for name, dtype, allow in (("fp32", torch.float32, False), ("tf32", torch.float32, True),
                               ("bf16", torch.bfloat16, False)):
        if device.type == "cpu" and name != "fp32":
            continue
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        with tf32(allow):
            for _ in range(3):
                a @ b
            sync(device)
            t0 = time.perf_counter()
            for _ in range(reps):
                a @ b
            sync(device)
            dt = (time.perf_counter() - t0) / reps
        out[name + "_tflops"] = 2 * n ** 3 / dt / 1e12
        del a, b
    return out


# --- checks ------------------------------------------------------------------------------------

def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    a, ref = a.double().cpu(), ref.double().cpu()
    return float((a - ref).norm() / ref.norm().clamp_min(1e-30))


def parity_embed(device, sentences) -> dict:
    """``original`` on the device (float32) against float64 on the CPU."""
    model = model_of("original", 0, "cpu").eval()
    chars = batch_to_ids(sentences)
    with torch.no_grad(), tf32(False):
        ref = model.double()(chars).layers  # (L+1, B, T, 2P)
        got = model.float().to(device)(chars.to(device)).layers.cpu()
    return {"sentences": len(sentences),
            "layer_rel_err": [rel_err(got[i], ref[i]) for i in range(ref.shape[0])],
            "max_abs_diff": float((got.double() - ref).abs().max())}


def parity_fused(device, sentences) -> dict:
    """The compiled cell against the eager loop, same device, float32."""
    model = model_of("original", 0, device).eval()
    chars = batch_to_ids(sentences).to(device)
    with torch.no_grad(), tf32(False):
        eager = model(chars).layers
        lstm_recurrence.use_fused_cell(True)
        try:
            t0 = time.perf_counter()
            fused = model(chars).layers
            sync(device)
            first = time.perf_counter() - t0
            fused2 = model(batch_to_ids(sentences[: len(sentences) // 2 + 1]).to(device)).layers  # another shape
        finally:
            lstm_recurrence.use_fused_cell(False)
        eager2 = model(batch_to_ids(sentences[: len(sentences) // 2 + 1]).to(device)).layers
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


def synthetic_batch(sentences, vocab_size: int, rng) -> list:
    from workflows.training.batches import Sentence

    return [Sentence(word_ids=rng.integers(3, vocab_size, len(s)).astype(np.int32),
                     char_ids=np.stack([token_to_ids(t) for t in s]).astype(np.uint16)) for s in sentences]


def vocab_of(size: int) -> Vocabulary:
    from elmo_core.vocabulary import SPECIALS

    return Vocabulary(list(SPECIALS) + [f"w{i}" for i in range(size - len(SPECIALS))])


def step_context(vocab, model, device, bf16: bool, rank=0, world=1):
    from workflows.training.config import TrainJobConfig
    from workflows.training.step import StepContext

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    return StepContext(vocab, rank, world, TrainJobConfig(), model.config.training, device, autocast)


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


# --- timings -----------------------------------------------------------------------------------

@contextlib.contextmanager
def recurrence_from(path: str | None):
    """Run the biLM with the LSTM time loop of another version of `elmo_core/lstm_recurrence.py`
    (side-by-side timing of a change in one run); None: this version's."""
    if path is None:
        yield "this"
        return
    import importlib.util

    from elmo_core import lstm

    spec = importlib.util.spec_from_file_location("baseline_recurrence", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    before = lstm.recurrence
    lstm.recurrence = module.recurrence
    try:
        yield "baseline"
    finally:
        lstm.recurrence = before


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


def embed_command(device, sentences, work: Path, n_check: int) -> dict:
    """The user's path: ``python -m elmo_cli embed`` as a process (``original``, random weights
    saved with `save_model_folder`), on ``device`` for all sentences, timed start to end; and the
    first ``n_check`` sentences on the device and on the CPU, max |diff| over the HDF5 outputs."""
    import subprocess

    import h5py

    from elmo_core.weights import save_model_folder

    work.mkdir(parents=True, exist_ok=True)
    model_dir = save_model_folder(model_of("original", 0, "cpu"), work / "model")
    text = work / "all.txt"
    text.write_text("".join(" ".join(s) + "\n" for s in sentences))
    head = work / "head.txt"
    head.write_text("".join(" ".join(s) + "\n" for s in sentences[:n_check]))

    def run(inp: Path, out: Path, dev: str) -> float:
        cmd = [sys.executable, "-m", "elmo_cli", "embed", str(inp), str(out), "--model", str(model_dir),
               "--device", dev, "--batch-size", "128", "--no-progress"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        if proc.returncode:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-2000:]}")
        return time.perf_counter() - t0

    seconds = run(text, work / "all.hdf5", str(device))
    run(head, work / "head_dev.hdf5", str(device))
    run(head, work / "head_cpu.hdf5", "cpu")
    with h5py.File(work / "head_dev.hdf5") as a, h5py.File(work / "head_cpu.hdf5") as b:
        keys = [k for k in a.keys() if k.isdigit()]
        diff = max(float(np.abs(a[k][()] - b[k][()]).max()) for k in keys)
    tokens = sum(len(s) for s in sentences)
    return {"sentences": len(sentences), "tokens": tokens, "process_seconds": seconds,
            "tokens_per_s_whole_process": tokens / seconds, "checked_sentences": len(keys),
            "max_abs_diff_device_vs_cpu": diff}


def time_embed(device, preset: str, sentences, batch_sizes, fused_options, rounds: int) -> list[dict]:
    rows = []
    model = model_of(preset, 0, device).eval()
    n_tokens = sum(len(s) for s in sentences)
    for fused in fused_options:
        lstm_recurrence.use_fused_cell(fused)
        try:
            for b in batch_sizes:
                reset_peak(device)
                embedder = Embedder(model, batch_size=b, chunk_size=max(4096, b))
                with tf32(False):
                    for _ in embedder.embed(sentences[: 2 * b]):  # warm-up (and compilation)
                        pass
                    times = []
                    for _ in range(rounds):
                        sync(device)
                        t0 = time.perf_counter()
                        for _ in embedder.embed(sentences):
                            pass
                        sync(device)
                        times.append(time.perf_counter() - t0)
                t = statistics.median(times)
                row = {"preset": preset, "batch_size": b, "fused_cell": fused, "sentences": len(sentences),
                       "tokens": n_tokens, "seconds": t, "tokens_per_s": n_tokens / t, "peak_mib": peak_mib(device)}
                log(f"embed {preset:8s} B={b:4d} fused={fused!s:5s} {n_tokens / t:10.0f} tok/s  peak {row['peak_mib']} MiB")
                rows.append(row)
        finally:
            lstm_recurrence.use_fused_cell(False)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default="gpu.json")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a CPU dry run of the script itself")
    parser.add_argument("--baseline-recurrence", default=None,
                        help="another version's elmo_core/lstm_recurrence.py, timed beside this one's")
    parser.add_argument("--sections", default="env,parity_embed,parity_fused,parity_backward,parity_bf16,ddp,train,command,embed")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", 0)
    sections = args.sections.split(",")
    q = args.quick
    result: dict = {"device": str(device), "torch": torch.__version__, "sections": {}, "errors": {}}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        result.update(card=p.name, capability=f"{p.major}.{p.minor}", multiprocessors=p.multi_processor_count,
                      memory_gib=p.total_memory / 2**30, cuda=torch.version.cuda)
    else:
        result.update(card="cpu", threads=torch.get_num_threads())
    log(json.dumps({k: v for k, v in result.items() if k not in ("sections", "errors")}))
    sentences = load_sentences(512 if q else 8192)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save():
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")

    peaks: dict = {}
    plan = [
        ("env", lambda: matmul_peaks(device, 512 if q else 8192, 3 if q else 20)),
        ("parity_embed", lambda: parity_embed(device, sentences[:8 if q else 64])),
        ("parity_fused", lambda: parity_fused(device, sentences[:8 if q else 64])),
        ("parity_backward", lambda: parity_backward(device, args.baseline_recurrence)),
        ("parity_bf16", lambda: parity_bf16(device, sentences[:8 if q else 64])),
        ("ddp", lambda: ddp_check(device, sentences[:8 if q else 64])),
        ("train", lambda: train_plan(device, sentences, q, peaks, args.baseline_recurrence)),
        ("profile", lambda: [profile_step(device, "original", 2_000 if q else RELEASED_VOCAB, sentences, 4 if q else 128, out.parent),
                             profile_step(device, "small", 10_000, sentences, 8 if q else 128, out.parent)]),
        ("command", lambda: embed_command(device, sentences[: 64 if q else 8192],
                                          Path(tempfile.gettempdir()) / "bench_gpu_command", 8 if q else 64)),
        ("embed", lambda: time_embed(device, "original", sentences[: 64 if q else 4096], [16] if q else [128, 512],
                                     [False, True], 1 if q else 3)),
    ]
    for name, fn in plan:
        if name not in sections:
            continue
        t0 = time.perf_counter()
        try:
            value = fn()
            result["sections"][name] = value
            if name == "env":
                peaks.update(value)
            log(f"[{name}] {time.perf_counter() - t0:.1f} s: {json.dumps(value) if not isinstance(value, list) else f'{len(value)} rows'}")
        except Exception:
            result["errors"][name] = traceback.format_exc()
            log(f"[{name}] FAILED after {time.perf_counter() - t0:.1f} s\n{traceback.format_exc()}")
        save()
    log("errors: " + (", ".join(result["errors"]) or "none"))


if __name__ == "__main__":
    main()
