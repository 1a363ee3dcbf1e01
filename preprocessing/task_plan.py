"""How `elmo preprocess` splits its work into Ray Data tasks: a function of the inputs and the run
options, never of the CPUs the cluster has when the job starts.

- pass 1: one read task per input shard (``readers`` at a time, no CPU reserved), each yielding
  blocks of ``lines_per_block`` lines, which Ray Data joins into blocks of up to 128 MiB: one
  tokenizer task (``cpus_per_worker``) per shard, or per 128 MiB of a larger one (cutting them
  smaller with ``repartition`` made the staged files, and so the dataset's bytes, depend on the
  order blocks arrive in); the statistics summed in one aggregation partition per shard.
- pass 2: the staged files in groups of about ``shard_size_mb`` each (`group_staged_files`), one
  task per group.
- tokenizer and pass-2 tasks at a time: ``--num-workers`` if given, else no cap: Ray Data runs as
  many as the cluster has CPUs for, and re-reads the cluster's resources every second, so a node
  that joins while the job runs gets tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import RunOptions
from .encode_tasks import group_staged_files


@dataclass(frozen=True)
class TaskPlan:
    read_tasks: int  # one per input shard
    readers_at_once: int
    stats_partitions: int  # groupby partitions summing the blocks' statistics: one per shard
    max_concurrency: int | None  # tokenizer (and pass-2) tasks at a time; None: what the cluster runs
    min_encode_groups: int  # pass 2's tasks at least (where there are staged files enough)

    @classmethod
    def of(cls, shards: int, options: RunOptions) -> "TaskPlan":
        shards = max(1, shards)
        return cls(read_tasks=shards, readers_at_once=min(shards, options.num_workers or options.readers),
                   stats_partitions=shards, max_concurrency=options.num_workers,
                   min_encode_groups=options.num_workers or 1)

    @property
    def reserve_resources(self) -> bool:
        """Ray Data's per-operator resource reservation: only for one worker (see
        `driver._resource_reservation`; with more it kept tokenizer tasks from running)."""
        return self.max_concurrency == 1

    def read_compute(self):
        """``compute=`` of the read operator."""
        import ray

        return ray.data.TaskPoolStrategy(size=self.readers_at_once)

    def compute(self):
        """``compute=`` of the tokenizer and pass-2 operators: capped only by ``--num-workers``."""
        import ray

        return ray.data.TaskPoolStrategy(size=self.max_concurrency)

    def encode_groups(self, staged: list[tuple[str, int]], target_bytes: int) -> list[list[str]]:
        """Pass 2's tasks: the staged (path, size) files in consecutive groups (see
        `group_staged_files`)."""
        return group_staged_files(staged, target_bytes, self.min_encode_groups)

    def describe(self) -> str:
        at_once = (f"at most {self.max_concurrency} at a time" if self.max_concurrency
                   else "as many at a time as the cluster has CPUs for")
        return f"{self.read_tasks} shard(s) read {self.readers_at_once} at a time, tokenizer tasks {at_once}"
