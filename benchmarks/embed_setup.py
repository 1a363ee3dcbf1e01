"""What every phase of `bench_embed.py` runs on: a native model directory with random weights of
a realistic scale, and a plain-text corpus of shuffled pydoc sentences."""

from __future__ import annotations

import random
from pathlib import Path


def make_model(directory: Path, preset: str, seed: int = 0) -> dict:
    """A ``preset`` biLM with random weights (std 1/sqrt(fan in)) saved in ``directory``; its description."""
    import torch

    from elmo_core.bilm import BiLM
    from elmo_core.config import BiLMConfig
    from elmo_core.weights import save_model_folder

    model = BiLM(BiLMConfig.preset(preset))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # as tests/helpers/random_inputs.py: seeded (std 1/sqrt(fan in), biases too)
        for p in model.parameters():
            fan_in = p.shape[-2] if p.dim() >= 2 else 4
            p.copy_(torch.randn(p.shape, generator=gen) / fan_in ** 0.5)
    save_model_folder(model, directory)
    return {"preset": preset, "parameters": sum(p.numel() for p in model.parameters()),
            "output_dim": 2 * model.config.lstm.projection_dim, "layers": model.config.n_output_layers}


def make_corpus(directory: Path, tokens: int, files: int, seed: int = 0) -> dict:
    """Shuffled copies of the pydoc sentences, one a line, cut into ``files`` files of equal line counts."""
    from preprocessing.sample_text import pydoc_sentences

    sentences = [" ".join(s) for s in pydoc_sentences()]
    rng = random.Random(seed)
    lines: list[str] = []
    count = 0
    while count < tokens:
        order = sentences[:]
        rng.shuffle(order)
        for s in order:
            lines.append(s)
            count += s.count(" ") + 1
            if count >= tokens:
                break
    directory.mkdir(parents=True)
    per_file = -(-len(lines) // files)
    for i in range(files):
        (directory / f"part-{i:03d}.txt").write_text("".join(s + "\n" for s in lines[i * per_file:(i + 1) * per_file]))
    return {"files": files, "lines": len(lines), "tokens": count,
            "mb": sum(p.stat().st_size for p in directory.iterdir()) / 1e6}
