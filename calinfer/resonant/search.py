"""The full CATHODE search on one signal region: scores, background estimate, significance and bump hunt.

:func:`run_search` takes dijet features (the frame of :func:`calinfer.io.lhco.dijet_features`: ``mjj`` in
TeV, the feature columns and optionally ``label``) and

1. fits the dijet function to the sidebands of the uncut m_jj spectrum, giving the expected background in
   the signal region before any cut (``n_sr +- sigma``);
2. runs :class:`~calinfer.resonant.methods.Cathode` (an ensemble of ``n_flows`` density estimators, cross
   fitted by default: two groups on disjoint sideband halves, B from the group a classifier did not see);
3. for each background efficiency: estimates B after the cut (direct, and calibrated on held-out sideband
   events, the data / generated ratio of each sideband interpolated in m_jj to the signal region by
   default, ``calibration``) with ensemble, normalisation and calibration uncertainties, counts the data,
   computes Cowan's significance; ``headline`` names the estimate quoted first (``"calibrated"`` by default:
   it is the one that closes on background-only data, the direct one is biased low by the flows'
   mismodelling, see the README); fits the m_jj spectrum after the cut (each sideband event scored by a fold
   classifier whose generated reference came from flows that never saw it) for the bump-hunt local
   significance and, with ``n_toys > 0``, its look-elsewhere correction (toys of the after-cut spectrum
   only, not of the classifier training or the choice among cuts); the pass fractions of the two sidebands (and the
   sideband fit quality) flag a cut that sculpts m_jj, after which the bump-hunt significance is not
   meaningful;
4. with labels: maximum SIC of CATHODE and of the requested baselines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from calinfer.errors import InputError
from calinfer.io.lhco import STANDARD_FEATURES
from calinfer.metrics import max_sic, roc_curve
from calinfer.resonant.bumphunt import bump_hunt, global_significance
from calinfer.resonant.classifier import BoostedTreeEnsemble, EnsembleMLP
from calinfer.resonant.density import DensityEstimator
from calinfer.resonant.methods import CALIBRATIONS, Anode, Cathode, CWoLa, IdealizedAD, Supervised
from calinfer.resonant.windows import SignalRegion, sliding_windows

__all__ = [
    "BASELINES",
    "CLASSIFIERS",
    "HEADLINES",
    "SearchConfig",
    "SearchResult",
    "mass_bins",
    "run_search",
    "sideband_pass_fractions",
]

BASELINES = ("idealized", "cwola", "anode", "supervised")
CLASSIFIERS = {"mlp": EnsembleMLP, "hgb": BoostedTreeEnsemble}
HEADLINES = ("calibrated", "direct")


@dataclass
class SearchConfig:
    """Settings of :func:`run_search` (``flow`` / ``classifier``: keyword arguments of
    :class:`DensityEstimator` / the classifier named by ``classifier_kind``, ``"mlp"`` for
    :class:`EnsembleMLP` or ``"hgb"`` for :class:`BoostedTreeEnsemble`; the flows of the ensemble train on
    bootstrap resamples of the sidebands by default, so their spread includes the training-sample
    fluctuations)."""

    features: tuple[str, ...] = STANDARD_FEATURES
    n_flows: int = 4
    oversample: float = 4.0
    n_folds: int = 5
    cross_fit: bool = True
    latent: bool = False
    flow: dict = field(default_factory=lambda: {"bootstrap": True})
    classifier: dict = field(default_factory=dict)
    classifier_kind: str = "mlp"
    efficiencies: tuple[float, ...] = (0.2, 0.05, 0.01)
    bin_width: float = 0.1
    n_params: int = 4
    n_toys: int = 0
    baselines: tuple[str, ...] = ()
    min_background: float = 50.0
    headline: str = "calibrated"
    calibration: str = "interpolated"
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [b for b in self.baselines if b not in BASELINES]
        if unknown:
            raise InputError(f"unknown baselines {unknown}; known: {list(BASELINES)}")
        if self.headline not in HEADLINES:
            raise InputError(f"unknown headline estimate {self.headline!r}; known: {list(HEADLINES)}")
        if self.calibration not in CALIBRATIONS:
            raise InputError(f"unknown calibration {self.calibration!r}; known: {list(CALIBRATIONS)}")
        if self.classifier_kind not in CLASSIFIERS:
            raise InputError(f"unknown classifier_kind {self.classifier_kind!r}; known: {list(CLASSIFIERS)}")


@dataclass
class SearchResult:
    """Summary (JSON-serialisable) and the arrays needed for plots."""

    summary: dict
    cathode: Cathode
    edges: np.ndarray
    counts: np.ndarray
    counts_after: dict[float, np.ndarray]
    scores: dict[str, tuple[np.ndarray, np.ndarray]]  # method -> (signal scores, background scores)


def mass_bins(window: SignalRegion, bin_width: float) -> np.ndarray:
    """Bin edges (TeV) from ``sb_low`` to ``sb_high`` with the signal-region edges among them."""
    if not (np.isfinite(window.sb_low) and np.isfinite(window.sb_high)):
        raise InputError("the bump hunt needs finite sideband bounds (sb_low, sb_high)")
    grid = np.arange(window.sb_low, window.sb_high + 1e-9, bin_width)
    edges = np.unique(np.round(np.r_[grid, window.low, window.high, window.sb_high], 9))
    return edges[np.r_[True, np.diff(edges) > 1e-6 * bin_width]]


def _columns(data: pd.DataFrame, features: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    missing = [c for c in ("mjj", *features) if c not in data.columns]
    if missing:
        raise InputError(f"data lack columns {missing}; found {list(data.columns)}")
    label = data["label"].to_numpy() if "label" in data.columns else None
    return data["mjj"].to_numpy(np.float64), data[list(features)].to_numpy(np.float64), label


def run_search(
    data: pd.DataFrame,
    window: SignalRegion,
    config: SearchConfig | None = None,
    *,
    reference: pd.DataFrame | None = None,
    progress: bool = False,
    executor: Any | None = None,
) -> SearchResult:
    """Run the search (see module docstring). ``reference``: true background for the idealized baseline.

    ``executor`` (a ``concurrent.futures`` executor or ``distributed.Client``) runs the independent trainings
    (ensemble flows, folds) in parallel; the result is the same as without it.
    """
    cfg = config or SearchConfig()
    if "idealized" in cfg.baselines and reference is None:  # before hours of training, not after
        raise InputError("the idealized baseline needs a reference background sample (reference=...)")
    mjj, x, label = _columns(data, cfg.features)
    keep = window.in_range(mjj)
    mjj, x = mjj[keep], x[keep]
    label = None if label is None else label[keep]
    edges = mass_bins(window, cfg.bin_width)
    counts = np.histogram(mjj, edges)[0]
    before = bump_hunt(edges, counts, window, n_params=cfg.n_params)

    flow = partial(_configured, DensityEstimator, cfg.flow)  # picklable, so results can come back from workers
    clf = partial(_configured, CLASSIFIERS[cfg.classifier_kind], cfg.classifier)
    cathode = Cathode(
        window, n_flows=cfg.n_flows, oversample=cfg.oversample, flow=flow, classifier=clf, n_folds=cfg.n_folds,
        cross_fit=cfg.cross_fit, latent=cfg.latent, seed=cfg.seed, progress=progress, executor=executor,
    ).fit(mjj, x)  # fmt: skip
    sr = cathode.sr_mask_
    all_scores = np.empty(len(mjj))
    all_scores[sr] = cathode.scores_
    all_scores[~sr] = cathode.score_outside(x[~sr], mjj[~sr])
    warnings = []
    if cathode.outside_seen_fraction_ > 0:
        warnings.append(
            f"{100 * cathode.outside_seen_fraction_:.0f}% of the sideband events were seen by the flows of every "
            "classifier (no cross fitting): they pass a cut too rarely and the bump hunt after the cut is biased"
        )
    scan_windows = [
        w for w in sliding_windows(window.sb_low, window.sb_high, window.width, cfg.bin_width * 2)
        if w.low - window.sb_low >= 0.2 - 1e-9 and window.sb_high - w.high >= 0.2 - 1e-9
    ]  # fmt: skip
    cuts, counts_after = [], {}
    for eff in cfg.efficiencies:
        cut = cathode.cut(eff, before.b, before.sigma_b, calibration=cfg.calibration)
        after = np.histogram(mjj[all_scores >= cut.threshold], edges)[0]
        counts_after[eff] = after
        entry = cut.to_dict()
        entry["headline"] = _headline(cut, cfg.headline)
        entry["sideband_pass_fractions"] = sideband_pass_fractions(mjj, all_scores >= cut.threshold, window)
        try:
            entry["bump_hunt"] = bump_hunt(edges, after, window, n_params=cfg.n_params).to_dict()
        except InputError as exc:  # too few events left after a tight cut
            entry["bump_hunt"] = {"error": str(exc)}
        if cfg.n_toys > 0 and scan_windows and "error" not in entry["bump_hunt"]:
            try:
                g = global_significance(
                    edges,
                    after,
                    scan_windows,
                    n_toys=cfg.n_toys,
                    n_params=cfg.n_params,
                    seed=cfg.seed,
                    progress=progress,
                )
                entry["look_elsewhere"] = {k: v for k, v in g.items() if k != "toy_max_z"}
            except InputError as exc:
                entry["look_elsewhere"] = {"error": str(exc)}
        if label is not None:
            entry["n_signal_passing"] = int(np.sum(cathode.scores_[label[sr] == 1] >= cut.threshold))
            entry["n_background_passing_true"] = int(np.sum(cathode.scores_[label[sr] == 0] >= cut.threshold))
        cuts.append(entry)
    summary: dict = {
        "window": window.to_dict(),
        "config": asdict(cfg),
        "n_events": len(mjj),
        "n_signal_region": int(sr.sum()),
        "n_sidebands": int(window.in_sidebands(mjj).sum()),
        "n_generated": len(cathode.reference_scores_),
        "flow_best_epochs": [f.best_epochs_ for f in cathode.flows_],
        "sideband_events_seen_by_every_group": cathode.outside_seen_fraction_,
        "sideband_fit_before_cut": before.to_dict(),
        "cuts": cuts,
    }
    if warnings:
        summary["warnings"] = warnings
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if label is not None and np.any(label[sr] == 1) and np.any(label[sr] == 0):
        sig, bkg = label[sr] == 1, label[sr] == 0
        summary["n_signal_in_sr"] = int(sig.sum())
        summary["s_over_b_sr"] = float(sig.sum() / bkg.sum())
        scores["CATHODE"] = (cathode.scores_[sig], cathode.scores_[bkg])
        scores.update(_baselines(cfg, window, mjj, x, sr, sig, bkg, reference, cathode, flow, clf, progress, executor))
        summary["max_sic"] = {}
        for name, (s, b) in scores.items():
            try:
                summary["max_sic"][name] = max_sic(s, b, min_background=cfg.min_background)
            except InputError as exc:
                summary["max_sic"][name] = None
                summary.setdefault("warnings", []).append(f"{name}: {exc}")
        summary["auc"] = {name: roc_curve(s, b).auc for name, (s, b) in scores.items()}
    return SearchResult(summary, cathode, edges, counts, counts_after, scores)


def sideband_pass_fractions(mjj: np.ndarray, passing: np.ndarray, window: SignalRegion) -> dict:
    """Fraction of the lower and upper sideband events passing a cut, and their difference in standard errors.

    Without sculpting the background efficiency of a cut does not depend on m_jj; a cut on features
    correlated with m_jj passes the two sidebands at different rates and bends the spectrum. A smooth
    bend is absorbed by the dijet function (its sideband fit stays good), so this is the check that
    catches it: ``|z_difference| > 3`` marks the bump hunt after the cut as unreliable (``sculpting``).
    """
    low = (mjj >= window.sb_low) & (mjj < window.low)
    high = (mjj >= window.high) & (mjj < window.sb_high)
    out: dict = {}
    for name, region in (("low", low), ("high", high)):
        n = int(region.sum())
        f = float(passing[region].mean()) if n else float("nan")
        out[name] = {"n": n, "fraction": f, "error": float(np.sqrt(f * (1 - f) / n)) if n else float("nan")}
    diff = out["high"]["fraction"] - out["low"]["fraction"]
    err = float(np.hypot(out["high"]["error"], out["low"]["error"]))
    out["z_difference"] = diff / err if err > 0 else float("nan")
    out["sculpting"] = bool(abs(out["z_difference"]) > 3)
    return out


def _headline(cut, choice: str) -> dict:
    """The estimate a search quotes first: the calibrated one (it closes on background-only data, see the
    README) unless ``choice`` is ``"direct"`` or there are no held-out sideband events to calibrate on."""
    use_calibrated = choice == "calibrated" and cut.calibrated is not None
    est = cut.calibrated if use_calibrated else cut.estimate
    return {
        "estimate": "calibrated" if use_calibrated else "direct",
        "b": est.b,
        "sigma": est.sigma,
        "significance": est.significance(cut.n_observed),
    }


def _configured(cls: type, options: dict, seed: int):
    return cls(**{**options, "seed": seed})


def _baselines(cfg, window, mjj, x, sr, sig, bkg, reference, cathode, flow, clf, progress, executor) -> dict:
    out = {}
    common = {"n_folds": cfg.n_folds, "seed": cfg.seed, "executor": executor}
    if "idealized" in cfg.baselines:
        ref_m, ref_x, _ = _columns(reference, cfg.features)
        ideal = IdealizedAD(window, classifier=clf, **common).fit(mjj, x, ref_x[window.in_sr(ref_m)])
        out["idealized AD"] = (ideal.scores_[sig], ideal.scores_[bkg])
    if "cwola" in cfg.baselines:
        cwola = CWoLa(window, classifier=clf, **common).fit(mjj, x)
        out["CWoLa"] = (cwola.scores_[sig], cwola.scores_[bkg])
    if "anode" in cfg.baselines:
        anode = Anode(window, flow=flow, progress=progress, **common)
        anode.fit(mjj, x, background_flow=cathode.flows_[0])
        out["ANODE"] = (anode.scores_[sig], anode.scores_[bkg])
    if "supervised" in cfg.baselines:
        xs = x[sr]
        sup = Supervised(window, classifier=clf, **common).fit(xs[sig], xs[bkg])
        out["supervised"] = (sup.scores_, sup.reference_scores_)
    return out
