"""How a language model reads text from a zero LSTM state: held-out perplexity by how far into
its row of running text a window is (stream mode, the state carried from a zero start), beside
the sentence-mode figure (every sentence from a zero state, as `elmo embed` reads).

A model that only ever trained on windows whose state was warmed by thousands of earlier
tokens can be far worse in the first windows of a row; this script shows where. Used for the
epoch-1 validation spike of the `lm5m` stream runs (benchmarks/README.md, issue 28)::

    python benchmarks/ptb_cold_start.py MODEL_FOLDER DATASET [--rows 10] [--out F.json]

MODEL_FOLDER: a model folder (`elmo_core.weights.load_model_folder`; a training checkpoint's
``model`` or ``best_model``); DATASET: `elmo preprocess` output with a validation split.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from report import write_report

from elmo_core.bilm import Perplexity
from elmo_core.weights import load_model_folder
from preprocessing.dataset import Dataset
from workflows.training.evaluation import STAT_KEYS, read_split, sentence_sums
from workflows.training.streams import evaluation_windows, running_text

# Tokens since the row's zero state: each window is counted in the band its first token falls in.
BANDS = (0, 350, 1_750, 3_500, 7_000)


def band_of(tokens_in: int) -> str:
    lower = max(b for b in BANDS if b <= tokens_in)
    upper = next((b for b in BANDS if b > lower), None)
    return f"{lower}-{upper}" if upper is not None else f"{lower}+"


def figures(sums: list[float]) -> dict:
    """NLL sums and counts (`STAT_KEYS` order) -> forward / backward perplexity."""
    p = Perplexity.from_sums(sums[0], int(sums[1]), sums[2], int(sums[3]))
    return {"forward": p.forward, "backward": p.backward}


@torch.no_grad()
def cold_start_profile(model, vocab, tables, rows: int, unroll: int, max_sentences: int) -> dict:
    """Stream perplexity per band of tokens since the zero state, and overall."""
    model.eval()
    text = running_text(tables, vocab, max_sentences)
    sums: dict[str, list[float]] = {}
    state = None
    for k, (char_ids, targets, first) in enumerate(evaluation_windows(text, rows, unroll)):
        if first:
            state = None
        _, stats, state = model.stream_loss(char_ids, targets, state)
        band = sums.setdefault(band_of(k * unroll), [0.0] * len(STAT_KEYS))
        for i, key in enumerate(STAT_KEYS):
            band[i] += float(stats[key])
    total = [sum(s[i] for s in sums.values()) for i in range(len(STAT_KEYS))]
    return {"by_tokens_since_zero_state": {name: {**figures(s), "targets_per_direction": int(s[1])}
                                           for name, s in sums.items()},
            "stream": figures(total)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path)
    p.add_argument("data")
    p.add_argument("--split", default="validation")
    p.add_argument("--rows", type=int, default=10, help="contiguous rows the text is cut into (the evaluation's)")
    p.add_argument("--unroll-steps", type=int, default=35)
    p.add_argument("--max-sentences", type=int, default=20000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, vocab = load_model_folder(args.model)
    tables = read_split(Dataset.open(args.data), args.split)
    report = {"model": str(args.model), "split": args.split, "rows": args.rows,
              **cold_start_profile(model, vocab, tables, args.rows, args.unroll_steps, args.max_sentences)}
    s = sentence_sums(model, vocab, tables, 2560, args.max_sentences, "cpu")
    report["sentence"] = figures(s)
    write_report(args.out, report)


if __name__ == "__main__":
    main()
