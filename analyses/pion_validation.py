"""Validate the charged-pion simulator (:mod:`calinfer.simulation.pion`) against the reference facts it documents.

At 10, 20, ..., 90 GeV (``--n`` pions each, fresh seeds) it measures, on the electromagnetic scale:

* the response ``E_dep / E`` against ``pi/e = <f_em> + (1 - <f_em>) h/e`` with Groom's mean f_em (the reference curve,
  before leakage and dead material), and the mean f_em and its skewness (PDG review "Calorimetry");
* the resolution (68% half width of ``E_dep / E`` around its median, divided by the median) and its fit
  ``a / sqrt(E) (+) b`` against the reference range 50%/sqrt(E) (+) 3% ... 100%/sqrt(E) (+) 5% and the published
  pion study (about 15% at 10 GeV, 7% at 90 GeV, arXiv:2404.18992);
* the first-interaction depth against an exponential with the pion interaction length;
* longitudinal containment: the depth behind the first interaction at which 5% of the visible energy leaks out
  of the back, against ``t_max + 2.5 lambda_att`` with ``t_max = 0.2 ln E + 0.7`` and ``lambda_att = E^0.13``
  (interaction lengths; PDG review "Calorimetry");
* lateral containment: the fraction of the HCAL energy within one HCAL interaction length (195 mm, the 200 mm
  edge of the tile read-out) of the axis (reference: about 95%).

    python analyses/pion_validation.py --out-dir runs/pion_validation

Writes ``summary.json``, ``table.md`` and plots (``response.png``, ``resolution.png``, ``em_fraction.png``,
``interaction_depth.png``, ``containment.png``, ``layer_fractions.png``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.optimize import curve_fit

from calinfer.simulation.pion import PION_CALORIMETER, PionModel, groom_em_fraction, simulate_pions

ENERGIES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
SEED_OFFSET = 7000  # seeds 7010 ... 7090: not used by any embedded set or training sample


def half_width(x: np.ndarray) -> tuple[float, float]:
    """(median, 68% half width around the median divided by the median)."""
    med = float(np.median(x))
    lo, hi = np.percentile(x, [15.865, 84.135])
    return med, float((hi - lo) / 2 / med)


def resolution_model(e: np.ndarray, a: float, b: float) -> np.ndarray:
    """``a / sqrt(E) (+) b`` (quadrature)."""
    return np.sqrt(a**2 / e + b**2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default="runs/pion_validation")
    parser.add_argument("--n", type=int, default=3000, help="pions per energy")
    args = parser.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = PionModel()
    cal = PION_CALORIMETER
    geo = cal.geometry
    rows = []
    depth_all, leak_frac, remain = [], [], []
    fem_samples = {}
    for e in ENERGIES:
        sh = simulate_pions(args.n, energy=float(e), seed=SEED_OFFSET + e, model=model)
        x = sh.extra
        dep = sh.deposited_energy()
        med, res = half_width(dep / e)
        interacts = x["shower_energy"] > 0
        fem = x["em_fraction"][interacts]
        fem_samples[e] = fem
        groom = float(groom_em_fraction(np.median(x["shower_energy"][interacts]), model.groom_e0, model.groom_m))
        skew = float(np.mean((fem - fem.mean()) ** 3) / fem.std() ** 3)
        layers = sh.layer_energies()
        hcal = [geo.layer_slices[i] for i in range(4, 7)]
        images = np.concatenate([sh.voxels[:, s] for s in hcal], axis=1)
        r_in = np.concatenate([_inner(geo.layers[i], 200.0) for i in range(4, 7)])
        lateral = float(images[:, r_in].sum() / images.sum())
        visible = x["true_deposit"] + x["leak_back"] + x["leak_side"] + x["leak_dead"]
        depth_all.append(x["interaction_depth_lambda"][interacts])
        leak_frac.append(x["leak_back"][interacts] / visible[interacts])
        remain.append(cal.depth_lambda - x["interaction_depth_lambda"][interacts])
        l95 = _containment_depth(remain[-1], leak_frac[-1])
        rows.append({
            "energy": e,
            "response_mean": float(np.mean(dep / e)),
            "response_median": med,
            "reference_pi_over_e": groom + (1 - groom) * model.h_over_e,
            "resolution_68": res,
            "resolution_rms": float(np.std(dep) / np.mean(dep)),
            "em_fraction_mean": float(fem.mean()),
            "groom_mean": groom,
            "em_fraction_std": float(fem.std()),
            "em_fraction_skewness": skew,
            "leak_back": float(np.mean(x["leak_back"] / e)),
            "leak_dead": float(np.mean(x["leak_dead"] / e)),
            "punch_through": float(np.mean(~interacts)),
            "containment95_lambda": l95,
            "reference_containment95_lambda": 0.2 * np.log(e) + 0.7 + 2.5 * e**0.13,
            "hcal_within_1_lambda": lateral,
            "layer_fractions": (layers.mean(axis=0) / e).tolist(),
        })
        print(f"{e:3d} GeV: response {rows[-1]['response_mean']:.3f} (pi/e {rows[-1]['reference_pi_over_e']:.3f}), "
              f"resolution {res:.3f}, f_em {fem.mean():.3f} (Groom {groom:.3f}, skew {skew:+.2f}), "
              f"L95 {l95:.2f} (ref {rows[-1]['reference_containment95_lambda']:.2f}) lambda, "
              f"HCAL within 1 lambda {lateral:.3f}", flush=True)
    energies = np.array(ENERGIES, dtype=float)
    res68 = np.array([r["resolution_68"] for r in rows])
    (a, b), cov = curve_fit(resolution_model, energies, res68, p0=(0.5, 0.05))
    depth = np.concatenate(depth_all)
    exp_mean = float(np.mean(depth))  # the truncation at the back face (8.75 lambda) is negligible
    summary = {
        "model": model.to_dict(),
        "energies": rows,
        "resolution_fit": {"a": float(a), "b": float(b), "a_err": float(np.sqrt(cov[0, 0])),
                           "b_err": float(np.sqrt(cov[1, 1]))},
        "interaction_depth_mean_lambda": exp_mean,
        "reference_interaction_depth_mean_lambda": model.pion_lambda_ratio,
        "n_per_energy": args.n,
        "command": f"python analyses/pion_validation.py --out-dir {args.out_dir} --n {args.n}",
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    _table(rows, summary, out / "table.md")
    _plots(rows, summary, fem_samples, depth, model, out)
    print(f"resolution fit: {a:.3f}/sqrt(E) (+) {b:.3f}; mean first-interaction depth {exp_mean:.3f} lambda "
          f"(exponential mean {model.pion_lambda_ratio}); wrote {out}")


def _inner(layer, r_mm: float) -> np.ndarray:
    """Mask of a polar layer's voxels (flat order) whose outer radius is at most ``r_mm``."""
    edges = np.asarray(layer.r_edges_mm)
    n_alpha = layer.shape[0]
    return np.tile(edges[1:] <= r_mm + 1e-9, n_alpha)


def _containment_depth(remain: np.ndarray, leak: np.ndarray) -> float:
    """Remaining depth (lambda) at which the mean back-leakage fraction falls to 5% (binned, interpolated)."""
    bins = np.arange(0.0, 9.5, 0.5)
    idx = np.digitize(remain, bins) - 1
    centres, means = [], []
    for i in range(len(bins) - 1):
        sel = idx == i
        if sel.sum() >= 10:
            centres.append(0.5 * (bins[i] + bins[i + 1]))
            means.append(float(np.mean(leak[sel])))
    centres_a, means_a = np.array(centres), np.array(means)
    below = np.flatnonzero(means_a < 0.05)
    if below.size == 0 or below[0] == 0:
        return float("nan")
    j = below[0]
    x0, x1, y0, y1 = centres_a[j - 1], centres_a[j], means_a[j - 1], means_a[j]
    return float(x0 + (0.05 - y0) * (x1 - x0) / (y1 - y0))


def _table(rows: list[dict], summary: dict, path: Path) -> None:
    fit = summary["resolution_fit"]
    lines = [
        "| E (GeV) | E_dep/E mean | pi/e (Groom, h/e) | 68% resolution | <f_em> | Groom <f_em> | f_em skew | "
        "back leak | dead | 95% depth (lambda) | reference | HCAL within 1 lambda |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['energy']} | {r['response_mean']:.3f} | {r['reference_pi_over_e']:.3f} | {r['resolution_68']:.3f} "
            f"| {r['em_fraction_mean']:.3f} | {r['groom_mean']:.3f} | {r['em_fraction_skewness']:+.2f} | "
            f"{r['leak_back']:.3f} | {r['leak_dead']:.3f} | {r['containment95_lambda']:.2f} | "
            f"{r['reference_containment95_lambda']:.2f} | {r['hcal_within_1_lambda']:.3f} |"
        )
    lines.append("")
    lines.append(f"Resolution fit: ({fit['a']:.3f} ± {fit['a_err']:.3f})/sqrt(E) (+) ({fit['b']:.3f} ± "
                 f"{fit['b_err']:.3f}); mean first-interaction depth {summary['interaction_depth_mean_lambda']:.3f} "
                 f"lambda_I (exponential with mean {summary['reference_interaction_depth_mean_lambda']}).")
    path.write_text("\n".join(lines) + "\n")


def _plots(rows: list[dict], summary: dict, fem: dict, depth: np.ndarray, model: PionModel, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e = np.array([r["energy"] for r in rows], dtype=float)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(e, [r["response_mean"] for r in rows], "o", label="simulated E_dep / E")
    grid = np.linspace(5, 100, 100)
    g = groom_em_fraction(grid, model.groom_e0, model.groom_m)
    ax.plot(grid, g + (1 - g) * model.h_over_e, "-", label="pi/e = f_em + (1 - f_em) h/e (no leakage)")
    ax.set_xlabel("E (GeV)")
    ax.set_ylabel("response (EM scale)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "response.png", dpi=120)
    plt.close(fig)

    fit = summary["resolution_fit"]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(e, [r["resolution_68"] for r in rows], "o", label="simulated (68% half width)")
    ax.plot(grid, resolution_model(grid, fit["a"], fit["b"]), "-",
            label=f"fit {fit['a']:.2f}/sqrt(E) (+) {fit['b']:.3f}")
    ax.plot(grid, resolution_model(grid, 0.5, 0.03), ":", label="50%/sqrt(E) (+) 3% (ATLAS Tile-like)")
    ax.plot(grid, resolution_model(grid, 1.0, 0.05), "--", label="100%/sqrt(E) (+) 5% (CMS HCAL-like)")
    ax.plot([10, 90], [0.15, 0.07], "s", label="published pion study (MLE)")
    ax.set_xlabel("E (GeV)")
    ax.set_ylabel("relative resolution")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "resolution.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for energy in (10, 50, 90):
        ax.hist(fem[energy], bins=50, range=(0, 1), histtype="step", density=True, label=f"{energy} GeV")
    ax.set_xlabel("electromagnetic fraction f_em")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "em_fraction.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(depth, bins=60, range=(0, 9), density=True, histtype="step", label="simulated")
    t = np.linspace(0, 9, 200)
    lam = model.pion_lambda_ratio
    ax.plot(t, np.exp(-t / lam) / lam, label=f"exponential, mean {lam} lambda_I")
    ax.set_yscale("log")
    ax.set_xlabel("first-interaction depth (lambda_I)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "interaction_depth.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(e, [r["containment95_lambda"] for r in rows], "o", label="simulated: 5% leaks behind this depth")
    ax.plot(grid, 0.2 * np.log(grid) + 0.7 + 2.5 * grid**0.13, "-", label="t_max + 2.5 lambda_att (PDG)")
    ax.set_xlabel("E (GeV)")
    ax.set_ylabel("depth behind first interaction (lambda_I)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "containment.png", dpi=120)
    plt.close(fig)

    fracs = np.array([r["layer_fractions"] for r in rows])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for i, layer in enumerate(PION_CALORIMETER.geometry.layers):
        ax.plot(e, fracs[:, i], "o-", label=layer.name)
    ax.set_yscale("log")
    ax.set_xlabel("E (GeV)")
    ax.set_ylabel("mean layer energy / E")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "layer_fractions.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
