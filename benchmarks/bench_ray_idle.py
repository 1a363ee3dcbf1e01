"""What Ray itself costs while training runs: the CPU of every Ray process (daemons, Ray Train's
and Ray Data's helper actors, idle workers) when a 2-worker `TorchTrainer` on this machine's
local Ray does nothing but sleep after reading its dataset shard.

    .venv/bin/python benchmarks/bench_ray_idle.py --out benchmarks/results/ray_idle_cpu.json

The run is set up as `workflows.training.driver.run_stage` sets up training (the same datasets and
data config, 2 workers x 1 CPU, ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=0.2``; Ray started as
`bench_train.py` starts it). /proc is read twice, ``--window`` seconds apart, once start-up is
over; the result is CPU seconds per wall second by kind of process (1.0 = one core), so the sum
is the share of the machine that Ray's own processes take from training.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from ray_processes import command_line, cpu_seconds, pids, process_kind

REPO = Path(__file__).resolve().parents[1]


def cpu_seconds_by_pid() -> dict[int, tuple[str, float]]:
    """Every Ray process now: pid -> (its kind, CPU seconds used so far)."""
    out = {}
    for pid in pids():
        kind = process_kind(pid, command_line(pid) or [])
        cpu = cpu_seconds(pid) if kind is not None else None
        if cpu is not None:
            out[pid] = (kind, cpu)
    return out


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
        readings: dict = {}

        def sample() -> None:
            time.sleep(args.startup)
            readings["before"], readings["t0"] = cpu_seconds_by_pid(), time.time()
            time.sleep(args.window)
            readings["after"], readings["t1"] = cpu_seconds_by_pid(), time.time()

        sampler = threading.Thread(target=sample)
        sampler.start()
        trainer.fit()
        sampler.join()
        ray.shutdown()
    wall = readings["t1"] - readings["t0"]
    by_kind: dict[str, float] = {}
    for pid, (kind, cpu) in readings["after"].items():
        if pid == os.getpid():
            kind = "driver (this process)"
        if pid in readings["before"]:
            used = cpu - readings["before"][pid][1]
        else:
            kind, used = f"{kind} (started in the window)", cpu
        by_kind[kind] = by_kind.get(kind, 0.0) + used
    per_second = {k: round(v / wall, 4) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1]) if v > 0}
    report = {"machine": {"cpus": os.cpu_count()}, "window_s": round(wall, 1),
              "cpu_per_second_total": round(sum(per_second.values()), 3),
              "share_of_machine": round(sum(per_second.values()) / os.cpu_count(), 3),
              "cpu_per_second_by_kind": per_second}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
