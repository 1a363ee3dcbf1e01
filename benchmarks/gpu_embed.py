"""`bench_gpu.py`'s embedding timings: the `elmo embed` command as a process (against its CPU
output), and the `Embedder` in process by batch size, eager loop and fused cell."""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from elmo_core import lstm_recurrence
from elmo_core.embedder import Embedder
from gpu_device import log, peak_mib, reset_peak, sync, tf32
from gpu_inputs import model_of

REPO = Path(__file__).resolve().parents[1]


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
