"""Waiting on a condition rather than for a fixed time."""

from __future__ import annotations

import time


def wait_until(condition, timeout: float = 10.0, interval: float = 0.01) -> bool:
    """Poll ``condition()`` every ``interval`` seconds until it is true (True) or ``timeout``
    seconds have passed (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True
