"""How close the profile anomaly score gets to the true maximum of the layer likelihood over E.

For the shipped default (whose voxel density does not depend on E, so the profile is that of flow I plus a
constant), ``ProfileScore`` (32-point grid over the range, two zoom rounds, two parabolic steps) is compared with a
dense scan of flow I on ``--points`` log-spaced energies: per set, the median, 90% quantile and largest shortfall
``max_dense - max_profile`` (nats; negative: the profile found a point between the scan's), and the number of local
maxima of the scan within 2 nats of its maximum (a multi-peaked likelihood is where a grid can miss). Sets: the
embedded ``photons-val`` background and the anomaly sets of ``analyses/anomaly_study.py``.

    python analyses/profile_accuracy.py --n 300 --out runs/profile_accuracy.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from anomaly_study import signal_points  # the sibling script (sys.path[0] is this directory)

from calinfer import datasets
from calinfer.anomaly import ProfileScore
from calinfer.io import atomic_output
from calinfer.surrogate import load_default


def shortfall(model, showers, points: int) -> dict:
    """Dense-scan maximum of flow I minus the profile score's maximum, and the scan's near-maximal local maxima."""
    profile = ProfileScore(model, part="layers").evaluate(showers)["log_prob"]
    dense = model.log_prob(showers, np.geomspace(*model.energy_range, points)[None, :], part="layers")
    best = dense.max(axis=1)
    peaks = (dense[:, 1:-1] > dense[:, :-2]) & (dense[:, 1:-1] > dense[:, 2:])
    near = (peaks & (dense[:, 1:-1] > best[:, None] - 2.0)).sum(axis=1)
    d = best - profile
    return {"n": len(d), "median": float(np.median(d)), "q90": float(np.quantile(d, 0.9)), "max": float(d.max()),
            "missed_by_more_than_0.1": float(np.mean(d > 0.1)), "local_maxima_median": float(np.median(near)),
            "local_maxima_q90": float(np.quantile(near, 0.9))}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=300, help="showers per set")
    p.add_argument("--points", type=int, default=4000, help="dense-scan energies")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="JSON output (not overwritten)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_default()
    sets = {"photons-val": datasets.load("photons-val")[: args.n]}
    sets.update({name: datasets.load(name)[: args.n] for name, _ in signal_points()})
    out = {}
    for name, showers in sets.items():
        out[name] = row = shortfall(model, showers, args.points)
        print(f"{name:20s} shortfall median {row['median']:+.4f} q90 {row['q90']:.4f} max {row['max']:.3f} nats; "
              f"> 0.1 nats: {100 * row['missed_by_more_than_0.1']:.1f}%; local maxima within 2 nats: median "
              f"{row['local_maxima_median']:.0f}, q90 {row['local_maxima_q90']:.0f}", flush=True)
    if args.out:
        if args.out.exists():
            sys.exit(f"Error: {args.out} exists; choose another --out")
        with atomic_output(args.out) as tmp:
            tmp.write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
