"""Tutorial 4: a resonant anomaly search with CATHODE on the embedded dijet sample.

A runnable walkthrough (``python tutorials/04_cathode.py [--out DIR] [--s-over-b 0.02]``, a few minutes on a
CPU). A W' (3.5 TeV) decaying to two boosted jets (X -> qq at 500 GeV, Y -> qq at 100 GeV) is a small bump in
m_jj on top of QCD; without a signal model, CATHODE (arXiv:2109.00546) learns the background in the
signal region from the sidebands and a classifier finds where the data differ from it. The steps:

1. the embedded sets (Pythia 8 + fastjet, LHC Olympics R&D layout) and the standard features,
2. a signal region with sidebands, and a signal injected at a chosen S/B,
3. the dijet-function fit of the sidebands: expected background in the signal region before any cut,
4. CATHODE: conditional flows p(x | m_jj) on the sidebands, background generated in the signal region,
   a k-fold classifier data vs generated (cross-fitted flow groups); compared with the idealized anomaly
   detector,
5. a cut on the CATHODE score: background estimate with its statistical, ensemble and normalisation
   uncertainties, and Cowan's significance with and without the ensemble term,
6. the same from the command line: ``calinfer cathode``.

The short trainings here keep it fast; the injection scan, all baselines, several seeds and the
background-only closure are ``analyses/cathode_study.py``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from calinfer import datasets, metrics, plotting
from calinfer.io.lhco import STANDARD_FEATURES
from calinfer.resonant import (
    Cathode,
    DensityEstimator,
    EnsembleMLP,
    IdealizedAD,
    SignalRegion,
    bump_hunt,
    inject_signal,
    n_signal_for,
)
from calinfer.resonant.plots import plot_mjj_spectra
from calinfer.resonant.search import mass_bins

CALINFER = [sys.executable, "-c", "from calinfer.cli import main; main()"]  # the `calinfer` command


def main() -> None:
    parser = argparse.ArgumentParser(description="calinfer tutorial 4: CATHODE")
    parser.add_argument("--out", type=Path, default=None, help="where to write files (default: temp dir)")
    parser.add_argument("--s-over-b", type=float, default=0.02, help="injected S/B in the signal region")
    parser.add_argument("--flow-epochs", type=int, default=20)
    parser.add_argument("--classifier-epochs", type=int, default=10)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="calinfer_tutorial4_"))
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    t0 = time.time()

    # 1. Embedded sets: features in TeV (m_jj; lighter jet mass; mass difference; tau2/tau1 of both jets).
    #    describe_dijets gives the generator settings, seeds and chunks each set was packed from.
    background = datasets.load_dijets("dijets-qcd")
    reference = datasets.load_dijets("dijets-qcd-reference")  # independent QCD: only for the idealized AD
    signal = datasets.load_dijets("dijets-signal")
    meta = datasets.describe_dijets("dijets-qcd")
    print(
        f"== 1. {len(background)} QCD events ({len(meta['chunks'])} chunks, Pythia seeds "
        f"{meta['chunks'][0]['pythia_seed']}...), {len(reference)} reference, {len(signal)} signal =="
    )

    # 2. Signal region 3.3-3.7 TeV, sidebands out to 2.8 and 5.0 TeV. The injection is expressed as S/B in the
    #    signal region; with this sample's background S/sqrt(B) is smaller than at the same S/B in the LHCO set.
    window = SignalRegion(3.3, 3.7, 2.8, 5.0)
    n_sig = n_signal_for(args.s_over_b, background["mjj"].to_numpy(), signal["mjj"].to_numpy(), window)
    data = inject_signal(background, signal, n_sig, seed=1)
    mjj, x, label = data["mjj"].to_numpy(), data[list(STANDARD_FEATURES)].to_numpy(), data["label"].to_numpy()
    sr = window.in_sr(mjj)
    s, b = int(label[sr].sum()), int((label[sr] == 0).sum())
    print(f"== 2. injected {n_sig} signal events: S = {s}, B = {b} in the SR, S/B = {s / b:.4f}, S/sqrt(B) = "
          f"{s / np.sqrt(b):.2f} ==")  # fmt: skip

    # 3. Background in the SR before any cut: the dijet function fitted to the sideband bins, extrapolated.
    edges = mass_bins(window, 0.1)
    before = bump_hunt(edges, np.histogram(mjj[window.in_range(mjj)], edges)[0], window)
    print(f"== 3. sideband fit: {before.b:.0f} +- {before.sigma_b:.0f} expected in the SR, {before.n_observed:.0f} "
          f"observed (local Z {before.z_local:.2f}) ==")  # fmt: skip

    # 4. CATHODE with an ensemble of four flows in two cross-fitted groups, each group trained on its own half of
    #    the sidebands; 4 generated events per SR event in total; every SR event is scored by a classifier that
    #    never saw it (5 folds), and each classifier trains against one group while the other group estimates
    #    the background it passes (a classifier learns the errors of the flows it trains against, so their own
    #    events would pass it too rarely). The spread over the two replicas enters the background uncertainty
    #    (times Student's t for one degree of freedom, 1.84; use n_flows >= 6 for a spread worth the name).
    def flow(seed: int) -> DensityEstimator:
        return DensityEstimator(epochs=args.flow_epochs, batch_size=512, n_res_blocks=1, seed=seed)

    def classifier(seed: int) -> EnsembleMLP:
        return EnsembleMLP(epochs=args.classifier_epochs, batch_size=512, seed=seed)

    cathode = Cathode(window, n_flows=4, oversample=1.0, flow=flow, classifier=classifier, cross_fit=True, seed=2)
    cathode.fit(mjj, x)
    x_ref_sr = reference[list(STANDARD_FEATURES)].to_numpy()[window.in_sr(reference["mjj"].to_numpy())]
    ideal = IdealizedAD(window, classifier=classifier, seed=3).fit(mjj, x, x_ref_sr)
    y = label[sr]
    rocs = {}
    for name, scores in (("CATHODE", cathode.scores_), ("idealized AD", ideal.scores_)):
        rocs[name] = metrics.roc_curve(scores[y == 1], scores[y == 0])
        sic = metrics.max_sic(scores[y == 1], scores[y == 0], min_background=50)
        print(f"== 4. {name:12s} AUC {rocs[name].auc:.3f}, max SIC {sic:.2f} (cuts keeping >= 50 background) ==")
    plotting.save_figure(plotting.plot_sic(rocs, min_background=50)[0], out / "sic.png")

    # 5. Cut keeping 5% of the generated background: B = N_SR(fit) x pass fraction of the generated events, with
    #    the spread over the replicas (it contains the binomial error of the generated samples) and the fit
    #    error; then Cowan's Z. The calibrated estimate is the one that closes on background-only data (README).
    cut = cathode.cut(0.05, before.b, before.sigma_b)
    est = cut.estimate
    print(
        f"== 5. eps_B = 0.05: observed {cut.n_observed} (signal {int(np.sum(cathode.scores_[y == 1] >= cut.threshold))}"
        f"), B = {est.b:.1f} +- {est.sigma:.1f} (stat {est.sigma_stat:.1f}, ensemble {est.sigma_ensemble:.1f}, "
        f"norm {est.sigma_norm:.1f}); Z = {cut.significance:.2f}, "
        f"without the ensemble term {est.significance(cut.n_observed, include_ensemble=False):.2f} =="
    )
    if cut.calibrated is not None:  # each flow's pass fraction x data / generated on its held-out sideband events
        cal = cut.calibrated
        print(f"   calibrated on held-out sideband events: B = {cal.b:.1f} +- {cal.sigma:.1f} (factor "
              f"{cal.calibration:.3f}), Z = {cal.significance(cut.n_observed):.2f}")  # fmt: skip
    scores_all = np.where(sr, 0.0, 0.0)
    scores_all[sr] = cathode.scores_
    # sideband events: each by one fold classifier whose generated reference came from flows that never saw it
    scores_all[~sr] = cathode.score_outside(x[~sr], mjj[~sr])
    keep = window.in_range(mjj)
    spectra = {
        "all events": np.histogram(mjj[keep], edges)[0],
        "after the cut": np.histogram(mjj[keep & (scores_all >= cut.threshold)], edges)[0],
    }
    plotting.save_figure(plot_mjj_spectra(edges, spectra, window)[0], out / "mjj.png")
    print(f"   plots: {out / 'sic.png'}, {out / 'mjj.png'} ({time.time() - t0:.0f} s so far)")

    # 6. The command line: the embedded sets by name (or LHCO-layout HDF5/ROOT files), JSON summary and plots.
    cmd = [
        "cathode", "dijets-qcd", "--inject", "dijets-signal", "--s-over-b", str(args.s_over_b),
        "--reference", "dijets-qcd-reference", "--baselines", "idealized", "--n-flows", "4",
        "--flow-epochs", "5", "--classifier-epochs", "5", "--oversample", "1", "--efficiency", "0.05",
        "--out", str(out / "cli"),
    ]  # fmt: skip
    subprocess.run([*CALINFER, *cmd], check=True)
    print(f"== 6. calinfer cathode wrote {out / 'cli'} ({time.time() - t0:.0f} s in total) ==")


if __name__ == "__main__":
    main()
