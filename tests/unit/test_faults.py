"""`workflows.faults`: the one fault-injection helper of the recovery tests (the kills themselves are
shown in test_embed_new.py and test_workflows.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from workflows import faults

KILLED = -9


def passes(point: str, times: int, env: dict) -> subprocess.CompletedProcess:
    code = f"from workflows import faults\nfor i in range({times}):\n    faults.point({point!r})\n    print(i, flush=True)"
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True)


def test_point_n_kills_at_the_nth_pass_only_at_that_point():
    proc = passes("after_publish", 5, {faults.FAULT_ENV: "after_publish:3"})
    assert proc.returncode == KILLED and proc.stdout.split() == ["0", "1"]
    assert passes("before_publish", 5, {faults.FAULT_ENV: "after_publish:3"}).returncode == 0


def test_an_armed_file_kills_the_one_process_that_takes_it(tmp_path):
    armed = tmp_path / "kill-one"
    env = {faults.FAULT_ENV: f"embed_actor:{armed}"}
    assert passes("embed_actor", 2, env).returncode == 0  # not armed yet
    armed.write_text("kill")
    assert passes("embed_actor", 2, env).returncode == KILLED
    assert not armed.exists() and (tmp_path / "kill-one.taken").exists()
    assert passes("embed_actor", 2, env).returncode == 0  # taken


def test_fail_once_raises_for_the_first_caller_only(tmp_path):
    marker = str(tmp_path / "run.fault-injected")
    with pytest.raises(RuntimeError, match="injected"):
        faults.fail_once(marker, "injected failure")
    faults.fail_once(marker, "injected failure")  # already failed once: nothing
    assert os.path.exists(marker)
