"""Which processes on this machine belong to Ray, and what they are (read from /proc); shared by
the benchmarks' memory and CPU samplers."""

from __future__ import annotations

import os

SCRIPTS = ("dashboard", "log_monitor", "monitor.py", "runtime_env")  # Python daemons, by their script


def command_line(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return None


def process_kind(pid: int, cmd: list[bytes]) -> str | None:
    """A Ray worker's title (``ray::RayTrainWorker``, ``ray::IDLE``...), ``ray worker (idle)``
    before it sets one, a Ray daemon's name, or None for anything else."""
    head = cmd[0].decode(errors="replace") if cmd and cmd[0] else ""
    if head.startswith("ray::"):
        return head.split(".")[0].split(" ")[0]
    if os.path.basename(head) in ("raylet", "gcs_server"):  # their arguments name the worker script
        return os.path.basename(head)
    if any(arg.endswith(b"default_worker.py") for arg in cmd[:3]):
        return "ray worker (idle)"
    text = b" ".join(cmd).decode(errors="replace")
    for script in SCRIPTS:
        if script in text:
            return script
    return None


def is_ray_worker(pid: int) -> bool:
    """A Ray worker process, or a process that starts them (the raylet)."""
    cmd = b"\0".join(command_line(pid) or [])
    return cmd.startswith(b"ray::") or b"default_worker.py" in cmd


def pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]
