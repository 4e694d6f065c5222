"""Layer and full likelihood side by side on the embedded fixed-energy photons: closure, width, coverage, speed.

For each energy the first ``--n`` showers of ``photons-test-E`` are calibrated with ``likelihood="layers"`` and
``"full"``; printed per energy: median E_mle / E, 68% half width of E_mle / E (16-84% quantiles), the coverage
of [E_lo, E_hi], the converged fraction and showers per second (one torch thread).

    python analyses/full_likelihood_check.py --model default --n 300
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from calinfer import datasets
from calinfer.calibration import Calibrator
from calinfer.calibration.mle import Status
from calinfer.surrogate import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="model directory or shipped name")
    parser.add_argument("--n", type=int, default=300, help="showers per energy")
    parser.add_argument("--energies", default="10,30,50,70,90")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.model)
    for e in (int(v) for v in args.energies.split(",")):
        showers = datasets.load(f"photons-test-{e}")[: args.n]
        cells = []
        for likelihood in ("layers", "full"):
            t0 = time.perf_counter()
            r = Calibrator(model, likelihood=likelihood).fit(showers)
            rate = len(showers) / (time.perf_counter() - t0)
            q16, q50, q84 = np.percentile(r.e_mle / e, [16, 50, 84])
            cover = np.mean((r.e_lo <= e) & (e <= r.e_hi))
            conv = np.mean((r.status & Status.CONVERGED) > 0)
            cells.append(f"{likelihood}: median {q50:.4f} width {(q84 - q16) / 2:.2%} coverage {cover:.3f} "
                         f"converged {conv:.3f} {rate:.0f}/s")
        print(f"{e} GeV | " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
