"""What the embedding job's driver carries (issue 26, part 1): bytes it receives and writes per
embedded token and per input file, its peak memory at 1x and 10x corpus, tokens/s with 1 and 2
actors, and files/s on a feed of one-line files; this checkout against another (``--baseline``,
e.g. the checkout before the actors wrote the parts), in the same run, phases interleaved.

    .venv/bin/python benchmarks/bench_embed_driver.py --baseline /work/main \\
        --out benchmarks/results/embed_driver.json

Every phase is one `embed_driver_run.py` process (its own local Ray with ``--cpus`` CPUs, started
before the timed call) on the same model (``--preset``, random weights, `embed_setup.make_model`)
and inputs (`embed_setup.make_corpus`: ``--files`` files of pydoc sentences, ``--tokens`` in all
for 1x and ten times as many, each file ten times longer, for 10x; ``--small-files`` files of one
line each). ``PYTHONPATH`` picks the code of a phase.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))


def run_phase(code: Path, inputs: Path, out: Path, model: Path, actors: int, cpus: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code), "RAY_AUTH_MODE": "disabled"}
    for attempt in range(3):  # on a loaded machine Ray's start may time out: tried again
        proc = subprocess.run([sys.executable, str(HERE / "embed_driver_run.py"), str(inputs), str(out), str(model),
                               "--actors", str(actors), "--cpus", str(cpus)],
                              env=env, cwd=code, capture_output=True, text=True, timeout=1800)  # workers import from cwd
        if proc.returncode == 0 or "timed out during startup" not in proc.stderr:
            break
        shutil.rmtree(out, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{code}: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def per_unit(r: dict) -> dict:
    """Driver bytes per token and per input file: iterated blocks + written through syscalls."""
    carried = r["driver_iterated"]["bytes"] + r["driver_io"]["wchar"]
    return {"driver_bytes_per_token": round(carried / r["tokens"], 1),
            "driver_bytes_per_file": round(carried / r["files"]),
            "driver_iterated_bytes_per_file": round(r["driver_iterated"]["bytes"] / r["files"]),
            "driver_wchar_per_file": round(r["driver_io"]["wchar"] / r["files"]),
            "output_bytes_per_token": round(r["output_bytes"] / r["tokens"], 1)}


def main() -> None:
    from embed_setup import make_corpus, make_model

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", type=Path, help="another checkout to compare with (e.g. /work/main)")
    p.add_argument("--preset", default="small")
    p.add_argument("--tokens", type=int, default=5000, help="tokens of the 1x corpus")
    p.add_argument("--files", type=int, default=4)
    p.add_argument("--small-files", type=int, default=200)
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--phases", default="1x_1actor,10x_1actor,1x_2actors,small_files_1actor",
                   help="comma-separated, of: %(default)s")
    p.add_argument("--out", type=Path, default=HERE / "results" / "embed_driver.json")
    args = p.parse_args()

    codes = {"parts": REPO}
    if args.baseline:
        codes["baseline"] = args.baseline.resolve()
    work = Path(tempfile.mkdtemp(prefix="bench-embed-driver-"))
    model = make_model(work / "model", args.preset)
    corpora = {"1x": make_corpus(work / "c1x", args.tokens, args.files),
               "10x": make_corpus(work / "c10x", 10 * args.tokens, args.files, seed=1)}
    small = work / "small"
    small.mkdir()
    from preprocessing.sample_text import pydoc_sentences

    sentences = [" ".join(s) for s in pydoc_sentences()]
    random.Random(2).shuffle(sentences)
    for i in range(args.small_files):
        (small / f"doc-{i:05d}.txt").write_text(sentences[i % len(sentences)] + "\n")
    corpora["small_files"] = {"files": args.small_files, "lines": args.small_files}
    phases = [("1x_1actor", "c1x", 1), ("10x_1actor", "c10x", 1), ("1x_2actors", "c1x", 2),
              ("small_files_1actor", "small", 1)]
    phases = [p for p in phases if p[0] in args.phases.split(",")]
    results: dict = {name: {} for name in codes}
    for phase, corpus, actors in phases:
        for name, code in codes.items():  # interleaved: the machine's speed drifts
            out = work / f"out-{name}-{phase}"
            # the actors' CPUs plus room for the read tasks (else these wait for ever)
            r = run_phase(code, work / corpus, out, work / "model", actors, max(args.cpus, actors + 1))
            r.update(per_unit(r))
            results[name][phase] = r
            print(f"{name:9s} {phase:20s} {r['tokens_per_s']:>9,.0f} tokens/s {r['files_per_s']:>7.2f} files/s "
                  f"driver {r['driver_bytes_per_token']:>9,.1f} B/token {r['driver_bytes_per_file']:>12,} B/file "
                  f"rss {r['driver_peak_rss_mb']:.0f} MB {json.dumps(r)}", flush=True)
    keys = {"1x_1actor": ("driver_bytes_per_token", "driver_bytes_per_file", "driver_peak_rss_mb", "tokens_per_s"),
            "10x_1actor": ("driver_bytes_per_token", "driver_bytes_per_file", "driver_peak_rss_mb", "tokens_per_s"),
            "1x_2actors": ("driver_bytes_per_token", "tokens_per_s"),
            "small_files_1actor": ("driver_bytes_per_file", "files_per_s")}
    summary = {name: {f"{phase}.{k}": by_phase[phase][k] for phase in by_phase for k in keys[phase]}
               for name, by_phase in results.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": platform.node(),
        "cpus": os.cpu_count(), "model": model, "corpora": corpora, "codes": {k: str(v) for k, v in codes.items()},
        "summary": summary, "phases": results}, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
