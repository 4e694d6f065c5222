"""Throughput of the built-in shower simulator (showers per second, single process).

Run: ``python benchmarks/bench_simulation.py [--n 20000]``; prints one line per configuration. The CaloGAN
photon line answers "how long do 100k showers take" (100k / rate).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from calinfer.simulation import EMShowerModel, simulate_chi, simulate_hadron_like, simulate_showers


def timed(label: str, n: int, run) -> float:
    start = time.perf_counter()
    showers = run()
    elapsed = time.perf_counter() - start
    rate = n / elapsed
    nonzero = float(np.mean(showers.voxels > 0)) * showers.voxels.shape[1]
    print(f"{label:55s} {n:7d} showers {elapsed:7.2f} s {rate:8.0f} showers/s  ({nonzero:.0f} non-zero voxels/shower)")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="showers per configuration")
    args = parser.parse_args()
    n = args.n
    rate = timed("calogan photons, E uniform 1-100 GeV", n, lambda: simulate_showers(n, seed=1))
    print(f"  -> 100k CaloGAN photon showers in about {100_000 / rate / 60:.1f} min")
    timed("calogan photons, 100 GeV", n // 4, lambda: simulate_showers(n // 4, energy=100.0, seed=2))
    timed(
        "calogan photons, E uniform 1-100 GeV, spot_scale 0.25",
        n,
        lambda: simulate_showers(n, seed=1, model=EMShowerModel(spot_scale=0.25)),
    )
    timed(
        "calochallenge-ds1-photons, E log-uniform 1-100 GeV",
        n // 4,
        lambda: simulate_showers(n // 4, prior="log-uniform", geometry="calochallenge-ds1-photons", seed=3),
    )
    timed(
        "chi -> gamma gamma, m = 0.5 GeV, E = 50 GeV, 0.66 m",
        n // 4,
        lambda: simulate_chi(n // 4, mass=0.5, decay_distance=0.66, seed=4),
    )
    timed("hadron-like, E uniform 1-100 GeV", n // 4, lambda: simulate_hadron_like(n // 4, seed=5))


if __name__ == "__main__":
    main()
