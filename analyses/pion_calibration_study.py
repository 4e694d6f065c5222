"""The pion calibration study of arXiv:2404.18992 with calinfer's simulator and the shipped pion surrogate.

Test showers: the full recipes of the embedded sets ``pions-test-10`` ... ``-90`` (``--n`` per energy, seeds 4110-4190,
never trained on: the flow saw ``pions-train`` seed 4001 and ``pions-val`` seed 4002). For each energy:

* **MLE** (flow I, ``likelihood="layers"``, energy range 5-100 GeV, the model's training range): mode of
  E_mle / E_true (bootstrapped KDE), resolution (68% half width around the mode / mode), coverage of the MINOS
  intervals with its binomial error, median per-shower sigma vs the observed spread, the fraction of fits with
  the CONVERGED flag and of multi-modal / open / at-boundary fits;
* **MSE regressions** (``calinfer.calibration.regression``) trained on 50k pions of a uniform (``pions-train``) and of
  a log-uniform (``pions-train-log``) prior in 5-100 GeV (``--mse-range 10 90``: freshly simulated in 10-90 GeV):
  mode and resolution, and the prior dependence (the shift of the mode between the two priors); with
  ``--model-log`` also the MLE of a flow trained on the log-uniform sample;
* a fit ``a / sqrt(E) (+) b`` of the resolutions (iminuit least squares with the bootstrap errors);
* **self-closure**: the same fits on layer energies drawn from the surrogate itself (the coverage when the model
  is exact);
* **the mode on more pions**: ``--extra-sets`` further sets of ``--n`` pions per energy (seeds 6000 + 100 k + E,
  never trained on) beside the embedded test set; the KDE mode of the pooled sets and the set-to-set spread of the
  single-set modes (the bootstrap error of a KDE mode understates how much it moves between independent samples
  when the distribution is flat-topped);
* **coverage-calibrated intervals** (:class:`calinfer.calibration.IntervalLevel`): the Delta(-ln L) level whose
  intervals cover 68.3% of the surrogate's own showers (``--level-n`` draws at each of 10 energies, seed 101,
  independent of the self-closure draws), and the coverage of those intervals on the test pions and on the
  self-closure draws;
* **the fitter on hard likelihoods**: for ``--dense-n`` showers (half at random, half with a first interaction deeper
  than 2 lambda_I, whose likelihoods are broad and skewed) a dense scan of -ln L (``--dense-points`` in ln E over the
  range): its global minimum, Delta(-ln L) = 0.5 crossings, open sides and multi-modality (same definition as the
  fitter) against the fitter's E_mle, E_lo, E_hi and status flags, and the coverage of both kinds of interval.

    python analyses/pion_calibration_study.py --out-dir runs/pion_calibration_study

Writes ``summary.json``, ``table.md`` and plots (``mode_vs_energy.png``, ``resolution_vs_energy.png``,
``coverage_vs_energy.png``, ``pulls.png``, ``dense_scan.png``, ``likelihood_examples.png``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from iminuit import Minuit
from iminuit.cost import LeastSquares

from calinfer import datasets
from calinfer.calibration import Calibrator, IntervalLevel, Status, train_regressor
from calinfer.calibration.metrics import coverage, pulls, ratio_summary, summarize_by_energy
from calinfer.showers import Showers
from calinfer.simulation import simulate_pions
from calinfer.surrogate import load_model

ENERGIES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
PUBLISHED = {"mle_resolution": {10: 0.15, 90: 0.07}, "mse_uniform_mode_10": 0.962, "mse_log_mode_10": 0.958,
             "mse_resolution_90": 0.113, "mle_worst_mode": 0.990}
log = logging.getLogger("pion_calibration_study")


def resolution_fit(energies: np.ndarray, res: np.ndarray, err: np.ndarray) -> dict[str, float]:
    """Least-squares fit of ``a / sqrt(E) (+) b`` (iminuit); errors floored at 2% of the value."""

    def model(e: np.ndarray, a: float, b: float) -> np.ndarray:
        return np.sqrt(a**2 / e + b**2)

    err = np.maximum(err, 0.02 * res)
    m = Minuit(LeastSquares(energies, res, err, model), a=0.5, b=0.05)
    m.limits["a"] = (0, 5)
    m.limits["b"] = (0, 1)
    m.migrad()
    return {"a": float(m.values["a"]), "b": float(m.values["b"]), "a_err": float(m.errors["a"]),
            "b_err": float(m.errors["b"]), "chi2_ndf": float(m.fval / max(1, len(energies) - 2)),
            "valid": bool(m.valid)}


def dense_reference(u: np.ndarray, y: np.ndarray, delta: float) -> dict[str, np.ndarray]:
    """From -ln L on a dense ln E grid ``u`` (rows ``y``): global minimum (parabolic vertex), the 0.5 crossings
    (linear interpolation; the range edge when open), open sides, and multi-modality (a second local minimum at most
    ``delta`` above the best, separated from it by a barrier of at least 0.5)."""
    n = len(y)
    best = np.argmin(y, axis=1)
    u_min = u[best].copy()
    y_min = y[np.arange(n), best].copy()
    lo, hi = np.empty(n), np.empty(n)
    open_lo, open_hi, multi = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool)
    h = u[1] - u[0]
    for i in range(n):
        row, b = y[i], best[i]
        if 0 < b < len(u) - 1:
            y0, y1, y2 = row[b - 1], row[b], row[b + 1]
            den = y0 - 2 * y1 + y2
            if den > 0:
                shift = 0.5 * (y0 - y2) / den
                u_min[i] = u[b] + shift * h
                y_min[i] = y1 - 0.25 * (y0 - y2) * shift
        level = y_min[i] + 0.5
        left = np.flatnonzero(row[:b] >= level)
        if left.size:
            j = left[-1]
            lo[i] = u[j] + (level - row[j]) / (row[j + 1] - row[j]) * h
        else:
            lo[i], open_lo[i] = u[0], True
        right = np.flatnonzero(row[b + 1:] >= level)
        if right.size:
            j = b + 1 + right[0]
            hi[i] = u[j - 1] + (level - row[j - 1]) / (row[j] - row[j - 1]) * h
        else:
            hi[i], open_hi[i] = u[-1], True
        interior = np.flatnonzero((row[1:-1] < row[:-2]) & (row[1:-1] <= row[2:])) + 1
        for j in interior:
            if j == b or row[j] > row[b] + delta:
                continue
            a, c = sorted((j, b))
            if row[a:c + 1].max() - max(row[j], row[b]) >= 0.5:
                multi[i] = True
                break
    return {"e_mle": np.exp(u_min), "e_lo": np.exp(lo), "e_hi": np.exp(hi), "open_lo": open_lo, "open_hi": open_hi,
            "multimodal": multi, "nll": y_min}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default="runs/pion_calibration_study")
    parser.add_argument("--model", default="pions", help="model directory or shipped name (default: pions)")
    parser.add_argument("--model-log", default=None, help="flow trained on pions-train-log (analyses/train_pions.py "
                        "--prior log-uniform), for the MLE prior dependence")
    parser.add_argument("--n", type=int, default=1000, help="test pions per energy (at most 2000, the recipe)")
    parser.add_argument("--n-train", type=int, default=50_000, help="training pions of each MSE regression")
    parser.add_argument("--dense-n", type=int, default=400)
    parser.add_argument("--dense-points", type=int, default=1500)
    parser.add_argument("--mse-range", nargs=2, type=float, default=None, metavar=("LO", "HI"),
                        help="train the MSE regressions on --n-train pions simulated in [LO, HI] GeV (uniform: seed "
                        "4301, log-uniform: 4302) instead of the embedded 5-100 GeV training sets: the published "
                        "study's setting, where the test energies reach the prior's edges")
    parser.add_argument("--mse-from", default=None, help="take the MSE regressions (which do not depend on the flow) "
                        "from this earlier summary.json of the same --n and --n-train instead of retraining them")
    parser.add_argument("--extra-sets", type=int, default=3, help="further test sets of --n pions per energy for "
                        "the pooled mode and its set-to-set spread")
    parser.add_argument("--level-n", type=int, default=2000, help="surrogate draws per energy of the "
                        "coverage-calibrated interval level")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--mle-log-only", action="store_true", help="add the --model-log MLE to an existing "
                        "summary.json in --out-dir (same --n) instead of rerunning the study")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    tests = [datasets.regenerate(f"pions-test-{e}", n=args.n) for e in ENERGIES]
    test = Showers.concatenate(tests)
    e_true = test.incident_energy
    depth = np.concatenate([t.extra["interaction_depth_lambda"] for t in tests])
    layers = test.layer_energies()
    log.info("%d test pions simulated (%.0f s)", len(test), time.time() - t0)
    if args.mle_log_only:
        _add_mle_log(args, layers, e_true, out)
        return
    model = load_model(args.model)

    calibrator = Calibrator(model, likelihood="layers", workers=args.workers)
    t1 = time.time()
    res = calibrator.fit(layers)
    fit_seconds = time.time() - t1
    log.info("MLE fits: %.0f s (%.0f showers/s), energy range %s", fit_seconds, len(test) / fit_seconds,
             calibrator.energy_range)
    mle_rows = summarize_by_energy(e_true, res.e_mle, res.e_lo, res.e_hi)
    for row in mle_rows:
        sel = e_true == row["energy"]
        row["converged"] = float(np.mean(res.has(Status.CONVERGED)[sel]))
        row["multimodal"] = float(np.mean(res.has(Status.MULTIMODAL)[sel]))
        row["open"] = float(np.mean(res.has(Status.OPEN_LOW | Status.OPEN_HIGH)[sel]))
        row["at_boundary"] = float(np.mean(res.has(Status.AT_BOUNDARY)[sel]))

    _pooled_modes(calibrator, mle_rows, res, e_true, args)
    mse = _earlier_mse(args) if args.mse_from else {}
    for name, dataset in () if mse else (("uniform", "pions-train"), ("log-uniform", "pions-train-log")):
        t2 = time.time()
        if args.mse_range:
            train = simulate_pions(args.n_train, energy_range=tuple(args.mse_range), prior=name,
                                   seed=4301 if name == "uniform" else 4302)
        else:
            train = datasets.regenerate(dataset, n=args.n_train)
        reg = train_regressor(train, seed=0)
        pred = reg.predict(layers)
        mse[name] = summarize_by_energy(e_true, pred)
        log.info("MSE regression (%s prior): %.0f s", name, time.time() - t2)
    mle_log = None
    if args.model_log:
        res_log = Calibrator(load_model(args.model_log), likelihood="layers", workers=args.workers).fit(layers)
        mle_log = summarize_by_energy(e_true, res_log.e_mle, res_log.e_lo, res_log.e_hi)

    energies = np.array(ENERGIES, dtype=float)
    fits = {"mle": resolution_fit(energies, np.array([r["resolution"] for r in mle_rows]),
                                  np.array([r["resolution_err"] for r in mle_rows]))}
    for name, rows in mse.items():
        fits[f"mse_{name}"] = resolution_fit(energies, np.array([r["resolution"] for r in rows]),
                                             np.array([r["resolution_err"] for r in rows]))
    if mle_log:
        fits["mle_log-uniform"] = resolution_fit(energies, np.array([r["resolution"] for r in mle_log]),
                                                 np.array([r["resolution_err"] for r in mle_log]))

    dense = _dense_check(calibrator, layers, e_true, depth, res, args)
    t3 = time.time()
    level = IntervalLevel.fit(model, n_per_energy=args.level_n, seed=101, workers=args.workers)
    log.info("coverage-calibrated level %s (%.0f s)", np.round(level.levels, 3).tolist(), time.time() - t3)
    calibrated = Calibrator(model, likelihood="layers", workers=args.workers, interval_level=level)
    res_cal = calibrated.fit(layers)
    for row, cal_row in zip(mle_rows, summarize_by_energy(e_true, res_cal.e_mle, res_cal.e_lo, res_cal.e_hi),
                            strict=True):
        row["coverage_calibrated"], row["coverage_calibrated_err"] = cal_row["coverage"], cal_row["coverage_err"]
        row["level"] = float(level(row["energy"]))
        row["converged_calibrated"] = float(np.mean(res_cal.has(Status.CONVERGED)[e_true == row["energy"]]))
    closure = _self_closure(model, calibrator, args.n)
    closure["calibrated"] = _self_closure(model, calibrated, args.n)
    summary = {
        "command": "python analyses/pion_calibration_study.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
        "model": str(args.model),
        "energy_range": list(calibrator.energy_range),
        "mse_range": args.mse_range or [5.0, 100.0],
        "n_per_energy": args.n,
        "fit_seconds": fit_seconds,
        "mle": mle_rows,
        "mse": mse,
        "mle_log_uniform": mle_log,
        "resolution_fits": fits,
        "interval_level": level.to_dict(),
        "overall": {
            "coverage": coverage(res.e_lo, res.e_hi, e_true),
            "coverage_calibrated": coverage(res_cal.e_lo, res_cal.e_hi, e_true),
            "converged_calibrated": float(np.mean(res_cal.has(Status.CONVERGED))),
            "converged": float(np.mean(res.has(Status.CONVERGED))),
            "multimodal": float(np.mean(res.has(Status.MULTIMODAL))),
            "open": float(np.mean(res.has(Status.OPEN_LOW | Status.OPEN_HIGH))),
            "at_boundary": float(np.mean(res.has(Status.AT_BOUNDARY))),
            "worst_mode_deviation": float(max(abs(r["mode"] - 1) for r in mle_rows)),
            "worst_pooled_mode_deviation": float(max(abs(r["mode_pooled"] - 1) for r in mle_rows)),
        },
        "dense_scan": dense["summary"],
        "self_closure": closure,
        "published": PUBLISHED,
        "minutes": (time.time() - t0) / 60,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    _table(summary, out / "table.md")
    _plots(summary, res, e_true, dense, out)
    log.info("done in %.1f min; %s", summary["minutes"], out)
    print((out / "table.md").read_text())


def _pooled_modes(calibrator: Calibrator, rows: list[dict], res, e_true: np.ndarray, args) -> None:
    """Add to each row the KDE mode of E_mle / E over the test set plus ``--extra-sets`` fresh sets of ``--n``
    pions, and the standard deviation of the single-set modes."""
    for row in rows:
        e = row["energy"]
        ratios = [res.e_mle[e_true == e] / e]
        for k in range(1, args.extra_sets + 1):
            more = simulate_pions(args.n, energy=float(e), seed=6000 + 100 * k + int(e))
            ratios.append(calibrator.fit(more.layer_energies()).e_mle / e)
        modes = [ratio_summary(r, np.ones(len(r)))["mode"] for r in ratios]
        pooled = ratio_summary(np.concatenate(ratios), np.ones(sum(len(r) for r in ratios)))
        row.update(mode_pooled=pooled["mode"], mode_pooled_err=pooled["mode_err"], median_pooled=pooled["median"],
                   n_pooled=int(pooled["n"]), mode_set_spread=float(np.std(modes, ddof=1)) if len(modes) > 1 else 0.0,
                   mode_sets=modes)


def _self_closure(model, calibrator: Calibrator, n: int, seed: int = 7) -> dict:
    """Coverage of the intervals on the surrogate's own layer energies (``n`` per energy): what Delta(-ln L) = 0.5
    gives when the model is exactly right, so that the coverage of simulated pions can be split into a part
    from the likelihood's shape (a single shower is far from the asymptotic regime) and one from mismodelling."""
    energies = np.repeat(np.array(ENERGIES, dtype=float), n)
    layers = np.clip(model.sample_layers(energies, seed=seed), 0.0, None)
    fit = calibrator.fit(layers)
    rows = summarize_by_energy(energies, fit.e_mle, fit.e_lo, fit.e_hi)
    return {"per_energy": {str(r["energy"]): {"coverage": (r["coverage"], r["coverage_err"]), "mode": r["mode"],
                                              "mode_err": r["mode_err"]} for r in rows},
            "n_per_energy": n, "coverage": coverage(fit.e_lo, fit.e_hi, energies)}


def _earlier_mse(args: argparse.Namespace) -> dict:
    """The MSE rows of an earlier run with the same test and training sizes (same seeds: the same regressions)."""
    earlier = json.loads(Path(args.mse_from).read_text())
    same_range = earlier.get("mse_range", [5.0, 100.0]) == (args.mse_range or [5.0, 100.0])
    if earlier["n_per_energy"] != args.n or f"--n-train {args.n_train} " not in earlier["command"] + " ":
        raise SystemExit(f"Error: {args.mse_from}: made with other --n / --n-train than this run")
    if not same_range:
        raise SystemExit(f"Error: {args.mse_from}: its MSE regressions were trained on another --mse-range")
    log.info("MSE regressions taken from %s", args.mse_from)
    return earlier["mse"]


def _add_mle_log(args: argparse.Namespace, layers: np.ndarray, e_true: np.ndarray, out: Path) -> None:
    """The MLE of the log-uniform-prior flow, added to an existing ``summary.json`` (table and summary plots)."""
    if not args.model_log:
        raise SystemExit("--mle-log-only needs --model-log")
    summary = json.loads((out / "summary.json").read_text())
    if summary["n_per_energy"] != args.n:
        raise SystemExit(f"{out / 'summary.json'} has {summary['n_per_energy']} showers per energy, not --n {args.n}")
    res_log = Calibrator(load_model(args.model_log), likelihood="layers", workers=args.workers).fit(layers)
    rows = summarize_by_energy(e_true, res_log.e_mle, res_log.e_lo, res_log.e_hi)
    for row in rows:
        row["converged"] = float(np.mean(res_log.has(Status.CONVERGED)[e_true == row["energy"]]))
    summary["mle_log_uniform"] = rows
    summary["model_log"] = str(args.model_log)
    summary["resolution_fits"]["mle_log-uniform"] = resolution_fit(
        np.array(ENERGIES, dtype=float), np.array([r["resolution"] for r in rows]),
        np.array([r["resolution_err"] for r in rows]))
    summary["command_mle_log"] = (f"python analyses/pion_calibration_study.py --mle-log-only --model-log "
                                  f"{args.model_log} --n {args.n} --out-dir {args.out_dir}")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    _table(summary, out / "table.md")
    _summary_plots(summary, out)
    print((out / "table.md").read_text())


def _dense_check(calibrator: Calibrator, layers: np.ndarray, e_true: np.ndarray, depth: np.ndarray, res, args
                 ) -> dict:
    """Fitter vs a dense scan of -ln L on random and on deep-interacting (broad, skewed likelihood) showers."""
    rng = np.random.default_rng(12345)
    n_half = args.dense_n // 2
    deep = np.flatnonzero(depth > 2.0)
    pick_deep = rng.choice(deep, size=min(n_half, deep.size), replace=False)
    rest = np.setdiff1d(np.arange(len(e_true)), pick_deep)
    pick = np.concatenate([rng.choice(rest, size=args.dense_n - pick_deep.size, replace=False), pick_deep])
    kind = np.array(["random"] * (len(pick) - pick_deep.size) + ["deep"] * pick_deep.size)
    lo_e, hi_e = calibrator.energy_range
    u = np.linspace(math.log(lo_e), math.log(hi_e), args.dense_points)
    t = time.time()
    y = np.concatenate([calibrator.nll(layers[pick[a:a + 20]], np.exp(u)[None, :]) for a in range(0, len(pick), 20)])
    ref = dense_reference(u, y, calibrator.multimodal_delta)
    log.info("dense scan of %d showers x %d points: %.0f s", len(pick), len(u), time.time() - t)
    fit = res[pick]
    truth = e_true[pick]
    sigma = np.maximum(0.5 * (ref["e_hi"] - ref["e_lo"]), 1e-9)
    d_mle = (fit.e_mle - ref["e_mle"]) / sigma
    d_lo = (fit.e_lo - ref["e_lo"]) / sigma
    d_hi = (fit.e_hi - ref["e_hi"]) / sigma
    asym = (ref["e_hi"] - ref["e_mle"]) / np.maximum(ref["e_mle"] - ref["e_lo"], 1e-9)
    mm_fit = fit.has(Status.MULTIMODAL)
    open_fit_lo, open_fit_hi = fit.has(Status.OPEN_LOW), fit.has(Status.OPEN_HIGH)
    summary: dict = {"n": len(pick), "points": len(u)}
    for name, sel in (("all", np.ones(len(pick), bool)), ("random", kind == "random"), ("deep", kind == "deep")):
        s = {
            "n": int(sel.sum()),
            "mle_shift_over_sigma_max": float(np.max(np.abs(d_mle[sel]))),
            "mle_shift_over_sigma_median": float(np.median(np.abs(d_mle[sel]))),
            "lo_shift_over_sigma_p99": float(np.quantile(np.abs(d_lo[sel]), 0.99)),
            "hi_shift_over_sigma_p99": float(np.quantile(np.abs(d_hi[sel]), 0.99)),
            "same_minimum": float(np.mean(np.abs(d_mle[sel]) < 0.1)),
            "coverage_fit": coverage(fit.e_lo[sel], fit.e_hi[sel], truth[sel]),
            "coverage_dense": coverage(ref["e_lo"][sel], ref["e_hi"][sel], truth[sel]),
            "converged": float(np.mean(fit.has(Status.CONVERGED)[sel])),
            "multimodal_dense": int(ref["multimodal"][sel].sum()),
            "multimodal_fit": int(mm_fit[sel].sum()),
            "multimodal_agree": float(np.mean(ref["multimodal"][sel] == mm_fit[sel])),
            "open_dense": int((ref["open_lo"] | ref["open_hi"])[sel].sum()),
            "open_agree": float(np.mean((ref["open_lo"][sel] == open_fit_lo[sel])
                                        & (ref["open_hi"][sel] == open_fit_hi[sel]))),
            "median_rel_width": float(np.median(sigma[sel] / ref["e_mle"][sel])),
            "asymmetry_p10_p90": [float(v) for v in np.quantile(asym[sel], [0.1, 0.9])],
        }
        summary[name] = s
    skewed = (asym > 1.25) | (asym < 0.8)
    if skewed.sum() >= 10:
        summary["skewed"] = {"n": int(skewed.sum()), "coverage_fit": coverage(fit.e_lo[skewed], fit.e_hi[skewed],
                                                                              truth[skewed])}
    worst = np.argsort(-np.abs(d_mle))[:10]
    summary["worst"] = [{"index": int(pick[i]), "e_true": float(truth[i]), "fit": [float(fit.e_mle[i]),
                         float(fit.e_lo[i]), float(fit.e_hi[i])], "dense": [float(ref["e_mle"][i]),
                         float(ref["e_lo"][i]), float(ref["e_hi"][i])], "status": int(fit.status[i]),
                         "dense_multimodal": bool(ref["multimodal"][i])} for i in worst]
    return {"summary": summary, "u": u, "y": y, "ref": ref, "fit": fit, "truth": truth, "kind": kind}


def _table(s: dict, path: Path) -> None:
    lines = [
        f"| E_true (GeV) | MLE mode | MLE mode, {s['mle'][0]['n_pooled']} pions (set-to-set spread) | MLE median | "
        "MLE resolution | MLE coverage, Delta = 0.5 | calibrated level | coverage, "
        "calibrated | sigma / spread | converged | multi-modal | "
        "MSE uniform: mode | resolution | MSE log-uniform: mode | resolution | MSE prior shift |"
        + (" MLE log-uniform: mode | MLE prior shift |" if s["mle_log_uniform"] else ""),
        "|---" * 16 + "|" + ("---|---|" if s["mle_log_uniform"] else ""),
    ]
    for k, r in enumerate(s["mle"]):
        mu, ml = s["mse"]["uniform"][k], s["mse"]["log-uniform"][k]
        line = (f"| {r['energy']:.0f} | {r['mode']:.4f} ± {r['mode_err']:.4f} | {r['mode_pooled']:.4f} "
                f"({r['mode_set_spread']:.4f}) | {r['median_pooled']:.4f} | {100 * r['resolution']:.1f}% | "
                f"{r['coverage']:.3f} ± {r['coverage_err']:.3f} | {r['level']:.3f} | "
                f"{r['coverage_calibrated']:.3f} ± {r['coverage_calibrated_err']:.3f} | {r['ratio']:.2f} | "
                f"{r['converged']:.4f} | "
                f"{r['multimodal']:.3f} | {mu['mode']:.4f} | {100 * mu['resolution']:.1f}% | {ml['mode']:.4f} | "
                f"{100 * ml['resolution']:.1f}% | {ml['mode'] - mu['mode']:+.4f} |")
        if s["mle_log_uniform"]:
            g = s["mle_log_uniform"][k]
            line += f" {g['mode']:.4f} | {g['mode'] - r['mode']:+.4f} |"
        lines.append(line)
    o = s["overall"]
    lines.append("")
    lines.append(f"Overall: coverage {o['coverage'][0]:.3f} ± {o['coverage'][1]:.3f} (Delta = 0.5), "
                 f"{o['coverage_calibrated'][0]:.3f} ± {o['coverage_calibrated'][1]:.3f} (calibrated level; converged "
                 f"{o['converged_calibrated']:.4f}), converged {o['converged']:.4f}, "
                 f"multi-modal {o['multimodal']:.4f}, open {o['open']:.4f}, at boundary {o['at_boundary']:.4f}; "
                 f"largest |mode - 1| {o['worst_mode_deviation']:.4f} (pooled sets: "
                 f"{o['worst_pooled_mode_deviation']:.4f}); {s['fit_seconds']:.0f} s of fits.")
    for name, f in s["resolution_fits"].items():
        lines.append(f"Resolution fit {name}: ({100 * f['a']:.1f} ± {100 * f['a_err']:.1f})%/sqrt(E) (+) "
                     f"({100 * f['b']:.2f} ± {100 * f['b_err']:.2f})%, chi2/ndf {f['chi2_ndf']:.2f}")
    c = s["self_closure"]
    lines.append("")
    lines.append(f"Self-closure (intervals on {c['n_per_energy']} draws of the surrogate itself per energy): "
                 f"coverage {c['coverage'][0]:.3f} ± {c['coverage'][1]:.3f}; per energy "
                 + ", ".join(f"{float(e):.0f} GeV {v['coverage'][0]:.3f}" for e, v in c["per_energy"].items())
                 + "; mode of E_mle / E " + ", ".join(f"{v['mode']:.4f} ± {v['mode_err']:.4f}"
                                                     for v in c["per_energy"].values()) + ".")
    cc = c["calibrated"]
    lines.append(f"Self-closure with the calibrated level (the level's draws are independent of these): coverage "
                 f"{cc['coverage'][0]:.3f} ± {cc['coverage'][1]:.3f}; per energy "
                 + ", ".join(f"{float(e):.0f} GeV {v['coverage'][0]:.3f}" for e, v in cc["per_energy"].items()) + ".")
    d = s["dense_scan"]
    lines.append("")
    lines.append(f"Dense scan ({d['n']} showers x {d['points']} points in ln E):")
    lines.append("| showers | n | same minimum (<0.1 sigma) | max / median shift of E_mle (sigma) | 99% shift of "
                 "E_lo / E_hi (sigma) | coverage: fit | coverage: dense | multi-modal dense / fit / agree | "
                 "open dense / agree | converged | median rel. width |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in ("all", "random", "deep"):
        r = d[name]
        lines.append(f"| {name} | {r['n']} | {r['same_minimum']:.3f} | {r['mle_shift_over_sigma_max']:.3f} / "
                     f"{r['mle_shift_over_sigma_median']:.4f} | {r['lo_shift_over_sigma_p99']:.3f} / "
                     f"{r['hi_shift_over_sigma_p99']:.3f} | {r['coverage_fit'][0]:.3f} ± {r['coverage_fit'][1]:.3f} | "
                     f"{r['coverage_dense'][0]:.3f} | {r['multimodal_dense']} / {r['multimodal_fit']} / "
                     f"{r['multimodal_agree']:.3f} | {r['open_dense']} / {r['open_agree']:.3f} | {r['converged']:.3f} "
                     f"| {r['median_rel_width']:.3f} |")
    if "skewed" in d:
        sk = d["skewed"]
        lines.append(f"Skewed likelihoods (upper/lower half width > 1.25 or < 0.8): {sk['n']}, coverage "
                     f"{sk['coverage_fit'][0]:.3f} ± {sk['coverage_fit'][1]:.3f}")
    path.write_text("\n".join(lines) + "\n")


def _summary_plots(s: dict, out: Path) -> None:
    """Mode and resolution against the energy for every estimator in the summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e = np.array([r["energy"] for r in s["mle"]])
    series = [("MLE (flow I, uniform prior)", s["mle"], "o-"), ("MSE, uniform prior", s["mse"]["uniform"], "s--"),
              ("MSE, log-uniform prior", s["mse"]["log-uniform"], "^--")]
    if s["mle_log_uniform"]:
        series.append(("MLE (flow I, log-uniform prior)", s["mle_log_uniform"], "o:"))
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, rows, style in series:
        ax.errorbar(e, [r["mode"] for r in rows], [r["mode_err"] for r in rows], fmt=style, label=label, ms=4)
    ax.axhspan(0.99, 1.01, color="0.9")
    ax.axhline(1.0, color="k", lw=0.5)
    ax.set_xlabel("E_true (GeV)")
    ax.set_ylabel("mode of E_pred / E_true")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "mode_vs_energy.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    grid = np.linspace(8, 95, 100)
    for (label, rows, style), key in zip(series, ("mle", "mse_uniform", "mse_log-uniform", "mle_log-uniform"),
                                         strict=False):
        line = ax.errorbar(e, [r["resolution"] for r in rows], [r["resolution_err"] for r in rows], fmt=style[:2],
                           label=label, ms=4)
        f = s["resolution_fits"][key]
        ax.plot(grid, np.sqrt(f["a"] ** 2 / grid + f["b"] ** 2), "-", color=line[0].get_color(), lw=0.8)
    ax.plot([10, 90], [0.15, 0.07], "k*", label="published MLE (arXiv:2404.18992)")
    ax.set_xlabel("E_true (GeV)")
    ax.set_ylabel("relative resolution (68% half width)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "resolution_vs_energy.png", dpi=120)
    plt.close(fig)


def _plots(s: dict, res, e_true: np.ndarray, dense: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _summary_plots(s, out)
    e = np.array([r["energy"] for r in s["mle"]])

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.errorbar(e, [r["coverage"] for r in s["mle"]], [r["coverage_err"] for r in s["mle"]], fmt="o")
    ax.axhspan(0.683 - 0.03, 0.683 + 0.03, color="0.9")
    ax.axhline(0.683, color="k", lw=0.5)
    ax.set_xlabel("E_true (GeV)")
    ax.set_ylabel("coverage of [E_lo, E_hi]")
    fig.tight_layout()
    fig.savefig(out / "coverage_vs_energy.png", dpi=120)
    plt.close(fig)

    p = pulls(res.e_mle, res.e_lo, res.e_hi, e_true)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.hist(p[np.isfinite(p)], bins=80, range=(-4, 4), density=True, histtype="step", label="pulls")
    x = np.linspace(-4, 4, 200)
    ax.plot(x, np.exp(-x**2 / 2) / np.sqrt(2 * np.pi), label="N(0, 1)")
    ax.set_xlabel("(E_mle - E_true) / sigma (side of the truth)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "pulls.png", dpi=120)
    plt.close(fig)

    ref, fit = dense["ref"], dense["fit"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    deep = dense["kind"] == "deep"
    for sel, label in ((~deep, "random"), (deep, "deep first interaction")):
        axes[0].plot(ref["e_mle"][sel], fit.e_mle[sel], ".", ms=3, label=label)
        axes[1].plot(ref["e_hi"][sel] - ref["e_lo"][sel], fit.e_hi[sel] - fit.e_lo[sel], ".", ms=3, label=label)
    for ax, name in zip(axes, ("E_mle (GeV)", "interval width (GeV)"), strict=True):
        lim = ax.get_xlim()
        ax.plot(lim, lim, "k-", lw=0.5)
        ax.set_xlabel(f"dense scan: {name}")
        ax.set_ylabel(f"fitter: {name}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "dense_scan.png", dpi=120)
    plt.close(fig)

    width = (ref["e_hi"] - ref["e_lo"]) / ref["e_mle"]
    picks = [int(np.argmin(np.abs(width - np.median(width))))]
    if ref["multimodal"].any():
        picks.append(int(np.flatnonzero(ref["multimodal"])[0]))
    picks.append(int(np.argmax(width)))
    fig, axes = plt.subplots(1, len(picks), figsize=(4 * len(picks), 3.5))
    for ax, i in zip(np.atleast_1d(axes), picks, strict=True):
        y = dense["y"][i] - ref["nll"][i]
        ax.plot(np.exp(dense["u"]), y, "-", lw=1)
        ax.axvline(dense["truth"][i], color="g", ls=":", label="E_true")
        ax.axvline(fit.e_mle[i], color="r", label="fit E_mle")
        ax.axvspan(fit.e_lo[i], fit.e_hi[i], color="r", alpha=0.15, label="fit interval")
        ax.set_ylim(-0.5, 8)
        ax.set_xlabel("E (GeV)")
        ax.set_ylabel("Delta(-ln L)")
        ax.set_title(f"status {int(fit.status[i])}" + (", dense: multi-modal" if ref["multimodal"][i] else ""),
                     fontsize=8)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "likelihood_examples.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
