"""Scale-out throughput: showers per second of ``run_over_files`` versus the number of local workers.

Run: ``python benchmarks/bench_distributed.py [--n 4000] [--files 4] [--workers 1 2] [--task calibrate]
[--model DIR]``. CaloGAN photon showers are simulated into ``--files`` ROOT files; each configuration
processes all of them (chunks of ``--chunk`` showers) twice and prints one line: in this process, a local
process pool and a Dask LocalCluster of N single-threaded workers. The first run includes starting the pool
processes and loading the model in every worker (what one command costs); the rate is that of the second
run (warm workers). Starting the Dask cluster is printed apart.
Without ``--model`` the shipped default surrogate is used if installed, else an untrained surrogate of the
default architecture (the same cost per shower).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from calinfer.distributed import (
    AnomalyTask,
    CalibrateTask,
    InlineExecutor,
    dask_available,
    open_executor,
    process_pool,
    run_over_files,
)
from calinfer.io import write_showers
from calinfer.simulation import simulate_showers


def _model(path: str | None, workdir: Path) -> str:
    from calinfer.surrogate import ShowerSurrogate, default_model_path

    if path:
        return path
    if default_model_path().is_dir():
        return str(default_model_path())
    train = simulate_showers(2000, seed=11)
    model = ShowerSurrogate.create(train.geometry, train.voxels, train.incident_energy, seed=0)
    model.save(workdir / "untrained-model")
    print("(no trained surrogate installed: using an untrained one of the default architecture)")
    return str(workdir / "untrained-model")


def _task(name: str, model: str):
    if name == "calibrate":
        return CalibrateTask(model=model)
    from calinfer.anomaly import EnergyScale

    scale = EnergyScale(value=0.9, uncertainty=0.0, method="fixed", n_showers=0)
    return AnomalyTask(model=model, score="nll", energy_scale=scale, scale_source="benchmark")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000, help="showers in all files together")
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=250, help="showers per job")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--task", choices=["calibrate", "anomaly"], default="calibrate")
    parser.add_argument("--model", default=None, help="surrogate directory")
    parser.add_argument("--no-dask", action="store_true", help="only the local process pool")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        task = _task(args.task, _model(args.model, workdir))
        files = []
        for i, n in enumerate(np.diff(np.linspace(0, args.n, args.files + 1).astype(int))):
            files.append(workdir / f"photons-{i}.root")
            write_showers(files[-1], simulate_showers(int(n), seed=100 + i))
        print(f"{args.task}: {args.n} CaloGAN photon showers in {args.files} files, {args.chunk} per job, "
              f"{os.cpu_count()} cores")  # fmt: skip

        def run(label: str, executor, reference: float | None = None) -> float:
            times = []
            for _ in range(2):  # first (cold) and second (warm) run
                out = workdir / f"out-{len(os.listdir(workdir))}"
                start = time.perf_counter()
                report = run_over_files(files, task, out_dir=out, chunk_size=args.chunk, executor=executor)
                report.raise_for_failures()
                times.append(time.perf_counter() - start)
            rate = report.n_showers / times[1]
            speedup = f"  x{rate / reference:4.2f}" if reference else ""
            print(f"{label:34s} first run {times[0]:6.2f} s, then {times[1]:6.2f} s = {rate:7.1f} showers/s{speedup}")
            return rate

        base = run("in this process (1 torch thread)", InlineExecutor())
        for n in args.workers:
            with process_pool(n) as pool:
                run(f"process pool, {n} worker(s)", pool, base)
        if args.no_dask or not dask_available():
            return
        for n in args.workers:
            start = time.perf_counter()
            with open_executor(dask_workers=n) as client:
                print(f"  (Dask LocalCluster of {n} started in {time.perf_counter() - start:.1f} s)")
                run(f"Dask LocalCluster, {n} worker(s)", client, base)


if __name__ == "__main__":
    main()
