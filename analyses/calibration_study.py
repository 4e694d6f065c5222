"""Energy calibration study: maximum likelihood (flow I) against MSE regression, and their dependence on the prior.

On the embedded fixed-energy test sets (``photons-test-10`` ... ``-90``, 1000 photons each):

* **MLE, default surrogate** (layers likelihood, flow I): mode of E_mle/E_true (bootstrapped KDE), relative
  resolution, coverage of the per-shower 68% likelihood intervals, pulls, per-shower sigma vs observed spread,
  status counts; the same for the full likelihood (flow I + flow II, the fast flow-II-node path of
  ``Calibrator(likelihood="full")``) on ``--full-per-energy`` showers per energy (500 by default);
* **prior dependence**: two flow I's trained here with identical settings, one on a uniform (``photons-train``)
  and one on a log-uniform sample in 1-100 GeV (simulated here with the same detector model and storage
  rounding), and two MSE regressors (same inputs: the layer energies) on the same two samples. A conditional
  density p(layers | E) does not contain the prior, so the MLE should move much less than the regression, whose
  output is the posterior mean under its training prior.

Outputs in ``--out-dir``: ``bias_vs_energy.png``, ``resolution_vs_energy.png``, ``coverage_vs_energy.png``,
``pulls.png``, ``sigma_vs_spread.png``, ``likelihood_example.png`` and ``summary.json`` (every number plotted plus
the pass/fail checks of issue 5). The trained flows and the log-uniform sample are kept there; ``--reuse`` loads
them instead of training again.

    python analyses/calibration_study.py --out-dir runs/calibration_study [--model DIR] [--flow-minutes 8]

``--skip-priors`` leaves out the prior-dependence part (two flow trainings and two regressions): a quick check of
the MLE columns, e.g. ``--per-energy 100 --full-per-energy 20 --skip-priors``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from calinfer import Showers, datasets
from calinfer.calibration import CalibrationResult, Calibrator, train_regressor
from calinfer.calibration.metrics import CL68, coverage, pulls, summarize_by_energy
from calinfer.io import read_showers, write_showers
from calinfer.plotting import hep_style, save_figure
from calinfer.simulation import simulate_showers
from calinfer.surrogate import ShowerSurrogate, default_model_path, load_default, load_model
from calinfer.training import TrainConfig, train_surrogate

log = logging.getLogger("calibration_study")
ENERGIES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
COLORS = {
    "mle_default": "black",
    "mle_full": "tab:gray",
    "mle_uniform": "tab:blue",
    "mle_log_uniform": "tab:cyan",
    "mse_uniform": "tab:red",
    "mse_log_uniform": "tab:orange",
}
LABELS = {
    "mle_default": "MLE, default surrogate (layers)",
    "mle_full": "MLE, default surrogate (full shower)",
    "mle_uniform": "MLE, flow I trained on uniform prior",
    "mle_log_uniform": "MLE, flow I trained on log-uniform prior",
    "mse_uniform": "MSE regression, uniform prior",
    "mse_log_uniform": "MSE regression, log-uniform prior",
}


def test_showers(per_energy: int) -> Showers:
    return Showers.concatenate([datasets.load(f"photons-test-{e}")[:per_energy] for e in ENERGIES])


def log_uniform_sample(path: Path, n: int, seed: int, reuse: bool) -> Showers:
    """Log-uniform 1-100 GeV photons from the embedded sets' detector model, voxels rounded like their storage."""
    if reuse and path.is_file():
        return read_showers(path, "calogan")
    spec = datasets.describe("photons-train")
    showers = simulate_showers(n, energy_range=(1.0, 100.0), prior="log-uniform", seed=seed, progress=True)
    showers.voxels = datasets.round_mantissa(showers.voxels, spec["storage"]["mantissa_bits"])
    write_showers(path, Showers(showers.voxels, showers.geometry, showers.incident_energy))
    return showers


def train_layer_flow(
    name: str, train: Showers, val: Showers, out: Path, flow_config: dict, minutes: float, seed: int, reuse: bool
) -> ShowerSurrogate:
    """A surrogate whose flow I is trained on ``train`` (flow II left untrained: only the layers likelihood is used)."""
    if reuse and out.is_dir():
        return ShowerSurrogate.load(out)
    log.info("training flow I on %s (%d showers, %.1f min budget)", name, len(train), minutes)
    config = TrainConfig(
        epochs=0,
        layer_epochs=300,
        layer_batch_size=1024,
        layer_lr=2e-3,
        layer_patience=30,
        layer_time_fraction=1.0,
        max_minutes=minutes,
        seed=seed,
        device="cpu",
        progress=False,
    )
    return train_surrogate(
        train,
        out,
        config=config,
        val_showers=val,
        layer_flow=flow_config,
        work_dir=out.with_name(out.name + ".work"),
        provenance={"dataset": name, "script": "analyses/calibration_study.py", "seed": seed},
    )


def mle(model, test: Showers, likelihood: str, workers: int) -> tuple[CalibrationResult, float]:
    start = time.perf_counter()
    result = Calibrator(model, likelihood=likelihood, workers=workers).fit(test)
    return result, time.perf_counter() - start


def errorbar_vs_energy(
    rows_by_method: dict, key: str, ylabel: str, path: Path, *, band=None, line=None, clip=None
) -> None:
    """One marker line per method against the true energy; ``clip=(lo, hi)`` bounds the y range (the JSON keeps
    whatever falls outside)."""
    import matplotlib.pyplot as plt

    with hep_style():
        fig, ax = plt.subplots(figsize=(9, 6.5))
        offsets = np.linspace(-1.2, 1.2, max(len(rows_by_method), 1))
        for (method, rows), dx in zip(rows_by_method.items(), offsets, strict=True):
            e = np.array([r["energy"] for r in rows])
            y = np.array([r[key] for r in rows])
            err = np.array([r.get(f"{key}_err", 0.0) for r in rows])
            ax.errorbar(e + dx, y, yerr=err, fmt="o-", ms=5, color=COLORS[method], label=LABELS[method])
        if band is not None:
            ax.axhspan(*band, color="tab:green", alpha=0.15, lw=0)
        if line is not None:
            ax.axhline(line, color="tab:green", ls="--", lw=1)
        if clip is not None:
            values = np.array([r[key] for rows in rows_by_method.values() for r in rows])
            inside = values[(values >= clip[0]) & (values <= clip[1])]
            pad = 0.15 * (np.ptp(inside) if len(inside) > 1 else 0.01)
            ax.set_ylim(max(clip[0], inside.min() - pad), min(clip[1], inside.max() + pad))
        ax.set_xlabel(r"$E_\mathrm{true}$ [GeV]")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=12, loc="best")
        save_figure(fig, path)


def plot_pulls(pull: np.ndarray, path: Path) -> None:
    import matplotlib.pyplot as plt

    pull = pull[np.isfinite(pull)]
    with hep_style():
        fig, ax = plt.subplots(figsize=(8, 6))
        bins = np.linspace(-5, 5, 61)
        ax.hist(pull, bins=bins, density=True, histtype="step", lw=2, label=f"MLE pulls ({len(pull)} showers)")
        x = np.linspace(-5, 5, 400)
        ax.plot(x, np.exp(-0.5 * x**2) / np.sqrt(2 * np.pi), "--", label="unit Gaussian")
        ax.set_xlabel(r"$(E_\mathrm{MLE} - E_\mathrm{true}) / \sigma_\mathrm{side}$")
        ax.set_ylabel("density")
        ax.legend(fontsize=12)
        save_figure(fig, path)


def likelihood_example(model, showers: Showers, result: CalibrationResult, index: int, path: Path) -> dict:
    """-ln L of one shower around its minimum with E_mle, the interval and the truth marked."""
    import matplotlib.pyplot as plt

    cal = Calibrator(model)
    e_mle, e_lo, e_hi = result.e_mle[index], result.e_lo[index], result.e_hi[index]
    width = max(e_hi - e_mle, e_mle - e_lo)
    grid = np.linspace(max(e_mle - 5 * width, cal.energy_range[0]), min(e_mle + 5 * width, cal.energy_range[1]), 301)
    nll = cal.nll(showers[index : index + 1], grid[None, :])[0]
    truth = float(showers.incident_energy[index])
    with hep_style():
        fig, ax = plt.subplots(figsize=(8, 6))
        ax.plot(grid, nll - result.nll[index], lw=2, label=r"$-\Delta\ln L$ (flow I)")
        ax.axhline(0.5, color="gray", ls=":", lw=1)
        ax.axvspan(e_lo, e_hi, color="tab:blue", alpha=0.15, label="68% interval (MINOS)")
        ax.axvline(e_mle, color="tab:blue", ls="--", label=rf"$E_\mathrm{{MLE}}$ = {e_mle:.2f} GeV")
        ax.axvline(truth, color="tab:red", label=rf"$E_\mathrm{{true}}$ = {truth:.0f} GeV")
        ax.set_ylim(-0.2, 4.5)
        ax.set_xlabel("E [GeV]")
        ax.set_ylabel(r"$-\ln L(E) + \ln L_\mathrm{max}$")
        ax.legend(fontsize=12, loc="upper center")
        save_figure(fig, path)
    return {"index": index, "e_true": truth, "e_mle": e_mle, "e_lo": e_lo, "e_hi": e_hi, "nll": result.nll[index]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default="runs/calibration_study")
    parser.add_argument("--model", default=None, help="surrogate directory (default: the shipped model)")
    parser.add_argument("--per-energy", type=int, default=1000, help="test showers per energy")
    parser.add_argument("--full-per-energy", type=int, default=500, help="test showers per energy, full likelihood")
    parser.add_argument("--skip-priors", action="store_true", help="leave out the prior-dependence part")
    parser.add_argument("--n-prior", type=int, default=50_000, help="showers of each training prior")
    parser.add_argument("--flow-minutes", type=float, default=8.0, help="training budget of each flow I")
    parser.add_argument("--mse-epochs", type=int, default=60)
    parser.add_argument("--workers", type=int, default=2, help="threads for the MLE fits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse", action="store_true", help="reuse the sample and flows already in --out-dir")
    args = parser.parse_args()

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("calinfer.training").setLevel(logging.WARNING)  # not one line per epoch
    torch.set_num_threads(1)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model = load_model(args.model) if args.model else load_default()
    test = test_showers(args.per_energy)
    truth = test.incident_energy
    summary: dict = {
        "settings": {**vars(args), "model": str(args.model or default_model_path()), "energies_gev": ENERGIES},
        "per_energy": {},
        "timing_s": {},
    }

    # ---- MLE with the default surrogate
    result, seconds = mle(model, test, "layers", args.workers)
    summary["timing_s"]["mle_default"] = seconds
    log.info("MLE (layers) on %d showers in %.1f s", len(test), seconds)
    summary["per_energy"]["mle_default"] = summarize_by_energy(truth, result.e_mle, result.e_lo, result.e_hi)
    summary["status"] = result.summary()
    p, p_err = coverage(result.e_lo, result.e_hi, truth)
    summary["coverage_all"] = {"fraction": p, "error": p_err, "expected": CL68}
    if args.full_per_energy > 0:
        subset = np.concatenate([np.flatnonzero(truth == e)[: args.full_per_energy] for e in ENERGIES])
        full, seconds = mle(model, test[subset], "full", args.workers)
        summary["timing_s"]["mle_full"] = seconds
        summary["per_energy"]["mle_full"] = summarize_by_energy(truth[subset], full.e_mle, full.e_lo, full.e_hi)
        summary["status_full"] = full.summary()
        log.info("MLE (full) on %d showers in %.1f s (%.0f showers/s)", len(subset), seconds, len(subset) / seconds)

    if not args.skip_priors:
        # ---- training samples of the two priors
        uniform_train, uniform_val = datasets.load("photons-train"), datasets.load("photons-val")
        uniform_train = uniform_train[: args.n_prior]
        log_train = log_uniform_sample(out / "log_uniform_train.h5", args.n_prior, args.seed + 101, args.reuse)
        n_val = max(args.n_prior // 5, 1000)
        log_val = log_uniform_sample(out / "log_uniform_val.h5", n_val, args.seed + 202, args.reuse)

        # ---- MSE regression on each prior
        for prior, train in (("uniform", uniform_train), ("log_uniform", log_train)):
            start = time.perf_counter()
            reg = train_regressor(train, epochs=args.mse_epochs, seed=args.seed)
            pred = reg.predict(test)
            summary["timing_s"][f"mse_{prior}_train"] = time.perf_counter() - start
            summary["per_energy"][f"mse_{prior}"] = summarize_by_energy(truth, pred)
            log.info("MSE regression (%s prior) trained in %.0f s", prior, time.perf_counter() - start)

        # ---- MLE with a flow I trained on each prior (identical settings)
        flow_config = model.record()["flows"]["layers"] if hasattr(model, "record") else None
        flow_config = {k: v for k, v in (flow_config or {}).items() if k not in ("dim", "context_dim", "seed")}
        for prior, train, val in (("uniform", uniform_train, uniform_val), ("log_uniform", log_train, log_val)):
            start = time.perf_counter()
            flow = train_layer_flow(
                prior, train, val, out / f"flow_{prior}", flow_config, args.flow_minutes, args.seed, args.reuse
            )
            summary["timing_s"][f"flow_{prior}_train"] = time.perf_counter() - start
            res, seconds = mle(flow, test, "layers", args.workers)
            summary["per_energy"][f"mle_{prior}"] = summarize_by_energy(truth, res.e_mle, res.e_lo, res.e_hi)
            summary[f"status_{prior}"] = res.summary()

    # ---- plots
    rows = summary["per_energy"]
    errorbar_vs_energy(
        rows,
        "mode",
        r"mode of $E_\mathrm{pred}/E_\mathrm{true}$",
        out / "bias_vs_energy.png",
        band=(0.99, 1.01),
        line=1.0,
        clip=(0.9, 1.1),
    )
    errorbar_vs_energy(rows, "resolution", "relative resolution (68% half width)", out / "resolution_vs_energy.png")
    with_intervals = {k: v for k, v in rows.items() if k.startswith("mle")}
    errorbar_vs_energy(
        with_intervals,
        "coverage",
        "coverage of the 68% intervals",
        out / "coverage_vs_energy.png",
        band=(CL68 - 0.03, CL68 + 0.03),
        line=CL68,
        clip=(0.4, 0.95),
    )
    errorbar_vs_energy(
        with_intervals,
        "ratio",
        "median per-shower sigma / observed spread",
        out / "sigma_vs_spread.png",
        line=1.0,
        clip=(0.5, 1.5),
    )
    plot_pulls(pulls(result.e_mle, result.e_lo, result.e_hi, truth), out / "pulls.png")
    example = int(np.flatnonzero(truth == 50)[0]) if np.any(truth == 50) else 0
    summary["example"] = likelihood_example(model, test, result, example, out / "likelihood_example.png")

    # ---- checks of issue 5
    def modes(method: str) -> np.ndarray:
        return np.array([r["mode"] for r in rows[method]])

    mle_dev = np.abs(modes("mle_default") - 1)
    cov = np.array([r["coverage"] for r in rows["mle_default"]])
    summary["checks"] = {
        "mle_mode_max_abs_deviation": float(mle_dev.max()),
        "mle_mode_within_1pct": bool(np.all(mle_dev <= 0.01)),
        "coverage_min": float(cov.min()),
        "coverage_max": float(cov.max()),
        "coverage_within_3pct": bool(np.all(np.abs(cov - CL68) <= 0.03)),
    }
    if not args.skip_priors:
        shift_mle = np.abs(modes("mle_uniform") - modes("mle_log_uniform"))
        shift_mse = np.abs(modes("mse_uniform") - modes("mse_log_uniform"))
        summary["checks"].update({
            "prior_shift_mle_max": float(shift_mle.max()),
            "prior_shift_mse_max": float(shift_mse.max()),
            "mle_moves_less_than_mse": bool(shift_mle.max() < shift_mse.max()),
        })
    summary["checks"].update({
        "coverage_range_by_method": {
            method: [min(r["coverage"] for r in rs), max(r["coverage"] for r in rs)]
            for method, rs in rows.items()
            if "coverage" in rs[0]
        },
        "mode_range_by_method": {
            method: [min(r["mode"] for r in rs), max(r["mode"] for r in rs)] for method, rs in rows.items()
        },
    })
    summary["timing_s"]["total"] = time.perf_counter() - t0
    path = out / "summary.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=float))
    os.replace(tmp, path)
    for key, value in summary["checks"].items():
        log.info("%-30s %s", key, value)
    log.info("wrote %s (%.1f min)", path, summary["timing_s"]["total"] / 60)


if __name__ == "__main__":
    main()
