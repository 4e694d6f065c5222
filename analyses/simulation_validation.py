"""Physics validation of calinfer's built-in shower simulator.

Makes plots and a ``summary.json`` in ``--out``:

* ``longitudinal.png``: mean longitudinal profiles (fine 6 mm slabs) of 1, 10, 100 GeV photons;
* ``shower_max.png``: depth of the shower maximum vs ln E with a straight-line fit;
* ``lateral.png``: radial energy density in the CaloGAN depth segments (fine rings) at 10 and 50 GeV;
* ``response_resolution.png``: E_dep/E_inc and sigma/E vs E for the embedded CaloGAN test sets, fitted with
  ``a/sqrt(E) + b`` (iminuit) and with ``a/sqrt(E) (+) b`` in quadrature;
* ``layer_fractions.png``: mean CaloGAN layer-energy fractions vs E (embedded validation set);
* ``chi_separation.png``: two-photon separation at the depth of layer 1 and the energy-weighted layer-1 width
  vs decay distance for the embedded chi grid; ``layer0_images.png``: mean layer-0 images.

Run: ``python analyses/simulation_validation.py --out out/simulation_validation`` (about a minute).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from iminuit import Minuit
from iminuit.cost import LeastSquares

from calinfer import Geometry, Layer, datasets, get_geometry
from calinfer.simulation import CALOGAN_STACK, simulate_showers

CALOGAN = get_geometry("calogan")
X0 = CALOGAN_STACK.x0_mm
SLAB_MM = 6.0


def slabs() -> Geometry:
    return Geometry(
        name="validation-slabs",
        layers=tuple(
            Layer(f"slab{i}", (1, 1), cell_size_mm=(2000.0, 2000.0), depth_mm=(i * SLAB_MM, (i + 1) * SLAB_MM))
            for i in range(80)
        ),
    )


def rings() -> Geometry:
    edges = tuple(float(e) for e in np.concatenate([np.arange(0, 40, 2.0), np.arange(40, 242, 10.0)]))
    return Geometry(
        name="validation-rings",
        layers=tuple(
            Layer(layer.name, (1, len(edges) - 1), kind="polar", r_edges_mm=edges, depth_mm=layer.depth_mm)
            for layer in CALOGAN.layers
        ),
    )


def peak_depth(profile: np.ndarray) -> float:
    """Depth (mm) of the maximum of a binned profile, from a parabola through the peak region."""
    k = int(np.argmax(profile))
    lo, hi = max(k - 3, 0), min(k + 4, len(profile))
    z = (np.arange(len(profile)) + 0.5) * SLAB_MM
    c = np.polyfit(z[lo:hi], profile[lo:hi], 2)
    return float(-c[1] / (2 * c[0]))


def longitudinal(out: Path, n: int, seed: int, summary: dict) -> None:
    geometry = slabs()
    energies = np.array([1, 2, 5, 10, 20, 50, 100], dtype=float)
    peaks, profiles = [], {}
    for i, e in enumerate(energies):
        sh = simulate_showers(n, energy=e, geometry=geometry, seed=seed + i)
        mean = sh.voxels.mean(axis=0) / e / (SLAB_MM / X0)
        profiles[e] = mean
        peaks.append(peak_depth(mean) / X0)
    fig, ax = plt.subplots(figsize=(6, 4))
    t = (np.arange(80) + 0.5) * SLAB_MM / X0
    for e in (1.0, 10.0, 100.0):
        ax.step(t, profiles[e], where="mid", label=f"{e:g} GeV photons")
    ax.set(xlabel="depth [X0]", ylabel="(1/E) dE_dep/dt [1/X0]", title="mean longitudinal profile")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "longitudinal.png", dpi=120)
    plt.close(fig)

    slope, intercept = np.polyfit(np.log(energies), peaks, 1)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(np.log(energies), peaks, "o", label="simulation (photons)")
    ax.plot(np.log(energies), intercept + slope * np.log(energies), "-", label=f"fit: {slope:.2f} X0 per e-fold")
    ax.set(xlabel="ln(E / GeV)", ylabel="shower maximum [X0]", title="shower maximum vs ln E")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "shower_max.png", dpi=120)
    plt.close(fig)
    summary["shower_max_x0"] = dict(zip(map(float, energies), map(float, peaks), strict=True))
    summary["shower_max_slope_x0_per_lnE"] = float(slope)


def lateral(out: Path, n: int, seed: int, summary: dict) -> None:
    geometry = rings()
    edges = np.asarray(geometry.layers[0].r_edges_mm)
    area = np.pi * (edges[1:] ** 2 - edges[:-1] ** 2)
    r = 0.5 * (edges[1:] + edges[:-1])
    fig, axes = plt.subplots(1, 3, figsize=(12, 4), sharey=True)
    containment = {}
    for j, e in enumerate((10.0, 50.0)):
        sh = simulate_showers(n, energy=e, geometry=geometry, seed=seed + 100 + j)
        images = geometry.layer_images(sh.voxels)
        total = sh.voxels.sum(axis=1).mean()
        all_r = sum(img.mean(axis=0)[0] for img in images)
        containment[e] = float(np.cumsum(all_r)[np.searchsorted(edges, CALOGAN_STACK.moliere_mm) - 1] / total)
        for ax, img, layer in zip(axes, images, geometry.layers, strict=True):
            ax.step(r, img.mean(axis=0)[0] / area / e, where="mid", label=f"{e:g} GeV")
            ax.set(
                xlabel="r [mm]", title=f"{layer.name} ({layer.depth_mm[0]:g}-{layer.depth_mm[1]:g} mm)", yscale="log"
            )
    axes[0].set_ylabel("(1/E) dE/dA [1/mm^2]")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / "lateral.png", dpi=120)
    plt.close(fig)
    summary["containment_within_one_moliere_radius"] = containment


def fit_resolution(e: np.ndarray, width: np.ndarray, err: np.ndarray) -> dict:
    linear = Minuit(LeastSquares(e, width, err, lambda x, a, b: a / np.sqrt(x) + b), a=0.1, b=0.0)
    linear.migrad()
    linear.hesse()
    quad = Minuit(LeastSquares(e, width, err, lambda x, a, b: np.hypot(a / np.sqrt(x), b)), a=0.1, b=0.005)
    quad.migrad()
    quad.hesse()
    return {
        "linear_a": linear.values["a"],
        "linear_a_err": linear.errors["a"],
        "linear_b": linear.values["b"],
        "linear_b_err": linear.errors["b"],
        "quadrature_a": quad.values["a"],
        "quadrature_b": abs(quad.values["b"]),
        "linear_chi2_ndf": linear.fval / (len(e) - 2),
    }


def response(out: Path, summary: dict) -> None:
    energies = np.arange(10, 100, 10, dtype=float)
    mean, width, err = [], [], []
    for e in energies:
        ratio = datasets.load(f"photons-test-{int(e)}").deposited_energy() / e
        mean.append(ratio.mean())
        width.append(ratio.std() / ratio.mean())
        err.append(width[-1] / np.sqrt(2 * (len(ratio) - 1)))
    mean, width, err = map(np.asarray, (mean, width, err))
    fit = fit_resolution(energies, width, err)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(energies, mean, "o")
    ax1.set(xlabel="E_inc [GeV]", ylabel="mean E_dep / E_inc", title="calibrated response (leakage only)")
    ax2.errorbar(energies, width, err, fmt="o", label="simulation")
    grid = np.linspace(8, 95, 100)
    ax2.plot(
        grid,
        fit["linear_a"] / np.sqrt(grid) + fit["linear_b"],
        label=f"{fit['linear_a']:.3f}/sqrt(E) + {fit['linear_b']:.4f}",
    )
    ax2.set(xlabel="E_inc [GeV]", ylabel="sigma / E", title="energy resolution")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(out / "response_resolution.png", dpi=120)
    plt.close(fig)
    summary["response"] = dict(zip(map(float, energies), map(float, mean), strict=True))
    summary["resolution"] = dict(zip(map(float, energies), map(float, width), strict=True))
    summary["resolution_fit"] = fit
    summary["sampling_fraction"] = CALOGAN_STACK.sampling_fraction


def layer_fractions(out: Path, summary: dict) -> None:
    sh = datasets.load("photons-val")
    frac = sh.layer_energies() / sh.deposited_energy()[:, None]
    bins = np.linspace(1, 100, 12)
    idx = np.digitize(sh.incident_energy, bins) - 1
    centres = 0.5 * (bins[1:] + bins[:-1])
    means = np.array([frac[idx == i].mean(axis=0) for i in range(len(centres))])
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, layer in enumerate(CALOGAN.layers):
        ax.plot(centres, means[:, k], "o-", label=layer.name)
    ax.set(xlabel="E_inc [GeV]", ylabel="mean fraction of E_dep", yscale="log", title="layer-energy fractions")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "layer_fractions.png", dpi=120)
    plt.close(fig)
    summary["layer_fractions"] = {f"{c:.1f}": [float(v) for v in m] for c, m in zip(centres, means, strict=True)}


def chi_separation(out: Path, summary: dict) -> None:
    z1 = float(np.mean(CALOGAN.layers[1].depth_mm))
    cx, cy = CALOGAN.layers[1].cell_centers_mm()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    table: dict = {}
    for mass in datasets.CHI_MASSES_GEV:
        seps, widths = [], []
        for dist in datasets.CHI_DISTANCES_M:
            sh = datasets.load(f"chi-m{mass:g}-d{dist:.2f}")
            x = sh.extra
            pos = [
                (
                    x[f"photon{i}_x_mm"] + x[f"photon{i}_tx"] * (z1 - x[f"photon{i}_z_mm"]),
                    x[f"photon{i}_y_mm"] + x[f"photon{i}_ty"] * (z1 - x[f"photon{i}_z_mm"]),
                )
                for i in (1, 2)
            ]
            seps.append(float(np.nanmedian(np.hypot(pos[0][0] - pos[1][0], pos[0][1] - pos[1][1]))))
            img = sh.voxels[:, CALOGAN.layer_slices[1]]
            w = img / np.maximum(img.sum(axis=1, keepdims=True), 1e-12)
            mx, my = w @ cx, w @ cy
            rms = np.sqrt(np.maximum(w @ cx**2 - mx**2 + w @ cy**2 - my**2, 0))
            widths.append(float(np.median(rms)))
        table[f"{mass:g}"] = {"separation_mm": seps, "layer1_rms_mm": widths}
        ax1.plot(datasets.CHI_DISTANCES_M, seps, "o-", label=f"m = {mass:g} GeV")
        ax2.plot(datasets.CHI_DISTANCES_M, widths, "o-", label=f"m = {mass:g} GeV")
    photons = datasets.load("photons-test-50").voxels[:, CALOGAN.layer_slices[1]]
    w = photons / photons.sum(axis=1, keepdims=True)
    ref = np.median(np.sqrt(w @ cx**2 - (w @ cx) ** 2 + w @ cy**2 - (w @ cy) ** 2))
    ax2.axhline(ref, color="k", ls="--", label="single 50 GeV photons")
    ax1.axhline(CALOGAN.layers[1].cell_size_mm[0], color="grey", ls=":", label="layer-1 cell size")
    ax1.set(xlabel="decay distance [m]", ylabel="median photon separation at layer 1 [mm]", yscale="log")
    ax2.set(xlabel="decay distance [m]", ylabel="median energy-weighted layer-1 RMS [mm]")
    for ax in (ax1, ax2):
        ax.axvline(1.24, color="grey", lw=0.8)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "chi_separation.png", dpi=120)
    plt.close(fig)
    summary["chi_layer1"] = table
    summary["photon50_layer1_rms_mm"] = float(ref)

    fig, axes = plt.subplots(3, 1, figsize=(9, 5))
    for ax, (label, name) in zip(
        axes,
        [
            ("photons 50 GeV", "photons-test-50"),
            ("chi m=5 GeV, 0.33 m", "chi-m5-d0.33"),
            ("chi m=0.5 GeV, 0.33 m", "chi-m0.5-d0.33"),
        ],
        strict=True,
    ):
        img = CALOGAN.layer_images(datasets.load(name).voxels)[0].mean(axis=0)
        ax.imshow(np.log10(img + 1e-4), aspect="auto", cmap="viridis")
        ax.set_title(f"layer 0, {label} (log10 mean GeV)", fontsize=9)
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(out / "layer0_images.png", dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/simulation_validation"))
    parser.add_argument("--n", type=int, default=1000, help="showers per energy for the profile studies")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"stack": CALOGAN_STACK.summary()}
    longitudinal(args.out, args.n, args.seed, summary)
    lateral(args.out, args.n, args.seed, summary)
    response(args.out, summary)
    layer_fractions(args.out, summary)
    chi_separation(args.out, summary)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
    fit, peaks = summary["resolution_fit"], summary["shower_max_x0"]
    print(f"resolution: {fit['linear_a']:.4f}/sqrt(E) + {fit['linear_b']:.4f}", end="  ")
    print(f"(quadrature: {fit['quadrature_a']:.4f} (+) {fit['quadrature_b']:.4f})")
    print(f"shower maximum: {summary['shower_max_slope_x0_per_lnE']:.3f} X0 per e-fold; at 10 GeV {peaks[10.0]:.2f} X0")
    print(f"response at 10/90 GeV: {summary['response'][10.0]:.4f} / {summary['response'][90.0]:.4f}")
    print(f"plots and summary.json in {args.out}")


if __name__ == "__main__":
    main()
