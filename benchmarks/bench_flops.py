"""FLOPs per token of the released configurations, counted, and what they imply for a GPU.

For each preset (``small``, ``medium``, ``original``), on real English sentences (CPython's
pydoc topics, as every benchmark here), counted by torch's FlopCounterMode on one pass (matrix
products and convolutions; element-wise work is not counted):

* ``embed``: the inference forward `elmo embed` runs (each distinct token of the batch through
  the char CNN once, no softmax);
* ``train``: forward + backward of the language-model loss with the recipe of the preset's
  vocabulary: bilm-tf's sampled softmax (8,192 negatives per batch) over the released
  793,471-word vocabulary, or a full softmax where the vocabulary is small.

Also the parameter counts. The output is JSON (``--out``); `benchmarks/README.md` turns the
``original`` figures into an expected H100 throughput (a projection written before a GPU was
lent; the H200 measurements, `bench_gpu.py`, sit beside it there).

    .venv/bin/python benchmarks/bench_flops.py --out benchmarks/results/flops.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from flop_count import count_flops
from report import write_report

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RELEASED_VOCAB = 793_471  # the 1B Word Benchmark vocabulary of the released models


def measure(preset: str, vocab_size: int, sentences: list[list[str]]) -> dict:
    import torch

    from elmo_core.bilm import BiLM, sentence_targets
    from elmo_core.characters import batch_to_ids
    from elmo_core.config import BiLMConfig

    torch.manual_seed(0)
    config = BiLMConfig.preset(preset, n_tokens_vocab=vocab_size)
    model = BiLM(config)
    chars = batch_to_ids(sentences, add_boundaries=True)  # (B, T, 50) with <S> and </S>
    tokens = sum(len(s) for s in sentences)
    word_ids = torch.randint(3, vocab_size, chars.shape[:2])
    lengths = (chars[:, :, 0] != 0).sum(1)
    word_ids[torch.arange(chars.shape[1])[None, :] >= lengths[:, None]] = -1
    next_ids, prev_ids = sentence_targets(word_ids, lengths)
    n_samples = config.training.train_negative_samples

    model.eval()
    with torch.no_grad():
        embed = count_flops(lambda: model(chars))

    def step():
        loss, _, _ = model.lm_loss(chars, next_ids, prev_ids, n_samples=n_samples,
                                   generator=torch.Generator().manual_seed(0))
        loss.backward()

    model.train()
    train = count_flops(step)
    return {"preset": preset, "vocab": vocab_size, "softmax": f"sampled, {n_samples} negatives" if n_samples else "full",
            "parameters_without_softmax": model.num_parameters(include_softmax=False),
            "parameters": model.num_parameters(include_softmax=True),
            "sentences": len(sentences), "tokens": tokens,
            "embed_mflop_per_token": embed / tokens / 1e6, "train_mflop_per_token": train / tokens / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results/flops.json")
    parser.add_argument("--sentences", type=int, default=32, help="one batch of this many sentences")
    parser.add_argument("--presets", default="small,medium,original")
    args = parser.parse_args()
    from preprocessing.sample_text import pydoc_sentences

    sentences = pydoc_sentences(args.sentences)
    rows = []
    for preset in args.presets.split(","):
        vocab = RELEASED_VOCAB if preset == "original" else 10_000
        rows.append(measure(preset, vocab, sentences))
        print(json.dumps(rows[-1]), flush=True)
    write_report(args.out, {"batch_sentences": args.sentences, "results": rows})


if __name__ == "__main__":
    main()
