"""Checks of what a command prints."""

from __future__ import annotations


def assert_one_line_per_stage(output: str, stages: int) -> list[str]:
    """A console that reports ``[k/N] title: outcome (elapsed)`` once per stage, and never FAILED."""
    lines = output.splitlines()
    for stage in range(1, stages + 1):
        done = [line for line in lines if line.startswith(f"[{stage}/{stages}] ") and line.rstrip().endswith("s)")]
        assert len(done) == 1, (stage, done)
    assert not any("FAILED" in line for line in lines)
    return lines
