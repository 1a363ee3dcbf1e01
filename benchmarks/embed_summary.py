"""`bench_embed.py`'s comparisons: ratios between its phases in each round, their medians, the
memory phases' growth, and the targets these are held against."""

from __future__ import annotations

import statistics
from collections.abc import Callable


def per_round(rounds: list[dict], ratio: Callable[[dict], float]) -> list[float]:
    """``ratio`` of every round that ran the phases it needs."""
    out = []
    for r in rounds:
        try:
            out.append(ratio(r))
        except KeyError:
            pass
    return out


def phase_median(rounds: list[dict], name: str, key: str = "tokens_per_s") -> float | None:
    values = [r[name][key] for r in rounds if name in r]
    return statistics.median(values) if values else None


def ratios_per_round(rounds: list[dict]) -> dict[str, list[float]]:
    overhead = per_round(rounds, lambda r: r["job_1a_1t"]["wall_s"] / r["baseline_1t"]["seconds"] - 1)
    return {
        "job_1actor_over_baseline": [1 / (1 + o) for o in overhead],
        "overhead_1actor": overhead,
        "overhead_1actor_manifest_seconds": per_round(
            rounds, lambda r: r["job_1a_1t"]["manifest_s"] / r["baseline_1t"]["seconds"] - 1),
        "overhead_1actor_vs_embedder_alone": per_round(
            rounds, lambda r: r["job_1a_1t"]["wall_s"] / r["baseline_1t"]["embed_seconds"] - 1),
        # the job's time = a fixed startup (Ray Data, actor process, model load: until the first
        # block reaches an actor) + the embedding + a short tail; the baseline's counterpart of the
        # middle part is its time without the model load
        "overhead_1actor_after_startup": per_round(
            rounds, lambda r: (r["job_1a_1t"]["wall_s"] - r["job_1a_1t"]["startup_s"])
            / (r["baseline_1t"]["seconds"] - r["baseline_1t"]["model_load_s"]) - 1),
        "two_actors_over_one": per_round(
            rounds, lambda r: r["job_2a_1t"]["tokens_per_s"] / r["job_1a_1t"]["tokens_per_s"]),
        # the same between the first block reaching an actor and the last one done (startup left out)
        "two_actors_over_one_after_startup": per_round(
            rounds, lambda r: r["job_1a_1t"]["embedding_s"] / r["job_2a_1t"]["embedding_s"]),
        "two_actors_over_one_actor_2_threads": per_round(
            rounds, lambda r: r["job_2a_1t"]["tokens_per_s"] / r["job_1a_2t"]["tokens_per_s"]),
        "baseline_2_threads_over_1": per_round(
            rounds, lambda r: r["baseline_2t"]["tokens_per_s"] / r["baseline_1t"]["tokens_per_s"]),
        "overhead_1actor_2_threads_vs_baseline_2_threads": per_round(
            rounds, lambda r: r["job_1a_2t"]["wall_s"] / r["baseline_2t"]["seconds"] - 1),
    }


def medians_of(rounds: list[dict], ratios: dict[str, list[float]]) -> dict:
    """Each ratio's median over the rounds, the 1-actor job's startup, and the corpus size at
    which the 1-actor overhead would fall to 20%."""
    medians = {k: statistics.median(v) if v else None for k, v in ratios.items()}
    startup = per_round(rounds, lambda r: r["job_1a_1t"]["startup_s"])
    steady = medians["overhead_1actor_after_startup"]
    if startup and steady is not None and steady < 0.2:
        # startup + tokens / rate x (1 + steady) = 1.2 x (tokens / rate), rate = the baseline's
        # tokens/s without the model load
        rate = statistics.median(r["baseline_1t"]["tokens_per_s_without_model_load"] for r in rounds)
        medians["tokens_for_20pct_overhead_1actor"] = round(statistics.median(startup) * rate / (0.2 - steady))
    medians["job_1a_1t_startup_s"] = statistics.median(startup) if startup else None
    return medians


def memory_growth(memory: dict, factor: int, bounded_mb: int) -> dict | None:
    """Peak memory of the larger memory corpus against the smaller one (and the same with
    bounded blocks, if those phases ran)."""
    if not memory:
        return None
    small, large = memory["memory_1x"], memory[f"memory_{factor}x"]
    mem = {"peak_mb_1x": small["peak_mb"], f"peak_mb_{factor}x": large["peak_mb"],
           "memory_10x_over_1x": large["peak_mb"] / small["peak_mb"],
           "growth_mb": large["peak_mb"] - small["peak_mb"]}
    if "memory_1x_bounded" in memory:
        small, large = memory["memory_1x_bounded"], memory[f"memory_{factor}x_bounded"]
        mem["with_bounded_blocks"] = {
            "block_mb": bounded_mb, "peak_mb_1x": small["peak_mb"], f"peak_mb_{factor}x": large["peak_mb"],
            "memory_10x_over_1x": large["peak_mb"] / small["peak_mb"],
            "growth_mb": large["peak_mb"] - small["peak_mb"],
            "tokens_per_s_10x": large["tokens_per_s"],
            "tokens_per_s_10x_unbounded": memory[f"memory_{factor}x"]["tokens_per_s"]}
    return mem


def targets(medians: dict, mem: dict | None) -> dict[str, bool]:
    return {
        "overhead_1actor_under_20pct": medians["overhead_1actor"] is not None and medians["overhead_1actor"] < 0.20,
        # the issue asks for "scaling at 2 actors" without a number: faster than 1 actor at all
        "two_actors_faster_than_one": (medians["two_actors_over_one"] or 0) > 1.0,
        "memory_10x_within_1_2x": mem is not None and mem["memory_10x_over_1x"] <= 1.2,
    }
