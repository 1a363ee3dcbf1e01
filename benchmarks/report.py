"""Where a benchmark's results go: its report printed as JSON and written to a file, and the
description of the machine it ran on."""

from __future__ import annotations

import json
import platform
from collections.abc import Iterable
from pathlib import Path


def save_json(path: Path | str, data: dict) -> None:
    """Write ``data`` to ``path`` as indented JSON (the folders are made if missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_report(path: Path | str | None, report: dict, shown: Iterable[str] | None = None) -> None:
    """Print the report as JSON on stdout (only the keys in ``shown`` if given) and, given a
    path, write the whole report there."""
    print(json.dumps(report if shown is None else {k: report[k] for k in shown}, indent=2))
    if path:
        save_json(path, report)


def cpu_model() -> str:
    """The processor's name as Linux reports it (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()
