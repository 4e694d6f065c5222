"""Per-shower maximum-likelihood energy calibration with asymmetric likelihood intervals.

For every shower the surrogate gives ``-ln L(E) = -ln p(shower | E)``. The fit never sees the
true energy. Each batch of showers goes through these steps; only the Minuit fits run per shower:

1. **adaptive scan** (:func:`calinfer.calibration.scan.adaptive_scan`): ``-ln L`` of every shower on a coarse
   grid evenly spaced in ``ln E`` over the allowed range, then bisection of every interval that could still hide
   a minimum deeper than the best point found (given a guard width that follows the likelihood's own width),
   batched over all showers; its local minima tell whether the likelihood is multi-modal, its global minimum
   where to look;
2. **refinement**: a probe grid of ``n_refine // 2`` points where the parabola through the best
   scan point and its neighbours rises by about ``bracket_rise``, then grids of ``n_refine``
   points placed the same way from the previous grid, re-made while one is too coarse for the
   width of the likelihood or too tight to hold the 0.5 crossings; one batched surrogate call
   per grid;
3. **iminuit**: a cubic spline in ``ln E`` through the last grid is the per-shower interpolant;
   MIGRAD finds its minimum and MINOS the crossings of ``Delta(-ln L) = 0.5`` (errordef 0.5),
   i.e. the 68.3% likelihood interval, or of the level ``interval_level`` gives at E_mle (see
   :class:`calinfer.calibration.coverage.IntervalLevel`: the level at which the surrogate's own showers are
   covered 68.3% of the time);
4. **polish**: ``n_polish`` points within ``polish_width`` of the interval half width around the
   minimum (one more batched call) and the exact minimum of a local spline through them: a
   flow's ``-ln L`` has kinks at the edges of its spline bins that a grid of ~0.4 sigma steps
   smooths over;
5. **check**: ``-ln L`` itself at the final E_mle, E_lo and E_hi (one batched call). An edge whose
   ``Delta(-ln L)`` is off the level by more than ``edge_tolerance`` is repaired by secant steps on ``-ln L`` itself,
   and a shower whose edge stays off, or whose E_mle is worse than the best scan point by more than that, loses
   its CONVERGED flag. The reported ``nll`` is the value at E_mle.

With ``likelihood="full"`` (``full_method="nodes"``, the default) steps 1-4 run on
:class:`calinfer.calibration.fullnll.FullNLLTable`: the exact flow-I term plus the flow-II remainder interpolated
from ``n_nodes`` exact evaluations per shower inside the window the layer likelihood allows; step 5 evaluates the
full likelihood itself, the values become nodes, and showers where the interpolant missed the exact value at any
of the three points by more than ``edge_tolerance`` are fitted again (at most ``max_repair`` times).
``full_method="dense"`` evaluates the full likelihood at every point (the reference).

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

from calinfer.calibration.fullnll import FullLikelihood, FullNLLTable
from calinfer.calibration.scan import DEFAULT_ENERGY_RANGE, ScanResult, adaptive_scan, bracket, parabola_bracket
from calinfer.calibration.scan import UP as _UP
from calinfer.errors import InputError
from calinfer.showers import Showers

if TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_ENERGY_RANGE", "CalibrationResult", "Calibrator", "Status", "describe_status", "profile_full"]

_BLOCK = 4096  # (shower, energy) pairs per flow-I call of the layer likelihood
_WIDEN = 1.5  # refinement grids span the parabola's bracket widened by this factor
_Function = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (rows, energies (n, G) GeV) -> -ln L (n, G)


class Status(enum.IntFlag):
    """Bit flags describing one shower's fit (stored as an integer branch ``status``)."""

    CONVERGED = 1  # valid minimum and both crossings (or an open side), checked against -ln L itself
    AT_BOUNDARY = 2  # the maximum-likelihood energy lies on an edge of the allowed range
    OPEN_LOW = 4  # -ln L does not rise by the interval level (0.5) below E_mle before the lower edge: E_lo is it
    OPEN_HIGH = 8  # same above E_mle: E_hi is the upper edge
    MULTIMODAL = 16  # the coarse scan found a second, separated local minimum close to the best one
    EMPTY = 32  # the shower deposits no energy: the fit carries no information about E


_CONVERGED, _AT_BOUNDARY, _OPEN_LOW, _OPEN_HIGH, _MULTIMODAL, _EMPTY = (int(flag) for flag in Status)  # plain ints
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
    e_lo, e_hi: edges of the likelihood interval (``Delta(-ln L) = 0.5``, 68.3% asymptotically, or the
        calibrator's ``interval_level``).
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
        ``likelihood="layers"`` and ``log_prob(voxels (N, V), energies (N, G), part="full"|"layers") -> (N, G)``
        for ``likelihood="full"`` (e.g. :class:`calinfer.surrogate.ShowerSurrogate` or ``SurrogateEnsemble``).
    likelihood: ``"layers"`` (flow I: the layer energies given E, default) or ``"full"`` (the whole shower).
    energy_range: allowed ``(lo, hi)`` in GeV; default: the surrogate's ``energy_range`` (that of its training
        data) if it has one, else :data:`DEFAULT_ENERGY_RANGE`. Keep it inside the range the surrogate was
        trained on: outside, the flow extrapolates.
    n_scan: coarse-scan points, evenly spaced in ``ln E``.
    min_width: floor (in ``ln E``) of the guard width of the adaptive scan: any minimum at least this wide (and
        at least half as wide as the best one), more than 0.5 below the best scan point, is found.
    max_scan: the most scan points per shower.
    n_refine: points of each refinement grid (the first, probing grid has half as many).
    bracket_rise: ``Delta(-ln L)`` that delimits the refined bracket around the minimum (must exceed 0.5).
    min_points: refine again while fewer grid points than this lie within ``bracket_rise`` of the minimum.
    max_refine: the most refinement rounds.
    n_polish: points of the final local grid around each minimum (0: no polishing).
    polish_width: half width of that grid as a fraction of the smaller interval half width.
    multimodal_delta: a second local minimum of the scan at most this much above the best one, separated from
        it by a barrier of at least 0.5, flags the shower as multi-modal.
    interval_level: ``Delta(-ln L)`` of the interval edges: a number (default ``None``: 0.5, the asymptotic
        68.3%) or a callable of the energy (GeV, array) such as
        :class:`calinfer.calibration.coverage.IntervalLevel`, taken at each shower's E_mle.
    edge_tolerance: largest accepted ``|Delta(-ln L) - level|`` at E_lo and E_hi, evaluated on ``-ln L`` itself
        (also the largest accepted excess of ``-ln L(E_mle)`` over the best scan point, and for the full
        likelihood the largest accepted interpolation error at the three points).
    full_method: ``"nodes"`` (interpolated flow-II term, see module docstring) or ``"dense"`` (the full likelihood
        at every point: the reference, 30-100 times slower).
    n_nodes, window_delta: flow-II nodes per shower and the layer-likelihood window they span
        (:class:`calinfer.calibration.fullnll.FullLikelihood`).
    max_repair: the most refits of a shower whose interpolated full likelihood failed the check.
    batch_size: showers per batch (one surrogate call per stage).
    workers: batches fitted concurrently in threads (see :meth:`fit`).
    dtype: torch dtype the surrogate evaluates in (default: its own, float32); float64 removes the ~1e-6
        round-off noise of -ln L, at several times the cost. With ``full_method="nodes"`` it is the dtype of the
        flow-II evaluations; the flow-I term is always float64 there.
    device: torch device of the surrogate evaluations (default: the surrogate's choice, a GPU when there is one).
    """

    def __init__(
        self,
        surrogate: object,
        *,
        likelihood: str = "layers",
        energy_range: tuple[float, float] | None = None,
        n_scan: int = 24,
        min_width: float = 0.01,
        max_scan: int = 400,
        n_refine: int = 16,
        bracket_rise: float = 2.0,
        min_points: int = 8,
        max_refine: int = 4,
        n_polish: int = 8,
        polish_width: float = 0.3,
        multimodal_delta: float = 2.0,
        edge_tolerance: float = 0.02,
        interval_level: float | Callable[[np.ndarray], np.ndarray] | None = None,
        full_method: str = "nodes",
        n_nodes: int = 3,
        window_delta: float = 8.0,
        max_repair: int = 5,
        batch_size: int = 2048,
        workers: int = 1,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        if likelihood not in ("layers", "full"):
            raise InputError(f"likelihood must be 'layers' or 'full', not {likelihood!r}")
        if full_method not in ("nodes", "dense"):
            raise InputError(f"full_method must be 'nodes' or 'dense', not {full_method!r}")
        lo, hi = energy_range or getattr(surrogate, "energy_range", None) or DEFAULT_ENERGY_RANGE
        if not 0 < lo < hi:
            raise InputError(f"energy range must satisfy 0 < lo < hi (GeV), got ({lo}, {hi})")
        self.interval_level = _UP if interval_level is None else interval_level
        levels = self._level(np.log(np.geomspace(lo, hi, 64)))
        if not np.all(np.isfinite(levels) & (levels > 0)):
            raise InputError("interval_level must be a positive Delta(-ln L) at every energy of the range")
        self._level_max = float(levels.max())
        if bracket_rise <= self._level_max:
            raise InputError(f"bracket_rise must exceed the interval level {self._level_max:.3g}, got {bracket_rise}")
        if n_scan < 4 or n_refine < 4 or min_points < 3:
            raise InputError("n_scan and n_refine need at least 4 points, min_points at least 3")
        if not 0 < edge_tolerance < levels.min() or min_width <= 0:
            raise InputError(f"need 0 < edge_tolerance < the interval level ({levels.min():.3g}) and min_width > 0, "
                             f"got {edge_tolerance}, {min_width}")
        self.surrogate = surrogate
        self.likelihood = likelihood
        self.energy_range = (float(lo), float(hi))
        self.n_scan = int(n_scan)
        self.min_width = float(min_width)
        self.max_scan = max(int(max_scan), self.n_scan)
        self.n_refine = int(n_refine)
        self.bracket_rise = float(bracket_rise)
        self.min_points = int(min_points)
        self.max_refine = int(max_refine)
        self.n_polish = int(n_polish)
        self.polish_width = float(polish_width)
        self.multimodal_delta = float(multimodal_delta)
        self.edge_tolerance = float(edge_tolerance)
        self.full_method = full_method
        self.max_repair = int(max_repair)
        self.window_delta = float(window_delta)
        self.batch_size = int(batch_size)
        self.workers = max(1, int(workers))
        self._options: dict = {} if dtype is None else {"dtype": dtype}
        if device is not None:
            self._options["device"] = device
        self._full = None
        if likelihood == "full" and full_method == "nodes":
            self._full = FullLikelihood(
                surrogate, energy_range=self.energy_range, n_nodes=n_nodes, window_delta=window_delta, dtype=dtype,
                device=device, n_scan=n_scan, min_width=min_width, max_scan=max_scan,
            )

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
            # (shower, energy) pairs in blocks of exactly _BLOCK (the last one padded): a float32 network's result for
            # one pair can change in the last bit with the number of pairs evaluated together, which would make the
            # fits depend on which showers share a batch (chunked and whole-file runs must agree exactly)
            e = np.broadcast_to(energies, (len(x), np.shape(energies)[1]))
            rows = np.repeat(np.arange(len(x)), e.shape[1])
            flat = e.reshape(-1)
            pad = -len(flat) % _BLOCK
            rows, flat = np.concatenate([rows, np.full(pad, rows[-1])]), np.concatenate([flat, np.full(pad, flat[-1])])
            logp = np.concatenate([
                np.asarray(self.surrogate.log_prob_layers(  # type: ignore[attr-defined]
                    x[rows[a : a + _BLOCK]], flat[a : a + _BLOCK, None], **self._options))[:, 0]
                for a in range(0, len(flat), _BLOCK)
            ])[: e.size].reshape(e.shape)
        else:
            logp = self.surrogate.log_prob(x, energies, part="full", **self._options)  # type: ignore[attr-defined]
        out = -np.asarray(logp, dtype=np.float64)
        # a shower the model cannot produce at some energy has -ln L = inf there; keep it finite and large
        return np.nan_to_num(out, nan=np.inf, posinf=1e30, neginf=-1e30)

    @property
    def interval_description(self) -> str:
        """How the intervals are defined, for output metadata."""
        how = "iminuit MIGRAD + MINOS on a spline of -ln L in ln E"
        level = self.interval_level
        if not callable(level):
            return f"Delta(-ln L) = {float(level):g}" + (" (68.3%)" if float(level) == _UP else "") + f", {how}"
        if hasattr(level, "levels"):  # an IntervalLevel
            table = ", ".join(f"{e:.3g} GeV: {t:.3f}" for e, t in zip(level.energies, level.levels, strict=True))
            return (f"Delta(-ln L) = t(E_mle), the level at which {100 * level.content:.1f}% of "
                    f"{level.n_per_energy} surrogate showers per energy are covered ({table}), {how}")
        return f"Delta(-ln L) = a function of E_mle, {how}"

    def _level(self, u: np.ndarray) -> np.ndarray:
        """``Delta(-ln L)`` of the interval edges at ``u = ln E`` (array)."""
        u = np.asarray(u, dtype=np.float64)
        if callable(self.interval_level):
            return np.broadcast_to(np.asarray(self.interval_level(np.exp(u)), dtype=np.float64), u.shape)
        return np.full(u.shape, float(self.interval_level))

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        data: Showers | np.ndarray,
        *,
        progress: Callable[[int], None] | None = None,
        check_intervals: bool = True,
    ) -> CalibrationResult:
        """Fit every shower; ``progress(n)`` is called with the number of showers finished after each batch.

        ``check_intervals=False`` checks only E_mle against ``-ln L`` itself (E_lo, E_hi then come unchecked from
        the interpolant or spline; for profile-likelihood scores, where they are not needed).

        With ``workers > 1`` that many batches are fitted at once in threads: the surrogate's torch kernels
        release the GIL, so one batch's flow evaluation overlaps another's Minuit fits (give torch one
        intra-op thread per worker then, e.g. ``torch.set_num_threads(1)``). Results do not depend on it.
        """
        x = self.inputs(data)
        size = min(self.batch_size, -(-len(x) // self.workers))  # every worker gets a batch
        batches = [x[start : start + size] for start in range(0, len(x), size)]
        parts = []
        with ThreadPoolExecutor(min(self.workers, len(batches))) as pool:
            for part in pool.map(lambda b: self._fit_batch(b, check_intervals), batches):  # in input order
                parts.append(part)
                if progress is not None:
                    progress(len(part))
        result = CalibrationResult.concatenate(parts)
        if isinstance(data, Showers):  # energies in GeV: a shower without any carries no information
            empty = np.asarray(x).sum(axis=1) <= 0
            result.status = np.where(empty, result.status | _EMPTY, result.status).astype(result.status.dtype)
        return result

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
            out.append(_interval(m, fcn, (u_min, u_max), self.energy_range, self._level, multimodal=False,
                                 hesse=True))
            if progress is not None:
                progress(1)
        return CalibrationResult(*(np.array(v) for v in zip(*out, strict=True)))

    def _fit_batch(self, x: np.ndarray, check_intervals: bool = True) -> CalibrationResult:
        n = len(x)
        u_range = (math.log(self.energy_range[0]), math.log(self.energy_range[1]))
        if self._full is not None and self._full.energy_independent:  # full = layers + D(x): fit the layers, add D
            layer_x = self._full.layer_inputs(x)
            exact = lambda rows, e: self._full.layer_nll(layer_x[rows], e)  # noqa: E731
            result, scan = self._fit_rows(exact, np.arange(n), np.full(n, u_range[0]), np.full(n, u_range[1]))
            self._check(result, scan, exact, exact, None, check_intervals)
            result.nll = result.nll - self._full.remainder_once(x, result.e_mle)
            return result
        if self._full is not None:
            table = self._full.build(x)
            cheap: _Function = lambda rows, e: table.nll(e, rows)  # noqa: E731
            exact: _Function = lambda rows, e: table.exact(e, rows)  # noqa: E731
            lo, hi = table.a.copy(), table.b.copy()
        else:
            table = None
            cheap = exact = lambda rows, e: self._nll(x[rows], e)
            lo, hi = np.full(n, u_range[0]), np.full(n, u_range[1])
        rows = np.arange(n)
        result, scan = self._fit_rows(cheap, rows, lo, hi)
        self._check(result, scan, cheap, exact, table, check_intervals)
        return result

    def _fit_rows(
        self, fn: _Function, rows: np.ndarray, lo: np.ndarray, hi: np.ndarray
    ) -> tuple[CalibrationResult, ScanResult]:
        """Steps 1-4 for the showers ``rows`` (``fn(rows, energies) -> -ln L``), scanned over ``[lo, hi]`` (ln E)."""
        u_range = (math.log(self.energy_range[0]), math.log(self.energy_range[1]))
        tiny = 1e-9 * (u_range[1] - u_range[0])
        scan = adaptive_scan(
            lambda r, u: fn(rows[r], np.exp(u)), lo, hi, n_scan=self.n_scan, min_width=self.min_width,
            max_points=self.max_scan, rise=self.bracket_rise, parabola_rise=_WIDEN**2 * self.bracket_rise,
            multimodal_delta=self.multimodal_delta, ends=(lo <= u_range[0] + tiny, hi >= u_range[1] - tiny),
        )
        # the rise bracket surely holds the minimum and the crossings; the parabola through the three best scan
        # points gives a tighter one (still wide: far from the minimum -ln L grows slower than a parabola)
        a_safe, b_safe, a, b = scan.a_safe.copy(), scan.b_safe.copy(), scan.a.copy(), scan.b.copy()
        # a small probe grid there, then grids of n_refine points placed from the previous grid until one is fine
        # enough for the width of the likelihood and wide enough to hold the crossings
        u_edges = (math.log(self.energy_range[0]), math.log(self.energy_range[1]))
        n = len(rows)
        todo = np.arange(n)
        t = np.linspace(0.0, 1.0, max(4, self.n_refine // 2))
        u_fine = a[:, None] + t[None, :] * (b - a)[:, None]
        y_fine = fn(rows, np.exp(u_fine))
        for round_ in range(self.max_refine + 1):
            too_tight, too_coarse = self._grid_problems(u_fine[todo], y_fine[todo], u_edges)
            if round_ > 0:  # the probe grid is always replaced
                redo = too_tight | too_coarse
                todo, too_tight = todo[redo], too_tight[redo]
                if len(todo) == 0:
                    break
            a_new, b_new = bracket(u_fine[todo], y_fine[todo], self.bracket_rise)
            a_new, b_new = parabola_bracket(u_fine[todo], y_fine[todo], a_new, b_new, _WIDEN**2 * self.bracket_rise)
            a[todo] = np.where(too_tight, a_safe[todo], a_new)
            b[todo] = np.where(too_tight, b_safe[todo], b_new)
            if round_ == 0:
                t = np.linspace(0.0, 1.0, self.n_refine)
                u_fine, y_fine = np.empty((n, len(t))), np.empty((n, len(t)))
            u_fine[todo] = a[todo, None] + t[None, :] * (b[todo] - a[todo])[:, None]
            y_fine[todo] = fn(rows[todo], np.exp(u_fine[todo]))
        # far above the minimum the values only need to stay large: clipping keeps the spline tame there
        y_fine = np.minimum(y_fine, y_fine.min(axis=1, keepdims=True) + 100.0 * self.bracket_rise)
        spline = CubicSpline(t, y_fine.T, axis=0)
        result = _minimize(spline.c, a, b, y_fine, scan.multimodal, self.energy_range, self._level)
        if self.n_polish:
            self._polish(fn, rows, result)
        return result, scan

    def _polish(self, fn: _Function, rows: np.ndarray, result: CalibrationResult) -> None:
        """Re-locate each interior minimum on a dense local grid (``polish_width`` of the smaller half width
        on each side): a flow's -ln L has kinks (spline-bin edges) that a grid of ~0.4 sigma steps smooths over.
        The minimum of the local spline is found exactly (a cubic per piece), which is cheaper than MIGRAD."""
        sel = np.flatnonzero(result.has(Status.CONVERGED) & ~result.has(Status.AT_BOUNDARY))
        if len(sel) == 0:
            return
        u_hat = np.log(result.e_mle[sel])
        half = self.polish_width * np.minimum(u_hat - np.log(result.e_lo[sel]), np.log(result.e_hi[sel]) - u_hat)
        u_lo, u_hi = math.log(self.energy_range[0]), math.log(self.energy_range[1])
        a, b = np.maximum(u_hat - half, u_lo), np.minimum(u_hat + half, u_hi)
        t = np.linspace(0.0, 1.0, self.n_polish)
        y = fn(rows[sel], np.exp(a[:, None] + t[None, :] * (b - a)[:, None]))
        u_new, f_new = _spline_minima(CubicSpline(t, y.T, axis=0).c, a, b)
        found = np.isfinite(u_new)  # else the local grid missed the minimum: keep the first estimate
        result.e_mle[sel[found]] = np.exp(u_new[found])
        result.nll[sel[found]] = f_new[found]

    def _grid_problems(
        self, u: np.ndarray, y: np.ndarray, u_edges: tuple[float, float]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows whose refinement grid is too tight (an end inside the range rises by less than twice the interval
        level above the minimum, so a crossing may lie outside) or too coarse (fewer than ``min_points`` within
        ``bracket_rise``)."""
        rise = y - y.min(axis=1, keepdims=True)
        tiny = 1e-9 * (u_edges[1] - u_edges[0])
        open_lo = (rise[:, 0] < 2 * self._level_max) & (u[:, 0] > u_edges[0] + tiny)
        open_hi = (rise[:, -1] < 2 * self._level_max) & (u[:, -1] < u_edges[1] - tiny)
        return open_lo | open_hi, (rise < self.bracket_rise).sum(axis=1) < self.min_points

    # ------------------------------------------------------------------ check
    def _check(
        self, result: CalibrationResult, scan: ScanResult, cheap: _Function, exact: _Function,
        table: FullNLLTable | None, intervals: bool = True,
    ) -> None:
        """Step 5: -ln L itself at E_mle (and E_lo, E_hi); for the interpolated full likelihood also at a second
        basin the scan saw, with a refit of the showers where the interpolant was off (its nodes now include these
        points) and a wider window where the likelihood is not closed inside the window; secant repairs of edges
        that are off; CONVERGED cleared where anything stays off. ``result.nll`` becomes the exact value."""
        tol = self.edge_tolerance
        rows = np.flatnonzero(result.has(Status.CONVERGED))
        widened = np.zeros(len(result), dtype=bool)
        bad = mle_bad = rows[:0]
        edges_only: list[tuple[np.ndarray, np.ndarray]] = []  # (rows, -ln L at E_mle, E_lo, E_hi)
        for round_ in range(self.max_repair + 1 if table is not None else 1):
            if len(rows) == 0:
                break
            k = 3 if intervals else 1  # E_mle, E_lo, E_hi or E_mle alone
            pts = np.log(np.stack([result.e_mle[rows], result.e_lo[rows], result.e_hi[rows]], axis=1))[:, :k]
            guess = cheap(rows, np.exp(pts)) if table is not None else None
            values = exact(rows, np.exp(pts))
            f_hat = values[:, 0]
            result.nll[rows] = f_hat
            mle_ok = np.ones(len(rows), dtype=bool)
            if table is not None:  # a second basin the scan saw: is it really higher?
                two = np.flatnonzero(scan.multimodal[rows] & np.isfinite(scan.u_second[rows]))
                if len(two):
                    u2 = scan.u_second[rows[two], None]
                    off = np.abs(cheap(rows[two], np.exp(u2)) - exact(rows[two], np.exp(u2)))[:, 0]
                    mle_ok[two] = off <= tol
            if table is None:
                mle_ok &= f_hat <= scan.y_best[rows] + tol  # the scan values are exact here: none may be lower
            else:
                mle_ok &= np.all(np.abs(guess - values) <= tol, axis=1)
                # closed: -ln L at both window edges (nodes, so exact) at least window_delta / 2 above the minimum,
                # or the edge is the range's (a threshold of 2 missed a global minimum 1.4 below at the range edge)
                u_range = (math.log(self.energy_range[0]), math.log(self.energy_range[1]))
                edges = np.stack([table.a[rows], table.b[rows]], axis=1)
                rise = cheap(rows, np.exp(edges)) - f_hat[:, None]
                at_range = np.stack([edges[:, 0] <= u_range[0] + 1e-9, edges[:, 1] >= u_range[1] - 1e-9], axis=1)
                open_side = (rise < 0.5 * self.window_delta) & ~at_range
                closed = ~open_side.any(axis=1)
                wide = ~closed & ~widened[rows]  # once: the open side(s) out to the range's edge
                table.widen(rows[wide], np.where(open_side[wide, 0], u_range[0], edges[wide, 0]),
                            np.where(open_side[wide, 1], u_range[1], edges[wide, 1]))
                widened[rows[wide]] = True
                mle_ok &= closed
            edges_ok = self._edges_ok(result, rows, values) if intervals else np.ones(len(rows), dtype=bool)
            # E_mle right but an edge off: secant steps on -ln L itself (one evaluation each), no refit
            if intervals:
                edges_only.append((rows[mle_ok & ~edges_ok], values[mle_ok & ~edges_ok, :3]))
                last = (rows[~mle_ok], values[~mle_ok, :3])
            bad, mle_bad = rows[~mle_ok], rows[~mle_ok]
            if table is None or len(bad) == 0 or round_ == self.max_repair:
                break
            # the interpolant now has nodes at these points (and a wider window where it was not closed)
            again, rescan = self._fit_rows(cheap, bad, table.a[bad].copy(), table.b[bad].copy())
            for f in fields(CalibrationResult):
                getattr(result, f.name)[bad] = getattr(again, f.name)
            for f in fields(ScanResult):
                getattr(scan, f.name)[bad] = getattr(rescan, f.name)
            rows = bad[again.has(Status.CONVERGED)]
            lost = bad[~again.has(Status.CONVERGED)]
            if len(lost):
                result.nll[lost] = exact(lost, result.e_mle[lost, None])[:, 0]
            bad = mle_bad = rows[:0]
        if intervals and len(bad):
            edges_only.append(last)
        if edges_only:
            repair, known = np.concatenate([r for r, _ in edges_only]), np.concatenate([v for _, v in edges_only])
            if len(repair):
                self._repair_edges(result, repair, exact, known)
        result.status[mle_bad] &= ~_CONVERGED
        result.status[~scan.resolved] &= ~_CONVERGED  # the scan ran out of points: no global minimum guaranteed

    def _edges_ok(self, result: CalibrationResult, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Both edges at Delta(-ln L) = level within the tolerance (an open side: the range edge below level +
        tol)."""
        tol, up = self.edge_tolerance, self._level(np.log(result.e_mle[rows]))
        d_lo, d_hi = values[:, 1] - values[:, 0], values[:, 2] - values[:, 0]
        open_lo, open_hi = result.has(Status.OPEN_LOW)[rows], result.has(Status.OPEN_HIGH)[rows]
        return _edge_at_level(d_lo, up, open_lo, tol) & _edge_at_level(d_hi, up, open_hi, tol)

    def _repair_edges(
        self, result: CalibrationResult, rows: np.ndarray, exact: _Function, known: np.ndarray, steps: int = 6
    ) -> None:
        """Secant steps on ``h(u) = sqrt(2 Delta(-ln L))`` (about linear in u near the minimum) towards
        ``h = sqrt(2 level)`` for each edge of ``rows`` that is off, from ``known`` (n, 3) exact -ln L at E_mle, E_lo,
        E_hi; CONVERGED is cleared where an edge stays off."""
        tol = self.edge_tolerance
        u_min, u_max = math.log(self.energy_range[0]), math.log(self.energy_range[1])
        u_hat = np.log(result.e_mle[rows])
        f_hat = known[:, 0]
        up = self._level(u_hat)
        h_up = np.sqrt(2 * up)
        good = np.ones(len(rows), dtype=bool)
        for side, name, flag, col in ((-1, "e_lo", _OPEN_LOW, 1), (1, "e_hi", _OPEN_HIGH, 2)):
            u1 = np.log(getattr(result, name)[rows])
            d1 = known[:, col] - f_hat
            is_open = (result.status[rows] & flag) != 0
            done = _edge_at_level(d1, up, is_open, tol)
            u0, h0 = u_hat.copy(), np.zeros(len(rows))
            h1 = np.sqrt(2 * np.maximum(d1, 0.0))
            for _ in range(steps):
                todo = np.flatnonzero(~done)
                if len(todo) == 0:
                    break
                with np.errstate(divide="ignore", invalid="ignore"):
                    slope = (h1[todo] - h0[todo]) / (u1[todo] - u0[todo])
                    u2 = u1[todo] + (h_up[todo] - h1[todo]) / slope
                u2 = np.where(np.isfinite(u2), u2, 0.5 * (u_hat[todo] + u1[todo]))
                u2 = np.clip(u2, u_min, u_max)
                d2 = exact(rows[todo], np.exp(u2)[:, None])[:, 0] - f_hat[todo]
                u0[todo], h0[todo] = u1[todo], h1[todo]
                u1[todo], h1[todo] = u2, np.sqrt(2 * np.maximum(d2, 0.0))
                at_edge = (u2 <= u_min) | (u2 >= u_max)
                hit = np.abs(d2 - up[todo]) <= tol
                done[todo] = hit | (at_edge & (d2 < up[todo]))
                # a crossing found inside the range closes an open side; a range edge below the level opens it
                status = result.status[rows[todo]]
                status = np.where(hit & ~at_edge, status & ~flag, status)
                status = np.where(at_edge & (d2 < up[todo]), status | flag, status)
                result.status[rows[todo]] = status
            fixed = done & (side * (u1 - u_hat) >= 0)
            vals = np.exp(u1)
            getattr(result, name)[rows[fixed]] = vals[fixed]
            good &= fixed
        result.status[rows[~good]] &= ~_CONVERGED

def _edge_at_level(delta: np.ndarray, up: np.ndarray, is_open: np.ndarray, tol: float) -> np.ndarray:
    """An edge with ``Delta(-ln L) = delta`` is right: within ``tol`` of the level ``up``, or, on an open side (the
    range edge), below ``up + tol``."""
    return np.where(is_open, delta <= up + tol, np.abs(delta - up) <= tol)


def profile_full(
    surrogate: object,
    showers: Showers | np.ndarray,
    *,
    energy_range: tuple[float, float] | None = None,
    intervals: bool = False,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    workers: int = 1,
    **options: object,
) -> CalibrationResult:
    """The profile minimum of the full likelihood: ``E_mle`` (GeV) and ``-ln L_full`` there, evaluated exactly.

    ``intervals=True`` is ``Calibrator(surrogate, likelihood="full", ...).fit(showers)``. Without intervals only
    E_mle is checked (the reported ``e_lo`` / ``e_hi`` come from the interpolated likelihood, unchecked): the
    cost is then ``n_nodes`` + 1 flow-II evaluations per shower. ``options`` go to :class:`Calibrator`.
    """
    cal = Calibrator(surrogate, likelihood="full", energy_range=energy_range, dtype=dtype, device=device,
                     workers=workers, **options)  # type: ignore[arg-type]
    if intervals:
        return cal.fit(showers)
    return cal.fit(showers, check_intervals=False)


def _minimize(
    coef: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    y_grid: np.ndarray,
    multimodal: np.ndarray,
    energy_range: tuple[float, float],
    level: Callable[[np.ndarray], np.ndarray],
) -> CalibrationResult:
    """MIGRAD + MINOS on each shower's spline; ``coef (4, K, N)`` are the cubic coefficients on ``t = (u-a)/(b-a)``;
    ``level(u)``: the interval's Delta(-ln L) at ``u = ln E_mle``.

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
        out.append(_interval(m, spline, (ai, bi), energy_range, level, multimodal=bool(multimodal[i])))
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
    level: Callable[[np.ndarray], np.ndarray],
    *,
    multimodal: bool,
    hesse: bool = False,
) -> tuple[float, float, float, int, float]:
    """Run MIGRAD and MINOS on a prepared 1-d ``m`` over ``u = ln E`` limited to ``limits`` inside the allowed
    energy range ``e_range`` (GeV); MINOS finds the crossings of ``level(u_hat)``; returns
    ``(E_mle, E_lo, E_hi, status, nll)``.

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
    up = float(level(np.array(u_hat)))
    edge_tol = 1e-4 * (b - a)
    edge_lo, edge_hi = u_hat - u_min <= edge_tol, u_max - u_hat <= edge_tol
    ok = m.valid or (edge_lo and fcn(u_hat + edge_tol) >= f_hat) or (edge_hi and fcn(u_hat - edge_tol) >= f_hat)
    lo_u, hi_u = a, b
    if ok:
        m.errordef = up
        m.minos()
        m.errordef = _UP
        me = m.merrors[0]
        ok = (me.lower_valid or me.at_lower_limit or edge_lo) and (me.upper_valid or me.at_upper_limit or edge_hi)
        lo_u = a if me.at_lower_limit or edge_lo else u_hat + me.lower
        hi_u = b if me.at_upper_limit or edge_hi else u_hat + me.upper
    flags = (_MULTIMODAL if multimodal else 0) | (_CONVERGED if ok else 0)
    if edge_lo or edge_hi:
        flags |= _AT_BOUNDARY
    tiny = 1e-9 * (u_max - u_min)
    if lo_u - u_min <= tiny and fcn(u_min) - f_hat < up:
        flags |= _OPEN_LOW
        lo_u = u_min
    if u_max - hi_u <= tiny and fcn(u_max) - f_hat < up:
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
        if not math.isfinite(u):  # MINOS may probe a non-finite step after a flat stretch
            return _FCN_INVALID
        j, dt = self._locate(u)
        return ((self.c3[j] * dt + self.c2[j]) * dt + self.c1[j]) * dt + self.c0[j]

    def grad(self, u: float) -> list[float]:
        if not math.isfinite(u):
            return [0.0]
        j, dt = self._locate(u)
        return [((3.0 * self.c3[j] * dt + 2.0 * self.c2[j]) * dt + self.c1[j]) / (self.h * self.k)]
