"""Joining Ray: how the commands (preprocessing, training, embedding) get their cluster. `elmo demo`
starts its own local Ray first (sized to the machine, quiet; `workflows.demo.demo`), which the
commands it runs then find connected."""

from __future__ import annotations


def ensure_ray(address: str | None) -> None:
    """Connect to ``address``, or to the cluster a ``ray job submit`` job runs in (``RAY_ADDRESS``),
    or start a local Ray on the fly; nothing if this process is already connected."""
    import ray

    if ray.is_initialized():
        return
    ray.init(address=address) if address else ray.init()
