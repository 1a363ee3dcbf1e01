"""Main job on embedded defaults (no network, local files only).

Until pretraining lands (see the project's issues), this runs the embedding stage end to end:
English sentences from CPython's own docs -> a `small`-config biLM (random weights, saved in the
native format) -> ``elmo embed`` -> HDF5 in AllenNLP's layout, then prints what was written.

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


if __name__ == "__main__":
    sys.exit(main())
