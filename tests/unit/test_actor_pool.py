"""`--num-actors N|MIN..MAX`: the value, the flag, and the Ray Data pool it becomes (a fixed pool,
or one that Ray Data's autoscaler can grow with one task in flight per actor)."""

from __future__ import annotations

import copy

import pytest

from workflows.embedding.actor_pool import UPSCALING_UTILIZATION, ActorRange, actor_pool
from workflows.embedding.config import EmbedJobConfig


@pytest.mark.parametrize("value, low, high, shown", [
    (1, 1, 1, "1"), (4, 4, 4, "4"), ("3", 3, 3, "3"), ("1..8", 1, 8, "1..8"), (" 2 .. 2 ", 2, 2, "2"),
    (ActorRange("1..3"), 1, 3, "1..3")])
def test_a_count_or_a_range(value, low, high, shown):
    actors = ActorRange(value)
    assert (actors.min, actors.max, str(actors), actors.fixed) == (low, high, shown, low == high)
    assert actors == ActorRange(shown) and hash(actors) == hash(ActorRange(shown))


@pytest.mark.parametrize("value", [0, "0", "0..2", "3..1", "1..", "..4", "a", "1-4", True, ""])
def test_what_is_not_a_pool_size(value):
    with pytest.raises(ValueError):
        ActorRange(value)
    with pytest.raises(ValueError):
        EmbedJobConfig(num_actors=value)


def test_the_flag_and_the_python_api_give_the_same_config():
    import argparse

    from workflows.embedding.embed_corpus import add_arguments, job_config

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    parse = parser.parse_args
    base = ["in.txt", "--output", "out", "--model", "m"]
    assert job_config(parse(base)).num_actors == ActorRange(1) == EmbedJobConfig().num_actors
    assert job_config(parse([*base, "--num-actors", "2"])) == EmbedJobConfig(num_actors=2)
    assert job_config(parse([*base, "--num-actors", "1..4"])).num_actors == ActorRange("1..4")
    with pytest.raises(SystemExit):
        parse([*base, "--num-actors", "4..1"])


class _Dataset:
    """What `actor_pool` uses of a Ray Dataset: its own DataContext."""

    def __init__(self):
        from ray.data import DataContext

        self.context = copy.deepcopy(DataContext.get_current())


def test_a_fixed_pool_keeps_ray_datas_settings():
    ds = _Dataset()
    before = ds.context.autoscaling_config
    strategy = actor_pool(ds, ActorRange(3), tasks_per_actor=1)
    assert (strategy.min_size, strategy.max_size, strategy.max_tasks_in_flight_per_actor) == (3, 3, 1)
    assert ds.context.autoscaling_config == before


def test_a_range_is_a_pool_that_can_reach_its_upscaling_threshold():
    """Ray Data adds an actor when tasks in flight / (actors x 1 call each) reaches the threshold;
    with 1 task per actor that is at most 1.0, under Ray's default 1.75: the dataset's own
    context gets 1.0, the process's stays as it was."""
    from ray.data import DataContext

    default = DataContext.get_current().autoscaling_config.actor_pool_util_upscaling_threshold
    assert default > 1.0  # why the threshold is set at all
    ds = _Dataset()
    strategy = actor_pool(ds, ActorRange("1..4"), tasks_per_actor=1)
    assert (strategy.min_size, strategy.max_size, strategy.max_tasks_in_flight_per_actor) == (1, 4, 1)
    threshold = ds.context.autoscaling_config.actor_pool_util_upscaling_threshold
    assert threshold == UPSCALING_UTILIZATION == 1.0
    assert strategy.max_tasks_in_flight_per_actor / 1 >= threshold  # reachable when every actor is busy
    assert DataContext.get_current().autoscaling_config.actor_pool_util_upscaling_threshold == default
