"""Flow-II density throughput with calinfer's spline-bin softmax against torch's own, side by side in one run.

``calinfer.flows`` gives normflows' spline code ``bin_softmax`` (``exp(a - max a) / sum``) in place of
``torch.nn.functional.softmax``, which on a CPU is slow over an axis as short as the spline bins. This times
``log_prob(part="voxels")`` of the shipped default on ``--n`` photons with each in turn (best of ``--repeat``
passes, after a warm-up), checks that both give the same log p, and prints the speed ratio.

Run: ``python benchmarks/bench_spline_softmax.py [--n 4000] [--threads 2] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import time

import normflows.utils.splines as splines
import numpy as np
import torch

from calinfer import datasets
from calinfer.surrogate import load_default


def best_rate(model, showers, repeat: int) -> tuple[float, np.ndarray]:
    """Showers per second of the fastest of ``repeat`` passes, and the log p of the last one."""
    model.log_prob(showers[:64], showers.incident_energy[:64], part="voxels")  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        lp = model.log_prob(showers, showers.incident_energy, part="voxels", batch_size=1024)
        times.append(time.perf_counter() - start)
    return len(showers) / min(times), lp


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=4000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_default()
    showers = datasets.load("photons-val")[: args.n]
    ours = splines.F
    fast, lp_fast = best_rate(model, showers, args.repeat)
    splines.F = torch.nn.functional
    try:
        slow, lp_slow = best_rate(model, showers, args.repeat)
    finally:
        splines.F = ours
    diff = float(np.max(np.abs(lp_fast - lp_slow)))
    print(f"{args.n} photons, {args.threads} thread(s): flow-II log p {fast:.0f} showers/s with bin_softmax, "
          f"{slow:.0f} with torch.softmax: x{fast / slow:.2f}; largest |difference| of log p {diff:.2e} "
          f"(log p about {np.median(np.abs(lp_fast)):.0f})")
    return {"bin_softmax": fast, "torch_softmax": slow, "ratio": fast / slow, "max_abs_diff": diff}


if __name__ == "__main__":
    main()
