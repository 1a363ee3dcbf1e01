"""What a long multi-step command shows a person: one line per step with its elapsed time (a
live ticker and a bar on a terminal), and everything else (Ray, the steps' own prints) sent to a
log file. Used by `elmo demo` and `infra/local/run.py`."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from pathlib import Path


class Console:
    """One line per step on the terminal (kept from before any redirection); a live ticker with
    the elapsed time, and a bar where a step knows its progress, when it is a terminal."""

    def __init__(self, stream, n_steps: int) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.n_steps = n_steps
        self.index = 0
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    @contextlib.contextmanager
    def step(self, title: str, progress=None):
        """``progress``: a callable -> (done, total) or None, polled for the bar."""
        self.index += 1
        head = f"[{self.index}/{self.n_steps}] {title}"
        began = time.monotonic()
        outcome = {"note": ""}
        stop = threading.Event()

        def tick() -> None:
            while not stop.wait(1.0):
                line = f"{head} ... {elapsed(time.monotonic() - began)}"
                if progress is not None:
                    with contextlib.suppress(Exception):
                        state = progress()
                        if state:
                            done, total = state
                            filled = int(24 * min(done, total) / max(total, 1))
                            line += f" [{'#' * filled}{'.' * (24 - filled)}] {done}/{total}"
                self.stream.write("\r" + line[:150].ljust(100))
                self.stream.flush()

        ticker = threading.Thread(target=tick, daemon=True) if self.live else None
        if ticker:
            ticker.start()
        else:
            self.say(f"{head} ...")
        try:
            yield outcome
        except BaseException:
            stop.set()
            if ticker:
                ticker.join()
                self.stream.write("\r")
            self.say(f"{head}: FAILED after {elapsed(time.monotonic() - began)}")
            raise
        stop.set()
        if ticker:
            ticker.join()
            self.stream.write("\r")
        self.say(f"{head}: {outcome['note']} ({elapsed(time.monotonic() - began)})".ljust(100))


def elapsed(seconds: float) -> str:
    return f"{int(seconds // 60)}m{seconds % 60:04.1f}s" if seconds >= 60 else f"{seconds:.1f}s"


@contextlib.contextmanager
def output_to(log_path: Path | None):
    """Send this process's stdout/stderr (file descriptors, so Ray's C++ and worker output too)
    to ``log_path``; nothing changes when it is None."""
    if log_path is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
