"""The processes of a benchmark phase, sampled in a thread with psutil: CPU seconds by kind of
process, each process's peak resident memory and, when asked, the peak of their summed PSS.

What is sampled is this process and every process it started. With a local Ray (`ray.init` in
this process) that is the whole cluster: GCS, raylet, dashboard and its modules, agents, workers
and actors. A Ray that another program started on the same machine is not counted.

A kind is the driver, a Ray daemon's name, or a Ray worker's title (``ray::RayTrainWorker``,
``ray::MapWorker(...)``). A worker keeps the first title it showed after ``ray::IDLE``, even if it
is later reused for other tasks.

psutil has no field for two Linux figures used here, so they are read from /proc: a process's
peak resident set (``VmHWM``), and the anonymous and shared-memory parts of its PSS.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

DRIVER = "driver (this process)"
OTHER = "other (dashboard helpers...)"  # a descendant that is none of the kinds below
IDLE_KINDS = ("ray::IDLE", "ray worker (idle)")  # kinds of a worker between tasks
SCRIPTS = ("dashboard", "log_monitor", "monitor.py", "runtime_env")  # Python daemons, by their script
PSS_FIELDS = ("Pss", "Pss_Anon", "Pss_Shmem")  # smaps_rollup: total, private (anonymous), shared memory


def process_kind(cmdline: list[str]) -> str:
    """A Ray worker's title, ``ray worker (idle)`` before it sets one, a Ray daemon's name, or OTHER."""
    head = cmdline[0] if cmdline else ""
    if head.startswith("ray::"):
        return head.split(".")[0].split(" ")[0]
    if os.path.basename(head) in ("raylet", "gcs_server"):  # their arguments name the worker script
        return os.path.basename(head)
    if any(arg.endswith("default_worker.py") for arg in cmdline[:3]):
        return "ray worker (idle)"
    text = " ".join(cmdline)
    return next((script for script in SCRIPTS if script in text), OTHER)


def peak_rss_bytes(pid: int) -> int | None:
    """The process's peak resident set so far (VmHWM), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def pss_bytes(pid: int) -> dict[str, int]:
    """Proportional set size (pages shared by n processes count 1/n in each) and its private
    (anonymous) and shared-memory (Ray's object store) parts, in bytes; zeros if the process is gone."""
    out = dict.fromkeys(PSS_FIELDS, 0)
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                name = line.split(":", 1)[0]
                if name in out:
                    out[name] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return out


def machine_busy_cpu_s() -> float:
    """CPU seconds the whole machine has been busy, all cores (idle and iowait left out)."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + t.steal


def own_cpu_s() -> float:
    """CPU seconds of this process and of the descendants it has reaped."""
    t = psutil.Process().cpu_times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class Seen:
    """One process as sampled: its kind, its CPU seconds when first seen (0 if it was born after
    sampling began), at the latest sample, and its peak resident set in bytes."""

    kind: str
    cpu_first: float
    cpu_latest: float
    peak_rss: int = 0
    born_during: bool = False

    @property
    def cpu_used(self) -> float:
        return self.cpu_latest - self.cpu_first


class ProcessSampler:
    """This process and its descendants, sampled every ``interval`` s while the ``with`` block
    runs (once more at its end). ``memory_kinds``, when given, says which kinds count in the
    summed PSS whose peak is kept: reading PSS costs ~7 ms of CPU per process, so only phases
    that report memory should ask for it (``sampler_cpu_s`` is the sampler thread's own cost).
    Also kept: the machine's busy CPU time and this process's own CPU time (with reaped children)
    over the block."""

    def __init__(self, interval: float = 1.0, memory_kinds: Callable[[str], bool] | None = None) -> None:
        self.interval, self.memory_kinds = interval, memory_kinds
        self.seen: dict[int, Seen] = {}
        self.peak_pss, self.peak_pss_parts, self.peak_pss_by_kind = 0, dict.fromkeys(PSS_FIELDS, 0), {}
        self.processes_at_peak, self.peak_at_s = 0, 0.0
        self.timeline: list[tuple[float, int, int]] = []  # (s, summed PSS MB, its shared part MB), every 5 s
        self.sampler_cpu_s = 0.0
        self._first = True
        self._me = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree(self) -> dict[int, tuple[psutil.Process, float]]:
        """This process and its descendants now: pid -> (process, CPU seconds used so far)."""
        tree = {}
        for proc in [self._me, *self._me.children(recursive=True)]:
            try:
                times = proc.cpu_times()
            except psutil.Error:  # gone since
                continue
            tree[proc.pid] = (proc, times.user + times.system)
        return tree

    @staticmethod
    def _kind(proc: psutil.Process) -> str:
        if proc.pid == os.getpid():
            return DRIVER
        try:
            return process_kind(proc.cmdline())
        except psutil.Error:
            return OTHER

    def _sample(self) -> None:
        tree = self._tree()
        for pid, (proc, cpu) in tree.items():
            entry = self.seen.get(pid)
            if entry is None:  # a process started since sampling began counts from its birth
                entry = self.seen[pid] = Seen(self._kind(proc), cpu if self._first else 0.0, cpu,
                                              born_during=not self._first)
            elif entry.kind in IDLE_KINDS:
                entry.kind = self._kind(proc)
            entry.cpu_latest = cpu
            entry.peak_rss = max(entry.peak_rss, peak_rss_bytes(pid) or 0)
        if self.memory_kinds is not None:
            self._sample_memory([pid for pid in tree if self.memory_kinds(self.seen[pid].kind)])

    def _sample_memory(self, pids: list[int]) -> None:
        by_kind: dict[str, int] = {}
        parts = dict.fromkeys(PSS_FIELDS, 0)
        for pid in pids:
            pss = pss_bytes(pid)
            kind = self.seen[pid].kind
            by_kind[kind] = by_kind.get(kind, 0) + pss["Pss"]
            for field in PSS_FIELDS:
                parts[field] += pss[field]
        now = time.monotonic() - self._wall0
        if not self.timeline or now - self.timeline[-1][0] >= 5:
            self.timeline.append((round(now, 1), round(parts["Pss"] / 2**20), round(parts["Pss_Shmem"] / 2**20)))
        if parts["Pss"] > self.peak_pss:
            self.peak_pss, self.peak_pss_parts, self.peak_pss_by_kind = parts["Pss"], parts, by_kind
            self.processes_at_peak, self.peak_at_s = len(pids), now

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self.sampler_cpu_s = time.thread_time()
            self._stop.wait(self.interval)

    def __enter__(self) -> "ProcessSampler":
        self._busy0, self._wall0, self._own0 = machine_busy_cpu_s(), time.monotonic(), own_cpu_s()
        self._sample()  # processes already running count from here
        self._first = False
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.busy_s, self.wall_s = machine_busy_cpu_s() - self._busy0, time.monotonic() - self._wall0
        self.own_s = own_cpu_s() - self._own0

    def cpu_seconds_by_kind(self, keep: Callable[[Seen], bool] = lambda seen: True) -> dict[str, float]:
        """CPU seconds used during the block, summed by kind (those of ``keep``'s processes),
        largest first, kinds under 0.05 s left out."""
        totals: dict[str, float] = {}
        for seen in self.seen.values():
            if keep(seen):
                totals[seen.kind] = totals.get(seen.kind, 0.0) + seen.cpu_used
        return {k: round(v, 1) for k, v in sorted(totals.items(), key=lambda kv: -kv[1]) if v >= 0.05}

    def peak_rss_mb_by_kind(self) -> dict[str, float]:
        """Per kind, the sum of its processes' peak resident sets in MB (each process's own
        high-water mark at its last sample; peaks of different processes need not coincide)."""
        totals: dict[str, float] = {}
        for seen in self.seen.values():
            if seen.peak_rss:
                totals[seen.kind] = totals.get(seen.kind, 0.0) + seen.peak_rss / 2**20
        return {k: round(v, 1) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}

    def sampled_cpu_s(self) -> float:
        """CPU seconds of every sampled process during the block."""
        return sum(seen.cpu_used for seen in self.seen.values())

    def peak_pss_mb_by_kind(self) -> dict[str, float]:
        return {k: round(v / 2**20, 1) for k, v in sorted(self.peak_pss_by_kind.items(), key=lambda kv: -kv[1])}

    def summary(self) -> dict:
        """What the block used, JSON-ready: CPU seconds by kind, in all and on the rest of the
        machine, and (when PSS was sampled) the peak of the summed PSS with its parts, kinds and
        timeline."""
        # processes that exited between two samples lose their last interval; those a process
        # reaped count in its children's times, so after ray.shutdown() this process's own and
        # its children's CPU time covers the whole job
        sampled = self.sampled_cpu_s()
        used = max(sampled, self.own_s)
        out = {"cpu_s_by_process": self.cpu_seconds_by_kind(), "job_cpu_s": round(used, 1),
               "job_cpu_s_sampled": round(sampled, 1),
               # machine busy time minus this job's: the test suite or anything else running meanwhile
               "foreign_cpu_s": round(max(0.0, self.busy_s - used), 1), "machine_cpus": os.cpu_count()}
        if self.memory_kinds is not None:
            out.update(peak_mb=round(self.peak_pss / 2**20, 1), processes_at_peak=self.processes_at_peak,
                       peak_at_s=round(self.peak_at_s, 1),  # from the start of the block
                       peak_private_mb=round(self.peak_pss_parts["Pss_Anon"] / 2**20, 1),
                       peak_shared_mb=round(self.peak_pss_parts["Pss_Shmem"] / 2**20, 1),  # the object store, mostly
                       timeline_s_total_mb_shared_mb=self.timeline,
                       peak_mb_by_process=self.peak_pss_mb_by_kind(),
                       memory_sampler_cpu_s=round(self.sampler_cpu_s, 1))
        return out
