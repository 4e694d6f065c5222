"""Tutorial 3: unsupervised anomaly detection of showers with the surrogate likelihood.

A runnable walkthrough (``python tutorials/03_anomaly.py [--model DIR] [--out DIR]``, a few minutes on a CPU).
A surrogate trained only on ordinary photon showers scores every shower by how unlikely it is; a boosted
chi -> gamma gamma whose photons separate before the calorimeter, or that decays inside it, looks unlike any
photon and gets a high score, without any signal model (arXiv:2312.11618). The steps:

1. load the surrogate and the embedded data (photons, two chi points),
2. fit the detector response lambda = E_dep / E_inc on labelled photons, so that E_rec = E_dep / lambda,
3. score showers: -log p(x | E_rec), the profiled -max_E log p(x | E), the two flows separately, and the
   mixed discrete/continuous likelihood that does not reward empty voxels,
4. turn scores into ROC / SIC figures of merit (with the background floor on the SIC) and plots,
5. do the same from the command line on ROOT files: ``calinfer anomaly`` and ``calinfer sic``.

The full grid of masses and distances with every baseline is ``analyses/anomaly_study.py``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from calinfer import datasets, metrics, plotting
from calinfer.anomaly import EnergyScale, LikelihoodScore, PhysicsScore, ProfileScore
from calinfer.io import write_showers

CALINFER = [sys.executable, "-c", "from calinfer.cli import main; main()"]  # the `calinfer` command


def main() -> None:
    parser = argparse.ArgumentParser(description="calinfer tutorial 3: anomaly detection")
    parser.add_argument("--model", help="surrogate directory (default: the shipped pretrained surrogate)")
    parser.add_argument("--out", type=Path, default=None, help="where to write files (default: temp dir)")
    parser.add_argument("--n-background", type=int, default=1000, help="photon background showers to score")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="calinfer_tutorial3_"))
    out.mkdir(parents=True, exist_ok=True)

    # 1. The surrogate: p(x | E) for photon showers x (504 CaloGAN voxels, GeV) at incident energy E (GeV).
    from calinfer.surrogate import load_default, load_model

    surrogate = load_model(args.model) if args.model else load_default()
    photons = datasets.load("photons-val")[: args.n_background]  # background: ordinary photons, 1-100 GeV
    separated = datasets.load("chi-m5-d0.33")  # 5 GeV chi decaying 0.9 m before the calorimeter: two showers
    collinear = datasets.load("chi-m0.005-d0.33")  # 5 MeV chi: the photons overlap, it looks like one photon
    print(f"== 1. {len(photons)} photons, {len(separated)} + {len(collinear)} chi showers (+300 late ones below) ==")

    # 2. The energy scale. Only ~94% of the energy is recorded; the surrogate is conditioned on the incident
    #    energy, which for data is unknown, so it is reconstructed as E_rec = E_dep / lambda, with lambda fitted
    #    on labelled photons (here the training set, a different sample from the background scored below).
    scale = EnergyScale.fit(datasets.load("photons-train")[:10000], method="median")
    print(f"== 2. lambda = {scale.value:.4f} +- {scale.uncertainty:.4f} ({scale.method} of E_dep/E_inc) ==")

    # 3. Scores: higher = more anomalous. LikelihoodScore(part="full") also reports flow I (layer energies) and
    #    flow II (voxels given the layer energies) separately; the profile needs no lambda at all.
    nll = LikelihoodScore(surrogate, scale=scale)
    # The surrogate's density is that of dequantized voxels: each empty voxel adds ~ln(1/1e-5) = +11.5 to log p,
    # so sparse showers look likely whatever else they do. The mixed likelihood counts empty voxels with their
    # probability instead (a shower starting late, with an empty first layer, then stands out).
    nll_mixed = LikelihoodScore(surrogate, scale=scale, mixed=True)
    profile = ProfileScore(surrogate, n_grid=16)  # a coarse grid (16 points) refined by zooming and parabolas
    depth = PhysicsScore("depth")  # a physics variable for comparison: the energy-weighted shower depth
    results = {}
    late = datasets.load("chi-m0.05-d1.44")  # 50 MeV chi decaying inside the calorimeter: a late shower
    samples = (("photons", photons), ("chi 5 GeV", separated), ("chi 5 MeV", collinear), ("chi late", late))
    for name, showers in samples:
        r = nll.evaluate(showers)
        results[name] = {
            "nll": r["score"],
            "layers": -r["log_prob_layers"],
            "voxels": -r["log_prob_voxels"],
            "profile": profile.evaluate(showers)["score"],
            "nll-mixed": nll_mixed.evaluate(showers)["score"],
            "depth": depth.evaluate(showers)["score"],
        }
    print("== 3. mean scores ==")
    for name, r in results.items():
        print(f"  {name:10s} " + "  ".join(f"{k} {float(v.mean()):8.1f}" for k, v in r.items()))

    # 4. Figures of merit. SIC = TPR / sqrt(FPR) is the gain in significance of a cut; it is only trusted for
    #    cuts keeping >= min_background background showers (otherwise it just shows sqrt(N_background)).
    bkg = results["photons"]
    floor = 20
    print(f"== 4. AUC and maximum SIC (cuts keeping >= {floor} photons; cap {(len(photons) / floor) ** 0.5:.1f}) ==")
    for sig_name in ("chi 5 GeV", "chi 5 MeV", "chi late"):
        sig = results[sig_name]
        for score in sig:
            s = metrics.summarize(sig[score], bkg[score], min_background=floor)
            flag = "  <- ranks the signal as MORE normal" if s["auc"] < 0.5 else ""
            print(f"  {sig_name:10s} {score:9s} AUC {s['auc']:.3f}  max SIC {s['max_sic']:5.1f}{flag}")
    rocs = {k: metrics.roc_curve(results["chi 5 GeV"][k], bkg[k]) for k in bkg}
    fig, _ = plotting.plot_sic(rocs, min_background=floor, title="chi 5 GeV, 0.33 m")
    plotting.save_figure(fig, out / "sic.pdf")
    fig, _ = plotting.plot_score_distributions({k: v["nll"] for k, v in results.items()}, xlabel="nll score")
    plotting.save_figure(fig, out / "scores.pdf")
    print(f"  plots: {out / 'sic.pdf'}, {out / 'scores.pdf'}")

    # 5. The same from the command line, on ROOT files: one score per shower in tree 'anomaly' (in input order,
    #    chunked over the file), then the labelled evaluation.
    write_showers(out / "photons.root", photons)
    write_showers(out / "chi.root", separated)
    model = ["--model", args.model] if args.model else []
    lam = ["--scale", f"{scale.value:.6f}"]
    for name in ("photons", "chi"):
        cmd = ["anomaly", str(out / f"{name}.root"), "-o", str(out / f"{name}_scores.root"), *model, *lam]
        subprocess.run([*CALINFER, *cmd, "--no-progress"], check=True)
    sic_cmd = [
        "sic",
        "--signal",
        str(out / "chi_scores.root"),
        "--background",
        str(out / "photons_scores.root"),
        "-o",
        str(out / "sic_cli"),
        "--min-background",
        str(floor),
        "--bootstrap",
        "20",
    ]
    subprocess.run([*CALINFER, *sic_cmd], check=True)
    print(f"== 5. calinfer anomaly / calinfer sic wrote {out / 'sic_cli'} ==")


if __name__ == "__main__":
    main()
