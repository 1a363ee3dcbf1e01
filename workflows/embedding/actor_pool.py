"""The embedding actors' pool (`--num-actors`): ``N`` actors, or ``MIN..MAX`` growing with the work
and the cluster.

`ActorRange` is the setting's value (no Ray needed to parse it); `actor_pool` turns it into the
``compute=`` of the embedding stage. Ray Data (2.60) adds an actor to a pool when its utilization,
tasks in flight / (actors x calls per actor), reaches ``actor_pool_util_upscaling_threshold``
(1.75 by default) and the cluster has the resources for one more (Ray Data re-reads the cluster's
resources every second, so a node that joins counts); it removes one below 0.5. With one task in
flight per actor (`EmbedJobConfig.tasks_per_actor`, measured faster) the utilization never
exceeds 1.0, so a growing pool lowers the threshold to 1.0 for its own dataset: every actor busy
(pending actors count as idle) means one more.
"""

from __future__ import annotations

import re

_RANGE = re.compile(r"\s*(\d+)\s*(?:\.\.\s*(\d+)\s*)?")
# utilization at which a growing pool adds an actor: every actor has its one task (see above)
UPSCALING_UTILIZATION = 1.0


class ActorRange:
    """``N`` (a fixed pool) or ``MIN..MAX`` (a pool Ray Data grows and shrinks between them).
    Built from an int, a string ("4", "1..8") or another `ActorRange`."""

    __slots__ = ("min", "max")

    def __init__(self, value: "int | str | ActorRange") -> None:
        if isinstance(value, ActorRange):
            low, high = value.min, value.max
        elif isinstance(value, int) and not isinstance(value, bool):
            low = high = value
        else:
            match = _RANGE.fullmatch(str(value))
            if not match:
                raise ValueError(f"actors must be N or MIN..MAX, not {value!r}")
            low = int(match.group(1))
            high = int(match.group(2)) if match.group(2) is not None else low
        if low < 1 or high < low:
            raise ValueError(f"actors must be at least 1 and MIN <= MAX, not {value!r}")
        object.__setattr__(self, "min", low)
        object.__setattr__(self, "max", high)

    def __setattr__(self, name, value) -> None:
        raise AttributeError("ActorRange is immutable")

    @property
    def fixed(self) -> bool:
        return self.min == self.max

    def __str__(self) -> str:
        return str(self.min) if self.fixed else f"{self.min}..{self.max}"

    def __repr__(self) -> str:
        return f"ActorRange({str(self)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, ActorRange) and (self.min, self.max) == (other.min, other.max)

    def __hash__(self) -> int:
        return hash((self.min, self.max))


def actor_pool(ds, actors: ActorRange, tasks_per_actor: int):
    """``compute=`` for ``ds.map_batches(EmbedActor, ...)``: a fixed pool of ``actors.min``, or one
    that starts at ``actors.min`` and may grow to ``actors.max``; for a growing pool, ``ds``'s own
    Ray Data context (shared by the datasets derived from it, not the process's) gets the
    upscaling threshold above."""
    import dataclasses

    from ray.data import ActorPoolStrategy

    if actors.fixed:
        return ActorPoolStrategy(size=actors.min, max_tasks_in_flight_per_actor=tasks_per_actor)
    context = ds.context
    context.autoscaling_config = dataclasses.replace(context.autoscaling_config,
                                                     actor_pool_util_upscaling_threshold=UPSCALING_UTILIZATION)
    return ActorPoolStrategy(min_size=actors.min, max_size=actors.max, max_tasks_in_flight_per_actor=tasks_per_actor)
