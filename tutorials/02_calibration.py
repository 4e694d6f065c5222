"""Tutorial 2: per-shower energy calibration by maximum likelihood, with 68% likelihood intervals.

A runnable walkthrough (``python tutorials/02_calibration.py [--model DIR] [--out DIR]``, about a minute with
the pretrained surrogate). It shows

1. the likelihood of one shower as a function of the incident energy, and what the fit reports,
2. calibrating many showers at once and reading the status flags,
3. checking the calibration on a fixed-energy test set (mode, resolution, coverage, pulls),
4. the same from the command line, ``calinfer calibrate``, and reading its output tree,
5. the MSE regression baseline and why its answer depends on the training prior.

The fit never uses the true energy: the showers' ``incident_energy`` only enters the checks in step 3.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
import uproot

from calinfer import cli, datasets
from calinfer.calibration import Calibrator, Status, describe_status, train_regressor
from calinfer.calibration.metrics import coverage, ratio_summary, sigma_vs_spread
from calinfer.io import write_showers
from calinfer.surrogate import default_model_path, load_default, load_model


def main() -> None:
    parser = argparse.ArgumentParser(description="calinfer tutorial 2: energy calibration")
    parser.add_argument("--model", default=None, help="surrogate directory (default: the pretrained model)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the example files (default: temp dir)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="calinfer_tutorial2_"))
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    model = load_model(args.model) if args.model else load_default()

    # 1. One shower. Flow I of the surrogate is a density of the layer energies given E: -ln L(E) for our shower.
    print("== 1. the likelihood of one shower ==")
    test = datasets.load("photons-test-50")
    shower = test[:1]
    cal = Calibrator(model)  # likelihood="layers" (flow I) by default; "full" adds the voxel flow
    print(f"allowed energy range {cal.energy_range[0]:.2f}-{cal.energy_range[1]:.2f} GeV (the model's training range)")
    grid = np.array([[30.0, 40.0, 45.0, 50.0, 55.0, 60.0, 70.0]])
    nll = cal.nll(shower, grid)[0]
    for e, v in zip(grid[0], nll, strict=True):
        print(f"  E = {e:5.1f} GeV: -ln L = {v:9.3f}")
    fit = cal.fit(shower)
    print(
        f"E_mle = {fit.e_mle[0]:.2f} GeV, 68% interval [{fit.e_lo[0]:.2f}, {fit.e_hi[0]:.2f}] GeV "
        f"(asymmetric: -{fit.sigma_lo[0]:.2f} +{fit.sigma_hi[0]:.2f}), status {describe_status(fit.status[0])}"
    )
    print("  the interval is where -ln L rises by 0.5 above its minimum (iminuit MINOS on a spline of -ln L)")

    # 2. Many showers: one batched surrogate call per stage, Minuit only on cheap splines.
    print("\n== 2. calibrating many showers ==")
    showers = test[:500]
    fast = Calibrator(model, workers=2)  # two batches at once: flow and Minuit of different batches overlap
    result = fast.fit(showers)
    counts = ", ".join(f"{flag.name} {int(result.has(flag).sum())}" for flag in Status)
    print(f"{len(result)} showers; {counts}")
    flagged = np.flatnonzero(result.status != Status.CONVERGED)
    for i in flagged[:3]:
        print(f"  shower {i}: {describe_status(result.status[i])}, E_mle {result.e_mle[i]:.2f} GeV")
    print("  OPEN_LOW/OPEN_HIGH: -ln L does not rise by 0.5 before the range edge (the edge is reported);")
    print("  AT_BOUNDARY: the maximum sits on a range edge; MULTIMODAL: the scan saw a second separated minimum")

    # 3. Checks at a fixed true energy.
    print("\n== 3. calibration checks at 50 GeV ==")
    truth = showers.incident_energy
    summary = ratio_summary(result.e_mle, truth)
    p, p_err = coverage(result.e_lo, result.e_hi, truth)
    sizes = sigma_vs_spread(result.e_mle, result.e_lo, result.e_hi)
    print(f"mode of E_mle/E_true = {summary['mode']:.4f} +- {summary['mode_err']:.4f} (bootstrapped KDE)")
    print(f"relative resolution = {summary['resolution']:.4f}")
    print(f"coverage of the 68.3% intervals = {p:.3f} +- {p_err:.3f}")
    print(
        f"median per-shower sigma {sizes['median_sigma']:.2f} GeV vs observed spread "
        f"{sizes['observed_spread']:.2f} GeV (ratio {sizes['ratio']:.2f})"
    )

    # 4. The command line: a ROOT file in, a friend tree `calibration` out, one entry per shower, same order.
    print("\n== 4. calinfer calibrate ==")
    path = out / "photons50.root"
    write_showers(path, showers[:200])
    result_path = out / "photons50_calibration.root"
    command = ["calibrate", str(path), "--out", str(result_path), "--workers", "2"]
    if args.model:
        command += ["--model", args.model]
    print("$ calinfer " + " ".join(command))
    cli.main(command, standalone_mode=False)  # the same as running `calinfer ...` in a shell

    with uproot.open(result_path) as f:
        tree = f["calibration"]
        print(f"{result_path.name}: tree 'calibration' with {tree.num_entries} entries, branches {tree.keys()}")

    # 5. The regression baseline learns the posterior mean under its training prior.
    print("\n== 5. MSE regression baseline ==")
    train = datasets.load("photons-train")[:20000]
    reg = train_regressor(train, epochs=15, seed=0)
    low = datasets.load("photons-test-10")[:500]
    for name, data in (("10 GeV", low), ("50 GeV", showers)):
        pred = reg.predict(data)
        mle = Calibrator(model).fit(data).e_mle
        print(
            f"  {name}: MSE mode {ratio_summary(pred, data.incident_energy)['mode']:.4f}, "
            f"MLE mode {ratio_summary(mle, data.incident_energy)['mode']:.4f}"
        )
    print("  analyses/calibration_study.py repeats this for uniform and log-uniform training priors")
    print(f"\nfiles in {out}; model {args.model or default_model_path()}")


if __name__ == "__main__":
    main()
