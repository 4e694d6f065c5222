"""Unsupervised anomaly detection of chi -> gamma gamma showers with the surrogate likelihood (arXiv:2312.11618).

Background: single photons, 1-100 GeV uniform, simulated here with a seed no embedded set uses (independent of
the surrogate's training and validation data) and rounded like the embedded sets. Signal: the embedded chi grid
(masses 5 MeV ... 5 GeV, decay distances 0.33 ... 1.44 m, E_chi = 50 GeV) and the late hadron-like showers.

Scores (higher = more anomalous):
  nll, layers, voxels  -log p(x | E_rec), E_rec = E_dep / lambda, lambda = median E_dep/E_inc fitted on the
                       photon training set; full surrogate, flow I (layer energies) only, flow II (voxels given
                       layer energies) only
  profile              -max_E log p(x | E) (no lambda; located with calinfer.calibration.profile_full by default)
  nll-mixed,           the same with the mixed discrete/continuous likelihood: an empty voxel counts with its
  profile-mixed        probability, not with the dequantized density (~ +11.5 per empty voxel), which otherwise
                       makes sparse showers look likely (identical to calinfer.anomaly's mixed=True scores)
  nll-tail,            energy-flat: -ln P(s(X) >= s(x) | E) of the base score s among the surrogate's own showers
  nll-mixed-tail       at the shower's energy E_rec (calinfer.anomaly.TailScore, calibrated on --tail-energies x
                       --tail-per-energy surrogate showers with the read-out threshold of the training photons)
  depth, width         physics variables (longitudinal centroid, transverse width)
  response             |ln(E_dep / (lambda E_inc))|, uses the true incident energy (test-beam knowledge)
  autoencoder          reconstruction error of a small autoencoder trained on photons
  supervised           MLP on high-level features trained on labelled chi vs photons (upper bound), k-fold:
                       every shower is scored by a classifier that never saw it

Output (``--out``): ``results.json`` (every metric with bootstrap intervals), ``table.md`` (maximum SIC and
AUC per point and score, and the energy flatness of every score: the AUC between the high- and low-energy halves
of the background, 1/2 for a score that does not see the energy, with its null standard error), ``sic_*.pdf`` /
``roc_*.pdf`` for a few points, ``scores_*.pdf`` (distributions),
``scores.npz`` (every per-shower score). The maximum SIC is restricted to cuts keeping at least
``--min-background`` background showers, so it cannot exceed sqrt(N_background / min_background) (the "cap"
in the table); a value at the cap means the background sample is too small to resolve it.

    python analyses/anomaly_study.py --out results/anomaly_study            # shipped default surrogate
    python analyses/anomaly_study.py --model /path/to/surrogate --quick     # a fast smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from pathlib import Path

import numpy as np

from calinfer import datasets, metrics, plotting
from calinfer.anomaly import (
    AutoencoderScore,
    LikelihoodScore,
    PhysicsScore,
    ProfileScore,
    SupervisedClassifier,
    TailScore,
    dequantization_width_of,
)
from calinfer.io import atomic_output
from calinfer.showers import Showers

SCORES = (
    "nll",
    "profile",
    "layers",
    "voxels",
    "nll-mixed",
    "profile-mixed",
    "nll-tail",
    "nll-mixed-tail",
    "depth",
    "width",
    "response",
    "autoencoder",
    "supervised",
)
UNSUPERVISED = (
    "nll", "profile", "layers", "voxels", "nll-mixed", "profile-mixed", "nll-tail", "nll-mixed-tail", "depth",
    "width", "autoencoder",
)  # fmt: skip
TAIL_BASES = {"nll-tail": "nll", "nll-mixed-tail": "nll-mixed"}
BACKGROUND_SEED = 4001  # embedded sets use 1001-1999 (photons), 2001-2999 (chi), 3001 (hadron-like)
CURVE_POINTS = ("chi-m5-d0.33", "chi-m0.5-d0.33", "chi-m0.005-d0.66", "chi-m0.05-d1.44", "hadron-late")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="surrogate directory (default: the shipped pretrained surrogate)")
    p.add_argument("--out", default="results/anomaly_study", help="output directory")
    p.add_argument("--n-background", type=int, default=10_000, help="independent photon background showers")
    p.add_argument("--n-train", type=int, default=20_000, help="photon training showers for lambda and baselines")
    p.add_argument("--n-grid", type=int, default=32, help="coarse energy grid of the profile score")
    p.add_argument(
        "--profile-locate",
        default="calibration",
        choices=("calibration", "full", "layers"),
        help="how the profile score finds the maximum: the calibration's fast full-likelihood minimum guarded by "
        "the flow-I maximum (about 9 flow-II evaluations per shower), the --n-grid grid with zoom on the full "
        "density (n_grid + 12), or flow I only then 5 full evaluations",
    )
    p.add_argument("--min-background", type=float, default=50.0, help="background floor of the maximum SIC")
    p.add_argument("--bootstrap", type=int, default=50, help="bootstrap replicas for the intervals")
    p.add_argument("--folds", type=int, default=3, help="folds of the supervised classifier")
    p.add_argument("--ae-epochs", type=int, default=30)
    p.add_argument("--chunk", type=int, default=2000, help="showers scored at once (bounded memory)")
    p.add_argument("--tail-energies", type=int, default=16, help="grid energies of the -tail calibration")
    p.add_argument("--tail-per-energy", type=int, default=400, help="surrogate showers per -tail grid energy")
    p.add_argument("--device", help="torch device (default: GPU when present)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--points", nargs="+", help="only these signal sets (default: the whole chi grid + hadron-late)")
    p.add_argument("--quick", action="store_true", help="small samples and few replicas (a smoke run, minutes)")
    args = p.parse_args(argv)
    if args.quick:
        args.n_background, args.n_train = min(args.n_background, 2000), min(args.n_train, 5000)
        args.n_grid, args.bootstrap, args.ae_epochs = min(args.n_grid, 16), min(args.bootstrap, 10), 5
        args.tail_energies, args.tail_per_energy = min(args.tail_energies, 8), min(args.tail_per_energy, 250)
        args.min_background = min(args.min_background, 20.0)
    return args


def log(msg: str, t0: float) -> None:
    print(f"[{time.time() - t0:7.1f} s] {msg}", flush=True)


def signal_points() -> list[tuple[str, dict]]:
    """Embedded anomaly sets with their mass (GeV) and decay distance (m) where they have one."""
    out = []
    for name in datasets.names():
        m = re.fullmatch(r"chi-m([0-9.]+)-d([0-9.]+)", name)
        if m:
            out.append((name, {"mass_gev": float(m.group(1)), "distance_m": float(m.group(2))}))
        elif name == "hadron-late":
            out.append((name, {"mass_gev": None, "distance_m": None}))
    return sorted(out, key=lambda x: (x[1]["mass_gev"] is None, x[1]["mass_gev"] or 0, x[1]["distance_m"] or 0))


def in_chunks(score, showers: Showers, chunk: int) -> dict[str, np.ndarray]:
    parts = [score.evaluate(showers[i : i + chunk]) for i in range(0, len(showers), chunk)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def unsupervised_scores(showers: Showers, models: dict, chunk: int, width: float) -> dict[str, np.ndarray]:
    """Every unsupervised score of ``showers`` (the nll pass also yields the per-part scores; the mixed scores
    shift nll and profile by ``n_empty * ln(width)``, exactly as ``mixed=True`` does; the -tail scores apply
    their calibrated tables to the base scores, as ``TailScore.transform`` does)."""
    nll = in_chunks(models["nll"], showers, chunk)
    prof = in_chunks(models["profile"], showers, chunk)
    shift = np.count_nonzero(showers.voxels <= 0, axis=1) * np.log(width)
    out = {
        "nll": nll["score"],
        "layers": -nll["log_prob_layers"],
        "voxels": -nll["log_prob_voxels"],
        "profile": prof["score"],
        "nll-mixed": nll["score"] - shift,
        "profile-mixed": prof["score"] - shift,
        "e_rec": nll["e_rec"],
        "e_hat": prof["e_hat"],
        "profile_at_edge": prof["at_edge"],
    }
    for name, base in TAIL_BASES.items():
        out[name] = models[name].transform({"score": out[base], "e_rec": nll["e_rec"]})["score"]
    for name in ("depth", "width", "response", "autoencoder"):
        out[name] = in_chunks(models[name], showers, chunk)["score"]
    return out


def supervised_scores(
    signal: Showers, train_bkg: Showers, eval_bkg: Showers, folds: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """k-fold supervised scores: fold k's classifier trains on the other signal folds and the photon training
    showers, and scores signal fold k and the background showers assigned to fold k (never seen by it)."""
    rng = np.random.default_rng(seed)
    sig_fold = rng.permutation(len(signal)) % folds
    bkg_fold = rng.permutation(len(eval_bkg)) % folds
    s_out, b_out = np.empty(len(signal)), np.empty(len(eval_bkg))
    for k in range(folds):
        clf = SupervisedClassifier(seed=seed + k).fit(signal[np.flatnonzero(sig_fold != k)], train_bkg)
        s_out[sig_fold == k] = clf.evaluate(signal[np.flatnonzero(sig_fold == k)])["score"]
        b_out[bkg_fold == k] = clf.evaluate(eval_bkg[np.flatnonzero(bkg_fold == k)])["score"]
    return s_out, b_out


def json_safe(value):
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else (None if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    if isinstance(value, np.integer):
        return int(value)
    return value


def energy_flatness(scores: dict, energies: np.ndarray, names) -> dict:
    """AUC between the high- and low-energy halves of the background per score (1/2: the score does not see the
    energy), with the Mann-Whitney null standard error sqrt((n1 + n2 + 1) / (12 n1 n2))."""
    high = energies > np.median(energies)
    n1, n2 = int(high.sum()), int((~high).sum())
    se = math.sqrt((n1 + n2 + 1) / (12 * n1 * n2))
    return {s: {"auc_high_vs_low": metrics.auc(scores[s][high], scores[s][~high]), "null_se": se,
                "n_high": n1, "n_low": n2} for s in names}  # fmt: skip


def label(name: str, info: dict) -> str:
    if info["mass_gev"] is None:
        return name
    m = info["mass_gev"]
    mass = f"{m * 1000:g} MeV" if m < 1 else f"{m:g} GeV"
    return f"{mass}, {info['distance_m']:.2f} m"


def markdown(results: dict) -> str:
    cap = results["sic_cap"]
    lines = [
        "# Shower anomaly detection: maximum SIC and AUC",
        "",
        f"Background: {results['config']['n_background']} independent photons (1-100 GeV); signal: "
        f"{results['config']['n_signal_per_point']} showers per point, E_chi = 50 GeV. Maximum SIC over cuts keeping "
        f">= {results['config']['min_background']:g} background showers, so at most {cap:.1f} (cap). "
        "`*`: within 5% of the cap (the background sample limits the value); **bold AUC**: below 0.5, the score "
        "ranks the signal as *more normal* than the background. ± is the bootstrap standard deviation. "
        f"lambda = {results['energy_scale']['value']:.4f}. `response` uses the true incident energy; `supervised` "
        "is trained on labelled signal (upper bound); `-mixed`: empty voxels counted with their probability instead of "
        "the dequantized density.",
        "",
    ]
    scores = results["config"]["scores"]
    for metric, title in (("max_sic", "Maximum SIC"), ("auc", "AUC")):
        lines += [f"## {title}", "", "| point | " + " | ".join(scores) + " |", "|---" * (len(scores) + 1) + "|"]
        for point in results["points"].values():
            cells = []
            for s in scores:
                m = point["scores"][s]
                v = m[metric]
                std = m.get("bootstrap", {}).get(metric, {}).get("std")
                txt = f"{v:.1f}" if metric == "max_sic" else f"{v:.3f}"
                if std is not None and math.isfinite(std):
                    txt += f" ± {std:.1f}" if metric == "max_sic" else f" ± {std:.3f}"
                if metric == "max_sic" and v >= 0.95 * cap:
                    txt += "*"
                if metric == "auc" and v < 0.5:
                    txt = f"**{txt}**"
                cells.append(txt)
            lines.append(f"| {point['label']} | " + " | ".join(cells) + " |")
        lines.append("")
    below = [
        f"{p['label']}: {s} (AUC {p['scores'][s]['auc']:.3f})"
        for p in results["points"].values()
        for s in scores
        if p["scores"][s]["auc"] < 0.5
    ]
    flat = results["background_energy_flatness"]
    se = next(iter(flat.values()))["null_se"]
    lines += [
        "## Energy flatness of the background scores",
        "",
        "AUC between the high- and low-energy halves of the background (split at the median incident energy); 0.5 "
        f"for a score that does not depend on the energy; null standard error {se:.4f}.",
        "",
        "| " + " | ".join(flat) + " |",
        "|---" * len(flat) + "|",
        "| " + " | ".join(f"{v['auc_high_vs_low']:.3f}" for v in flat.values()) + " |",
        "",
    ]
    lines += ["## Scores ranking signal as more normal than background (AUC < 0.5)", ""]
    lines += [f"- {b}" for b in below] or ["- none"]
    lines += ["", f"Timings (s): {', '.join(f'{k} {v:.0f}' for k, v in results['timings_s'].items())}", ""]
    return "\n".join(lines)


def background_of(scores: dict, point: str, score: str) -> np.ndarray:
    """Background scores matching ``point``: the supervised classifiers differ from point to point."""
    bkg = scores["background"]
    return bkg[f"supervised:{point}"] if score == "supervised" else bkg[score]


def make_plots(out: Path, scores: dict, points: list, args: argparse.Namespace) -> None:
    bkg = scores["background"]
    for name in CURVE_POINTS:
        if name not in scores:
            continue
        sig = scores[name]
        rocs = {s: metrics.roc_curve(sig[s], background_of(scores, name, s)) for s in SCORES}
        info = dict(points)[name]
        fig, _ = plotting.plot_sic(rocs, min_background=args.min_background, title=label(name, info))
        plotting.save_figure(fig, out / f"sic_{name}.pdf")
        fig, _ = plotting.plot_roc(rocs, title=label(name, info))
        plotting.save_figure(fig, out / f"roc_{name}.pdf")
        # the best unsupervised score with its bootstrap band
        best = max(UNSUPERVISED, key=lambda s: metrics.auc(sig[s], bkg[s]))
        band = metrics.curve_band(
            sig[best],
            bkg[best],
            n_bootstrap=max(args.bootstrap, 10),
            min_background=args.min_background,
            seed=args.seed,
        )
        fig, _ = plotting.plot_sic(
            {best: rocs[best], "supervised": rocs["supervised"]},
            bands={best: band},
            min_background=args.min_background,
            title=f"{label(name, info)}: band",
        )
        plotting.save_figure(fig, out / f"sic_band_{name}.pdf")
    for s in ("nll", "profile", "layers", "voxels", "nll-mixed", "profile-mixed", *TAIL_BASES):
        samples = {"photons": bkg[s]}
        for name, info in points:
            if name in scores and (info["distance_m"] in (0.33, None) or name == "chi-m0.05-d1.44"):
                samples[label(name, info)] = scores[name][s]
        fig, _ = plotting.plot_score_distributions(samples, xlabel=f"{s} score")
        plotting.save_figure(fig, out / f"scores_{s}.pdf")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import torch

    from calinfer.simulation import simulate_showers
    from calinfer.surrogate import load_default, load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    timings: dict[str, float] = {}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    surrogate = load_model(args.model) if args.model else load_default()
    log(f"surrogate: {args.model or 'shipped default'}", t0)
    train_bkg = datasets.load("photons-train")[: args.n_train]
    eval_bkg = simulate_showers(args.n_background, energy_range=(1.0, 100.0), seed=BACKGROUND_SEED)
    eval_bkg = Showers(
        voxels=datasets.round_mantissa(eval_bkg.voxels),
        geometry=eval_bkg.geometry,
        incident_energy=eval_bkg.incident_energy,
        source=f"simulate_showers(seed={BACKGROUND_SEED})",
    )
    points = [p for p in signal_points() if not args.points or p[0] in args.points]
    if not points:
        raise SystemExit(f"no signal set among {args.points}; choose from {[p[0] for p in signal_points()]}")
    signals = {name: datasets.load(name) for name, _ in points}
    timings["data"] = time.time() - t0
    log(f"data: {len(train_bkg)} training photons, {len(eval_bkg)} background photons, {len(points)} signal sets", t0)

    t = time.time()
    models = {
        "nll": LikelihoodScore(surrogate, device=args.device).fit(train_bkg),
        "profile": ProfileScore(surrogate, n_grid=args.n_grid, locate=args.profile_locate, device=args.device),
        "depth": PhysicsScore("depth"),
        "width": PhysicsScore("width"),
        "response": PhysicsScore("response").fit(train_bkg),
        "autoencoder": AutoencoderScore(epochs=args.ae_epochs, seed=args.seed, device=args.device).fit(train_bkg),
    }
    scale = models["nll"].scale
    for name, base in TAIL_BASES.items():
        base_score = LikelihoodScore(surrogate, scale=scale, mixed=base.endswith("-mixed"), device=args.device)
        models[name] = TailScore(
            base_score, n_energies=args.tail_energies, n_per_energy=args.tail_per_energy, seed=args.seed
        ).calibrate(train_bkg)
    timings["fit"] = time.time() - t
    log(
        f"lambda = {scale.value:.4f} +- {scale.uncertainty:.4f} (median E_dep/E_inc, {scale.n_showers} photons); "
        "autoencoder trained",
        t0,
    )

    t = time.time()
    width = dequantization_width_of(surrogate)
    scores = {"background": unsupervised_scores(eval_bkg, models, args.chunk, width)}
    log("background scored", t0)
    for name, _ in points:
        scores[name] = unsupervised_scores(signals[name], models, args.chunk, width)
        log(f"{name} scored", t0)
    timings["unsupervised_scores"] = time.time() - t

    t = time.time()
    sup_train = train_bkg[: min(len(train_bkg), 5000)]
    for name, _ in points:
        s, b = supervised_scores(signals[name], sup_train, eval_bkg, args.folds, args.seed)
        scores[name]["supervised"] = s
        scores["background"][f"supervised:{name}"] = b
    timings["supervised"] = time.time() - t
    log("supervised classifiers trained (k-fold)", t0)

    t = time.time()
    results = {
        "config": {
            "model": args.model or "shipped default",
            "n_background": len(eval_bkg),
            "background_seed": BACKGROUND_SEED,
            "n_train": len(train_bkg),
            "n_signal_per_point": {n: len(signals[n]) for n, _ in points},
            "min_background": args.min_background,
            "bootstrap": args.bootstrap,
            "n_grid": args.n_grid,
            "profile_locate": args.profile_locate,
            "folds": args.folds,
            "tail_calibration": {"n_energies": args.tail_energies, "n_per_energy": args.tail_per_energy,
                                 "threshold_gev": models["nll-tail"].threshold_used},
            "scores": list(SCORES),
            "seed": args.seed,
        },
        "energy_scale": scale.to_dict(),
        "sic_cap": math.sqrt(len(eval_bkg) / max(args.min_background, 1.0)),
        "points": {},
    }
    n_sig = set(results["config"]["n_signal_per_point"].values())
    results["config"]["n_signal_per_point"] = (
        n_sig.pop() if len(n_sig) == 1 else results["config"]["n_signal_per_point"]
    )
    for name, info in points:
        sig = scores[name]
        entry = {**info, "label": label(name, info), "n_signal": len(signals[name]), "scores": {}}
        for s in SCORES:
            entry["scores"][s] = metrics.summarize(
                sig[s],
                background_of(scores, name, s),
                min_background=args.min_background,
                n_bootstrap=args.bootstrap,
                seed=args.seed,
            )
        entry["profile_at_edge_fraction"] = float(np.mean(sig["profile_at_edge"]))
        results["points"][name] = entry
    results["background_profile_at_edge_fraction"] = float(np.mean(scores["background"]["profile_at_edge"]))
    results["background_energy_flatness"] = energy_flatness(
        scores["background"], eval_bkg.incident_energy, UNSUPERVISED
    )
    timings["metrics"] = time.time() - t
    t = time.time()
    make_plots(out, scores, points, args)
    timings["plots"] = time.time() - t
    timings["total"] = time.time() - t0
    results["timings_s"] = timings

    with atomic_output(out / "results.json") as tmp:
        tmp.write_text(json.dumps(json_safe(results), indent=2) + "\n")
    with atomic_output(out / "table.md") as tmp:
        tmp.write_text(markdown(results))
    flat = {f"{sample}/{k}": np.asarray(v) for sample, d in scores.items() for k, v in d.items()}
    with atomic_output(out / "scores.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **flat)
    log(f"wrote {out}/results.json, table.md, scores.npz and plots", t0)
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
