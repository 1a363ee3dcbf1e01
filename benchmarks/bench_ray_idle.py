"""What Ray itself costs while training runs: the CPU of every Ray process (daemons, Ray Train's
and Ray Data's helper actors, idle workers) when a 2-worker `TorchTrainer` on this machine's
local Ray does nothing but sleep after reading its dataset shard.

    .venv/bin/python benchmarks/bench_ray_idle.py --out benchmarks/results/ray_idle_cpu.json

The run is set up as `workflows.training.driver.run_training` sets up training (the same datasets and
data config, 2 workers x 1 CPU, ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=0.2``; Ray started as
`bench_train.py` starts it). Ray's processes are sampled twice (`processes.ProcessSampler`),
``--window`` seconds apart, once start-up is over; the result is CPU seconds per wall second by
kind of process (1.0 = one core; this script's own process is not counted), so the sum is the
share of the machine that Ray's own processes take from training.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from processes import DRIVER, OTHER, ProcessSampler
from report import write_report

REPO = Path(__file__).resolve().parents[1]


def cpu_per_second_by_kind(procs: ProcessSampler) -> dict[str, float]:
    """CPU seconds per wall second of each kind of Ray process over the sampled window, largest
    first; processes born in the window count from birth, under their own label."""
    by_kind: dict[str, float] = {}
    for seen in procs.seen.values():
        if seen.kind not in (DRIVER, OTHER):
            kind = f"{seen.kind} (started in the window)" if seen.born_during else seen.kind
            by_kind[kind] = by_kind.get(kind, 0.0) + seen.cpu_used
    return {k: round(v / procs.wall_s, 4) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1]) if v > 0}


def sleeping_loop(config: dict) -> None:
    import ray.train

    shard = ray.train.get_dataset_shard("train")
    sum(t.num_rows for t in shard.iter_batches(batch_size=1024, batch_format="pyarrow"))
    end = time.time() + config["seconds"]
    while time.time() < end:
        time.sleep(min(config["report_every_s"], max(0.0, end - time.time())))
        ray.train.report({"t": time.time()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--startup", type=float, default=30.0, help="seconds left for start-up before the window")
    parser.add_argument("--window", type=float, default=40.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    import ray
    import ray.train
    from ray.data import ExecutionOptions
    from ray.train.torch import TorchTrainer

    from bench_train import prepare
    from preprocessing.dataset import Dataset
    from workflows.training.driver import split_dataset, unique_name

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        prepare(data)
        ray.init(num_cpus=4, logging_level="WARNING")
        dataset = Dataset.open(str(data))
        datasets = {split: split_dataset(dataset, split) for split in ("train", "validation")}
        trainer = TorchTrainer(
            sleeping_loop, train_loop_config={"seconds": args.startup + args.window, "report_every_s": 10},
            datasets=datasets,
            dataset_config=ray.train.DataConfig(datasets_to_split=[],
                                                execution_options=ExecutionOptions(preserve_order=True)),
            scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
            run_config=ray.train.RunConfig(name=unique_name("idle"), storage_path=str(Path(tmp) / "storage")))
        procs = ProcessSampler(interval=args.window)  # a sample at the window's start and one at its end

        def sample() -> None:
            time.sleep(args.startup)
            with procs:
                time.sleep(args.window)

        sampler = threading.Thread(target=sample)
        sampler.start()
        trainer.fit()
        sampler.join()
        ray.shutdown()
    per_second = cpu_per_second_by_kind(procs)
    report = {"machine": {"cpus": os.cpu_count()}, "window_s": round(procs.wall_s, 1),
              "cpu_per_second_total": round(sum(per_second.values()), 3),
              "share_of_machine": round(sum(per_second.values()) / os.cpu_count(), 3),
              "cpu_per_second_by_kind": per_second}
    write_report(args.out, report)


if __name__ == "__main__":
    main()
