"""Main job on embedded defaults (no network, local files only).

Until pretraining lands (see the project's issues), this runs the stages built so far on
English prose from CPython's own docs (``pydoc_data.topics``):

1. preprocessing on a local Ray: the prose as gzip shards -> ``out/demo/data`` (vocabulary,
   character-encoded Parquet, manifest);
2. embedding: a `small`-config biLM (random weights, saved in the native format) ->
   ``elmo embed`` -> HDF5 in AllenNLP's layout.

    python -m workflows.demo [--output-dir out/demo] [--sentences 500]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="out/demo")
    parser.add_argument("--sentences", type=int, default=500)
    parser.add_argument("--preset", default="small")
    args = parser.parse_args(argv)

    import h5py
    import torch

    from elmo_core.bilm import BiLM
    from elmo_core.cli import main as elmo
    from elmo_core.config import BiLMConfig
    from elmo_core.sample_text import pydoc_sentences
    from elmo_core.weights import save_checkpoint

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    preprocess_demo(out)
    sentences = pydoc_sentences(args.sentences)
    (out / "sentences.txt").write_text("".join(" ".join(s) + "\n" for s in sentences), encoding="utf-8")
    torch.manual_seed(0)
    save_checkpoint(BiLM(BiLMConfig.preset(args.preset)), out / "model")
    rc = elmo(["embed", str(out / "sentences.txt"), str(out / "embeddings.hdf5"), "--all", "--model", str(out / "model")])
    if rc:
        return rc
    with h5py.File(out / "embeddings.hdf5", "r") as f:
        first = f["0"]
        print(f"wrote {out / 'embeddings.hdf5'}: {len(f) - 1} sentences; sentence 0 has layers "
              f"{tuple(first.shape)} (layers, tokens, 2 x projection)")
    return 0


def preprocess_demo(out: Path) -> None:
    """Stage 1: the pydoc prose as 4 gzip shards -> a preprocessed dataset under ``out/data``."""
    import gzip
    import os

    import pydoc_data.topics

    from preprocessing.config import PreprocessConfig
    from preprocessing.pipeline import run_preprocess

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local Ray, no token needed
    corpus = out / "corpus"
    corpus.mkdir(exist_ok=True)
    topics = sorted(pydoc_data.topics.topics.items())
    for shard in range(4):
        paragraphs = [" ".join(text.split()) for i, (_, text) in enumerate(topics) if i % 4 == shard]
        with gzip.open(corpus / f"pydoc-{shard}.txt.gz", "wt", encoding="utf-8") as f:
            f.write("".join(p + "\n" for p in paragraphs))
    # few, long documents: hold out 10% + 5% of them so that perplexity can be measured
    config = PreprocessConfig(input_format="document", min_count=2, shard_size_mb=16,
                              validation_fraction=0.1, test_fraction=0.05)
    m = run_preprocess([str(corpus)], str(out / "data"), config)
    print(f"preprocessed {out / 'data'}: {m['lines_in']:,} documents -> {m['sentences_out']:,} sentences, "
          f"{m['tokens_out']:,} tokens; vocabulary {m['vocab']['size']:,}; "
          f"train/validation/test {', '.join(str(m['splits'][s]['sentences']) for s in ('train', 'validation', 'test'))}")


if __name__ == "__main__":
    sys.exit(main())
