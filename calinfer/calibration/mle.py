"""Per-shower maximum-likelihood energy calibration with asymmetric likelihood intervals.

For every shower the surrogate gives ``-ln L(E) = -ln p(shower | E)``. The fit never sees the
true energy. Each batch of showers goes through four steps; only the Minuit fits run per shower:

1. **coarse scan**: ``-ln L`` of every shower at ``n_scan`` energies spaced evenly in ``ln E``
   over the allowed range (one batched surrogate call); its local minima tell whether the
   likelihood is multi-modal, its global minimum where to look (the full likelihood is scanned
   itself: its minimum need not lie in the basin of its layers part, e.g. for anomalous showers
   or an imperfect flow II);
2. **refinement**: a probe grid of ``n_refine // 2`` points where the parabola through the best
   scan point and its neighbours rises by about ``bracket_rise``, then grids of ``n_refine``
   points placed the same way from the previous grid, re-made while one is too coarse for the
   width of the likelihood or too tight to hold the 0.5 crossings; one batched surrogate call
   per grid;
3. **iminuit**: a cubic spline in ``ln E`` through the last grid is the per-shower interpolant;
   MIGRAD finds its minimum and MINOS the crossings of ``Delta(-ln L) = 0.5`` (errordef 0.5),
   i.e. the 68.3% likelihood interval;
4. **polish**: ``n_polish`` points within ``polish_width`` of the interval half width around the
   minimum (one more batched call) and the exact minimum of a local spline through them: a
   flow's ``-ln L`` has kinks at the edges of its spline bins that a grid of ~0.4 sigma steps
   smooths over.

Open sides, range edges and the multi-modality seen by the scan are reported as :class:`Status`
flags. The likelihood is a density of the shower given the parameter ``E``; its maximum and the
crossings do not depend on whether ``E`` or ``ln E`` is the fit parameter, so the fit uses
``ln E`` (better conditioned over two decades) and reports energies in GeV.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np
from iminuit import Minuit
from scipy.interpolate import CubicSpline

from calinfer.errors import InputError
from calinfer.showers import Showers

if TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_ENERGY_RANGE", "CalibrationResult", "Calibrator", "Status", "describe_status"]

DEFAULT_ENERGY_RANGE = (1.0, 100.0)
"""Energy range (GeV) searched when neither the caller nor the surrogate names one."""

_UP = 0.5  # Delta(-ln L) of a 68.3% interval for one parameter
_WIDEN = 1.5  # refinement grids span the parabola's bracket widened by this factor


class Status(enum.IntFlag):
    """Bit flags describing one shower's fit (stored as an integer branch ``status``)."""

    CONVERGED = 1  # MIGRAD found a valid minimum and MINOS both crossings (or an open side, see below)
    AT_BOUNDARY = 2  # the maximum-likelihood energy lies on an edge of the allowed range
    OPEN_LOW = 4  # -ln L does not rise by 0.5 below E_mle before the lower edge: E_lo is that edge
    OPEN_HIGH = 8  # same above E_mle: E_hi is the upper edge
    MULTIMODAL = 16  # the coarse scan found a second, separated local minimum close to the best one


_CONVERGED, _AT_BOUNDARY, _OPEN_LOW, _OPEN_HIGH, _MULTIMODAL = (int(flag) for flag in Status)  # plain ints: fast
_FCN_INVALID = 1e30  # -ln L returned to Minuit for a non-finite parameter value


def describe_status(status: int) -> str:
    """Human-readable flag names, e.g. ``"CONVERGED|OPEN_HIGH"``; ``"FAILED"`` if nothing is set."""
    names = [flag.name for flag in Status if int(status) & flag]
    return "|".join(names) if names else "FAILED"  # type: ignore[arg-type]


@dataclass
class CalibrationResult:
    """Fit results for N showers (energies in GeV).

    Attributes
    ----------
    e_mle: maximum-likelihood incident energy.
    e_lo, e_hi: edges of the 68.3% likelihood interval (``Delta(-ln L) = 0.5``).
    status: :class:`Status` bit flags.
    nll: ``-ln L`` at the minimum (from the interpolant, exact at its knots).
    """

    e_mle: np.ndarray
    e_lo: np.ndarray
    e_hi: np.ndarray
    status: np.ndarray
    nll: np.ndarray

    def __post_init__(self) -> None:
        self.status = np.asarray(self.status, dtype=np.int32)

    def __len__(self) -> int:
        return len(self.e_mle)

    def __getitem__(self, index: slice | np.ndarray) -> CalibrationResult:
        return CalibrationResult(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @property
    def sigma_lo(self) -> np.ndarray:
        """Lower half width ``E_mle - E_lo`` (GeV)."""
        return self.e_mle - self.e_lo

    @property
    def sigma_hi(self) -> np.ndarray:
        """Upper half width ``E_hi - E_mle`` (GeV)."""
        return self.e_hi - self.e_mle

    def has(self, flag: Status) -> np.ndarray:
        """Boolean mask of the showers with ``flag`` set."""
        return (self.status & int(flag)) != 0

    def to_branches(self) -> dict[str, np.ndarray]:
        """Branches of the ``calibration`` output tree."""
        return {"E_mle": self.e_mle, "E_lo": self.e_lo, "E_hi": self.e_hi, "status": self.status, "nll": self.nll}

    @classmethod
    def concatenate(cls, parts: list[CalibrationResult]) -> CalibrationResult:
        """Join the results of consecutive chunks."""
        if not parts:
            raise InputError("no calibration results to concatenate")
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)})

    def summary(self) -> dict[str, float]:
        """Counts of each flag and medians of the relative half widths."""
        out: dict[str, float] = {"showers": float(len(self))}
        for flag in Status:
            out[flag.name.lower()] = float(self.has(flag).sum())  # type: ignore[union-attr]
        ok = self.has(Status.CONVERGED) & ~self.has(Status.OPEN_LOW | Status.OPEN_HIGH)
        if ok.any():
            out["median_rel_sigma_lo"] = float(np.median(self.sigma_lo[ok] / self.e_mle[ok]))
            out["median_rel_sigma_hi"] = float(np.median(self.sigma_hi[ok] / self.e_mle[ok]))
        return out


class Calibrator:
    """Maximum-likelihood incident energies of showers under a surrogate (or ensemble).

    Parameters
    ----------
    surrogate: object with ``log_prob_layers(layer_energies (N, L), energies (N, G)) -> (N, G)`` for
        ``likelihood="layers"`` and ``log_prob(voxels (N, V), energies (N, G), part="full") -> (N, G)``
        for ``likelihood="full"`` (e.g. :class:`calinfer.surrogate.ShowerSurrogate`).
    likelihood: ``"layers"`` (flow I: the layer energies given E, default) or ``"full"`` (the whole shower).
    energy_range: allowed ``(lo, hi)`` in GeV; default: the surrogate's ``energy_range`` (that of its training
        data) if it has one, else :data:`DEFAULT_ENERGY_RANGE`. Keep it inside the range the surrogate was
        trained on: outside, the flow extrapolates.
    n_scan: coarse-scan points, evenly spaced in ``ln E``.
    n_refine: points of each refinement grid (the first, probing grid has half as many).
    bracket_rise: ``Delta(-ln L)`` that delimits the refined bracket around the minimum (must exceed 0.5).
    min_points: refine again while fewer grid points than this lie within ``bracket_rise`` of the minimum.
    max_refine: the most refinement rounds.
    n_polish: points of the final local grid around each minimum (0: no polishing).
    polish_width: half width of that grid as a fraction of the smaller interval half width.
    multimodal_delta: a second local minimum of the scan at most this much above the best one, separated from
        it by a barrier of at least 0.5, flags the shower as multi-modal.
    batch_size: showers per batch (one surrogate call per stage).
    workers: batches fitted concurrently in threads (see :meth:`fit`).
    dtype: torch dtype the surrogate evaluates in (default: its own, float32); float64 removes the ~1e-6
        round-off noise of -ln L, at several times the cost.
    """

    def __init__(
        self,
        surrogate: object,
        *,
        likelihood: str = "layers",
        energy_range: tuple[float, float] | None = None,
        n_scan: int = 24,
        n_refine: int = 16,
        bracket_rise: float = 2.0,
        min_points: int = 8,
        max_refine: int = 4,
        n_polish: int = 8,
        polish_width: float = 0.3,
        multimodal_delta: float = 2.0,
        batch_size: int = 2048,
        workers: int = 1,
        dtype: torch.dtype | None = None,
    ) -> None:
        if likelihood not in ("layers", "full"):
            raise InputError(f"likelihood must be 'layers' or 'full', not {likelihood!r}")
        lo, hi = energy_range or getattr(surrogate, "energy_range", None) or DEFAULT_ENERGY_RANGE
        if not 0 < lo < hi:
            raise InputError(f"energy range must satisfy 0 < lo < hi (GeV), got ({lo}, {hi})")
        if bracket_rise <= _UP:
            raise InputError(f"bracket_rise must exceed {_UP}, got {bracket_rise}")
        if n_scan < 4 or n_refine < 4 or min_points < 3:
            raise InputError("n_scan and n_refine need at least 4 points, min_points at least 3")
        self.surrogate = surrogate
        self.likelihood = likelihood
        self.energy_range = (float(lo), float(hi))
        self.n_scan = int(n_scan)
        self.n_refine = int(n_refine)
        self.bracket_rise = float(bracket_rise)
        self.min_points = int(min_points)
        self.max_refine = int(max_refine)
        self.n_polish = int(n_polish)
        self.polish_width = float(polish_width)
        self.multimodal_delta = float(multimodal_delta)
        self.batch_size = int(batch_size)
        self.workers = max(1, int(workers))
        self._options = {} if dtype is None else {"dtype": dtype}

    # ------------------------------------------------------------------ likelihood
    def inputs(self, data: Showers | np.ndarray) -> np.ndarray:
        """The per-shower array the likelihood needs: layer energies ``(N, L)`` or voxels ``(N, V)`` (GeV).

        ``data`` is a :class:`Showers` or already that array.
        """
        if isinstance(data, Showers):
            geometry = getattr(self.surrogate, "geometry", None)
            if geometry is not None:
                geometry.check(data.geometry, what=f"showers from {data.source}")
            x = data.layer_energies() if self.likelihood == "layers" else data.voxels
        else:
            x = np.asarray(data)
        if x.ndim != 2 or len(x) == 0:
            raise InputError(f"expected a non-empty (N, features) array of showers, got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            bad = np.flatnonzero(~np.all(np.isfinite(x), axis=1))
            raise InputError(f"showers {bad[:10].tolist()} contain NaN or infinite energies; remove them first")
        return x

    def nll(self, data: Showers | np.ndarray, energies: np.ndarray) -> np.ndarray:
        """``-ln L`` of every shower at energies (GeV) of shape ``(N, G)`` or ``(1, G)`` -> ``(N, G)``."""
        return self._nll(self.inputs(data), np.asarray(energies, dtype=np.float64))

    def _nll(self, x: np.ndarray, energies: np.ndarray) -> np.ndarray:
        if self.likelihood == "layers":
            logp = self.surrogate.log_prob_layers(x, energies, **self._options)  # type: ignore[attr-defined]
        else:
            logp = self.surrogate.log_prob(x, energies, part="full", **self._options)  # type: ignore[attr-defined]
        out = -np.asarray(logp, dtype=np.float64)
        # a shower the model cannot produce at some energy has -ln L = inf there; keep it finite and large
        return np.nan_to_num(out, nan=np.inf, posinf=1e30, neginf=-1e30)

    # ------------------------------------------------------------------ fit
    def fit(self, data: Showers | np.ndarray, *, progress: Callable[[int], None] | None = None) -> CalibrationResult:
        """Fit every shower; ``progress(n)`` is called with the number of showers finished after each batch.

        With ``workers > 1`` that many batches are fitted at once in threads: the surrogate's torch kernels
        release the GIL, so one batch's flow evaluation overlaps another's Minuit fits (give torch one
        intra-op thread per worker then, e.g. ``torch.set_num_threads(1)``). Results do not depend on it.
        """
        x = self.inputs(data)
        size = min(self.batch_size, -(-len(x) // self.workers))  # every worker gets a batch
        batches = [x[start : start + size] for start in range(0, len(x), size)]
        parts = []
        with ThreadPoolExecutor(min(self.workers, len(batches))) as pool:
            for part in pool.map(self._fit_batch, batches):  # in input order
                parts.append(part)
                if progress is not None:
                    progress(len(part))
        return CalibrationResult.concatenate(parts)

    def fit_direct(
        self,
        data: Showers | np.ndarray,
        *,
        start: np.ndarray | None = None,
        tol: float = 0.1,
        progress: Callable[[int], None] | None = None,
    ) -> CalibrationResult:
        """The straightforward reference: one Minuit per shower that calls the surrogate at every evaluation.

        MIGRAD starts at ``start`` (GeV, one per shower; default: the logarithmic middle of the energy range,
        which uses no truth), then HESSE and MINOS give the interval; ``tol`` is MIGRAD's tolerance (iminuit's
        default 0.1 stops ~0.02 sigma from the minimum; much lower fails on float32 round-off, but suits
        ``dtype=torch.float64``). Slow (a few showers per second with a flow); kept to validate :meth:`fit`.
        It has no multi-modality flag and can stop in a local minimum.
        """
        x = self.inputs(data)
        u_min, u_max = math.log(self.energy_range[0]), math.log(self.energy_range[1])
        u_start = np.full(len(x), 0.5 * (u_min + u_max)) if start is None else np.log(np.asarray(start, float))
        if len(u_start) != len(x):
            raise InputError(f"fit_direct: {len(u_start)} start values for {len(x)} showers")
        out = []
        for i in range(len(x)):
            row = x[i : i + 1]

            def fcn(u: float, row: np.ndarray = row) -> float:
                if not math.isfinite(u):  # MINOS may probe a non-finite step after a flat stretch
                    return _FCN_INVALID
                return float(self._nll(row, np.array([[math.exp(min(max(u, u_min), u_max))]]))[0, 0])

            m = Minuit(fcn, float(np.clip(u_start[i], u_min, u_max)), name=("u",))
            m.errordef = _UP
            m.errors = [0.05 * (u_max - u_min) if start is None else 0.01]
            m.limits = [(u_min, u_max)]
            m.tol = tol
            out.append(_interval(m, fcn, (u_min, u_max), self.energy_range, multimodal=False, hesse=True))
            if progress is not None:
                progress(1)
        return CalibrationResult(*(np.array(v) for v in zip(*out, strict=True)))

    def scan(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Coarse scan: ``(ln E grid (G,), -ln L (N, G))`` for an inputs array ``x``."""
        u = np.linspace(math.log(self.energy_range[0]), math.log(self.energy_range[1]), self.n_scan)
        return u, self._nll(x, np.exp(u)[None, :])

    def _fit_batch(self, x: np.ndarray) -> CalibrationResult:
        u_scan, y_scan = self.scan(x)
        multimodal = _multimodal(y_scan, self.multimodal_delta)
        # the rise bracket surely holds the minimum and the crossings; the parabola through the three best scan
        # points gives a tighter one (still wide: far from the minimum -ln L grows slower than a parabola)
        u_grid = np.broadcast_to(u_scan, y_scan.shape)
        a_safe, b_safe = _bracket(u_grid, y_scan, self.bracket_rise)
        a, b = _parabola_bracket(u_grid, y_scan, a_safe, b_safe, _WIDEN**2 * self.bracket_rise)
        # a small probe grid there, then grids of n_refine points placed from the previous grid until one is fine
        # enough for the width of the likelihood and wide enough to hold the crossings
        u_edges = (u_scan[0], u_scan[-1])
        todo = np.arange(len(x))
        t = np.linspace(0.0, 1.0, max(4, self.n_refine // 2))
        u_fine = a[:, None] + t[None, :] * (b - a)[:, None]
        y_fine = self._nll(x, np.exp(u_fine))
        for round_ in range(self.max_refine + 1):
            too_tight, too_coarse = self._grid_problems(u_fine[todo], y_fine[todo], u_edges)
            if round_ > 0:  # the probe grid is always replaced
                redo = too_tight | too_coarse
                todo, too_tight = todo[redo], too_tight[redo]
                if len(todo) == 0:
                    break
            a_new, b_new = _bracket(u_fine[todo], y_fine[todo], self.bracket_rise)
            a_new, b_new = _parabola_bracket(u_fine[todo], y_fine[todo], a_new, b_new, _WIDEN**2 * self.bracket_rise)
            a[todo] = np.where(too_tight, a_safe[todo], a_new)
            b[todo] = np.where(too_tight, b_safe[todo], b_new)
            if round_ == 0:
                t = np.linspace(0.0, 1.0, self.n_refine)
                u_fine, y_fine = np.empty((len(x), len(t))), np.empty((len(x), len(t)))
            u_fine[todo] = a[todo, None] + t[None, :] * (b[todo] - a[todo])[:, None]
            y_fine[todo] = self._nll(x[todo], np.exp(u_fine[todo]))
        # far above the minimum the values only need to stay large: clipping keeps the spline tame there
        y_fine = np.minimum(y_fine, y_fine.min(axis=1, keepdims=True) + 100.0 * self.bracket_rise)
        spline = CubicSpline(t, y_fine.T, axis=0)
        result = _minimize(spline.c, a, b, y_fine, multimodal, self.energy_range)
        if self.n_polish:
            self._polish(x, result)
        return result

    def _polish(self, x: np.ndarray, result: CalibrationResult) -> None:
        """Re-locate each interior minimum on a dense local grid (``polish_width`` of the smaller half width
        on each side): a flow's -ln L has kinks (spline-bin edges) that a grid of ~0.4 sigma steps smooths over.
        The minimum of the local spline is found exactly (a cubic per piece), which is cheaper than MIGRAD."""
        rows = np.flatnonzero(result.has(Status.CONVERGED) & ~result.has(Status.AT_BOUNDARY))
        if len(rows) == 0:
            return
        u_hat = np.log(result.e_mle[rows])
        half = self.polish_width * np.minimum(u_hat - np.log(result.e_lo[rows]), np.log(result.e_hi[rows]) - u_hat)
        u_lo, u_hi = math.log(self.energy_range[0]), math.log(self.energy_range[1])
        a, b = np.maximum(u_hat - half, u_lo), np.minimum(u_hat + half, u_hi)
        t = np.linspace(0.0, 1.0, self.n_polish)
        y = self._nll(x[rows], np.exp(a[:, None] + t[None, :] * (b - a)[:, None]))
        u_new, f_new = _spline_minima(CubicSpline(t, y.T, axis=0).c, a, b)
        found = np.isfinite(u_new)  # else the local grid missed the minimum: keep the first estimate
        result.e_mle[rows[found]] = np.exp(u_new[found])
        result.nll[rows[found]] = f_new[found]

    def _grid_problems(
        self, u: np.ndarray, y: np.ndarray, u_edges: tuple[float, float]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows whose refinement grid is too tight (an end inside the range rises by less than 1 above the
        minimum, so a crossing may lie outside) or too coarse (fewer than ``min_points`` within ``bracket_rise``)."""
        rise = y - y.min(axis=1, keepdims=True)
        tiny = 1e-9 * (u_edges[1] - u_edges[0])
        open_lo = (rise[:, 0] < 2 * _UP) & (u[:, 0] > u_edges[0] + tiny)
        open_hi = (rise[:, -1] < 2 * _UP) & (u[:, -1] < u_edges[1] - tiny)
        return open_lo | open_hi, (rise < self.bracket_rise).sum(axis=1) < self.min_points


def _multimodal(y: np.ndarray, delta: float) -> np.ndarray:
    """Showers whose scan ``y (N, G)`` has a second local minimum within ``delta`` of the best one behind a barrier."""
    inner = (y[:, 1:-1] < y[:, :-2]) & (y[:, 1:-1] <= y[:, 2:])
    is_min = np.concatenate([(y[:, 0] < y[:, 1])[:, None], inner, (y[:, -1] < y[:, -2])[:, None]], axis=1)
    best = y.argmin(axis=1)
    y_best = y[np.arange(len(y)), best]
    candidates = is_min & (y - y_best[:, None] < delta)
    candidates[np.arange(len(y)), best] = False
    out = np.zeros(len(y), dtype=bool)
    for i in np.flatnonzero(candidates.any(axis=1)):
        for j in np.flatnonzero(candidates[i]):
            lo, hi = sorted((j, best[i]))
            if y[i, lo : hi + 1].max() - y[i, j] >= _UP:
                out[i] = True
                break
    return out


def _bracket(u: np.ndarray, y: np.ndarray, rise: float) -> tuple[np.ndarray, np.ndarray]:
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


def _parabola_bracket(
    u: np.ndarray, y: np.ndarray, a_safe: np.ndarray, b_safe: np.ndarray, rise: float
) -> tuple[np.ndarray, np.ndarray]:
    """Where the parabola through each row's best grid point and its neighbours rises by ``rise``, inside
    ``[a_safe, b_safe]``; rows without an interior minimum of positive curvature keep ``[a_safe, b_safe]``."""
    n, g = y.shape
    rows = np.arange(n)
    best = y.argmin(axis=1)
    mid = best.clip(1, g - 2)
    y0, y1, y2 = y[rows, mid - 1], y[rows, mid], y[rows, mid + 1]
    h = u[rows, mid + 1] - u[rows, mid]
    second = y0 - 2 * y1 + y2
    with np.errstate(divide="ignore", invalid="ignore"):
        centre = u[rows, mid] + 0.5 * h * (y0 - y2) / second
        half = h * np.sqrt(2 * rise / second)
    ok = (best == mid) & (second > 0) & np.isfinite(centre) & np.isfinite(half)
    a = np.where(ok, np.maximum(centre - half, a_safe), a_safe)
    b = np.where(ok, np.minimum(centre + half, b_safe), b_safe)
    bad = b <= a
    return np.where(bad, a_safe, a), np.where(bad, b_safe, b)


def _minimize(
    coef: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    y_grid: np.ndarray,
    multimodal: np.ndarray,
    energy_range: tuple[float, float],
) -> CalibrationResult:
    """MIGRAD + MINOS on each shower's spline; ``coef (4, K, N)`` are the cubic coefficients on ``t = (u-a)/(b-a)``.

    One :class:`Minuit` object is reset and reused for all showers; the interpolant it minimizes is swapped
    underneath it (building a Minuit costs more than fitting a cheap 1-d function).
    """
    n, k = coef.shape[2], coef.shape[1]
    start_index = y_grid.argmin(axis=1)
    coef_rows = np.ascontiguousarray(coef.transpose(2, 0, 1)).tolist()
    spline = _Spline()
    m = Minuit(spline, 0.0, grad=spline.grad, name=("u",))
    m.errordef = _UP
    m.tol = 1e-4
    out = []
    for i in range(n):
        ai, bi = float(a[i]), float(b[i])
        step = (bi - ai) / k
        spline.set(coef_rows[i], ai, step, k)
        m.reset()
        m.limits = [(ai, bi)]
        m.values = [min(max(ai + step * start_index[i], ai + 1e-3 * step), bi - 1e-3 * step)]
        m.errors = [step]
        out.append(_interval(m, spline, (ai, bi), energy_range, multimodal=bool(multimodal[i])))
    return CalibrationResult(*(np.array(v) for v in zip(*out, strict=True)))


def _spline_minima(coef: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact minimum of each row's piecewise cubic on ``[a, b]`` (vectorized: knots and the roots of the
    derivative on every piece); ``(u, value)``, NaN where the minimum is not strictly inside."""
    c3, c2, c1, c0 = coef  # (K, N) each, in powers of dt = t - t_k, dt in [0, 1/K]
    k = coef.shape[1]
    h = 1.0 / k
    disc = (2 * c2) ** 2 - 12 * c3 * c1
    sq = np.sqrt(np.where(disc >= 0, disc, np.nan))
    with np.errstate(divide="ignore", invalid="ignore"):
        roots = np.stack([(-2 * c2 + sq) / (6 * c3), (-2 * c2 - sq) / (6 * c3)])  # (2, K, N)
        roots = np.where(np.abs(c3) > 1e-12 * (np.abs(c2) + np.abs(c1)), roots, -c1 / (2 * c2))
    dt = np.concatenate([np.zeros((1, k, c0.shape[1])), np.where((roots >= 0) & (roots <= h), roots, np.nan)])
    values = ((c3 * dt + c2) * dt + c1) * dt + c0
    values = np.where(np.isfinite(values), values, np.inf).reshape(-1, c0.shape[1])
    best = np.argmin(values, axis=0)  # over (candidate, piece); the end knot t = 1 is never the interior minimum
    cols = np.arange(c0.shape[1])
    t_best = (best % k) * h + dt.reshape(-1, c0.shape[1])[best, cols]
    u = a + t_best * (b - a)
    inside = (t_best > 1e-3) & (t_best < 1 - 1e-3)
    return np.where(inside, u, np.nan), np.where(inside, values[best, cols], np.nan)


def _interval(
    m: Minuit,
    fcn: Callable[[float], float],
    limits: tuple[float, float],
    e_range: tuple[float, float],
    *,
    multimodal: bool,
    hesse: bool = False,
) -> tuple[float, float, float, int, float]:
    """Run MIGRAD and MINOS on a prepared 1-d ``m`` over ``u = ln E`` limited to ``limits`` inside the allowed
    energy range ``e_range`` (GeV); returns ``(E_mle, E_lo, E_hi, status, nll)``.

    A minimum on a range edge with -ln L still falling outwards is a valid constrained minimum: it has no
    crossing on that side and its interval is open there by definition. ``hesse`` runs HESSE between MIGRAD and
    MINOS (needed on a noisy or kinked function, where MIGRAD's curvature estimate misleads MINOS).
    """
    a, b = limits
    u_range = u_min, u_max = math.log(e_range[0]), math.log(e_range[1])
    m.migrad()
    if hesse and m.valid:
        m.hesse()
    u_hat, f_hat = m.values[0], m.fval
    edge_tol = 1e-4 * (b - a)
    edge_lo, edge_hi = u_hat - u_min <= edge_tol, u_max - u_hat <= edge_tol
    ok = m.valid or (edge_lo and fcn(u_hat + edge_tol) >= f_hat) or (edge_hi and fcn(u_hat - edge_tol) >= f_hat)
    lo_u, hi_u = a, b
    if ok:
        m.minos()
        me = m.merrors[0]
        ok = (me.lower_valid or me.at_lower_limit or edge_lo) and (me.upper_valid or me.at_upper_limit or edge_hi)
        lo_u = a if me.at_lower_limit or edge_lo else u_hat + me.lower
        hi_u = b if me.at_upper_limit or edge_hi else u_hat + me.upper
    flags = (_MULTIMODAL if multimodal else 0) | (_CONVERGED if ok else 0)
    if edge_lo or edge_hi:
        flags |= _AT_BOUNDARY
    tiny = 1e-9 * (u_max - u_min)
    if lo_u - u_min <= tiny and fcn(u_min) - f_hat < _UP:
        flags |= _OPEN_LOW
        lo_u = u_min
    if u_max - hi_u <= tiny and fcn(u_max) - f_hat < _UP:
        flags |= _OPEN_HIGH
        hi_u = u_max
    e_mle, e_lo, e_hi = (_energy(u, u_range, e_range) for u in (u_hat, lo_u, hi_u))
    return e_mle, e_lo, e_hi, flags, f_hat


def _energy(u: float, u_range: tuple[float, float], e_range: tuple[float, float]) -> float:
    """``exp(u)`` inside the allowed range; its edges are returned exactly (no round-off past them)."""
    if u <= u_range[0]:
        return e_range[0]
    if u >= u_range[1]:
        return e_range[1]
    return math.exp(u)


class _Spline:
    """One shower's piecewise cubic in ``u = ln E``; ``c[m][j]`` multiplies ``dt**(3-m)`` on knot interval j."""

    def set(self, c: list[list[float]], a: float, h: float, k: int) -> None:
        self.c3, self.c2, self.c1, self.c0 = c
        self.a, self.h, self.k = a, h, k

    def _locate(self, u: float) -> tuple[int, float]:
        s = (u - self.a) / self.h
        j = min(max(int(s), 0), self.k - 1)
        return j, (s - j) / self.k

    def __call__(self, u: float) -> float:
        j, dt = self._locate(u)
        return ((self.c3[j] * dt + self.c2[j]) * dt + self.c1[j]) * dt + self.c0[j]

    def grad(self, u: float) -> list[float]:
        j, dt = self._locate(u)
        return [((3.0 * self.c3[j] * dt + 2.0 * self.c2[j]) * dt + self.c1[j]) / (self.h * self.k)]
