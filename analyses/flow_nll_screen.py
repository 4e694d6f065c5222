"""Screen density-estimator recipes by their held-out log-likelihood (a bias measure without a classifier).

The classifier tests (``crossfit_bias.py``, ``flow_fidelity.py``) count how much the data exceed the flows after a
cut: a few per cent with a seed scatter of the same size, a few minutes per point. The mean log-likelihood of
events a flow never saw is a sharper and cheaper measure of the same thing: its expectation is
``-H(p) - KL(p || q)``, so between two recipes trained on the same events the difference of their held-out
mean log p is the difference of their KL divergences from the true density, with a standard error from the
per-event differences (paired, so the data's own entropy cancels).

Each recipe (``--recipe NAME:KEY=VALUE,KEY=VALUE``; ``base`` is the study's flow without bootstrap) trains on the
same random half of the sidebands (``--seed``; the option ``seed_offset=K`` changes only a recipe's
initialisation) and is evaluated on the other half of the sidebands and on the signal region (the interpolation
in m_jj); ``--mixture`` also scores the equal-weight mixture of all recipes' densities (an ensemble) and of the
first 2, 3, ... of them (``mixture_K``: how the ensemble's gain grows with its size). Output: per
recipe the mean log p on its training events, the held-out sidebands and the signal region, and the paired
difference to the first recipe with its standard error; and the tails: generated at the signal-region masses
(``--oversample`` times as many), the data / generated ratio beyond each feature's 0.2% and 99.8% signal-region
quantiles (a flow that cannot reach a feature's tail shows a ratio far above 1 there).

``--noise-features N`` appends N standard-normal features (unbounded) to every event and subtracts their known
log-density from each recipe's log p; a recipe with ``drop_noise=true`` trains on the standard features alone,
so its paired difference to a recipe with the noise is the KL divergence the noise features add to the model.

Example (one core; about a minute per recipe)::

    python analyses/flow_nll_screen.py --recipe base: --recipe h256:hidden=256 --out runs/nll_screen/h256.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from cathode_study import (  # the sibling script (sys.path[0] is this directory)
    StudyConfig,
    add_window_arguments,
    load_frame,
    parse_options,
    window_of,
)

from calinfer.errors import InputError
from calinfer.io import atomic_output
from calinfer.io.lhco import STANDARD_FEATURES
from calinfer.resonant import DensityEstimator

__all__ = ["main", "parse_recipe", "tail_ratios"]


def parse_recipe(text: str) -> tuple[str, dict]:
    """``NAME:KEY=VALUE,KEY=VALUE`` -> ``(NAME, options)`` (values in JSON, as ``--flow-option``)."""
    name, _, rest = text.partition(":")
    if not name:
        raise InputError(f"recipe {text!r} needs a name before ':'")
    return name, parse_options([item for item in rest.split(",") if item])


def tail_ratios(
    x_data: np.ndarray, x_generated: np.ndarray, names: Sequence[str] = STANDARD_FEATURES, tail: float = 0.002
) -> dict:
    """Per feature (column ``j`` named ``names[j]``), data / generated fraction below the data's ``tail`` and above
    its ``1 - tail`` quantile."""
    out = {}
    for j, name in enumerate(names):
        lo, hi = np.quantile(x_data[:, j], [tail, 1 - tail])
        below = np.mean(x_data[:, j] < lo) / max(np.mean(x_generated[:, j] < lo), 1 / len(x_generated))
        above = np.mean(x_data[:, j] > hi) / max(np.mean(x_generated[:, j] > hi), 1 / len(x_generated))
        out[name] = (float(below), float(above))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_window_arguments(parser)
    parser.add_argument("--recipe", action="append", required=True, metavar="NAME:KEY=VALUE,...")
    parser.add_argument("--seed", type=int, default=0, help="sideband split and flow initialisation")
    parser.add_argument("--train-fraction", type=float, default=0.5, help="share of the sidebands trained on")
    parser.add_argument("--oversample", type=int, default=4, help="generated events per signal-region event")
    parser.add_argument(
        "--mixture",
        action="store_true",
        help="also score equal-weight mixtures: of all recipes (mixture) and of the first K (mixture_K)",
    )
    parser.add_argument(
        "--noise-features",
        type=int,
        default=0,
        help="append this many N(0, 1) features (unbounded); their known log-density is subtracted from log p",
    )
    parser.add_argument("--out", type=Path, required=True, help="JSON output file (not overwritten)")
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(f"{args.out} exists; choose another --out")
    try:
        recipes = [parse_recipe(r) for r in args.recipe]
    except InputError as exc:
        parser.error(f"--recipe: {exc}")
    torch.set_num_threads(1)

    d = load_frame(args.data)
    m, x = d["mjj"].to_numpy(np.float64), d[list(STANDARD_FEATURES)].to_numpy(np.float64)
    n_std, n_noise = x.shape[1], args.noise_features
    noise = np.random.default_rng([777, args.seed]).normal(size=(len(x), n_noise))
    feature_names = [*STANDARD_FEATURES, *(f"noise_{i}" for i in range(n_noise))]
    x = np.c_[x, noise]
    # the noise features' true log-density: subtracted, every recipe's mean log p is that of the standard
    # features, and the difference to a recipe without noise (``drop_noise=true``) is the KL the noise adds
    noise_log_density = -0.5 * (noise**2).sum(axis=1) - 0.5 * n_noise * np.log(2 * np.pi)
    window = window_of(args)
    rng = np.random.default_rng(args.seed)
    sb, sr = np.flatnonzero(window.in_sidebands(m)), np.flatnonzero(window.in_sr(m))
    train = rng.random(len(sb)) < args.train_fraction
    sets = {"train": sb[train], "sideband_held_out": sb[~train], "signal_region": sr}
    base = {**StudyConfig().flow, "bootstrap": False, "unbounded": tuple(range(n_std, n_std + n_noise))}
    pseudo = ("seed_offset", "drop_noise")  # recipe options that are not the flow's
    rows, logps = [], {}
    for name, options in recipes:
        t0 = time.time()
        flow_options = {k: v for k, v in options.items() if k not in pseudo}
        seed = args.seed + 1000 * options.get("seed_offset", 0)
        drop = bool(options.get("drop_noise", False))
        cols = slice(0, n_std) if drop else slice(None)
        if drop:
            flow_options["unbounded"] = ()
        flow = DensityEstimator(**{**base, **flow_options}, seed=seed).fit(x[sets["train"], cols], m[sets["train"]])
        logps[name] = {
            k: flow.log_prob(x[idx, cols], m[idx]) - (0.0 if drop else noise_log_density[idx])
            for k, idx in sets.items()
        }
        generated = flow.sample(np.repeat(m[sr], args.oversample), seed=args.seed + 1)
        rows.append(
            {
                "recipe": name,
                "options": options,
                "fit_s": time.time() - t0,
                "best_epochs": flow.best_epochs_,
                "tails": tail_ratios(x[sr, cols], generated, feature_names[cols]),
            }
        )
        print(f"{name}: trained in {rows[-1]['fit_s']:.0f} s, best epochs {flow.best_epochs_}", flush=True)
    if args.mixture:
        names = [name for name, _ in recipes]
        for size in range(2, len(names) + 1):  # the first 2, 3, ... recipes; "mixture" is all of them
            label = "mixture" if size == len(names) else f"mixture_{size}"
            logps[label] = {
                k: np.logaddexp.reduce([logps[n][k] for n in names[:size]], axis=0) - np.log(size) for k in sets
            }
            rows.append({"recipe": label, "options": {"of": names[:size]}})
    reference = recipes[0][0]
    for row in rows:
        for k in sets:
            lp, ref = logps[row["recipe"]][k], logps[reference][k]
            ok = np.isfinite(lp) & np.isfinite(ref)
            diff = lp[ok] - ref[ok]
            row[k] = {
                "mean_log_p": float(lp[ok].mean()),
                "minus_reference": float(diff.mean()),
                "standard_error": float(diff.std(ddof=1) / np.sqrt(ok.sum())),
                "outside_support": int((~np.isfinite(lp)).sum()),
            }
        line = "  ".join(
            f"{k}: {row[k]['mean_log_p']:.4f} ({row[k]['minus_reference']:+.4f} ± {row[k]['standard_error']:.4f})"
            for k in sets
        )
        print(f"{row['recipe']:>12}  {line}", flush=True)
        if "tails" in row:
            tails = "  ".join(f"{k}: {lo:.2f} / {hi:.2f}" for k, (lo, hi) in row["tails"].items())
            print(f"{'':>12}  data / generated below 0.2% / above 99.8%: {tails}", flush=True)
    result = {"settings": {k: str(v) for k, v in vars(args).items()}, "base": base, "recipes": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(args.out) as tmp:
        Path(tmp).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
