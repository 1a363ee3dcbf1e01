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

The checks live in `gpu_parity.py`, the training timings in `gpu_train.py`, the embedding ones in
`gpu_embed.py`, their inputs in `gpu_inputs.py` and the device helpers in `gpu_device.py`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from gpu_device import log, matmul_peaks  # noqa: E402
from gpu_embed import embed_command, time_embed  # noqa: E402
from gpu_inputs import RELEASED_VOCAB, load_sentences  # noqa: E402
from gpu_parity import ddp_check, parity_backward, parity_bf16, parity_embed, parity_fused  # noqa: E402
from gpu_train import profile_step, train_plan  # noqa: E402
from report import save_json  # noqa: E402

SECTIONS = "env,parity_embed,parity_fused,parity_backward,parity_bf16,ddp,train,command,embed"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default="gpu.json")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a CPU dry run of the script itself")
    parser.add_argument("--baseline-recurrence", default=None,
                        help="another version's elmo_core/lstm_recurrence.py, timed beside this one's")
    parser.add_argument("--sections", default=SECTIONS)
    return parser.parse_args()


def describe(device: torch.device) -> dict:
    """The device, the torch build and (on a GPU) the card."""
    about: dict = {"device": str(device), "torch": torch.__version__}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        about.update(card=p.name, capability=f"{p.major}.{p.minor}", multiprocessors=p.multi_processor_count,
                     memory_gib=p.total_memory / 2**30, cuda=torch.version.cuda)
    else:
        about.update(card="cpu", threads=torch.get_num_threads())
    return about


def plan_of(args, device: torch.device, sentences: list, peaks: dict, out_dir: Path) -> list[tuple[str, Callable]]:
    """Every section in running order: (name, what measures it); ``--quick`` shrinks each."""
    q = args.quick
    few = sentences[:8 if q else 64]
    return [
        ("env", lambda: matmul_peaks(device, 512 if q else 8192, 3 if q else 20)),
        ("parity_embed", lambda: parity_embed(device, few)),
        ("parity_fused", lambda: parity_fused(device, few)),
        ("parity_backward", lambda: parity_backward(device, args.baseline_recurrence)),
        ("parity_bf16", lambda: parity_bf16(device, few)),
        ("ddp", lambda: ddp_check(device, few)),
        ("train", lambda: train_plan(device, sentences, q, peaks, args.baseline_recurrence)),
        ("profile", lambda: [profile_step(device, "original", 2_000 if q else RELEASED_VOCAB, sentences, 4 if q else 128,
                                          out_dir),
                             profile_step(device, "small", 10_000, sentences, 8 if q else 128, out_dir)]),
        ("command", lambda: embed_command(device, sentences[: 64 if q else 8192],
                                          Path(tempfile.gettempdir()) / "bench_gpu_command", 8 if q else 64)),
        ("embed", lambda: time_embed(device, "original", sentences[: 64 if q else 4096], [16] if q else [128, 512],
                                     [False, True], 1 if q else 3)),
    ]


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", 0)
    result: dict = {**describe(device), "sections": {}, "errors": {}}
    log(json.dumps(describe(device)))
    sentences = load_sentences(512 if args.quick else 8192)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)  # the profile's tables go beside it
    peaks: dict = {}  # the "env" section's matmul peaks, which the training timings compare with
    for name, measure in plan_of(args, device, sentences, peaks, out.parent):
        if name not in args.sections.split(","):
            continue
        t0 = time.perf_counter()
        try:  # a failing section is recorded and the next one runs: a GPU lease is short
            value = measure()
            result["sections"][name] = value
            if name == "env":
                peaks.update(value)
            log(f"[{name}] {time.perf_counter() - t0:.1f} s: {json.dumps(value) if not isinstance(value, list) else f'{len(value)} rows'}")
        except Exception:
            result["errors"][name] = traceback.format_exc()
            log(f"[{name}] FAILED after {time.perf_counter() - t0:.1f} s\n{traceback.format_exc()}")
        save_json(out, result)  # after every section: what is measured survives a lease that ends
    log("errors: " + (", ".join(result["errors"]) or "none"))


if __name__ == "__main__":
    main()
