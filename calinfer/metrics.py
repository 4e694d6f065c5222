"""Classifier metrics for anomaly searches: ROC, AUC, SIC with a background floor, rejection, bootstrap bands.

Conventions (shared by the shower anomaly study and the resonant search):

* a higher score means "more signal-like / more anomalous"; a cut keeps events with ``score >= threshold``;
* every distinct score value is one operating point, so tied scores move together (no arbitrary tie order);
  the AUC integrates the ROC with the trapezoid rule, which counts a tied signal/background pair as 1/2
  (the Mann-Whitney statistic);
* SIC = TPR / sqrt(FPR). Where few background events pass a cut, FPR is dominated by the single last events
  and the SIC only shows sqrt(N_background); operating points keeping fewer than ``min_background``
  background events are therefore excluded from SIC curves and from the maximum SIC;
* with event weights the background floor is applied to the *effective* number of passing background events,
  (sum w)^2 / sum w^2 (Kish), which equals the raw count for unit weights and measures the statistical power of
  a weighted selection; raw counts are also reported (``RocCurve.n_background_raw``).

Empty classes, NaN scores and invalid weights raise :class:`calinfer.errors.InputError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from calinfer.errors import InputError

__all__ = [
    "DEFAULT_MIN_BACKGROUND",
    "Band",
    "Interval",
    "OperatingPoint",
    "RocCurve",
    "auc",
    "bootstrap",
    "curve_band",
    "fpr_at_tpr",
    "max_sic",
    "max_sic_point",
    "rejection_at",
    "roc_curve",
    "sic_curve",
    "summarize",
]

DEFAULT_MIN_BACKGROUND = 50.0
"""Default minimum (effective) number of background events a cut must keep to enter a SIC maximum."""

_FLOOR_RTOL = 1e-9


@dataclass(frozen=True)
class RocCurve:
    """Operating points of a score, one per distinct score value, ordered by decreasing threshold.

    The first point has ``threshold = +inf`` (nothing passes, TPR = FPR = 0) and the last keeps every event.

    Attributes
    ----------
    thresholds: cut values; an event passes if ``score >= threshold``.
    tpr, fpr: (weighted) fractions of signal and background events passing.
    n_signal, n_background: effective numbers of passing events, (sum w)^2 / sum w^2.
    n_background_raw: raw number of passing background events.
    """

    thresholds: np.ndarray
    tpr: np.ndarray
    fpr: np.ndarray
    n_signal: np.ndarray
    n_background: np.ndarray
    n_background_raw: np.ndarray

    @property
    def auc(self) -> float:
        """Area under the curve FPR -> TPR (trapezoid rule)."""
        return float(np.sum(np.diff(self.fpr) * (self.tpr[1:] + self.tpr[:-1]) / 2))

    def sic(self, min_background: float = DEFAULT_MIN_BACKGROUND) -> tuple[np.ndarray, np.ndarray]:
        """``(tpr, sic)`` at the operating points keeping at least ``min_background`` effective background events.

        Points with FPR = 0 are always dropped (SIC undefined there).
        """
        mask = self.sic_mask(min_background)
        return self.tpr[mask], self.tpr[mask] / np.sqrt(self.fpr[mask])

    def sic_mask(self, min_background: float = DEFAULT_MIN_BACKGROUND) -> np.ndarray:
        """Boolean mask of the operating points allowed in SIC curves and maxima."""
        if min_background < 0:
            raise InputError(f"min_background must be >= 0, got {min_background}")
        return (self.fpr > 0) & (self.n_background >= min_background * (1 - _FLOOR_RTOL))


@dataclass(frozen=True)
class OperatingPoint:
    """One cut: its threshold, efficiencies, SIC and number of passing background events (effective)."""

    threshold: float
    tpr: float
    fpr: float
    sic: float
    n_background: float


@dataclass(frozen=True)
class Interval:
    """A metric with its bootstrap spread: central value on the full sample, percentile interval, std."""

    value: float
    low: float
    high: float
    std: float

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high, "std": self.std}


@dataclass(frozen=True)
class Band:
    """A curve on a TPR grid with its bootstrap band (NaN where a point is not defined)."""

    tpr: np.ndarray
    value: np.ndarray
    low: np.ndarray
    high: np.ndarray


def _check_class(scores: np.ndarray | Sequence[float], weights, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.size == 0:
        raise InputError(f"no {what} scores given: ROC metrics need at least one {what} event")
    n_nan = int(np.count_nonzero(np.isnan(s)))
    if n_nan:
        raise InputError(f"{n_nan} of {s.size} {what} scores are NaN; remove or repair them before computing metrics")
    if weights is None:
        return s, None
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != s.shape:
        raise InputError(f"{what}: {w.size} weights for {s.size} scores")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise InputError(f"{what} weights must be finite and non-negative")
    if not w.sum() > 0:
        raise InputError(f"{what} weights sum to zero: the class is empty")
    return s, w


def roc_curve(
    scores_signal: np.ndarray | Sequence[float],
    scores_background: np.ndarray | Sequence[float],
    *,
    weights_signal: np.ndarray | None = None,
    weights_background: np.ndarray | None = None,
) -> RocCurve:
    """ROC operating points of a score (higher = more signal-like), see :class:`RocCurve`."""
    s, ws = _check_class(scores_signal, weights_signal, "signal")
    b, wb = _check_class(scores_background, weights_background, "background")
    ws = np.ones_like(s) if ws is None else ws
    wb = np.ones_like(b) if wb is None else wb
    scores = np.concatenate([s, b])
    is_bkg = np.concatenate([np.zeros(s.size, dtype=bool), np.ones(b.size, dtype=bool)])
    order = np.argsort(-scores, kind="mergesort")
    scores, is_bkg = scores[order], is_bkg[order]
    w = np.concatenate([ws, wb])[order]
    last = np.append(np.flatnonzero(scores[1:] != scores[:-1]), scores.size - 1)  # last index of each tie group

    def cum(x: np.ndarray) -> np.ndarray:
        return np.concatenate([[0.0], np.cumsum(x)[last]])

    sw, sw2 = cum(np.where(is_bkg, 0.0, w)), cum(np.where(is_bkg, 0.0, w * w))
    bw, bw2 = cum(np.where(is_bkg, w, 0.0)), cum(np.where(is_bkg, w * w, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        n_sig = np.where(sw2 > 0, sw * sw / sw2, 0.0)
        n_bkg = np.where(bw2 > 0, bw * bw / bw2, 0.0)
    return RocCurve(
        thresholds=np.concatenate([[np.inf], scores[last]]),
        tpr=sw / sw[-1],
        fpr=bw / bw[-1],
        n_signal=n_sig,
        n_background=n_bkg,
        n_background_raw=cum(is_bkg.astype(np.float64)),
    )


def auc(
    scores_signal: np.ndarray | Sequence[float],
    scores_background: np.ndarray | Sequence[float],
    *,
    weights_signal: np.ndarray | None = None,
    weights_background: np.ndarray | None = None,
) -> float:
    """Area under the ROC curve = P(score_s > score_b) + P(score_s = score_b) / 2 (weighted)."""
    return roc_curve(
        scores_signal, scores_background, weights_signal=weights_signal, weights_background=weights_background
    ).auc


def sic_curve(
    scores_signal: np.ndarray | Sequence[float],
    scores_background: np.ndarray | Sequence[float],
    *,
    min_background: float = DEFAULT_MIN_BACKGROUND,
    weights_signal: np.ndarray | None = None,
    weights_background: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(tpr, sic)`` with SIC = TPR / sqrt(FPR), stopping where fewer than ``min_background`` background pass."""
    roc = roc_curve(
        scores_signal, scores_background, weights_signal=weights_signal, weights_background=weights_background
    )
    return roc.sic(min_background)


def max_sic_point(
    scores_signal: np.ndarray | Sequence[float],
    scores_background: np.ndarray | Sequence[float],
    *,
    min_background: float = DEFAULT_MIN_BACKGROUND,
    weights_signal: np.ndarray | None = None,
    weights_background: np.ndarray | None = None,
    roc: RocCurve | None = None,
) -> OperatingPoint:
    """The cut with the largest SIC among those keeping at least ``min_background`` (effective) background events.

    Raises :class:`InputError` when even keeping every event leaves fewer than ``min_background`` background
    events (the floor cannot be met: use more background or a lower floor).
    """
    if roc is None:
        roc = roc_curve(
            scores_signal, scores_background, weights_signal=weights_signal, weights_background=weights_background
        )
    mask = roc.sic_mask(min_background)
    if not mask.any():
        raise InputError(
            f"the background sample has only {roc.n_background[-1]:.1f} effective events, fewer than "
            f"min_background = {min_background:g}; no cut can be used for a maximum SIC (lower min_background)"
        )
    idx = np.flatnonzero(mask)
    sic = roc.tpr[idx] / np.sqrt(roc.fpr[idx])
    best = idx[int(np.argmax(sic))]
    return OperatingPoint(
        threshold=float(roc.thresholds[best]),
        tpr=float(roc.tpr[best]),
        fpr=float(roc.fpr[best]),
        sic=float(sic.max()),
        n_background=float(roc.n_background[best]),
    )


def max_sic(
    scores_signal: np.ndarray | Sequence[float],
    scores_background: np.ndarray | Sequence[float],
    *,
    min_background: float = DEFAULT_MIN_BACKGROUND,
    weights_signal: np.ndarray | None = None,
    weights_background: np.ndarray | None = None,
) -> float:
    """Maximum SIC over cuts keeping at least ``min_background`` (effective) background events."""
    return max_sic_point(
        scores_signal,
        scores_background,
        min_background=min_background,
        weights_signal=weights_signal,
        weights_background=weights_background,
    ).sic


def fpr_at_tpr(roc: RocCurve, tpr: float | np.ndarray) -> np.ndarray:
    """Smallest FPR reaching the signal efficiency ``tpr``, interpolating linearly between operating points.

    Linear interpolation between two adjacent points is what a random choice between the two cuts achieves.
    """
    target = np.atleast_1d(np.asarray(tpr, dtype=np.float64))
    if np.any((target <= 0) | (target > 1)):
        raise InputError(f"signal efficiencies must lie in (0, 1], got {target.tolist()}")
    j = np.searchsorted(roc.tpr, target, side="left")  # first point with tpr >= target; j >= 1 since tpr[0] = 0
    t0, t1 = roc.tpr[j - 1], roc.tpr[j]
    f0, f1 = roc.fpr[j - 1], roc.fpr[j]
    out = f0 + (target - t0) / (t1 - t0) * (f1 - f0)
    return np.where(t1 == target, f1, out)


def rejection_at(
    scores_signal: np.ndarray | Sequence[float],
    scores_background: np.ndarray | Sequence[float],
    tpr: float = 0.3,
    *,
    weights_signal: np.ndarray | None = None,
    weights_background: np.ndarray | None = None,
) -> float:
    """Background rejection 1/FPR at signal efficiency ``tpr`` (``inf`` when no background passes)."""
    roc = roc_curve(
        scores_signal, scores_background, weights_signal=weights_signal, weights_background=weights_background
    )
    fpr = float(fpr_at_tpr(roc, tpr)[0])
    return float(np.inf) if fpr == 0 else 1.0 / fpr


Metric = Callable[[np.ndarray, np.ndarray, "np.ndarray | None", "np.ndarray | None"], float]


def _named_metric(name: str, min_background: float, tpr: float) -> Metric:
    if name == "auc":
        return lambda s, b, ws, wb: auc(s, b, weights_signal=ws, weights_background=wb)
    if name == "max_sic":
        return lambda s, b, ws, wb: max_sic(
            s, b, min_background=min_background, weights_signal=ws, weights_background=wb
        )
    if name == "rejection":
        return lambda s, b, ws, wb: rejection_at(s, b, tpr, weights_signal=ws, weights_background=wb)
    raise InputError(f"unknown metric {name!r}; use 'auc', 'max_sic', 'rejection' or a callable")


def _resample(rng: np.random.Generator, x: np.ndarray, w: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    idx = rng.integers(0, x.size, x.size)
    return x[idx], None if w is None else w[idx]


def bootstrap(
    scores_signal: np.ndarray | Sequence[float],
    scores_background: np.ndarray | Sequence[float],
    metrics: Sequence[str | Metric] = ("auc", "max_sic", "rejection"),
    *,
    weights_signal: np.ndarray | None = None,
    weights_background: np.ndarray | None = None,
    n_bootstrap: int = 200,
    level: float = 0.68,
    min_background: float = DEFAULT_MIN_BACKGROUND,
    tpr: float = 0.3,
    seed: int | np.random.Generator = 0,
) -> dict[str, Interval]:
    """Bootstrap intervals of several metrics, resampling signal and background separately (sizes kept).

    ``metrics`` are names (``"auc"``, ``"max_sic"``, ``"rejection"`` at ``tpr``) or callables
    ``f(s, b, weights_s, weights_b) -> float`` (keyed by their ``__name__``). Replicates where a metric is
    not finite (e.g. infinite rejection) are left out of its interval; if none is finite the interval is NaN.
    """
    s, ws = _check_class(scores_signal, weights_signal, "signal")
    b, wb = _check_class(scores_background, weights_background, "background")
    if n_bootstrap < 2:
        raise InputError(f"n_bootstrap must be at least 2, got {n_bootstrap}")
    if not 0 < level < 1:
        raise InputError(f"level must lie in (0, 1), got {level}")
    funcs = {
        (m if isinstance(m, str) else m.__name__): (_named_metric(m, min_background, tpr) if isinstance(m, str) else m)
        for m in metrics
    }
    rng = np.random.default_rng(seed)
    reps = {name: np.empty(n_bootstrap) for name in funcs}
    for i in range(n_bootstrap):
        s_i, ws_i = _resample(rng, s, ws)
        b_i, wb_i = _resample(rng, b, wb)
        for name, f in funcs.items():
            try:
                reps[name][i] = f(s_i, b_i, ws_i, wb_i)
            except InputError:  # e.g. a replicate whose weights happen to sum to zero
                reps[name][i] = np.nan
    out = {}
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    for name, f in funcs.items():
        r = reps[name][np.isfinite(reps[name])]
        low, high = np.percentile(r, q) if r.size else (np.nan, np.nan)
        std = float(np.std(r, ddof=1)) if r.size > 1 else float("nan")
        out[name] = Interval(value=float(f(s, b, ws, wb)), low=float(low), high=float(high), std=std)
    return out


def _curve_on_grid(roc: RocCurve, grid: np.ndarray, kind: str, min_background: float) -> np.ndarray:
    fpr = fpr_at_tpr(roc, grid)
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "rejection":
            return np.where(fpr > 0, 1.0 / fpr, np.inf)
        # effective background count at an interpolated point: FPR times the effective total
        ok = (fpr > 0) & (fpr * roc.n_background[-1] >= min_background * (1 - _FLOOR_RTOL))
        return np.where(ok, grid / np.sqrt(fpr), np.nan)


def curve_band(
    scores_signal: np.ndarray | Sequence[float],
    scores_background: np.ndarray | Sequence[float],
    *,
    kind: str = "sic",
    tpr_grid: np.ndarray | None = None,
    weights_signal: np.ndarray | None = None,
    weights_background: np.ndarray | None = None,
    n_bootstrap: int = 200,
    level: float = 0.68,
    min_background: float = DEFAULT_MIN_BACKGROUND,
    seed: int | np.random.Generator = 0,
) -> Band:
    """A SIC (``kind="sic"``) or rejection (``kind="rejection"``, 1/FPR) curve on a TPR grid with a bootstrap band.

    Values come from the full sample; the band holds the ``level`` percentile interval of the replicates.
    SIC points keeping fewer than ``min_background`` background events (FPR times the effective background
    total) are NaN; band percentiles use the replicates where the point is defined (NaN if fewer than half).
    """
    if kind not in ("sic", "rejection"):
        raise InputError(f"kind must be 'sic' or 'rejection', not {kind!r}")
    s, ws = _check_class(scores_signal, weights_signal, "signal")
    b, wb = _check_class(scores_background, weights_background, "background")
    grid = np.linspace(0.01, 1.0, 100) if tpr_grid is None else np.asarray(tpr_grid, dtype=np.float64)
    rng = np.random.default_rng(seed)
    reps = np.empty((n_bootstrap, grid.size))
    for i in range(n_bootstrap):
        s_i, ws_i = _resample(rng, s, ws)
        b_i, wb_i = _resample(rng, b, wb)
        roc_i = roc_curve(s_i, b_i, weights_signal=ws_i, weights_background=wb_i)
        reps[i] = _curve_on_grid(roc_i, grid, kind, min_background)
    value = _curve_on_grid(roc_curve(s, b, weights_signal=ws, weights_background=wb), grid, kind, min_background)
    finite = np.isfinite(reps)
    enough = finite.sum(axis=0) >= max(1, n_bootstrap // 2)
    q = [(1 - level) / 2, (1 + level) / 2]
    masked = np.where(finite, reps, np.nan)
    with np.errstate(all="ignore"):
        low = np.full(grid.size, np.nan)
        high = np.full(grid.size, np.nan)
        if enough.any():
            pct = np.nanquantile(masked[:, enough], q, axis=0)
            low[enough], high[enough] = pct[0], pct[1]
    return Band(tpr=grid, value=value, low=low, high=high)


def summarize(
    scores_signal: np.ndarray | Sequence[float],
    scores_background: np.ndarray | Sequence[float],
    *,
    weights_signal: np.ndarray | None = None,
    weights_background: np.ndarray | None = None,
    min_background: float = DEFAULT_MIN_BACKGROUND,
    tpr: float = 0.3,
    n_bootstrap: int = 0,
    seed: int | np.random.Generator = 0,
) -> dict:
    """JSON-ready summary: AUC, maximum SIC with its cut, rejection at ``tpr``, and bootstrap intervals if asked."""
    roc = roc_curve(
        scores_signal, scores_background, weights_signal=weights_signal, weights_background=weights_background
    )
    best = max_sic_point(scores_signal, scores_background, min_background=min_background, roc=roc)
    fpr = float(fpr_at_tpr(roc, tpr)[0])
    out: dict = {
        "n_signal": int(np.size(scores_signal)),
        "n_background": int(np.size(scores_background)),
        "auc": roc.auc,
        "max_sic": best.sic,
        "max_sic_tpr": best.tpr,
        "max_sic_fpr": best.fpr,
        "max_sic_threshold": best.threshold,
        "max_sic_n_background": best.n_background,
        "min_background": float(min_background),
        "rejection_tpr": float(tpr),
        "rejection": float("inf") if fpr == 0 else 1.0 / fpr,
        # the largest SIC any cut can reach given the floor (TPR = 1 with exactly min_background passing)
        "sic_cap": float(np.sqrt(roc.n_background[-1] / max(min_background, 1.0))),
    }
    if n_bootstrap:
        intervals = bootstrap(
            scores_signal,
            scores_background,
            weights_signal=weights_signal,
            weights_background=weights_background,
            n_bootstrap=n_bootstrap,
            min_background=min_background,
            tpr=tpr,
            seed=seed,
        )
        out["bootstrap"] = {name: iv.to_dict() for name, iv in intervals.items()}
        out["n_bootstrap"] = int(n_bootstrap)
    return out
