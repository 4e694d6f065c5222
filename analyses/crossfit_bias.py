"""How far below the truth is the cross-fitted CATHODE background estimate on background only, and why?

The direct estimate after a cut is the pass fraction of generated events. With cross fitting the classifier
trains against the events of flow A and the estimate comes from flow B, trained on the other half of the
sidebands: the statistical fluctuations A learned are not in B, so what biases the estimate is only what A and
B get wrong *alike*. This script isolates that, without the rest of the search: on a background-only dijet
set it trains A and B (``analyses/cathode_study.py``'s flow settings, no bootstrap, ``--flow-option`` to change
them; ``--flow-option-b`` changes B only), generates ``4 x`` the signal-region events each at masses from the
signal-region KDE, trains a boosted-tree classifier on signal-region data against A's events (5 folds), sets
the threshold of each fold on B's events at generated efficiency eps and counts the held-out data passing.
Both directions (A <-> B) are used. It reports data pass fraction / B's pass fraction - 1 per eps: 0 for an
unbiased estimate.

* ``--train-in-sr``: half of the signal-region events join the flows' training (the other half is the data),
  so that no interpolation in m_jj is needed: does the bias come from the interpolation?
* ``--train-fraction F``: each flow trains on a random fraction F of its half of the sidebands (and for
  ``25 / F`` epochs unless ``--flow-option epochs=...`` is given, so every flow takes as many optimiser steps):
  how does the shared error scale with the flows' training statistics?
* ``--null``: A and B are true background (disjoint thirds of the signal region of data + reference): the
  bias of the procedure itself, without flows (expected 0).

Each seed changes the sideband split, the flows and the folds; the spread over seeds shows how much a single
pair of flows scatters. Output: one JSON line per seed and the mean ± standard error over seeds.

Example (about 2 minutes per seed on one core)::

    python analyses/crossfit_bias.py --seeds 0,1,2,3 --out runs/crossfit_bias/h128.json
    python analyses/crossfit_bias.py --seeds 0,1,2,3 --flow-option hidden=64 --flow-option n_res_blocks=1 \\
        --out runs/crossfit_bias/base.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from cathode_study import (  # the sibling script (sys.path[0] is this directory)
    StudyConfig,
    add_window_arguments,
    load_frame,
    parse_options,
    window_of,
)
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import StratifiedKFold

from calinfer.errors import InputError
from calinfer.io import atomic_output
from calinfer.io.lhco import STANDARD_FEATURES
from calinfer.resonant import DensityEstimator, MassSampler

__all__ = ["main", "pass_excess"]

EFFICIENCIES = (0.2, 0.1, 0.05, 0.02)


def pass_excess(
    x_data: np.ndarray, x_train_ref: np.ndarray, x_estimate_ref: np.ndarray, seed: int, options: dict | None = None
) -> dict:
    """Classifier of data against ``x_train_ref`` (5 folds); per eps the held-out data and ``x_estimate_ref``
    (each fold its own fifth) passing a threshold at that reference quantile: summed pass fractions
    ``(data, reference)`` (tied scores can make the reference pass more than eps, so it is counted);
    ``options``: of the ``HistGradientBoostingClassifier``."""
    x = np.vstack([x_data, x_train_ref])
    y = np.r_[np.ones(len(x_data)), np.zeros(len(x_train_ref))]
    fractions = {eps: [0.0, 0.0] for eps in EFFICIENCIES}
    for k, (train, test) in enumerate(StratifiedKFold(5, shuffle=True, random_state=seed).split(x, y)):
        clf = HistGradientBoostingClassifier(
            **{"max_iter": 200, "class_weight": "balanced", **(options or {})}, random_state=k
        )
        clf.fit(x[train], y[train])
        s_data = clf.predict_proba(x[test[y[test] == 1]])[:, 1]
        s_ref = clf.predict_proba(x_estimate_ref[k::5])[:, 1]
        for eps in EFFICIENCIES:
            threshold = np.quantile(s_ref, 1 - eps)
            fractions[eps][0] += float(np.mean(s_data >= threshold)) / 5
            fractions[eps][1] += float(np.mean(s_ref >= threshold)) / 5
    return fractions


def one_seed(args: argparse.Namespace, seed: int, m: np.ndarray, x: np.ndarray) -> dict:
    window = window_of(args)
    rng = np.random.default_rng(seed)
    sr = np.flatnonzero(window.in_sr(m))
    if args.null:
        part = rng.permutation(len(sr)) % 3
        data, a, b = (x[sr[part == j]] for j in range(3))
        pairs = [(a, b), (b, a)]
    else:
        sb = np.flatnonzero(window.in_sidebands(m))
        if args.train_in_sr:
            joins = rng.random(len(sr)) < 0.5
            sb, sr = np.sort(np.r_[sb, sr[joins]]), sr[~joins]
        half = rng.permutation(len(sb)) % 2
        if args.train_fraction < 1:
            half[rng.random(len(sb)) >= args.train_fraction] = -1
        options = [args.flow, {**args.flow, **args.flow_b}]
        flows = [
            DensityEstimator(**options[g], seed=seed * 10 + g).fit(x[sb[half == g]], m[sb[half == g]]) for g in (0, 1)
        ]
        masses = MassSampler(window.low, window.high).fit(m[sr])
        gen = [
            f.sample(masses.sample(args.oversample * len(sr), seed=seed + 5 + g), seed=seed + 7 + g)
            for g, f in enumerate(flows)
        ]
        data = x[sr]
        pairs = [(gen[0], gen[1]), (gen[1], gen[0])]
    total = {eps: [0.0, 0.0] for eps in EFFICIENCIES}
    for a, b in pairs:
        for eps, (f_data, f_ref) in pass_excess(data, a, b, seed, args.classifier).items():
            total[eps][0] += f_data / len(pairs)
            total[eps][1] += f_ref / len(pairs)
    out = {
        "seed": seed,
        "n_data": len(data),
        "n_flow_train": [int(np.sum(half == g)) for g in (0, 1)] if not args.null else None,
    }
    for eps, (f_data, f_ref) in total.items():
        out[f"{eps:g}"] = {
            "excess": f_data / f_ref - 1,
            "reference_pass": f_ref,
            "binomial_error": float(np.sqrt(eps * (1 - eps) / len(data)) / eps),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_window_arguments(parser)
    parser.add_argument("--seeds", default="0,1,2,3")
    parser.add_argument("--oversample", type=int, default=4)
    parser.add_argument("--flow-option", action="append", default=[], metavar="KEY=VALUE", help="JSON value")
    parser.add_argument("--flow-option-b", action="append", default=[], metavar="KEY=VALUE", help="flow B only")
    parser.add_argument(
        "--classifier-option", action="append", default=[], metavar="KEY=VALUE", help="HistGradientBoosting option"
    )
    parser.add_argument("--train-in-sr", action="store_true", help="half of the SR events train the flows too")
    parser.add_argument(
        "--train-fraction", type=float, default=1.0, help="each flow trains on this random fraction of its half"
    )
    parser.add_argument("--null", action="store_true", help="true background instead of flows (procedure check)")
    parser.add_argument("--out", type=Path, required=True, help="JSON output file (not overwritten)")
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(f"{args.out} exists; choose another --out")
    if not 0 < args.train_fraction <= 1:
        parser.error(f"--train-fraction must be in (0, 1], got {args.train_fraction}")
    torch.set_num_threads(1)

    try:
        args.flow = {**StudyConfig().flow, "bootstrap": False}
        args.flow["epochs"] = round(args.flow["epochs"] / args.train_fraction)
        args.flow |= parse_options(args.flow_option)
        args.flow_b = parse_options(args.flow_option_b)
        args.classifier = parse_options(args.classifier_option)
    except InputError as exc:
        parser.error(f"flow or classifier options: {exc}")
    t0 = time.time()
    if args.null:
        d = pd.concat([load_frame(n) for n in ("dijets-qcd", "dijets-qcd-reference")], ignore_index=True)
    else:
        d = load_frame(args.data)
    m, x = d["mjj"].to_numpy(np.float64), d[list(STANDARD_FEATURES)].to_numpy(np.float64)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        rows.append(one_seed(args, seed, m, x))
        print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for eps in EFFICIENCIES:
        v = np.array([r[f"{eps:g}"]["excess"] for r in rows])
        se = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")
        summary[f"{eps:g}"] = {"mean": float(v.mean()), "standard_error": se, "values": v.tolist()}
    line = ", ".join(f"{k}: {100 * s['mean']:+.1f} ± {100 * s['standard_error']:.1f}%" for k, s in summary.items())
    print(f"data / generated pass fraction - 1, mean ± standard error over {len(rows)} seeds: {line}")
    settings = {k: v for k, v in vars(args).items() if k != "out"} | {"out": str(args.out)}
    result = {"settings": settings, "seeds": rows, "summary": summary, "wall_time_s": time.time() - t0}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(args.out) as tmp:
        Path(tmp).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
