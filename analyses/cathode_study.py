"""CATHODE study on the embedded dijet sample: signal-injection scan, baselines, closure and significance.

Data (``calinfer.datasets``, packed by ``analyses/pack_dijets.py``): ``dijets-qcd`` is the background of
the search data, ``dijets-qcd-reference`` an independent background sample, ``dijets-signal`` the
W'(3.5 TeV) -> X(500 GeV) Y(100 GeV) signal. The signal sample is split once into an injection pool and a
pool that only trains the supervised classifier. Signal region 3.3-3.7 TeV, sidebands 2.8-5.0 TeV.

1. Injection scan. For every seed and every injection (S/B in the signal region; S/sqrt(B) is printed
   too, since this sample has fewer background events than the LHC Olympics one) signal events drawn
   from the injection pool (nested: a smaller injection is a subset of a larger one) are added to the
   background, and the signal-region events are scored by
   * CATHODE: ``--n-flows`` conditional flows trained on the sidebands, background generated in the
     signal region (``--oversample`` generated events per signal-region event in total), k-fold classifier;
     cross fitted unless ``--no-cross-fit``: the flows form two groups on disjoint halves of the
     sidebands, each fold classifier trains against one group, and the background after a cut is
     estimated from the other (``Cathode(cross_fit=True)``);
   * idealized AD: the same classifier against the true background of the reference sample;
   * CATHODE matched (``cathode-matched``): CATHODE with the same flows, every classifier trained against as
     many generated events as every idealized-AD classifier has reference events (``matched_oversample``; with
     cross fitting and 5 folds 1.6 times the reference in all, half of it per group; before stop 25 the
     generated sample in all was as large as the reference, which left each classifier 0.5 against 0.8
     reference samples), the comparison at equal reference size (the reference sample holds about half as many
     signal-region events as the data, CATHODE generates ``--oversample`` times as many);
   * CWoLa: signal region against the sidebands;
   * ANODE: density ratio of a k-fold flow on the signal region and the first CATHODE flow;
   * supervised: the classifier trained on the supervised signal pool against the reference background.
   Every score is out of fold (no event is scored by a model that saw it). The maximum SIC keeps at least
   ``--min-background`` background events (the floor caps it at sqrt(B_SR / floor)). Within a seed the
   sideband flows are trained once on the sidebands of the background and shared by the injections
   (the injected signal puts at most 0.1 x S_SR events into the sidebands, which the JSON records as a
   fraction of the sideband events: about 2e-4 at S/B = 0.6%). CATHODE's background estimate and
   Cowan's significance are computed at each injection for ``--efficiencies``, with and without the
   ensemble term.
2. Closure. All background (search data and reference; the data alone when ``--reference`` names the same
   sample, e.g. a second background sample given as both) is split into ``--closure-splits`` disjoint
   parts; on each part and each closure window CATHODE runs with its own flows, and for each cut the pull
   ``(n_observed - B) / sqrt(B + sigma_B^2)`` of the background estimate (sideband-fit normalisation x
   generated pass fraction, uncertainties from the fit, the generated statistics and the ensemble
   spread) is recorded, and the same for the estimate calibrated on held-out sideband events
   (``Cathode.cut``: the data / generated ratio in each sideband, interpolated in m_jj to the signal region)
   and, as an ablation, for the ratio pooled over both sidebands. Independent parts give independent
   pulls: mean ~0 and width ~1 when the estimate closes. ``n / (N_SR eps) - 1`` (true signal-region count)
   isolates the generated pass fraction from the sideband-fit normalisation.

Outputs in ``--out-dir`` (each written atomically): ``results.json`` (settings, data counts, every record,
the medians and spreads, the closure pulls, the wall times), ``table.md``, ``sic_vs_injection.png``,
``closure_pulls.png`` and ``sic_curves.png`` (largest injection, first seed).

    python analyses/cathode_study.py --out-dir results/cathode_study            # default (tens of minutes)
    python analyses/cathode_study.py --out-dir /tmp/cathode_quick --quick        # smoke test (~1-2 min)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np

__all__ = [
    "StudyConfig",
    "add_window_arguments",
    "closure_task",
    "load_frame",
    "main",
    "matched_oversample",
    "parse_options",
    "scan_task",
    "summarize",
    "window_of",
]

METHODS = ("CATHODE", "idealized AD", "CWoLa", "ANODE", "supervised", "CATHODE matched")
_METHOD_KEYS = dict(
    zip(("cathode", "idealized", "cwola", "anode", "supervised", "cathode-matched"), METHODS, strict=True)
)


@dataclass
class StudyConfig:
    """All settings of the study (recorded in ``results.json``)."""

    data: str = "dijets-qcd"
    reference: str = "dijets-qcd-reference"
    signal: str = "dijets-signal"
    signal_region: tuple[float, float] = (3.3, 3.7)
    sidebands: tuple[float, float] = (2.8, 5.0)
    seeds: tuple[int, ...] = (0, 1, 2)
    injections: tuple[float, ...] = (0.012, 0.006, 0.003, 0.0015, 0.0005)
    methods: tuple[str, ...] = METHODS
    n_flows: int = 6
    cross_fit: bool = True
    latent: bool = False
    oversample: float = 4.0
    n_folds: int = 5
    anode_folds: int = 2
    flow: dict = field(
        default_factory=lambda: {
            "epochs": 25,
            "batch_size": 2048,
            "lr": 2e-3,
            "hidden": 128,
            "n_res_blocks": 2,
            "n_best_epochs": 5,
            "bootstrap": True,
            "gaussianize": True,
            "gaussianize_knots": 32,
        }
    )
    classifier: dict = field(default_factory=lambda: {"epochs": 20, "batch_size": 512, "n_best_epochs": 5})
    classifier_kind: str = "mlp"  # or "hgb": BoostedTreeEnsemble with the options in ``hgb``
    hgb: dict = field(default_factory=dict)
    noise_features: int = 0  # standard-normal features appended to every event (robustness study)
    extra_features: tuple[str, ...] = ()  # of calinfer.io.lhco.EXTRA_FEATURES, e.g. ("tau32_light", "tau32_heavy")
    efficiencies: tuple[float, ...] = (0.2, 0.1, 0.05, 0.02)
    closure_splits: int = 3
    closure_windows: tuple[tuple[float, float], ...] = ((3.3, 3.7), (3.7, 4.1), (4.1, 4.5))
    min_background: float = 50.0
    max_data_events: int | None = None
    bin_width: float = 0.1
    threads: int = 1


def parse_options(items: list[str]) -> dict:
    """``KEY=VALUE`` strings (VALUE in JSON) as a dict of options; ``InputError`` for an item without ``=``
    or a value that is not JSON."""
    from calinfer.errors import InputError

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"options need KEY=VALUE, got {item!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            raise InputError(
                f"option {key}: {value!r} is not a JSON value (a string needs quotes: '\"text\"')"
            ) from None
    return options


def add_window_arguments(
    parser: argparse.ArgumentParser, data_help: str = "embedded dijet set or LHCO file (background only)"
) -> None:
    """``--data`` (default ``dijets-qcd``), ``--signal-region`` and ``--sidebands`` (TeV) of the flow diagnostics
    (``crossfit_bias.py``, ``flow_fidelity.py``, ``flow_nll_screen.py``); :func:`window_of` reads the last two."""
    parser.add_argument("--data", default="dijets-qcd", help=data_help)
    parser.add_argument("--signal-region", type=float, nargs=2, default=(3.3, 3.7), metavar=("LOW", "HIGH"))
    parser.add_argument("--sidebands", type=float, nargs=2, default=(2.8, 5.0), metavar=("LOW", "HIGH"))


def window_of(args: argparse.Namespace):
    """The :class:`~calinfer.resonant.SignalRegion` of the options :func:`add_window_arguments` added."""
    from calinfer.resonant import SignalRegion

    return SignalRegion(*args.signal_region, *args.sidebands)


def load_frame(name_or_path: str, extra: tuple[str, ...] = ()):
    """A dijet features frame from an embedded set name or an LHCO file."""
    from calinfer import datasets
    from calinfer.io.lhco import load_dijets

    if Path(name_or_path).exists():
        return load_dijets(name_or_path, extra=extra)
    return datasets.load_dijets(name_or_path, extra=extra)


def _arrays(frame, window, features) -> tuple[np.ndarray, np.ndarray]:
    m = frame["mjj"].to_numpy(np.float64)
    keep = window.in_range(m)
    return m[keep], frame[list(features)].to_numpy(np.float64)[keep]


def _seed(*keys: int) -> int:
    return int(np.random.default_rng(list(keys)).integers(2**31))


def _configured(cls: type, options: dict, seed: int):
    return cls(**{**options, "seed": seed})


def _flow_factory(cfg: StudyConfig):
    from calinfer.resonant.density import DensityEstimator

    return partial(_configured, DensityEstimator, cfg.flow)


def _classifier_factory(cfg: StudyConfig):
    from calinfer.resonant.search import CLASSIFIERS

    options = cfg.hgb if cfg.classifier_kind == "hgb" else cfg.classifier
    return partial(_configured, CLASSIFIERS[cfg.classifier_kind], options)


def matched_oversample(cfg: StudyConfig, n_reference_sr: int, n_sr: int) -> float:
    """Generated events per signal-region event (all flows together) for which every CATHODE classifier trains
    against as many generated events as every idealized-AD classifier trains reference events.

    An idealized-AD fold classifier trains on ``(n_folds - 1) / n_folds`` of the reference; a cross-fitted CATHODE
    classifier on all the events of its group (half the generated sample), without cross fitting on
    ``(n_folds - 1) / n_folds`` of it.
    """
    share = 2 * (cfg.n_folds - 1) / cfg.n_folds if cfg.cross_fit else 1.0
    return share * n_reference_sr / n_sr


def _cathode(cfg: StudyConfig, window, seed: int, oversample: float | None = None):
    from calinfer.resonant.methods import Cathode

    return Cathode(
        window,
        n_flows=cfg.n_flows,
        oversample=(cfg.oversample if oversample is None else oversample) / cfg.n_flows,
        flow=_flow_factory(cfg),
        classifier=_classifier_factory(cfg),
        n_folds=cfg.n_folds,
        cross_fit=cfg.cross_fit,
        latent=cfg.latent,
        seed=seed,
    )


def _estimates(
    cfg: StudyConfig, cathode, m: np.ndarray, window, label_sr: np.ndarray | None, x: np.ndarray | None = None
) -> tuple[dict, list]:
    """Sideband fit before the cut, then background estimate, pull and significance for every efficiency.

    With the features ``x`` of all events (closure), also the pull of the bump-hunt estimate after the cut
    (sideband events scored by the fold classifiers) and the sideband pass fractions.
    """
    from calinfer.resonant.bumphunt import bump_hunt
    from calinfer.resonant.search import mass_bins, sideband_pass_fractions
    from calinfer.resonant.significance import pull

    edges = mass_bins(window, cfg.bin_width)
    before = bump_hunt(edges, np.histogram(m, edges)[0], window)
    if x is not None:
        sr = cathode.sr_mask_
        scores = np.empty(len(m))
        scores[sr], scores[~sr] = cathode.scores_, cathode.score_outside(x[~sr], m[~sr])
        seen_fraction = cathode.outside_seen_fraction_
        unblind = scores.copy()
        if cathode.cross_fit:  # for comparison: sideband events spread over all fold classifiers
            unblind[~sr] = cathode.score_outside(x[~sr], m[~sr], blind=False)
    cuts = []
    for eff in cfg.efficiencies:
        cut = cathode.cut(eff, before.b, before.sigma_b)
        est = cut.estimate
        entry = cut.to_dict()
        entry["pull"] = float(pull(cut.n_observed, est.b, est.sigma))
        entry["pull_without_ensemble"] = float(pull(cut.n_observed, est.b, est.sigma_without_ensemble))
        if cut.calibrated is not None:
            entry["pull_calibrated"] = float(pull(cut.n_observed, cut.calibrated.b, cut.calibrated.sigma))
        pooled = cathode.cut(eff, before.b, before.sigma_b, calibration="pooled").calibrated
        if pooled is not None:  # ablation: one data / generated ratio over both sidebands
            z_pooled = pooled.significance(cut.n_observed)
            entry["pooled"] = {"b": pooled.b, "sigma": pooled.sigma, "significance": z_pooled}
            entry["pull_pooled"] = float(pull(cut.n_observed, pooled.b, pooled.sigma))
        if x is not None:
            passing = scores >= cut.threshold
            after = bump_hunt(edges, np.histogram(m[passing], edges)[0], window)
            entry["bump_hunt_after_cut"] = after.to_dict()
            entry["bump_hunt_pull"] = float(pull(after.n_observed, after.b, after.sigma_b))
            entry["sideband_pass_fractions"] = sideband_pass_fractions(m, passing, window)
            entry["sideband_pass_fractions_all_classifiers"] = sideband_pass_fractions(
                m, unblind >= cut.threshold, window
            )
            entry["signal_region_pass_fraction"] = float(np.mean(cathode.scores_ >= cut.threshold))
            entry["sideband_events_seen_by_every_group"] = seen_fraction
        if label_sr is not None:
            entry["n_signal_passing"] = int(np.sum(cathode.scores_[label_sr == 1] >= cut.threshold))
        cuts.append(entry)
    return before.to_dict(), cuts


def scan_task(job: tuple) -> dict:
    """One seed of the injection scan: flows once, then every injection and method; a list of records."""
    import torch

    from calinfer.errors import InputError
    from calinfer.metrics import max_sic, roc_curve
    from calinfer.resonant.injection import n_signal_for
    from calinfer.resonant.methods import Anode, CWoLa, IdealizedAD
    from calinfer.resonant.windows import SignalRegion

    cfg, seed, arrays = job
    torch.set_num_threads(cfg.threads)
    t0 = time.time()
    window = SignalRegion(*cfg.signal_region, *cfg.sidebands)
    m_b, x_b = arrays["background"]
    m_s, x_s = arrays["signal_injection"]
    x_ref_sr = arrays["reference_sr"]
    flows = _cathode(cfg, window, _seed(seed, 1)).fit_flows(m_b, x_b)
    t_flows = time.time() - t0
    clf = _classifier_factory(cfg)
    supervised = None
    if "supervised" in cfg.methods:
        x_sup = arrays["signal_supervised_sr"]
        supervised = clf(_seed(seed, 2)).fit(
            np.concatenate([x_sup, x_ref_sr]), np.r_[np.ones(len(x_sup)), np.zeros(len(x_ref_sr))]
        )
    order = np.random.default_rng(_seed(seed, 3)).permutation(len(m_s))
    records, curves = [], {}
    for k, inj in enumerate(cfg.injections):
        t1 = time.time()
        n_sig = n_signal_for(inj, m_b, m_s, window)
        pick = order[:n_sig]
        m = np.r_[m_b, m_s[pick]]
        x = np.concatenate([x_b, x_s[pick]])
        y = np.r_[np.zeros(len(m_b)), np.ones(n_sig)]
        sr, sb = window.in_sr(m), window.in_sidebands(m)
        y_sr = y[sr]
        common = {"n_folds": cfg.n_folds, "seed": _seed(seed, 4, k)}
        cathode = _cathode(cfg, window, common["seed"]).fit(m, x, flows=flows)
        scores = {"CATHODE": cathode.scores_}
        if "idealized AD" in cfg.methods:
            scores["idealized AD"] = IdealizedAD(window, classifier=clf, **common).fit(m, x, x_ref_sr).scores_
        if "CATHODE matched" in cfg.methods:  # each classifier trains on as many generated as reference events
            matched = _cathode(cfg, window, common["seed"], oversample=matched_oversample(cfg, len(x_ref_sr), sr.sum()))
            scores["CATHODE matched"] = matched.fit(m, x, flows=flows).scores_
        if "CWoLa" in cfg.methods:
            scores["CWoLa"] = CWoLa(window, classifier=clf, **common).fit(m, x).scores_
        if "ANODE" in cfg.methods:
            anode = Anode(window, flow=_flow_factory(cfg), n_folds=cfg.anode_folds, seed=common["seed"])
            scores["ANODE"] = anode.fit(m, x, background_flow=flows[0]).scores_
        if supervised is not None:
            scores["supervised"] = supervised.predict_proba(x[sr])[:, 1]
        before, cuts = _estimates(cfg, cathode, m, window, y_sr)
        b_sr = int(np.sum(y_sr == 0))
        record = {
            "seed": seed,
            "s_over_b": inj,
            "n_signal_injected": int(n_sig),
            "n_signal_sr": int(np.sum(y_sr == 1)),
            "n_background_sr": b_sr,
            "s_over_b_sr": float(np.sum(y_sr == 1) / b_sr),
            "s_over_sqrt_b_sr": float(np.sum(y_sr == 1) / np.sqrt(b_sr)),
            "signal_fraction_sidebands": float(np.sum(y[sb] == 1) / sb.sum()),
            "sic_cap": float(np.sqrt(b_sr / cfg.min_background)),
            "max_sic": {},
            "auc": {},
            "sideband_fit_before_cut": before,
            "cuts": cuts,
            "wall_s": time.time() - t1,
        }
        for name, sc in scores.items():
            s, b = sc[y_sr == 1], sc[y_sr == 0]
            try:
                record["max_sic"][name] = max_sic(s, b, min_background=cfg.min_background) if len(s) else None
            except InputError as exc:  # too few background events for the floor
                record["max_sic"][name] = None
                record.setdefault("warnings", []).append(f"{name}: {exc}")
            record["auc"][name] = roc_curve(s, b).auc if len(s) else None
            if k == 0:
                curves[name] = (s, b)
        records.append(record)
    return {"seed": seed, "records": records, "curves": curves, "wall_s": time.time() - t0, "flows_s": t_flows}


def closure_task(job: tuple) -> dict:
    """CATHODE on one background-only part in one window: pulls of the background estimate for every cut."""
    import torch

    from calinfer.resonant.windows import SignalRegion

    cfg, part, window_edges, (m, x) = job
    torch.set_num_threads(cfg.threads)
    t0 = time.time()
    window = SignalRegion(*window_edges, *cfg.sidebands)
    seed = _seed(part, 5, round(1000 * window.low))
    cathode = _cathode(cfg, window, seed).fit(m, x)
    before, cuts = _estimates(cfg, cathode, m, window, None, x)
    return {
        "part": part,
        "window": list(window_edges),
        "n_events": len(m),
        "n_signal_region": int(window.in_sr(m).sum()),
        "sideband_fit_before_cut": before,
        "cuts": cuts,
        "wall_s": time.time() - t0,
    }


def _spread(values: list[float]) -> dict:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if not len(v):
        return {"n": 0}
    q16, q50, q84 = np.quantile(v, [0.16, 0.5, 0.84])
    return {"n": len(v), "median": q50, "q16": q16, "q84": q84, "min": v.min(), "max": v.max(), "values": v.tolist()}


def _mean_and_width(values) -> dict:
    """Mean, its standard error and the standard deviation (``None`` for fewer than two values) of closure values."""
    v = np.asarray(values, dtype=np.float64)
    std = float(v.std(ddof=1)) if len(v) > 1 else None
    return {
        "mean": float(v.mean()),
        "std": std,
        "mean_error": std / np.sqrt(len(v)) if std is not None else None,
        "values": v.tolist(),
    }


def summarize(cfg: StudyConfig, scan: list[dict], closure: list[dict]) -> dict:
    """Medians and spreads over seeds per method and injection; closure pull mean and width per cut."""
    records = [r for task in scan for r in task["records"]]
    out: dict = {"max_sic": {}, "ratio_cathode_to_idealized": {}, "injections": [], "significance": {}}
    for inj in cfg.injections if records else ():
        rows = [r for r in records if r["s_over_b"] == inj]
        key = f"{inj:g}"
        out["injections"].append(
            {
                "s_over_b": inj,
                "n_signal_sr": _spread([r["n_signal_sr"] for r in rows])["median"],
                "s_over_b_sr": _spread([r["s_over_b_sr"] for r in rows])["median"],
                "s_over_sqrt_b_sr": _spread([r["s_over_sqrt_b_sr"] for r in rows])["median"],
                "sic_cap": rows[0]["sic_cap"],
                "signal_fraction_sidebands": _spread([r["signal_fraction_sidebands"] for r in rows])["median"],
            }
        )
        for name in cfg.methods:
            out["max_sic"].setdefault(name, {})[key] = _spread([r["max_sic"].get(name) for r in rows])
        for name, label in (
            ("CATHODE", "ratio_cathode_to_idealized"),
            ("CATHODE matched", "ratio_matched_to_idealized"),
        ):
            ratios = [
                r["max_sic"][name] / r["max_sic"]["idealized AD"]
                for r in rows
                if r["max_sic"].get(name) and r["max_sic"].get("idealized AD")
            ]
            out.setdefault(label, {})[key] = _spread(ratios)
        out["significance"][key] = {
            f"{eff:g}": {
                "z": _spread([r["cuts"][i]["significance"] for r in rows]),
                "z_without_ensemble": _spread([r["cuts"][i]["significance_without_ensemble"] for r in rows]),
                "z_calibrated": _spread(
                    [r["cuts"][i]["calibrated"]["significance"] for r in rows if "calibrated" in r["cuts"][i]]
                ),
                "n_signal_passing": _spread([r["cuts"][i]["n_signal_passing"] for r in rows]),
            }
            for i, eff in enumerate(cfg.efficiencies)
        }
    pulls: dict = {}
    for i, eff in enumerate(cfg.efficiencies):
        cuts = [c["cuts"][i] for c in closure]
        if not cuts:
            continue
        q = np.array([c["pull_without_ensemble"] for c in cuts])
        pulls[f"{eff:g}"] = {
            "n": len(cuts),
            **_mean_and_width([c["pull"] for c in cuts]),
            "mean_without_ensemble": float(q.mean()),
            "std_without_ensemble": float(q.std(ddof=1)) if len(q) > 1 else None,
            "relative_excess": _mean_and_width([c["n_observed"] / c["background_b"] - 1 for c in cuts]),
            # the generated pass fraction alone, against the true signal-region count (no sideband fit)
            "pass_fraction_excess": _mean_and_width(
                [c["cuts"][i]["n_observed"] / (c["n_signal_region"] * eff) - 1 for c in closure]
            ),
        }
        for name in ("calibrated", "pooled"):
            if all(f"pull_{name}" in c for c in cuts):
                pulls[f"{eff:g}"][name] = {
                    **_mean_and_width([c[f"pull_{name}"] for c in cuts]),
                    "relative_excess": _mean_and_width([c["n_observed"] / c[name]["b"] - 1 for c in cuts]),
                }
        for key, name in (("sideband_pass_fractions", "blind"), ("sideband_pass_fractions_all_classifiers", "all")):
            if all(key in c for c in cuts):  # sideband pass fraction / signal-region pass fraction - 1
                rel = [_sideband_fraction(c[key]) / c["signal_region_pass_fraction"] - 1 for c in cuts]
                pulls[f"{eff:g}"][f"sideband_over_sr_{name}"] = _mean_and_width(rel)
        if all("sideband_pass_fractions" in c for c in cuts):  # sculpting: upper against lower sideband
            bands = [c["sideband_pass_fractions"] for c in cuts]
            pulls[f"{eff:g}"]["sideband_high_over_low"] = _mean_and_width(
                [b["high"]["fraction"] / b["low"]["fraction"] - 1 for b in bands]
            )
            pulls[f"{eff:g}"]["sideband_high_minus_low_z"] = _mean_and_width([b["z_difference"] for b in bands])
        bump = np.array([c.get("bump_hunt_pull", np.nan) for c in cuts])
        if np.all(np.isfinite(bump)):
            pulls[f"{eff:g}"]["bump_hunt_after_cut"] = _mean_and_width(bump)
    fit_pulls = [
        (c["sideband_fit_before_cut"]["n_observed"] - c["sideband_fit_before_cut"]["b"])
        / np.sqrt(c["sideband_fit_before_cut"]["b"] + c["sideband_fit_before_cut"]["sigma_b"] ** 2)
        for c in closure
    ]
    out["closure"] = {"pulls": pulls, "sideband_fit_pulls_before_cut": [float(v) for v in fit_pulls]}
    every_cut = [cut for c in closure for cut in c["cuts"]]
    z = {"direct": [cut["significance"] for cut in every_cut]}
    for name in ("calibrated", "pooled"):
        if all(cut.get(name) for cut in every_cut):
            z[name] = [cut[name]["significance"] for cut in every_cut]
    out["closure"]["largest_z"] = {  # what a background-only search would have reported at worst
        k: {"max": float(np.max(v)), "n_above_2": int(np.sum(np.asarray(v) > 2)), "n_cuts": len(v)}
        for k, v in z.items()
        if v
    }
    return out


def _sideband_fraction(bands: dict) -> float:
    """Pass fraction of both sidebands together."""
    low, high = bands["low"], bands["high"]
    return (low["fraction"] * low["n"] + high["fraction"] * high["n"]) / (low["n"] + high["n"])


def _percent(excess: dict) -> str:
    err = f" ± {100 * excess['mean_error']:.1f}" if excess["mean_error"] is not None else ""
    return f"{100 * excess['mean']:.1f}{err}%"


def _table(cfg: StudyConfig, summary: dict, wall: float) -> str:
    lines = ["# CATHODE study", "", "Maximum SIC (median [16%, 84%] over seeds):", ""]
    head = (
        "| S/B (SR) | S_SR | S/sqrt(B) | " + " | ".join(cfg.methods) + " | CATHODE / idealized (matched / idealized) |"
    )
    lines += [head, "|" + "---|" * (len(cfg.methods) + 4)]
    for info in summary["injections"]:
        key = f"{info['s_over_b']:g}"
        cells = []
        for name in cfg.methods:
            s = summary["max_sic"][name][key]
            cells.append(f"{s['median']:.2f} [{s['q16']:.2f}, {s['q84']:.2f}]" if s["n"] else "-")
        ratio = " / ".join(
            f"{r['median']:.2f} [{r['q16']:.2f}, {r['q84']:.2f}]" if r["n"] else "-"
            for r in (summary[k][key] for k in ("ratio_cathode_to_idealized", "ratio_matched_to_idealized"))
        )
        lines.append(
            f"| {100 * info['s_over_b_sr']:.3f}% | {info['n_signal_sr']:.0f} | {info['s_over_sqrt_b_sr']:.2f} | "
            + " | ".join(cells)
            + f" | {ratio} |"
        )
    if summary["injections"]:
        lines += ["", f"SIC cap from the background floor: {summary['injections'][0]['sic_cap']:.1f}"]
    lines.append("")
    lines += [
        "Significance of the CATHODE cut (median Z of the direct estimate with / without the ensemble term; of "
        "the calibrated one, the headline):",
        "",
    ]
    lines += ["| S/B | " + " | ".join(f"eps_B = {e:g}" for e in cfg.efficiencies) + " |"]
    lines += ["|" + "---|" * (len(cfg.efficiencies) + 1)]
    for key, per_eff in summary["significance"].items():
        cells = [
            f"{v['z']['median']:.2f} / {v['z_without_ensemble']['median']:.2f}; "
            + (f"{v['z_calibrated']['median']:.2f}" if v["z_calibrated"]["n"] else "-")
            for v in per_eff.values()
        ]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    if summary["closure"]["pulls"]:
        lines += _closure_lines(summary)
    lines.append("")
    lines += [f"Wall time: {wall:.0f} s", ""]
    return "\n".join(lines)


def _closure_lines(summary: dict) -> list[str]:
    """The closure part of ``table.md``: pulls per cut, sideband pass fractions, largest Z."""
    lines: list[str] = []
    lines += ["", "Background-only closure (pull = (n - B) / sqrt(B + sigma_B^2) over disjoint parts x windows):", ""]
    lines += [
        "| eps_B | n | mean | width | mean / width without ensemble term | bump hunt after the cut: mean / width "
        "| calibrated on held-out sidebands (interpolated to the SR): mean / width "
        "| pooled calibration (both sidebands): mean / width | n / B - 1 (mean): direct / calibrated / pooled "
        "| n / (N_SR eps) - 1 (pass fraction only) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for eff, p in summary["closure"]["pulls"].items():
        std = f"{p['std']:.2f}" if p["std"] is not None else "-"
        std_ne = f"{p['std_without_ensemble']:.2f}" if p["std_without_ensemble"] is not None else "-"
        err = f" ± {p['mean_error']:.2f}" if p["mean_error"] is not None else ""
        bump = p.get("bump_hunt_after_cut")
        bump_cell = f"{bump['mean']:.2f} / {bump['std']:.2f}" if bump and bump["std"] is not None else "-"
        cal_cells, cal_excess = [], []
        for name in ("calibrated", "pooled"):
            cal = p.get(name)
            ok = cal and cal["std"] is not None
            cal_cells.append(f"{cal['mean']:.2f} ± {cal['mean_error']:.2f} / {cal['std']:.2f}" if ok else "-")
            cal_excess.append(_percent(cal["relative_excess"]) if ok else "-")
        lines.append(
            f"| {eff} | {p['n']} | {p['mean']:.2f}{err} | {std} | {p['mean_without_ensemble']:.2f} / {std_ne} "
            f"| {bump_cell} | {' | '.join(cal_cells)} | {' / '.join([_percent(p['relative_excess']), *cal_excess])} "
            f"| {_percent(p['pass_fraction_excess'])} |"
        )
    lines += [
        "",
        "Sideband / signal-region pass fraction - 1 (mean ± error), sidebands scored by the classifiers blind to "
        "them / by all fold classifiers:",
        "",
        "| eps_B | blind | all classifiers | upper / lower sideband - 1 (sculpting) | its z, mean / width |",
        "|---|---|---|---|---|",
    ]
    for eff, p in summary["closure"]["pulls"].items():
        if "sideband_over_sr_blind" in p:
            hl, z = p["sideband_high_over_low"], p["sideband_high_minus_low_z"]
            lines.append(
                f"| {eff} | {_percent(p['sideband_over_sr_blind'])} | {_percent(p['sideband_over_sr_all'])} "
                f"| {_percent(hl)} | {z['mean']:.2f} / {z['std'] if z['std'] is None else round(z['std'], 2)} |"
            )
    fit = summary["closure"]["sideband_fit_pulls_before_cut"]
    lines += ["", f"Sideband-fit pulls before the cut: {', '.join(f'{v:.2f}' for v in fit)}", ""]
    for name, z in summary["closure"].get("largest_z", {}).items():
        lines.append(
            f"Largest Z of the {name} estimate over the {z['n_cuts']} cuts: {z['max']:.2f} ({z['n_above_2']} above 2)"
        )
    return lines


def _plot_sic_vs_injection(cfg: StudyConfig, summary: dict, out: Path) -> None:
    import matplotlib.pyplot as plt

    from calinfer import plotting

    fig, ax = plt.subplots(figsize=(8, 6))
    x = np.array([100 * i["s_over_b_sr"] for i in summary["injections"]])
    for k, name in enumerate(cfg.methods):
        s = [summary["max_sic"][name][f"{i['s_over_b']:g}"] for i in summary["injections"]]
        ok = np.array([v["n"] > 0 for v in s])
        if not ok.any():
            continue
        med, lo, hi = (np.array([v.get(q, np.nan) for v in s]) for q in ("median", "q16", "q84"))
        (line,) = ax.plot(x[ok], med[ok], marker="o", label=name, color=f"C{k}")
        ax.fill_between(x[ok], lo[ok], hi[ok], color=line.get_color(), alpha=0.2, lw=0)
    ax.axhline(summary["injections"][0]["sic_cap"], color="grey", ls=":", label="cap (background floor)")
    ax.axhline(1, color="grey", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("S/B in the signal region [%]")
    ax.set_ylabel("max SIC (median, 16-84% band over seeds)")
    per_percent = summary["injections"][0]["s_over_sqrt_b_sr"] / x[0]
    sec = ax.secondary_xaxis("top", functions=(lambda v: v * per_percent, lambda v: v / per_percent))
    sec.set_xlabel("S/√B in the signal region")
    ax.legend(fontsize="small")
    plotting.save_figure(fig, out / "sic_vs_injection.png")


def _plot_closure(summary: dict, out: Path) -> None:
    import matplotlib.pyplot as plt

    from calinfer import plotting

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 5), layout="constrained")
    pulls = summary["closure"]["pulls"]
    allp = np.concatenate([p["values"] for p in pulls.values()]) if pulls else np.zeros(0)
    if len(allp):
        a1.hist(allp, bins=np.linspace(-4, 4, 17), density=True, histtype="step", lw=1.5, label="pulls (all cuts)")
        g = np.linspace(-4, 4, 200)
        a1.plot(g, np.exp(-0.5 * g**2) / np.sqrt(2 * np.pi), color="grey", ls="--", label="N(0, 1)")
    a1.set_xlabel("(n - B) / sqrt(B + sigma_B^2)")
    a1.legend(fontsize="small")
    a2.errorbar(
        [float(e) for e in pulls],
        [p["mean"] for p in pulls.values()],
        yerr=[p["std"] or 0 for p in pulls.values()],
        fmt="o",
        capsize=4,
        label="mean ± width",
    )
    a2.axhline(0, color="grey", ls="--")
    a2.axhspan(-1, 1, color="grey", alpha=0.1)
    a2.set_xscale("log")
    a2.set_xlabel("background efficiency of the cut")
    a2.set_ylabel("pull")
    a2.legend(fontsize="small")
    plotting.save_figure(fig, out / "closure_pulls.png")


def _plots(cfg: StudyConfig, summary: dict, curves: dict, out: Path) -> None:
    from calinfer import plotting
    from calinfer.metrics import roc_curve

    with plotting.hep_style():
        if summary["injections"]:
            _plot_sic_vs_injection(cfg, summary, out)
        if summary["closure"]["pulls"]:
            _plot_closure(summary, out)
    if curves:
        rocs = {name: roc_curve(s, b) for name, (s, b) in curves.items() if len(s)}
        fig, _ = plotting.plot_sic(
            rocs, min_background=cfg.min_background, title=f"S/B = {cfg.injections[0]:g}, seed {cfg.seeds[0]}"
        )
        plotting.save_figure(fig, out / "sic_curves.png")


def _prepare(cfg: StudyConfig) -> tuple[dict, dict]:
    """Arrays for the tasks and a description of the inputs."""
    from calinfer.io.lhco import STANDARD_FEATURES
    from calinfer.resonant.windows import SignalRegion

    window = SignalRegion(*cfg.signal_region, *cfg.sidebands)
    data, reference, signal = (load_frame(n, cfg.extra_features) for n in (cfg.data, cfg.reference, cfg.signal))
    features = (*STANDARD_FEATURES, *cfg.extra_features)
    data = data[data["label"] == 0] if "label" in data.columns else data
    if cfg.max_data_events is not None and len(data) > cfg.max_data_events:
        data = data.sample(cfg.max_data_events, random_state=0)
    m_b, x_b = _arrays(data, window, features)
    m_r, x_r = _arrays(reference, window, features)
    m_s, x_s = _arrays(signal, window, features)
    if cfg.noise_features:  # independent N(0, 1) columns, the same law for background and signal
        x_b, x_r, x_s = (
            np.c_[x, np.random.default_rng([777, j]).normal(size=(len(x), cfg.noise_features))]
            for j, x in enumerate((x_b, x_r, x_s))
        )
    pool = np.random.default_rng(12345).permutation(len(m_s)) % 2 == 0  # fixed split of the signal sample
    sup_sr = window.in_sr(m_s) & ~pool
    arrays = {
        "background": (m_b, x_b),
        "reference_sr": x_r[window.in_sr(m_r)],
        "signal_injection": (m_s[pool], x_s[pool]),
        "signal_supervised_sr": x_s[sup_sr],
    }
    info = {
        "n_background": len(m_b),
        "n_background_sr": int(window.in_sr(m_b).sum()),
        "n_background_sidebands": int(window.in_sidebands(m_b).sum()),
        "n_reference": len(m_r),
        "n_reference_sr": int(window.in_sr(m_r).sum()),
        "n_signal": len(m_s),
        "n_signal_injection_pool": int(pool.sum()),
        "n_signal_supervised_sr": int(sup_sr.sum()),
        "features": list(features) + [f"noise_{j}" for j in range(cfg.noise_features)],
    }
    # closure: all background (data and reference, the data alone when both name one sample), disjoint parts
    if cfg.reference == cfg.data:
        m_all, x_all = m_b, x_b
    else:
        m_all, x_all = np.r_[m_b, m_r], np.concatenate([x_b, x_r])
    part = np.random.default_rng(54321).permutation(len(m_all)) % max(cfg.closure_splits, 1)
    arrays["closure_parts"] = [(m_all[part == j], x_all[part == j]) for j in range(cfg.closure_splits)]
    info["closure_part_events"] = [int(np.sum(part == j)) for j in range(cfg.closure_splits)]
    return arrays, info


def quick_config(cfg: StudyConfig) -> StudyConfig:
    """A CI-sized smoke configuration: few events, one seed, two injections, short trainings."""
    return replace(
        cfg,
        seeds=cfg.seeds[:1],
        injections=(0.02, 0.006),
        n_flows=2,
        n_folds=3,
        flow={**cfg.flow, "epochs": 3, "n_best_epochs": 2},
        classifier={**cfg.classifier, "epochs": 3, "n_best_epochs": 2},
        efficiencies=(0.2, 0.05),
        closure_splits=2,
        max_data_events=12_000,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="smoke test: small data, short trainings")
    parser.add_argument("--seeds", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--injections", help="comma-separated S/B in the signal region (default 0.012,...,0.0005)")
    parser.add_argument("--methods", help="comma-separated subset of cathode,idealized,cwola,anode,supervised")
    parser.add_argument("--closure-splits", type=int, help="disjoint background parts for the closure")
    parser.add_argument("--closure-windows", help="signal regions of the closure, e.g. 3.3-3.7,3.5-3.9")
    parser.add_argument("--closure-only", action="store_true", help="skip the injection scan")
    parser.add_argument(
        "--no-bootstrap", action="store_true", help="train every flow on all sideband events (no bootstrap)"
    )
    parser.add_argument("--n-flows", type=int)
    parser.add_argument(
        "--no-cross-fit",
        action="store_true",
        help="every flow on all sideband events; B from the flows the classifiers trained against (plain CATHODE)",
    )
    parser.add_argument(
        "--latent",
        action="store_true",
        help="LaCATHODE: the classifiers see the flows' latent space (decorrelated from m_jj)",
    )
    parser.add_argument("--flow-epochs", type=int)
    parser.add_argument("--flow-batch-size", type=int)
    parser.add_argument("--flow-res-blocks", type=int, help="residual blocks per spline-parameter network")
    parser.add_argument("--classifier-epochs", type=int)
    parser.add_argument(
        "--classifier", choices=("mlp", "hgb"), help="mlp: EnsembleMLP (default); hgb: BoostedTreeEnsemble"
    )
    parser.add_argument("--noise-features", type=int, help="append this many N(0, 1) features to every event")
    parser.add_argument(
        "--extra-features",
        help="comma-separated features beyond the standard four (calinfer.io.lhco.EXTRA_FEATURES, e.g. tau32_light)",
    )
    parser.add_argument(
        "--noise-logit",
        action="store_true",
        help="send the noise features through the flows' logit preprocessing too (default: only standardised)",
    )
    parser.add_argument(
        "--flow-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="DensityEstimator option (VALUE in JSON), e.g. hidden=64; repeatable",
    )
    parser.add_argument(
        "--classifier-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="option of the chosen classifier (EnsembleMLP or BoostedTreeEnsemble; VALUE in JSON), e.g. "
        "min_samples_leaf=200; repeatable",
    )
    parser.add_argument("--jobs", type=int, default=1, help="parallel worker processes (seeds / closure parts)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse the closure jobs a cut-short run with the same configuration left in OUT_DIR/partial",
    )
    parser.add_argument("--data", help="background of the search data (embedded set name or LHCO file)")
    parser.add_argument(
        "--reference",
        help="independent background (set name or file); the same as --data: the closure splits the data alone",
    )
    parser.add_argument("--signal", help="signal sample (set name or file)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    t0 = time.time()
    cfg = StudyConfig()
    if args.quick:
        cfg = quick_config(cfg)
    changes: dict = {}
    if args.seeds:
        changes["seeds"] = tuple(int(s) for s in args.seeds.split(","))
    if args.injections:
        changes["injections"] = tuple(sorted((float(s) for s in args.injections.split(",")), reverse=True))
    if args.methods:
        changes["methods"] = tuple(_METHOD_KEYS[m.strip().lower()] for m in args.methods.split(","))
    if args.closure_splits is not None:
        changes["closure_splits"] = args.closure_splits
    if args.closure_windows:
        changes["closure_windows"] = tuple(
            tuple(float(v) for v in w.split("-")) for w in args.closure_windows.split(",")
        )
    if args.n_flows is not None:
        changes["n_flows"] = args.n_flows
    if args.no_cross_fit:
        changes["cross_fit"] = False
    if args.latent:
        changes["latent"] = True
    if args.closure_only:
        changes["seeds"] = ()
    flow = dict(cfg.flow)
    if args.flow_epochs is not None:
        flow["epochs"] = args.flow_epochs
    if args.flow_batch_size is not None:
        flow["batch_size"] = args.flow_batch_size
    if args.flow_res_blocks is not None:
        flow["n_res_blocks"] = args.flow_res_blocks
    if args.no_bootstrap:
        flow["bootstrap"] = False
    from calinfer.errors import InputError

    try:
        flow.update(parse_options(args.flow_option))
    except InputError as exc:
        parser.error(f"--flow-option: {exc}")
    extra = tuple(f.strip() for f in args.extra_features.split(",")) if args.extra_features else cfg.extra_features
    n_noise = args.noise_features if args.noise_features is not None else cfg.noise_features
    if n_noise and not args.noise_logit:  # Gaussian noise has no natural bound: standardise it only
        from calinfer.io.lhco import STANDARD_FEATURES

        n_std = len(STANDARD_FEATURES) + len(extra)
        flow["unbounded"] = tuple(range(n_std, n_std + n_noise))
    changes["flow"] = flow
    if args.classifier_epochs is not None:
        changes["classifier"] = {**cfg.classifier, "epochs": args.classifier_epochs}
    if args.classifier:
        changes["classifier_kind"] = args.classifier
    try:
        chosen = parse_options(args.classifier_option)
    except InputError as exc:
        parser.error(f"--classifier-option: {exc}")
    if chosen and (args.classifier or cfg.classifier_kind) == "hgb":
        changes["hgb"] = {**cfg.hgb, **chosen}
    elif chosen:
        changes["classifier"] = {**changes.get("classifier", cfg.classifier), **chosen}
    if args.noise_features is not None:
        changes["noise_features"] = args.noise_features
    changes["extra_features"] = extra
    for name in ("data", "reference", "signal"):
        if getattr(args, name):
            changes[name] = getattr(args, name)
    cfg = replace(cfg, **changes)
    if "CATHODE" not in cfg.methods:
        cfg = replace(cfg, methods=("CATHODE", *cfg.methods))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    try:
        done = _partial_results(args.out_dir / "partial", cfg, args.resume)
    except InputError as exc:
        parser.error(str(exc))

    arrays, info = _prepare(cfg)
    print(
        f"background: {info['n_background']} events ({info['n_background_sr']} in the SR, "
        f"{info['n_background_sidebands']} in the sidebands); reference SR: {info['n_reference_sr']}; "
        f"signal: {info['n_signal_injection_pool']} for injection, {info['n_signal_supervised_sr']} supervised (SR)",
        flush=True,
    )
    common = {k: arrays[k] for k in ("background", "reference_sr", "signal_injection", "signal_supervised_sr")}
    jobs = [("scan", (cfg, seed, common)) for seed in cfg.seeds]
    jobs += [
        ("closure", (cfg, j, w, arrays["closure_parts"][j]))
        for j in range(cfg.closure_splits)
        for w in cfg.closure_windows
    ]
    results = _run(jobs, args.jobs, args.out_dir / "partial", done)
    scan = [r for kind, r in results if kind == "scan"]
    closure = [r for kind, r in results if kind == "closure"]
    summary = summarize(cfg, scan, closure)
    wall = time.time() - t0
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu = sum(u.ru_utime + u.ru_stime for u in usage)
    from calinfer.io import atomic_output
    from calinfer.io.metadata import json_default

    payload = {
        "config": asdict(cfg),
        "inputs": info,
        "summary": summary,
        "scan": [{k: v for k, v in t.items() if k != "curves"} for t in scan],
        "closure": closure,
        "wall_time_s": wall,
        "cpu_time_s": cpu,
        "cpu_count": os.cpu_count(),
        "jobs": args.jobs,
    }
    with atomic_output(args.out_dir / "results.json") as tmp:
        tmp.write_text(json.dumps(payload, indent=1, default=json_default))
    table = _table(cfg, summary, wall)
    with atomic_output(args.out_dir / "table.md") as tmp:
        tmp.write_text(table)
    _plots(cfg, summary, scan[0]["curves"] if scan else {}, args.out_dir)
    print(table)
    print(
        f"wrote {args.out_dir}/results.json, table.md and plots; wall time {wall:.0f} s ({wall / 60:.1f} min), "
        f"CPU time {cpu:.0f} s"
    )
    return 0


def _partial_results(partial: Path, cfg: StudyConfig, resume: bool) -> dict[int, tuple[str, dict]]:
    """The finished jobs of a cut-short run in ``partial`` (``{job index: (kind, result)}``) with ``resume``, after
    checking that the run had this configuration (``partial/config.json``); record the configuration. Only closure
    jobs are reused."""
    from calinfer.errors import InputError
    from calinfer.io import atomic_output
    from calinfer.io.metadata import json_default

    record = json.loads(json.dumps(asdict(cfg), default=json_default))
    path = partial / "config.json"
    done: dict[int, tuple[str, dict]] = {}
    if resume:
        if not path.is_file():
            raise InputError(f"--resume: {path} does not exist (no cut-short run of this study to resume)")
        if json.loads(path.read_text()) != record:
            raise InputError(f"--resume: the run in {partial.parent} had another configuration ({path})")
        for job in sorted(partial.glob("[0-9][0-9][0-9].json")):
            kind, result = json.loads(job.read_text())
            if kind == "closure":  # scans hold arrays (curves) that JSON does not give back: they run again
                done[int(job.stem)] = (kind, result)
        print(f"resuming: {len(done)} finished closure jobs from {partial}", flush=True)
    partial.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(record))
    return done


def _run(
    jobs: list[tuple[str, tuple]], n_jobs: int, partial: Path | None = None, done: dict | None = None
) -> list[tuple[str, dict]]:
    """Run scan / closure jobs inline or on a process pool; print each (with its CPU time) as it finishes and
    write it to ``partial/<job>.json`` (kept if the run is cut short). Jobs in ``done`` (index -> (kind, result),
    see :func:`_partial_results`) are not run again. Results come back in job order."""
    from concurrent.futures import ProcessPoolExecutor

    from calinfer.parallel import CompletionQueue

    def describe(i: int, kind: str, r: dict) -> str:
        if partial is not None:
            from calinfer.io.metadata import json_default

            partial.mkdir(parents=True, exist_ok=True)
            (partial / f"{i:03d}.json").write_text(json.dumps([kind, r], default=json_default))
        cpu = f", CPU {r['cpu_s']:.0f} s"
        if kind == "scan":
            return f"scan seed {r['seed']}: {r['wall_s']:.0f} s (flows {r['flows_s']:.0f} s){cpu}"
        return f"closure part {r['part']} window {r['window']}: {r['wall_s']:.0f} s{cpu}"

    done = done or {}
    results: list = [done.get(i) for i in range(len(jobs))]
    todo = [i for i in range(len(jobs)) if results[i] is None or results[i][0] != jobs[i][0]]
    if n_jobs <= 1:
        for i in todo:
            results[i] = _dispatch(jobs[i])
            print(describe(i, *results[i]), flush=True)
        return results
    with ProcessPoolExecutor(max_workers=n_jobs) as pool:
        finished = CompletionQueue()
        for i in todo:
            finished.add(pool.submit(_dispatch, jobs[i]), i)
        for future, i in finished:
            results[i] = future.result()
            print(describe(i, *results[i]), flush=True)
    return results


def _dispatch(item: tuple[str, tuple]) -> tuple[str, dict]:
    kind, job = item
    t0 = time.process_time()
    result = (scan_task if kind == "scan" else closure_task)(job)
    result["cpu_s"] = time.process_time() - t0
    return kind, result


if __name__ == "__main__":
    raise SystemExit(main())
