"""Fault injection for the recovery tests: a process fails at a named point, as if it had been
killed or had crashed, so that a test can show the job recovers. Nothing happens unless a test asks:

* ``ELMO_FAULT=POINT:N`` (`FAULT_ENV`): the process is killed (SIGKILL) the N-th time it passes
  POINT (`elmo embed-new`'s ``during``, ``before_publish``, ``publishing`` (after each part moved),
  ``after_publish``, ``after_commit``; `elmo pretrain` / `elmo adapt`'s ``before_register``, after
  the MLflow run finished);
* ``ELMO_FAULT=POINT:FILE``: while FILE exists, the first process to pass POINT takes it (FILE is
  moved to FILE.taken) and is killed (``embed_actor``: one embedding actor of a cluster whose
  workers have this setting);
* `fail_once`: the caller's condition holds (a training worker at ``TrainJobConfig.fail_at_step``)
  and no process has failed for this marker yet: it raises.

"Once" across processes and restarts is a marker created only if absent (`claim_once`).
"""

from __future__ import annotations

import os
import posixpath
import signal
import threading

FAULT_ENV = "ELMO_FAULT"

_passes: dict[str, int] = {}  # point -> times this process passed it
_passes_lock = threading.Lock()  # points are passed by several threads too (embed-new's publishing)


def point(name: str) -> None:
    """A place where a test may kill this process (see the module docstring)."""
    wanted, _, when = os.environ.get(FAULT_ENV, "").partition(":")
    if wanted != name:
        return
    if when.isdigit():
        with _passes_lock:
            _passes[name] = _passes.get(name, 0) + 1
            if _passes[name] == int(when):
                _kill_this_process()
    elif when and os.path.exists(when):
        try:
            os.rename(when, when + ".taken")  # one process takes it
        except OSError:
            return
        _kill_this_process()


def fail_once(marker: str, message: str) -> None:
    """Raise RuntimeError(``message``) unless a process already failed for ``marker``."""
    if claim_once(marker):
        raise RuntimeError(message)


def claim_once(marker: str) -> bool:
    """True for the first caller anywhere: ``marker`` (a local path or ``s3://`` key) is created
    only if absent."""
    from preprocessing.storage import Storage

    return Storage(posixpath.dirname(marker)).put_if_absent(posixpath.basename(marker), b"failed once\n")


def _kill_this_process() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
