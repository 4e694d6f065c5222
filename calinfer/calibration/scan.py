"""Locating the global minimum of a 1-d ``-ln L(u)``, ``u = ln E``: a coarse scan made as fine as the likelihood.

A fixed coarse grid misses a minimum much narrower than its step (a layer likelihood about 2% wide at 90 GeV
between the points of a 22%-step scan, while a broader false minimum near E/2 lies on the grid). The scan here
bisects every interval of the grid that could still hide a deeper minimum: a minimum of width ``sigma`` (a
parabola ``Delta = (u - u0)**2 / (2 sigma**2)`` near it) lying more than ``margin`` below the best point found
cannot come closer than ``sigma sqrt(2 (y - y_best + margin))`` to a grid point of value ``y``, so an interval
whose ends exclude more than its length is clean. ``sigma`` is the guard width: the smaller of a fixed floor and
a fraction of the best minimum's own width, so the scan follows the likelihood's width.

:func:`adaptive_scan` returns the per-row summaries the refinement needs (brackets, multi-modality, the best scan
point); :func:`bracket` and :func:`parabola_bracket` are shared with the refinement grids.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["DEFAULT_ENERGY_RANGE", "UP", "ScanResult", "adaptive_scan", "bracket", "multimodal", "parabola_bracket"]

DEFAULT_ENERGY_RANGE = (1.0, 100.0)
"""Energy range (GeV) searched when neither the caller nor the surrogate names one."""

UP = 0.5
"""Delta(-ln L) of a 68.3% interval for one parameter."""


@dataclass
class ScanResult:
    """Per-row summary of a scan in ``u = ln E`` (arrays of length n).

    a_safe, b_safe: grid points nearest the minimum where ``-ln L`` exceeds the minimum by the bracket rise.
    a, b: tighter bracket from the parabola through the best point and its neighbours (inside the safe one).
    multimodal: a second local minimum within ``multimodal_delta`` of the best one, behind a barrier >= 0.5.
    u_best, y_best: best grid point and its value.
    u_second, y_second: best other local minimum of the grid (NaN / inf if there is none).
    n_points: grid points used for the row.
    hull_lo, hull_hi: where the outermost grid points within the bracket rise of the minimum reach that rise
        (linear interpolation to the next grid point): all the basins that come that close, and what lies between.
    resolved: no interval that could hide a deeper minimum was left when the scan stopped (False: ``max_points``
        was reached first, so the best point found need not be the global minimum).
    """

    a_safe: np.ndarray
    b_safe: np.ndarray
    a: np.ndarray
    b: np.ndarray
    multimodal: np.ndarray
    u_best: np.ndarray
    y_best: np.ndarray
    u_second: np.ndarray
    y_second: np.ndarray
    n_points: np.ndarray
    hull_lo: np.ndarray
    hull_hi: np.ndarray
    resolved: np.ndarray


def adaptive_scan(
    fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    lo: np.ndarray,
    hi: np.ndarray,
    *,
    n_scan: int,
    min_width: float,
    max_points: int,
    rise: float,
    parabola_rise: float,
    multimodal_delta: float,
    width_factor: float = 0.5,
    margin: float = UP,
    ends: tuple[np.ndarray, np.ndarray] | None = None,
) -> ScanResult:
    """Scan ``fn(rows, u (m, G)) -> -ln L (m, G)`` of rows ``0..n-1`` over ``[lo, hi]`` (per row, ``u = ln E``).

    A coarse grid of ``n_scan`` points, then bisection of every interval that could hide a minimum more than
    ``margin`` below the best point found, were that minimum a parabola of width ``sigma_g`` (in u):
    ``sigma_g = min(min_width, width_factor * sigma_best)``, ``sigma_best`` the width of the best point from the
    parabola through it and its neighbours (so the guard follows the likelihood's own width). An interval of
    length ``L`` between points ``margin + d_l`` and ``margin + d_r`` above the best one is excluded when
    ``L <= sigma_g (sqrt(2 d_l) + sqrt(2 d_r))`` (with ``d`` counted from ``best - margin``). At most
    ``max_points`` points per row. ``ends``: whether ``lo`` / ``hi`` of each row are edges of the allowed range
    (see :func:`multimodal`; default: they are).
    """
    n = len(lo)
    t = np.linspace(0.0, 1.0, int(n_scan))
    u = lo[:, None] + t[None, :] * (hi - lo)[:, None]
    y = fn(np.arange(n), u)
    count = np.full(n, u.shape[1])
    while True:
        sigma_g = np.minimum(min_width, width_factor * _best_width(u, y))
        best = y.min(axis=1, keepdims=True)
        reach = sigma_g[:, None] * np.sqrt(2 * np.maximum(y - best + margin, 0.0))
        length = np.diff(u, axis=1)
        split = length > reach[:, :-1] + reach[:, 1:]
        split &= np.arange(length.shape[1])[None, :] < (count - 1)[:, None]  # not the padding
        wanted = split.any(axis=1)
        split &= count[:, None] + np.cumsum(split, axis=1) <= max_points  # the first ones until the row is full
        rows, seg = np.nonzero(split)
        if len(rows) == 0:
            break
        u_new = 0.5 * (u[rows, seg] + u[rows, seg + 1])
        y_new = fn(rows, u_new[:, None])[:, 0]
        u, y, count = _insert(u, y, count, rows, u_new, y_new)
    out = ScanResult(*(np.empty(n) for _ in range(4)), np.zeros(n, bool), *(np.empty(n) for _ in range(7)),
                     resolved=~wanted)
    _summarize(out, np.arange(n), u, y, rise, parabola_rise, multimodal_delta, ends)
    out.n_points[:] = count
    return out


def _insert(
    u: np.ndarray, y: np.ndarray, count: np.ndarray, rows: np.ndarray, u_new: np.ndarray, y_new: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Add points to the rows' sorted grids; each row is padded with copies of its last point."""
    added = np.bincount(rows, minlength=len(u))
    width = int((count + added).max())
    pad = width - u.shape[1]
    extra_u = np.full((len(u), added.max()), np.inf)
    extra_y = np.full((len(u), added.max()), np.inf)
    order = np.argsort(rows, kind="stable")
    rows_sorted = rows[order]
    slot = np.arange(len(rows)) - np.searchsorted(rows_sorted, rows_sorted)
    extra_u[rows_sorted, slot], extra_y[rows_sorted, slot] = u_new[order], y_new[order]
    valid = np.arange(u.shape[1])[None, :] < count[:, None]
    all_u = np.concatenate([np.where(valid, u, np.inf), extra_u], axis=1)
    all_y = np.concatenate([np.where(valid, y, np.inf), extra_y], axis=1)
    idx = np.argsort(all_u, axis=1, kind="stable")[:, : u.shape[1] + max(pad, 0)]
    u2, y2 = np.take_along_axis(all_u, idx, 1), np.take_along_axis(all_y, idx, 1)
    count = count + added
    last = (count - 1)[:, None]
    pad_mask = np.arange(u2.shape[1])[None, :] > last
    u2 = np.where(pad_mask, np.take_along_axis(u2, last, 1), u2)
    y2 = np.where(pad_mask, np.take_along_axis(y2, last, 1), y2)
    return u2, y2, count


def _parabola(u: np.ndarray, y: np.ndarray, mid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertex and second derivative of the parabola through points ``mid - 1, mid, mid + 1`` of each row."""
    rows = np.arange(len(y))
    u0, u1, u2 = u[rows, mid - 1], u[rows, mid], u[rows, mid + 1]
    y0, y1, y2 = y[rows, mid - 1], y[rows, mid], y[rows, mid + 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        s0, s1 = (y1 - y0) / (u1 - u0), (y2 - y1) / (u2 - u1)
        second = 2 * (s1 - s0) / (u2 - u0)
        vertex = 0.5 * (u0 + u1) - s0 / second
    return vertex, second


def _best_width(u: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``1 / sqrt(curvature)`` at each row's best point (inf where it is an edge or the curvature is not positive)."""
    g = y.shape[1]
    best = y.argmin(axis=1)
    mid = best.clip(1, g - 2)
    _, second = _parabola(u, y, mid)
    with np.errstate(divide="ignore", invalid="ignore"):
        width = 1.0 / np.sqrt(np.where(second > 0, second, np.nan))
    return np.where((best == mid) & np.isfinite(width), width, np.inf)


def _summarize(
    out: ScanResult,
    rows: np.ndarray,
    u: np.ndarray,
    y: np.ndarray,
    rise: float,
    parabola_rise: float,
    multimodal_delta: float,
    ends: tuple[np.ndarray, np.ndarray] | None,
) -> None:
    a_safe, b_safe = bracket(u, y, rise)
    a, b = parabola_bracket(u, y, a_safe, b_safe, parabola_rise)
    mm, second = multimodal(y, multimodal_delta, ends)
    best = y.argmin(axis=1)
    idx = np.arange(len(y))
    out.a_safe[rows], out.b_safe[rows], out.a[rows], out.b[rows] = a_safe, b_safe, a, b
    out.multimodal[rows] = mm
    out.u_best[rows], out.y_best[rows] = u[idx, best], y[idx, best]
    has = second >= 0
    out.u_second[rows] = np.where(has, u[idx, second.clip(0)], np.nan)
    out.y_second[rows] = np.where(has, y[idx, second.clip(0)], np.inf)
    low = y - y[idx, best][:, None] <= rise
    g = y.shape[1]
    first, last = low.argmax(axis=1), g - 1 - low[:, ::-1].argmax(axis=1)
    thr = y[idx, best] + rise
    out.hull_lo[rows] = _crossing(u, y, idx, first, (first - 1).clip(0), thr)
    out.hull_hi[rows] = _crossing(u, y, idx, last, (last + 1).clip(max=g - 1), thr)


def _crossing(u: np.ndarray, y: np.ndarray, idx: np.ndarray, inside: np.ndarray, outside: np.ndarray, thr: np.ndarray):
    """Where the straight line between an inside grid point (``y <= thr``) and its outer neighbour reaches ``thr``
    (beyond the true crossing of a convex function: conservative); the grid edge if there is no outer point."""
    y_in, y_out = y[idx, inside], y[idx, outside]
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.clip((thr - y_in) / (y_out - y_in), 0.0, 1.0)
    f = np.where(outside == inside, 0.0, np.nan_to_num(f, nan=1.0))
    return u[idx, inside] + f * (u[idx, outside] - u[idx, inside])


def multimodal(
    y: np.ndarray, delta: float, ends: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a scan ``y (N, G)`` with a second local minimum within ``delta`` of the best one behind a barrier
    of at least 0.5, and the index of the best other local minimum of each row (-1 if none). ``ends``: per row,
    whether the first / last grid point is an edge of the allowed range (only there can an end be a minimum;
    default: both are)."""
    first_end, last_end = (np.ones(len(y), bool), np.ones(len(y), bool)) if ends is None else ends
    inner = (y[:, 1:-1] < y[:, :-2]) & (y[:, 1:-1] <= y[:, 2:])
    is_min = np.concatenate([((y[:, 0] < y[:, 1]) & first_end)[:, None], inner,
                             ((y[:, -1] < y[:, -2]) & last_end)[:, None]], axis=1)
    rows = np.arange(len(y))
    best = y.argmin(axis=1)
    y_best = y[rows, best]
    others = is_min.copy()
    others[rows, best] = False
    second = np.where(others.any(axis=1), np.where(others, y, np.inf).argmin(axis=1), -1)
    candidates = others & (y - y_best[:, None] < delta)
    out = np.zeros(len(y), dtype=bool)
    for i in np.flatnonzero(candidates.any(axis=1)):
        for j in np.flatnonzero(candidates[i]):
            lo, hi = sorted((j, best[i]))
            if y[i, lo : hi + 1].max() - y[i, j] >= UP:
                out[i] = True
                break
    return out, second


def bracket(u: np.ndarray, y: np.ndarray, rise: float) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the grid points nearest the minimum on each side where ``y`` exceeds its minimum by ``rise``.

    At least the neighbours of the minimum are included, and a side that never rises ends at the grid edge.
    """
    n, g = y.shape
    rows = np.arange(n)
    best = y.argmin(axis=1)
    high = y - y[rows, best][:, None] > rise
    idx = np.arange(g)[None, :]
    left = np.where(high & (idx < best[:, None]), idx, -1).max(axis=1)
    right = np.where(high & (idx > best[:, None]), idx, g).min(axis=1)
    left = np.where(left < 0, 0, np.minimum(left, best - 1).clip(0))
    right = np.where(right >= g, g - 1, np.maximum(right, best + 1).clip(max=g - 1))
    return u[rows, left].copy(), u[rows, right].copy()


def parabola_bracket(
    u: np.ndarray, y: np.ndarray, a_safe: np.ndarray, b_safe: np.ndarray, rise: float
) -> tuple[np.ndarray, np.ndarray]:
    """Where the parabola through each row's best grid point and its neighbours rises by ``rise``, inside
    ``[a_safe, b_safe]``; rows without an interior minimum of positive curvature keep ``[a_safe, b_safe]``."""
    g = y.shape[1]
    best = y.argmin(axis=1)
    mid = best.clip(1, g - 2)
    centre, second = _parabola(u, y, mid)
    with np.errstate(divide="ignore", invalid="ignore"):  # rows without a finite parabola are not `ok`
        half = np.sqrt(2 * rise / second)
        ok = (best == mid) & (second > 0) & np.isfinite(centre) & np.isfinite(half)
        a = np.where(ok, np.maximum(centre - half, a_safe), a_safe)
        b = np.where(ok, np.minimum(centre + half, b_safe), b_safe)
    bad = b <= a
    return np.where(bad, a_safe, a), np.where(bad, b_safe, b)
