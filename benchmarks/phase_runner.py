"""A benchmark phase in its own Python process: the parent starts the script again with the
phase's arguments, the phase prints its result as one JSON line, the parent reads it back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_phase(script: str, *args: str, env: dict[str, str] | None = None) -> dict:
    """Run ``python script *args`` from the repository root with this checkout first on the
    import path (its stderr passes through) and return the JSON of its last stdout line."""
    proc = subprocess.run([sys.executable, script, *args], stdout=subprocess.PIPE, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    if proc.returncode:
        raise SystemExit(f"phase {' '.join(args)} of {Path(script).name} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def print_phase_result(result: dict) -> None:
    """The phase's side: its result, as the one JSON line `run_phase` reads."""
    print(json.dumps(result))
