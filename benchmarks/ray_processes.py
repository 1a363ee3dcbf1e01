"""Which processes on this machine belong to Ray, and what they are (read from /proc); shared by
the benchmarks' memory and CPU samplers."""

from __future__ import annotations

import os
import threading

SCRIPTS = ("dashboard", "log_monitor", "monitor.py", "runtime_env")  # Python daemons, by their script
IDLE_KINDS = ("ray::IDLE", "ray worker (idle)")  # kinds of a worker between tasks


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


class CpuByProcess:
    """CPU seconds used by each kind of process while a phase runs: the driver, Ray's daemons, and
    Ray workers by the first task title each showed (``ray::IDLE`` if it never ran a task; a
    worker reused for other tasks stays under its first title). /proc is sampled every
    ``interval`` seconds and each process's last reading is kept (a sample costs a few ms)."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.seen: dict[int, tuple[str, float, float]] = {}  # pid -> (kind, cpu at first sight, latest)
        self.peak_rss: dict[int, float] = {}  # pid -> its peak resident set (VmHWM), MB
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for pid in pids():
            cmd = command_line(pid)
            kind = "driver (this process)" if pid == os.getpid() else process_kind(pid, cmd or [])
            cpu = cpu_seconds(pid)
            if cpu is None:
                continue
            if kind is not None and cmd is not None:
                if pid in self.seen:
                    earlier, first, _ = self.seen[pid]
                    if earlier not in IDLE_KINDS:  # a worker keeps the first task title it showed
                        kind = earlier
                else:
                    first = cpu
                self.seen[pid] = (kind, first, cpu)
                peak = _peak_rss_mb(pid)
                if peak is not None:
                    self.peak_rss[pid] = max(peak, self.peak_rss.get(pid, 0.0))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> "CpuByProcess":
        self._sample()  # processes already running count from here
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def peak_rss_mb_by_kind(self) -> dict[str, float]:
        """Per kind, the sum of its processes' peak resident sets (each process's own high-water
        mark, VmHWM, at its last sample; peaks of different processes need not coincide)."""
        totals: dict[str, float] = {}
        for pid, peak in self.peak_rss.items():
            kind = self.seen[pid][0]
            totals[kind] = round(totals.get(kind, 0.0) + peak, 1)
        return dict(sorted(totals.items(), key=lambda kv: -kv[1]))

    def seconds_by_kind(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for kind, first, latest in self.seen.values():
            totals[kind] = round(totals.get(kind, 0.0) + latest - first, 1)
        return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def cpu_seconds(pid: int) -> float | None:
    """CPU seconds ``pid`` has used so far (user + system), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None
