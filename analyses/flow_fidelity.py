"""How well does one sideband density estimator reproduce the data it should? A classifier test.

CATHODE's direct background estimate assumes that generated events pass a classifier cut as often as
true background does. This script trains one :class:`calinfer.resonant.DensityEstimator` (the flow settings
of ``analyses/cathode_study.py``, without bootstrap) on a random part of the sidebands of a background-only dijet set
(``1 - --holdout``), generates ``--oversample`` events per data event at the data's m_jj values in the
sideband events it trained on, in the held-out sideband events and in the signal region (interpolated),
and trains a gradient-boosted classifier to tell
data from generated events with 5-fold out-of-fold scores. For cuts keeping a fraction eps of the
generated events it reports the fraction of data passing (eps if the flow were exact) with its binomial
error, the ROC AUC, the 95% quantiles of the features and the generalisation gap (mean log p on the
trained minus the held-out sideband events). ``--per-feature`` repeats the test on each feature alone (which
features carry the mismatch). ``--reweight`` splits the held-out sideband events in two: on one half a
boosted-tree classifier of data against generated events (m_jj one of its inputs) gives weights
``w = p / (1 - p)`` (clipped to 0.1-10) that correct the flow where the sidebands show it wrong; the test is
repeated with the weighted generated events on the other half and in the signal region (an ablation: does
learning the flow's residual in the sidebands shrink the mismatch where the background is estimated?).
Output: ``flow_fidelity.json``.

Example (about 2 minutes on one core)::

    python analyses/flow_fidelity.py --out runs/flow_fidelity
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from cathode_study import (  # the sibling script (sys.path[0] is this directory)
    StudyConfig,
    add_window_arguments,
    window_of,
)
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict

from calinfer import datasets
from calinfer.io import atomic_output
from calinfer.io.lhco import STANDARD_FEATURES
from calinfer.io.metadata import json_default
from calinfer.resonant import DensityEstimator

__all__ = ["compare", "main"]

EFFICIENCIES = (0.2, 0.1, 0.05, 0.02)


def compare(x_data: np.ndarray, x_gen: np.ndarray, seed: int, weights: np.ndarray | None = None) -> dict:
    """Out-of-fold classifier test of data against generated events; data pass fractions at generated efficiencies.

    ``weights``: per generated event; with them the two classes are balanced to equal total weight and the cut at
    efficiency eps keeps a weighted fraction eps of the generated events (without them, unweighted as before).
    """
    x = np.vstack([x_data, x_gen])
    y = np.r_[np.ones(len(x_data)), np.zeros(len(x_gen))]
    clf = HistGradientBoostingClassifier(max_iter=200, random_state=seed)
    sw = None
    if weights is not None:
        w_gen = np.asarray(weights, dtype=np.float64)
        sw = np.r_[np.full(len(x_data), 1.0 / len(x_data)), w_gen / w_gen.sum()] * len(x)
    p = cross_val_predict(clf, x, y, cv=5, method="predict_proba", params=None if sw is None else {"sample_weight": sw})
    p_data, p_gen = p[y == 1, 1], p[y == 0, 1]
    if sw is not None:  # generated scores from high to low with the weighted fraction kept above each
        order = np.argsort(-p_gen)
        kept = np.cumsum(w_gen[order]) / w_gen.sum()
    rows = []
    for eps in EFFICIENCIES:
        if sw is None:
            threshold = np.quantile(p_gen, 1 - eps)
        else:
            threshold = p_gen[order][min(np.searchsorted(kept, eps), len(order) - 1)]
        passed = float(np.mean(p_data >= threshold))
        rows.append({"eps": eps, "data_pass": passed, "error": float(np.sqrt(eps * (1 - eps) / len(x_data)))})
    return {
        "n_data": len(x_data),
        "n_generated": len(x_gen),
        "auc": float(roc_auc_score(y, p[:, 1], sample_weight=sw)),
        "pass_fractions": rows,
        "q95_data": np.quantile(x_data, 0.95, axis=0),
        "q95_generated": np.quantile(x_gen, 0.95, axis=0),
    }


def report(label: str, result: dict) -> None:
    """One line: AUC and the data pass fractions at each generated efficiency."""
    print(
        f"{label}: AUC {result['auc']:.4f}; data pass at generated eps "
        + ", ".join(f"{r['eps']}: {r['data_pass']:.4f} ± {r['error']:.4f}" for r in result["pass_fractions"])
    )


def fit_reweighter(x_data, m_data, x_gen, m_gen, seed: int) -> HistGradientBoostingClassifier:
    """Boosted trees of data (1) against generated (0) events on (x, m_jj), classes balanced, early stopping."""
    X = np.vstack([np.c_[x_data, m_data], np.c_[x_gen, m_gen]])
    y = np.r_[np.ones(len(x_data)), np.zeros(len(x_gen))]
    sw = np.where(y == 1, len(y) / (2 * len(x_data)), len(y) / (2 * len(x_gen)))
    clf = HistGradientBoostingClassifier(max_iter=300, min_samples_leaf=200, early_stopping=True, random_state=seed)
    return clf.fit(X, y, sample_weight=sw)


def weights(reweighter: HistGradientBoostingClassifier, x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Likelihood-ratio weights ``p / (1 - p)`` of generated events, clipped to 0.1-10."""
    p = np.clip(reweighter.predict_proba(np.c_[x, m])[:, 1], 1e-3, 1 - 1e-3)
    return np.clip(p / (1 - p), 0.1, 10.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_window_arguments(parser, data_help="embedded dijet set (background only)")
    parser.add_argument("--oversample", type=int, default=4)
    parser.add_argument("--holdout", type=float, default=0.5, help="fraction of sideband events not trained on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, help="flow epochs (default: the study's)")
    parser.add_argument("--res-blocks", type=int, help="residual blocks per spline-parameter network")
    parser.add_argument("--hidden", type=int, help="hidden units of the spline-parameter networks")
    parser.add_argument("--weight-decay", type=float, help="Adam weight decay")
    parser.add_argument("--per-feature", action="store_true", help="also test each feature alone")
    parser.add_argument("--reweight", action="store_true", help="ablation: sideband classifier weights on the flow")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    t0 = time.time()
    d = datasets.load_dijets(args.data)
    m, x = d["mjj"].to_numpy(), d[list(STANDARD_FEATURES)].to_numpy()
    window = window_of(args)
    sb, sr = window.in_sidebands(m), window.in_sr(m)
    held_out = sb & (np.random.default_rng(args.seed).random(len(m)) < args.holdout)
    trained = sb & ~held_out
    options = {**StudyConfig().flow, "bootstrap": False}
    for key, value in (
        ("epochs", args.epochs),
        ("n_res_blocks", args.res_blocks),
        ("hidden", args.hidden),
        ("weight_decay", args.weight_decay),
    ):
        if value is not None:
            options[key] = value
    flow = DensityEstimator(**options, seed=args.seed)
    flow.fit(x[trained], m[trained])
    result = {
        "settings": vars(args) | {"out": str(args.out)},
        "flow": options,
        "features": list(STANDARD_FEATURES),
        "n_trained": int(trained.sum()),
    }
    # generalisation gap: mean log p on the events trained on minus on held-out sideband events (nats)
    lp_trained, lp_held = (flow.log_prob(x[sel], m[sel]) for sel in (trained, held_out))
    ok = np.isfinite(lp_held)
    result["log_p"] = {
        "trained": float(lp_trained.mean()),
        "held_out": float(lp_held[ok].mean()),
        "held_out_outside_support": int((~ok).sum()),
        "gap": float(lp_trained.mean() - lp_held[ok].mean()),
        "gap_error": float(
            np.hypot(lp_trained.std() / np.sqrt(len(lp_trained)), lp_held[ok].std() / np.sqrt(ok.sum()))
        ),
    }
    print("mean log p trained - held out: {gap:.4f} ± {gap_error:.4f} nats".format(**result["log_p"]))
    reweighter = None
    if args.reweight:  # half of the held-out events train the weights, the other half test them
        fit_half = held_out & (np.random.default_rng(args.seed + 7).random(len(m)) < 0.5)
        held_out = held_out & ~fit_half
        m_fit = np.repeat(m[fit_half], args.oversample)
        reweighter = fit_reweighter(x[fit_half], m[fit_half], flow.sample(m_fit, seed=args.seed + 2), m_fit, args.seed)
    for region, sel in (("sidebands_trained", trained), ("sidebands_held_out", held_out), ("signal_region", sr)):
        m_gen = np.repeat(m[sel], args.oversample)
        gen = flow.sample(m_gen, seed=args.seed + 1)
        result[region] = compare(x[sel], gen, args.seed)
        report(region, result[region])
        if args.per_feature:
            result[region]["per_feature"] = {}
            for k, name in enumerate(STANDARD_FEATURES):
                result[region]["per_feature"][name] = compare(x[sel][:, [k]], gen[:, [k]], args.seed)
                report(f"  {name} alone", result[region]["per_feature"][name])
        if reweighter is not None:
            result[region]["reweighted"] = compare(x[sel], gen, args.seed, weights=weights(reweighter, gen, m_gen))
            report("  reweighted", result[region]["reweighted"])
    result["wall_time_s"] = time.time() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_output(args.out / "flow_fidelity.json") as tmp:
        Path(tmp).write_text(json.dumps(result, indent=1, default=json_default))
    print(f"wrote {args.out / 'flow_fidelity.json'} in {result['wall_time_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
