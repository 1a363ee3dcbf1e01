"""Embedding and training-step throughput of elmo_core, side by side with AllenNLP's ELMo.

    .venv/bin/python benchmarks/bench_elmo.py --out benchmarks/results/cpu.json \
        [--allennlp-src /tmp/allen/src --allennlp-python /tmp/allen/venv/bin/python]

Every phase runs in its own subprocess (peak RSS is per phase) on `--threads` threads with the
released `small` configuration and random weights in the bilm-tf layout:

* ``embed_inprocess``: read a text file, embed every sentence, write the AllenNLP HDF5 (``--all``),
  timed inside one process (model already loaded);
* ``embed_cli``: the same through the ``elmo embed`` command, wall clock including Python start,
  ``import torch`` and model loading (what a user waits for);
* ``bilm_forward`` / ``char_cnn``: the model alone on batches of `--batch-size` consecutive
  sentences (AllenNLP's batching), without and with the token cache;
* ``train_step``: forward + backward + grad clip + Adagrad on 32 windows of 20 tokens with a
  10k-word full softmax (the AllenNLP harness's training measurement);
* ``matmul_peak``: fp32 GEMM GFLOP/s on this machine; every phase reports its achieved GFLOP/s
  (matmul FLOPs counted by torch's FlopCounterMode on one pass) and the fraction of that peak.

With ``--allennlp-src`` the AllenNLP harness (../shared/tools/allennlp_baseline) runs in the same
invocation and the output carries ratios, plus the max difference between our outputs and
AllenNLP's on the same weights and sentences.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flop_count import count_flops
from phase_runner import print_phase_result, run_phase
from report import cpu_model, write_report

REPO = Path(__file__).resolve().parents[1]
HARNESS = REPO.parent / "shared" / "tools" / "allennlp_baseline" / "bench_allennlp.py"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def best_of(fn, runs: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), times


# ----------------------------------------------------------------------------- phases
def setup(args):
    import torch

    torch.set_num_threads(args.threads)
    from elmo_core.bilm import BiLM
    from elmo_core.config import BiLMConfig
    from elmo_core.weights import load_bilm_tf, save_bilm_tf_weights

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.allennlp_src and HARNESS.is_file():  # the very weights file AllenNLP will load
        sys.path.insert(0, str(HARNESS.parent))
        import bench_allennlp

        options, weights = (Path(p) for p in bench_allennlp.ensure_small_model(str(work / "allennlp"), 0))
    else:
        options, weights = work / "small_options.json", work / "small_weights.hdf5"
        if not weights.exists():
            torch.manual_seed(0)
            model = BiLM(BiLMConfig.preset(args.preset))
            save_bilm_tf_weights(model, weights)
            model.config.save(options)
    sentences = bench_sentences(args)
    text = work / "sentences.txt"
    text.write_text("".join(" ".join(s) + "\n" for s in sentences), encoding="utf-8")
    return load_bilm_tf(options, weights), sentences, options, weights, text


def bench_sentences(args) -> list[list[str]]:
    """The AllenNLP harness's sentences when it is given (identical inputs on both sides), else ours."""
    if args.allennlp_src and HARNESS.is_file():
        sys.path.insert(0, str(HARNESS.parent))
        import bench_allennlp  # reads text only; nothing of AllenNLP is imported here

        return bench_allennlp.load_sentences(args.sentences)[0]
    from preprocessing.sample_text import pydoc_sentences

    return pydoc_sentences(args.sentences)


def phase_matmul_peak(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best, _ = best_of(lambda: torch.mm(a, b), 5)
    return {"gflops": round(2 * n ** 3 / best / 1e9, 1), "shape": [n, n, n]}


def phase_embed(args) -> dict:
    import h5py
    import torch

    from elmo_core.embed_command import read_sentences
    from elmo_core.embedder import Embedder

    model, sentences, options, weights, text = setup(args)
    n_tokens = sum(map(len, sentences))
    out = Path(args.work) / "ours.hdf5"

    def run():
        _, sents = read_sentences(str(text))
        with h5py.File(out, "w") as f:
            for i, layers in Embedder(model, batch_size=args.batch_size).embed(sents):
                f.create_dataset(str(i), data=layers)

    run()  # warm-up
    best, times = best_of(run, args.runs)
    flops = count_flops(lambda: Embedder(model, batch_size=args.batch_size).embed_all(sentences))
    result = {"tokens": n_tokens, "sentences": len(sentences), "batch_size": args.batch_size,
              "seconds": times, "tokens_per_s": round(n_tokens / best, 1),
              "gflops_per_s": round(flops / best / 1e9, 1), "matmul_flops_per_token": round(flops / n_tokens)}

    # the model alone, AllenNLP's batching (consecutive sentences), no token cache
    from elmo_core.characters import batch_to_ids

    batches = [batch_to_ids(sentences[i:i + args.batch_size], add_boundaries=True) for i in range(0, len(sentences), args.batch_size)]
    with torch.inference_mode():
        def forward_all():
            for ids in batches:
                model(ids)

        def char_cnn_all():
            for ids in batches:
                model.encode_tokens(ids)

        for name, fn in (("bilm_forward", forward_all), ("char_cnn", char_cnn_all)):
            fn()
            best, times = best_of(fn, args.runs)
            flops = count_flops(fn)
            result[name] = {"seconds": times, "tokens_per_s": round(n_tokens / best, 1),
                            "gflops_per_s": round(flops / best / 1e9, 1)}

    result["rss_peak_mb"] = round(peak_rss_mb(), 1)
    return result


def phase_embed_cli(args) -> dict:
    _, sentences, options, weights, text = setup(args)
    n_tokens = sum(map(len, sentences))
    elmo = Path(sys.executable).with_name("elmo")
    cmd = [str(elmo), "embed", str(text), str(Path(args.work) / "cli.hdf5"), "--all", "--options-file", str(options),
           "--weight-file", str(weights), "--batch-size", str(args.batch_size), "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    times = []
    for _ in range(args.runs + 1):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True, env=env)
    import_torch = time.perf_counter() - start
    best = min(times[1:])
    return {"tokens": n_tokens, "seconds": times[1:], "tokens_per_s": round(n_tokens / best, 1),
            "python_import_torch_seconds": round(import_torch, 2)}


def phase_train(args) -> dict:
    import torch

    from elmo_core.bilm import BiLM
    from elmo_core.characters import batch_to_ids
    from elmo_core.config import BiLMConfig
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sentences = bench_sentences(args)
    counts: dict[str, int] = {}
    for s in sentences:
        for t in s:
            counts[t] = counts.get(t, 0) + 1
    words = ["<S>", "</S>", "<UNK>"] + sorted(counts, key=lambda w: (-counts[w], w))
    words = (words + [f"<unused_{i}>" for i in range(args.vocab_size)])[: args.vocab_size]
    index = {w: i for i, w in enumerate(words)}
    stream = [t for s in sentences for t in s]
    T, B = 20, 32
    windows = [stream[i:i + T] for i in range(0, len(stream) - T, T)]  # T + 1 tokens available
    batches = []
    for b in range(0, len(windows) - B, B):
        rows = windows[b:b + B]
        ids = batch_to_ids(rows, add_boundaries=False)
        targets = torch.tensor([[index.get(t, 2) for t in r] for r in rows])
        # bilm-tf windows: forward predicts the next token, backward the previous one
        nxt = torch.full_like(targets, -1)
        prv = torch.full_like(targets, -1)
        nxt[:, :-1], prv[:, 1:] = targets[:, 1:], targets[:, :-1]
        batches.append((ids, nxt, prv))
    config = BiLMConfig.preset(args.preset, n_tokens_vocab=args.vocab_size, dropout=0.0)
    model = BiLM(config).train()
    optimizer = torch.optim.Adagrad(model.parameters(), lr=0.2, initial_accumulator_value=1.0)
    k = 0

    def step():
        nonlocal k
        ids, nxt, prv = batches[k % len(batches)]
        k += 1
        optimizer.zero_grad(set_to_none=True)
        loss, _, _ = model.lm_loss(ids, nxt, prv, n_samples=args.n_samples)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        return float(loss)

    for _ in range(2):
        step()
    steps = args.train_steps
    best, times = best_of(lambda: [step() for _ in range(steps)], args.runs)
    flops = count_flops(step)
    tokens = B * T * steps
    return {"batch": B, "tokens_per_window": T, "vocab_size": args.vocab_size,
            "softmax": "full" if args.n_samples is None else f"sampled {args.n_samples}",
            "steps_per_run": steps, "seconds": times, "tokens_per_s": round(tokens / best, 1),
            "gflops_per_s": round(flops * steps / best / 1e9, 1), "rss_peak_mb": round(peak_rss_mb(), 1)}


PHASES = {"matmul_peak": phase_matmul_peak, "embed": phase_embed, "embed_cli": phase_embed_cli, "train": phase_train}


# ----------------------------------------------------------------------------- AllenNLP side
def run_allennlp(args) -> dict:
    out = Path(args.work) / "allennlp.json"
    cmd = [args.allennlp_python, str(HARNESS), "--allennlp-src", args.allennlp_src, "--out", str(out),
           "--phases", "infer_small,train_small", "--threads", str(args.threads), "--batch-sizes",
           str(args.batch_size), "--n-sentences", str(args.sentences), "--runs", str(args.runs),
           "--quiet-wait", "0", "--workdir", str(Path(args.work) / "allennlp")]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    records = json.loads(out.read_text())
    pick = {}
    for r in records:
        if r.get("metric") == "inference" and r.get("variant") in ("bilm_forward", "char_cnn_only",
                                                                    "elmo_embedder_embed_batch"):
            pick[r["variant"]] = r["tokens_per_s_best"]
        if r.get("metric") == "train" and r.get("variant") == "fwd_bwd_clip10_adagrad":
            pick["train_step"] = r["tokens_per_s_best"]
            pick["train_rss_peak_mb"] = r["rss_peak_mb"]
        if r.get("metric") == "reference_dump":
            pick["reference_dump"] = r["path"]
    return pick


def parity_with_allennlp(args, dump: str) -> float:
    """Max |ours - AllenNLP| on the harness's dump: 64 sentences, batches of 32, state carried."""
    import h5py
    import numpy as np

    from elmo_core.embedder import Embedder
    from elmo_core.weights import load_bilm_tf

    _, _, options, weights, _ = setup(args)
    model = load_bilm_tf(options, weights)
    worst = 0.0
    with h5py.File(dump, "r") as f:
        sentences = [s.split() for s in json.loads(f.attrs["sentences_json"])]
        ours = Embedder(model, batch_size=32, stateful=True).embed_all(sentences)
        for i, tokens in enumerate(sentences):
            g = f[f"batch_{i // 32}"]
            theirs = np.stack([g[f"activations_{layer}"][i % 32, 1:len(tokens) + 1] for layer in range(3)])
            worst = max(worst, float(np.abs(ours[i] - theirs).max()))
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/cpu.json")
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "elmo_bench"))
    parser.add_argument("--preset", default="small")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=8)
    parser.add_argument("--vocab-size", type=int, default=10000)
    parser.add_argument("--n-samples", type=int, default=None, help="sampled softmax negatives (default: full)")
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--allennlp-src", help="extracted allennlp sources (see ../shared/tools/allennlp_baseline)")
    parser.add_argument("--allennlp-python", default="/tmp/allen/venv/bin/python")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase:  # one phase, in the process `run_phase` started
        print_phase_result(PHASES[args.phase](args))
        return 0

    import torch

    report: dict = {"machine": {"cpu": cpu_model(), "nproc": os.cpu_count(), "threads": args.threads,
                                "python": platform.python_version(), "torch": torch.__version__},
                    "config": {"preset": args.preset, "sentences": args.sentences, "batch_size": args.batch_size,
                               "text": "pydoc_data.topics (CPython %s)" % platform.python_version()}}
    passthrough = []
    skip = False
    for a in sys.argv[1:]:  # everything but --out reaches the phase processes
        if skip or a.startswith("--out="):
            skip = False
            continue
        if a == "--out":
            skip = True
            continue
        passthrough.append(a)
    for phase in args.phases.split(","):
        report[phase] = run_phase(__file__, *passthrough, "--phase", phase)
        print(phase, json.dumps(report[phase])[:300], file=sys.stderr)
    peak = report.get("matmul_peak", {}).get("gflops")
    if peak:
        for key in ("embed", "train"):
            if key in report:
                report[key]["fraction_of_matmul_peak"] = round(report[key]["gflops_per_s"] / peak, 3)
    if args.allennlp_src:
        theirs = run_allennlp(args)
        report["allennlp"] = theirs
        ratios = {}
        if "embed" in report:
            ratios["embed_end_to_end_vs_elmo_embedder"] = report["embed"]["tokens_per_s"] / theirs["elmo_embedder_embed_batch"]
            ratios["bilm_forward"] = report["embed"]["bilm_forward"]["tokens_per_s"] / theirs["bilm_forward"]
            ratios["char_cnn"] = report["embed"]["char_cnn"]["tokens_per_s"] / theirs["char_cnn_only"]
            if "reference_dump" in theirs:
                torch.set_num_threads(args.threads)
                report["max_abs_diff_vs_allennlp_stateful_64_sentences"] = parity_with_allennlp(args, theirs["reference_dump"])
        if "embed_cli" in report:
            ratios["embed_cli_wall_clock_vs_elmo_embedder"] = report["embed_cli"]["tokens_per_s"] / theirs["elmo_embedder_embed_batch"]
        if "train" in report:
            ratios["train_step"] = report["train"]["tokens_per_s"] / theirs["train_step"]
        report["ratios_vs_allennlp"] = {k: round(v, 2) for k, v in ratios.items()}
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
