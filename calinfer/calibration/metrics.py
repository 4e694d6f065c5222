"""Figures of merit of an energy calibration at fixed true energy.

* **mode** of ``E_pred / E_true``: maximum of a Gaussian KDE (Scott bandwidth), bootstrapped
  (20 resamples by default): mean and spread of the modes (as in arXiv:2404.18992);
* **relative resolution**: 68.3% half width of ``E_pred / E_true`` around the mode, divided by the mode;
* **coverage**: fraction of showers whose interval ``[E_lo, E_hi]`` contains ``E_true``, with its binomial error;
* **pulls**: ``(E_mle - E_true) / sigma`` with the half width on the side of the truth, so ``|pull| < 1``
  exactly when the interval covers;
* **sigma vs spread**: the median per-shower half width compared with the observed 68.3% half width of ``E_mle``.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import gaussian_kde

from calinfer.errors import InputError

__all__ = [
    "CL68",
    "coverage",
    "half_width",
    "kde_mode",
    "pulls",
    "ratio_summary",
    "sigma_vs_spread",
    "summarize_by_energy",
]

CL68 = 0.6826894921370859
"""Probability content of +-1 sigma of a Gaussian."""


def _finite(values: np.ndarray, what: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        raise InputError(f"{what}: need at least 2 finite values, got {len(values)}")
    return values


def _mode_of(sample: np.ndarray, grid_size: int) -> float:
    """Maximum of the Scott-bandwidth Gaussian KDE of ``sample``: grid search, then a finer grid around the best."""
    lo, hi = np.quantile(sample, [0.005, 0.995])
    if hi <= lo:  # (nearly) all values equal: no density to estimate
        return float(np.median(sample))
    kde = gaussian_kde(sample, bw_method="scott")
    grid = np.linspace(lo, hi, grid_size)
    best = grid[np.argmax(kde(grid))]
    step = grid[1] - grid[0]
    fine = np.linspace(best - step, best + step, 41)
    return float(fine[np.argmax(kde(fine))])


def kde_mode(
    values: np.ndarray, *, n_boot: int = 20, seed: int | np.random.Generator = 0, grid_size: int = 512
) -> tuple[float, float]:
    """Bootstrapped KDE mode of ``values``: ``(mean, standard deviation)`` over ``n_boot`` resamples."""
    values = _finite(values, "kde_mode")
    rng = np.random.default_rng(seed)
    modes = [_mode_of(rng.choice(values, size=len(values), replace=True), grid_size) for _ in range(n_boot)]
    return float(np.mean(modes)), float(np.std(modes, ddof=1)) if n_boot > 1 else 0.0


def half_width(values: np.ndarray, center: float, content: float = CL68) -> float:
    """Smallest half width ``w`` such that ``[center - w, center + w]`` holds ``content`` of ``values``."""
    values = _finite(values, "half_width")
    return float(np.quantile(np.abs(values - center), content))


def ratio_summary(
    e_pred: np.ndarray, e_true: np.ndarray, *, n_boot: int = 20, seed: int | np.random.Generator = 0
) -> dict[str, float]:
    """Mode (bootstrapped KDE) and relative resolution of ``e_pred / e_true`` with their bootstrap spreads."""
    ratio = _finite(np.asarray(e_pred, dtype=np.float64) / np.asarray(e_true, dtype=np.float64), "ratio_summary")
    rng = np.random.default_rng(seed)
    modes, resolutions = [], []
    for _ in range(n_boot):
        sample = rng.choice(ratio, size=len(ratio), replace=True)
        mode = _mode_of(sample, 512)
        modes.append(mode)
        resolutions.append(half_width(sample, mode) / mode)
    return {
        "n": float(len(ratio)),
        "mode": float(np.mean(modes)),
        "mode_err": float(np.std(modes, ddof=1)),
        "resolution": float(np.mean(resolutions)),
        "resolution_err": float(np.std(resolutions, ddof=1)),
        "median": float(np.median(ratio)),
    }


def coverage(e_lo: np.ndarray, e_hi: np.ndarray, e_true: np.ndarray) -> tuple[float, float]:
    """Fraction of intervals ``[e_lo, e_hi]`` that contain ``e_true`` and its binomial standard error."""
    e_lo, e_hi, e_true = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (e_lo, e_hi, e_true))
    if not len(e_lo) == len(e_hi) == len(e_true) or len(e_true) == 0:
        raise InputError(f"coverage: need equal, non-zero lengths, got {len(e_lo)}, {len(e_hi)}, {len(e_true)}")
    p = float(np.mean((e_lo <= e_true) & (e_true <= e_hi)))
    return p, float(np.sqrt(p * (1 - p) / len(e_true)))


def pulls(e_mle: np.ndarray, e_lo: np.ndarray, e_hi: np.ndarray, e_true: np.ndarray) -> np.ndarray:
    """``(e_mle - e_true) / sigma`` with ``sigma`` the interval half width on the side where the truth lies."""
    e_mle, e_lo, e_hi, e_true = (np.asarray(v, dtype=np.float64) for v in (e_mle, e_lo, e_hi, e_true))
    sigma = np.where(e_true > e_mle, e_hi - e_mle, e_mle - e_lo)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (e_mle - e_true) / sigma


def sigma_vs_spread(e_mle: np.ndarray, e_lo: np.ndarray, e_hi: np.ndarray) -> dict[str, float]:
    """Median per-shower half width ``(E_hi - E_lo) / 2`` against the observed 68.3% half width of ``E_mle`` (GeV).

    Meant for showers of one true energy; a ratio near 1 says the per-shower intervals have the right size.
    """
    e_mle = _finite(e_mle, "sigma_vs_spread")
    sigma = np.median((np.asarray(e_hi) - np.asarray(e_lo)) / 2)
    spread = half_width(e_mle, float(np.median(e_mle)))
    return {"median_sigma": float(sigma), "observed_spread": spread, "ratio": float(sigma / spread)}


def summarize_by_energy(
    e_true: np.ndarray,
    e_pred: np.ndarray,
    e_lo: np.ndarray | None = None,
    e_hi: np.ndarray | None = None,
    *,
    n_boot: int = 20,
    seed: int = 0,
) -> list[dict[str, float]]:
    """One summary per distinct true energy: :func:`ratio_summary`, and with intervals also coverage, pulls and
    :func:`sigma_vs_spread`."""
    e_true = np.asarray(e_true, dtype=np.float64)
    e_pred = np.asarray(e_pred, dtype=np.float64)
    out = []
    for k, energy in enumerate(np.unique(e_true)):
        sel = e_true == energy
        row = {"energy": float(energy), **ratio_summary(e_pred[sel], e_true[sel], n_boot=n_boot, seed=seed + k)}
        if e_lo is not None and e_hi is not None:
            lo, hi = np.asarray(e_lo)[sel], np.asarray(e_hi)[sel]
            row["coverage"], row["coverage_err"] = coverage(lo, hi, e_true[sel])
            p = pulls(e_pred[sel], lo, hi, e_true[sel])
            p = p[np.isfinite(p)]
            row["pull_median"] = float(np.median(p))
            row["pull_width"] = half_width(p, float(np.median(p)))
            row.update(sigma_vs_spread(e_pred[sel], lo, hi))
        out.append(row)
    return out
