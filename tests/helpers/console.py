"""Checks of what a command prints."""

from __future__ import annotations


def assert_one_line_per_step(output: str, steps: int) -> list[str]:
    """A console that reports ``[k/N] title: outcome (elapsed)`` once per step, and never FAILED."""
    lines = output.splitlines()
    for step in range(1, steps + 1):
        done = [line for line in lines if line.startswith(f"[{step}/{steps}] ") and line.rstrip().endswith("s)")]
        assert len(done) == 1, (step, done)
    assert not any("FAILED" in line for line in lines)
    return lines
