"""The markers of both tiers and the bilm-tf reference fixture (read in place from ../shared).
Helpers the tests import live in tests/helpers; the integration tier's servers in
tests/integration/conftest.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.helpers import REPO

# The one setting that names the fixture's path (CI has ../shared beside the checkout).
FIXTURE_ENV = "ELMO_BILM_TF_FIXTURES"
# Ray 2.60 turns token authentication on by default; the local clusters the tests start (and the
# CLI subprocesses that join them) run without it.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

FIXTURE_DIR = Path(os.environ.get(FIXTURE_ENV, REPO.parent / "shared" / "fixtures" / "bilm-tf"))

INTEGRATION = Path(__file__).resolve().parent / "integration"


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


# tests/integration/conftest.py's servers, started once per session by the first test asking for one
SHARED_SERVERS = {"s3", "mlflow_server", "cluster"}


def pytest_collection_modifyitems(config, items):
    """The declared markers, applied: `slow` to everything under tests/integration (servers, Ray
    clusters, whole jobs), `fixture` to every test that reads bilm-tf's reference model.

    The order: the unit tier first, then the integration modules that start their own servers,
    then those that share the session's servers, the ones on the session's Ray last, so that no
    shared server (the Ray above all) sits idle beside another module's work."""
    for item in items:
        if item.path.is_relative_to(INTEGRATION):
            item.add_marker(pytest.mark.slow)
        if "bilm_tf" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.fixture)

    def uses(names: set[str]) -> set[Path]:
        return {item.path for item in items if names & set(getattr(item, "fixturenames", ()))}

    sharing, on_ray = uses(SHARED_SERVERS), uses({"cluster"})
    items.sort(key=lambda item: (item.path.is_relative_to(INTEGRATION), item.path in sharing, item.path in on_ray))
