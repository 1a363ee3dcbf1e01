"""Shared test helpers. The bilm-tf reference fixture is read in place from ../shared."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# The one setting that names the fixture's path (CI has ../shared beside the checkout).
FIXTURE_ENV = "ELMO_BILM_TF_FIXTURES"
# Ray 2.60 turns token authentication on by default; the local clusters the tests start (and the
# CLI subprocesses that join them) run without it.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

FIXTURE_DIR = Path(os.environ.get(FIXTURE_ENV, REPO.parent / "shared" / "fixtures" / "bilm-tf"))

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(REPO / "infra" / "local"))  # local_services: the servers the tests start


class BilmTfFixture:
    """bilm-tf's tiny reference model and its expected top-layer outputs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.options = root / "model" / "options.json"
        self.weights = root / "model" / "lm_weights.hdf5"
        with open(root / "model" / "lm_embeddings_sentences.json", encoding="utf-8") as f:
            self.sentence_lists = [[s.split() for s in lst] for lst in json.load(f)]

    def expected_top(self, k: int, i: int) -> np.ndarray:
        """(n, 2P): [forward; backward] top-layer output of sentence i of list k."""
        with h5py.File(self.root / "model" / f"lm_embeddings_{k}.hdf5", "r") as f:
            x = f[str(i)][...]
        return np.concatenate([x[0], x[1]], axis=-1)

    def batches(self) -> list[list[list[str]]]:
        """The 10 batches the expected outputs came from: batch i = [list0[i], list1[i], list2[i]]."""
        n = len(self.sentence_lists[0])
        return [[lst[i] for lst in self.sentence_lists] for i in range(n)]


@pytest.fixture(scope="session")
def bilm_tf() -> BilmTfFixture:
    if not (FIXTURE_DIR / "model" / "lm_weights.hdf5").is_file():
        pytest.skip(f"bilm-tf reference fixture not found at {FIXTURE_DIR} (set {FIXTURE_ENV}); "
                    "it lives in ../shared, which only the project's CI and developers have")
    return BilmTfFixture(FIXTURE_DIR)


# Modules that start servers, Ray clusters or whole jobs: `pytest -m "not slow"` leaves them out
SLOW_MODULES = {"test_demo", "test_local_cluster", "test_embed_new", "test_embed_corpus", "test_workflows",
                "test_resume_s3", "test_preprocessing_s3", "test_pyfunc_portable", "test_preprocessing"}


def pytest_collection_modifyitems(config, items):
    """The declared markers, applied: `slow` by module, `fixture` to every test that reads bilm-tf's
    reference model."""
    for item in items:
        if item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
        if "bilm_tf" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.fixture)


def assert_one_line_per_step(output: str, steps: int) -> list[str]:
    """A console that reports ``[k/N] title: outcome (elapsed)`` once per step, and never FAILED."""
    lines = output.splitlines()
    for step in range(1, steps + 1):
        done = [line for line in lines if line.startswith(f"[{step}/{steps}] ") and line.rstrip().endswith("s)")]
        assert len(done) == 1, (step, done)
    assert not any("FAILED" in line for line in lines)
    return lines


def random_sentences(n: int, seed: int = 0, min_len: int = 1, max_len: int = 12) -> list[list[str]]:
    """Generated sentences over a small Zipf-ish vocabulary with repeats, odd scripts and long tokens."""
    rng = np.random.default_rng(seed)
    words = ["the", "of", "a", "model", "ELMo", "é", "naïve", "日本語", "Москва", "x" * 47, "y" * 48,
             "z" * 60, "ü" * 30, ".", ",", "ran", "quickly", "42", "<unk>", "token"]
    p = 1.0 / np.arange(1, len(words) + 1)
    p /= p.sum()
    return [list(rng.choice(words, size=rng.integers(min_len, max_len + 1), p=p)) for _ in range(n)]


def seeded(module: torch.nn.Module, seed: int = 0, scale: float = 1.0) -> torch.nn.Module:
    """Give every parameter random values, biases included (so every gate and clip is exercised).

    Matrices get std scale/sqrt(fan in), so activations keep realistic magnitudes (~1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            fan_in = p.shape[-2] if p.dim() >= 2 else 4
            p.copy_(torch.randn(p.shape, generator=gen) * scale / fan_in ** 0.5)
    return module
