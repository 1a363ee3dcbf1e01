"""`elmo preprocess` sizes its Ray Data tasks by the data (shards, staged bytes) and `--num-workers`,
never by the CPUs the cluster has at the start (`preprocessing.task_plan`)."""

from __future__ import annotations

import pytest

from preprocessing.config import RunOptions
from preprocessing.task_plan import TaskPlan


@pytest.mark.parametrize("cpus", [1, 64])
def test_the_plan_does_not_ask_the_cluster(monkeypatch, cpus):
    ray = pytest.importorskip("ray")
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": float(cpus)})
    plan = TaskPlan.of(7, RunOptions())
    assert plan == TaskPlan(read_tasks=7, readers_at_once=2, stats_partitions=7, max_concurrency=None,
                            min_encode_groups=1)
    assert plan.compute().size is None and plan.read_compute().size == 2  # no cap: the cluster decides
    assert not plan.reserve_resources


@pytest.mark.parametrize("shards", [1, 3, 100])
def test_tasks_follow_the_shards(shards):
    plan = TaskPlan.of(shards, RunOptions())
    assert plan.read_tasks == plan.stats_partitions == shards
    assert plan.readers_at_once == min(shards, RunOptions().readers)


def test_num_workers_caps_the_tasks_at_a_time():
    plan = TaskPlan.of(5, RunOptions(num_workers=3))
    assert (plan.max_concurrency, plan.readers_at_once, plan.min_encode_groups) == (3, 3, 3)
    assert plan.compute().size == 3 and not plan.reserve_resources
    assert TaskPlan.of(5, RunOptions(num_workers=1)).reserve_resources


def test_pass_two_groups_follow_the_staged_bytes():
    mb = 1 << 20
    staged = [(f"s{i}.arrow", 10 * mb) for i in range(20)]  # 200 MB staged
    plan = TaskPlan.of(4, RunOptions())
    groups = plan.encode_groups(staged, target_bytes=64 * mb)
    assert len(groups) == 4  # ceil(200 / 64)
    assert [p for g in groups for p in g] == [p for p, _ in staged]  # consecutive, each file once
    assert len(plan.encode_groups(staged[:3], target_bytes=64 * mb)) == 1
    assert len(plan.encode_groups(staged * 2, target_bytes=64 * mb)) == 7  # twice the data: ceil(400 / 64)
    # --num-workers: at least that many (as before), where there are files enough
    assert len(TaskPlan.of(4, RunOptions(num_workers=6)).encode_groups(staged, 64 * mb)) == 6
