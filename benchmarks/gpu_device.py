"""`bench_gpu.py`'s device helpers: progress lines, synchronizing, peak device memory, TF32 on or
off, and the card's measured matrix-product peaks."""

from __future__ import annotations

import contextlib
import time

import torch


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
