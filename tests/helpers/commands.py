"""The project's commands run as a user runs them: a subprocess with this tree's code first."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import REPO


def run_preprocess(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m preprocessing ARGS`` from the repository root, output captured."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "preprocessing", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=timeout)
