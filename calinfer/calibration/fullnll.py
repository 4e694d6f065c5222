"""The full-shower likelihood in E at the cost of a few flow-II evaluations per shower.

``-ln L_full(E) = -ln p_layers(x | E) - D(E)`` with ``D(E) = ln p_full(x | E) - ln p_layers(x | E)`` (for one
surrogate the voxel part ``ln p_voxels(x | layer energies, E)``; for an ensemble the log of the mixture of the
members' voxel parts weighted by their layer likelihoods). The first term (flow I) is cheap and evaluated exactly,
in float64, wherever it is needed; ``D`` is smooth in ``ln E`` and is evaluated exactly at a few nodes per shower
(one batched surrogate call for all showers x nodes) and interpolated between them in ``ln E`` by the
Floater-Hormann barycentric rational interpolant of order ``min(2, nodes - 1)`` through all the nodes of that
shower (the polynomial through them for up to 3 nodes; free of poles and stable for any node placement). The
nodes start as ``n_nodes`` Chebyshev-Lobatto points (ends included) of the window where
the layer likelihood is within ``window_delta`` of its global minimum (the full likelihood's minimum and interval
lie there unless flow II contradicts flow I by more than that); every exact evaluation made later (the checks of
:class:`calinfer.calibration.Calibrator`) becomes a node too and widens the window to hold it. Outside the window
``D`` is held at its edge value (no minimum is invented there); :meth:`FullNLLTable.widen` opens a wider window
where the full likelihood is not closed inside the first one.

Only the surrogate interface is used: ``log_prob(showers, energies, part="full" | "layers", dtype=, device=,
batch_size=)`` and ``log_prob_layers`` (with ``geometry.layer_energies``) where the surrogate has them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from calinfer.calibration.scan import DEFAULT_ENERGY_RANGE, adaptive_scan
from calinfer.errors import InputError
from calinfer.showers import Showers

if TYPE_CHECKING:
    import torch

__all__ = ["FullLikelihood", "FullNLLTable"]

_BIG = 1e30  # -ln L of a shower the model cannot produce at some energy


def _finite_nll(logp: np.ndarray) -> np.ndarray:
    return np.nan_to_num(-np.asarray(logp, dtype=np.float64), nan=np.inf, posinf=_BIG, neginf=-_BIG)


class FullLikelihood:
    """Builds :class:`FullNLLTable` objects for batches of showers under one surrogate (or ensemble).

    Parameters
    ----------
    surrogate: object with ``log_prob(voxels (N, V), energies (N, G), part=..., dtype=, device=, batch_size=)``.
    energy_range: allowed ``(lo, hi)`` GeV (default: the surrogate's, else 1-100 GeV).
    n_nodes: exact evaluations of ``D`` per shower to start from (Chebyshev-Lobatto points in ``ln E`` of the window).
    window_delta: the window holds every energy where ``-ln L_layers`` is within this of its minimum.
    order: Floater-Hormann order (the degree of the local polynomials blended; 2: quadratic).
    min_spacing: a new node closer than this (in ``ln E``) to an existing one replaces it.
    dtype: torch dtype of the flow-II evaluations (float32: its ~4e-4 round-off noise in -ln L is smoothed by
        the interpolant; the flow-I term is always float64).
    device, batch_size: passed to the surrogate (``batch_size`` (shower, energy) pairs per flow-II call: small
        batches are faster on a CPU, where the cost is memory traffic).
    n_scan, min_width, max_scan: the adaptive scan of the layer likelihood that finds the window
        (see :func:`calinfer.calibration.scan.adaptive_scan`).
    """

    def __init__(
        self,
        surrogate: object,
        *,
        energy_range: tuple[float, float] | None = None,
        n_nodes: int = 3,
        window_delta: float = 8.0,
        order: int = 2,
        min_spacing: float = 5e-3,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        batch_size: int | None = 256,
        n_scan: int = 24,
        min_width: float = 0.01,
        max_scan: int = 400,
    ) -> None:
        import torch

        lo, hi = energy_range or getattr(surrogate, "energy_range", None) or DEFAULT_ENERGY_RANGE
        if not 0 < lo < hi:
            raise InputError(f"energy range must satisfy 0 < lo < hi (GeV), got ({lo}, {hi})")
        if n_nodes < 2 or order < 1:
            raise InputError(f"need n_nodes >= 2 and order >= 1, got n_nodes={n_nodes}, order={order}")
        if window_delta <= 0.5:
            raise InputError(f"window_delta must exceed 0.5, got {window_delta}")
        self.surrogate = surrogate
        self.energy_range = (float(lo), float(hi))
        self.n_nodes = int(n_nodes)
        self.window_delta = float(window_delta)
        self.order = int(order)
        self.min_spacing = float(min_spacing)
        self.dtype = torch.float32 if dtype is None else dtype
        self.device = device
        self.batch_size = batch_size
        self.n_scan, self.min_width, self.max_scan = int(n_scan), float(min_width), int(max_scan)
        self._by_layers = getattr(surrogate, "geometry", None) is not None and hasattr(surrogate, "log_prob_layers")

    def _kwargs(self, dtype: torch.dtype) -> dict:
        out: dict = {"dtype": dtype}
        if self.device is not None:
            out["device"] = self.device
        return out

    def layer_inputs(self, x: np.ndarray) -> np.ndarray:
        """What the flow-I term is evaluated on: layer energies (N, L) if the surrogate has ``log_prob_layers`` and
        a geometry, else the voxels themselves (evaluated with ``part="layers"``)."""
        if self._by_layers:
            return self.surrogate.geometry.layer_energies(np.asarray(x, dtype=np.float64))  # type: ignore[attr-defined]
        return x

    def layer_nll(self, layer_x: np.ndarray, energies: np.ndarray) -> np.ndarray:
        """Exact ``-ln p_layers`` (float64) of :meth:`layer_inputs` rows at energies ``(n, G)`` GeV."""
        import torch

        if self._by_layers:
            logp = self.surrogate.log_prob_layers(layer_x, energies, **self._kwargs(torch.float64))  # type: ignore[attr-defined]
        else:
            logp = self.surrogate.log_prob(layer_x, energies, part="layers", **self._kwargs(torch.float64))  # type: ignore[attr-defined]
        return _finite_nll(logp)

    def full_nll(self, x: np.ndarray, energies: np.ndarray) -> np.ndarray:
        """Exact ``-ln p_full`` of voxel rows ``x`` at energies ``(n, G)`` GeV (one surrogate call, ``dtype``)."""
        kwargs = self._kwargs(self.dtype)
        if self.batch_size is not None:
            kwargs["batch_size"] = self.batch_size
        return _finite_nll(self.surrogate.log_prob(x, energies, part="full", **kwargs))  # type: ignore[attr-defined]

    @property
    def energy_independent(self) -> bool:
        """``D = ln p_full - ln p_layers`` does not depend on E (the surrogate says so): one evaluation per shower."""
        return not getattr(self.surrogate, "voxel_density_depends_on_energy", True)

    def remainder_once(self, x: np.ndarray, energies: np.ndarray) -> np.ndarray:
        """``D`` of voxel rows ``x`` (N, V) at one energy each (N,) GeV, for an :attr:`energy_independent` surrogate."""
        kwargs = self._kwargs(self.dtype)
        if self.batch_size is not None:
            kwargs["batch_size"] = self.batch_size
        return np.asarray(self.surrogate.log_prob(x, energies, part="voxels", **kwargs), dtype=np.float64)  # type: ignore[attr-defined]

    def windows(self, layer_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per shower ``(u_lo, u_hi)`` (``u = ln E``): where ``-ln L_layers`` is within ``window_delta`` of its
        global minimum (all basins that come that close)."""
        delta = self.window_delta
        u_min, u_max = (math.log(e) for e in self.energy_range)
        n = len(layer_x)
        scan = adaptive_scan(
            lambda rows, u: self.layer_nll(layer_x[rows], np.exp(u)),
            np.full(n, u_min), np.full(n, u_max),
            n_scan=self.n_scan, min_width=self.min_width, max_points=self.max_scan,
            rise=delta, parabola_rise=delta, multimodal_delta=2.0,
        )
        return scan.hull_lo, scan.hull_hi

    def build(self, showers: Showers | np.ndarray) -> FullNLLTable:
        """The interpolated ``-ln L_full`` of these showers (``Showers`` or voxels ``(N, V)`` in GeV)."""
        x = showers.voxels if isinstance(showers, Showers) else np.asarray(showers)
        if x.ndim != 2 or len(x) == 0:
            raise InputError(f"expected a non-empty (N, V) array of voxels, got shape {x.shape}")
        layer_x = self.layer_inputs(x)
        a, b = self.windows(layer_x)
        return FullNLLTable(self, x, layer_x, a, b)


class FullNLLTable:
    """``-ln L_full(E)`` of N showers: the exact flow-I term plus the interpolated remainder (see module docstring).

    ``nll(energies)`` is cheap (flow I only); ``exact(energies)`` calls the surrogate and adds the results as nodes.
    ``evaluations`` counts the (shower, energy) pairs sent to the full surrogate so far.
    """

    def __init__(self, owner: FullLikelihood, x: np.ndarray, layer_x: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
        self.owner = owner
        self.x, self.layer_x = x, layer_x
        self.a, self.b = np.array(a, dtype=np.float64), np.array(b, dtype=np.float64)
        n = len(x)
        self._u = np.zeros((n, 0))
        self._d = np.zeros((n, 0))
        self._count = np.zeros(n, dtype=int)
        self._w = np.zeros((n, 0))  # barycentric weights of the (sorted) nodes
        self.evaluations = 0
        self.exact(np.exp(self._lobatto(self.a, self.b)))

    def __len__(self) -> int:
        return len(self.x)

    def _lobatto(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        t = -np.cos(np.pi * np.arange(self.owner.n_nodes) / (self.owner.n_nodes - 1))
        return 0.5 * (a + b)[:, None] + 0.5 * (b - a)[:, None] * t[None, :]

    def widen(self, rows: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
        """Extend the window of ``rows`` to ``[lo, hi]`` (``u = ln E``, where wider) with ``n_nodes`` new nodes across
        the extended window (one surrogate call)."""
        rows = np.asarray(rows)
        if len(rows) == 0:
            return
        a, b = np.minimum(lo, self.a[rows]), np.maximum(hi, self.b[rows])
        self.exact(np.exp(self._lobatto(a, b)), rows)

    @property
    def window(self) -> tuple[np.ndarray, np.ndarray]:
        """``(E_lo, E_hi)`` GeV per shower: where ``D`` is interpolated (the span of the nodes)."""
        return np.exp(self.a), np.exp(self.b)

    @property
    def n_nodes(self) -> np.ndarray:
        """Exact evaluations (nodes) per shower."""
        return self._count.copy()

    def _rows(self, rows: np.ndarray | None) -> np.ndarray:
        return np.arange(len(self)) if rows is None else np.asarray(rows)

    @staticmethod
    def _grid(energies: np.ndarray, n: int) -> np.ndarray:
        e = np.asarray(energies, dtype=np.float64)
        if e.ndim != 2 or e.shape[0] not in (1, n):
            raise InputError(f"energies must have shape (1, G) or ({n}, G), got {e.shape}")
        if not np.all(np.isfinite(e) & (e > 0)):
            raise InputError("incident energies must be finite and positive (GeV)")
        return np.broadcast_to(e, (n, e.shape[1]))

    def remainder(self, energies: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Interpolated ``D(E) = ln p_full - ln p_layers`` at energies ``(n, G)`` GeV (held at the edge value
        outside the window)."""
        rows = self._rows(rows)
        u = np.log(self._grid(energies, len(rows)))
        a, b = self.a[rows, None], self.b[rows, None]
        return self._interpolate(rows, np.clip(u, a, b))

    def _interpolate(self, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
        """The barycentric interpolant of each row's nodes at ``u (n, G)`` (inside the node range)."""
        x, f, w = self._u[rows][:, None, :], self._d[rows][:, None, :], self._w[rows][:, None, :]
        diff = u[:, :, None] - x
        at = np.abs(diff) < 1e-12
        with np.errstate(divide="ignore", invalid="ignore"):
            c = np.where(at, 0.0, w / np.where(at, 1.0, diff))
            value = (c * f).sum(axis=2) / c.sum(axis=2)
        hit = at & (w != 0)
        return np.where(hit.any(axis=2), (np.where(hit, f, 0.0)).sum(axis=2) / np.maximum(hit.sum(axis=2), 1), value)

    def nll(self, energies: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """``-ln L_full`` at energies ``(1, G)`` or ``(n, G)`` GeV -> ``(n, G)``: exact flow-I term (float64) minus
        the interpolated remainder; ``rows`` selects showers (default all)."""
        rows = self._rows(rows)
        e = self._grid(energies, len(rows))
        return self.owner.layer_nll(self.layer_x[rows], e) - self.remainder(e, rows)

    def exact(self, energies: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Exact ``-ln L_full`` at energies ``(1, G)`` or ``(n, G)`` GeV (one surrogate call); every value becomes
        a node of its shower's interpolant and the window grows to hold it."""
        rows = self._rows(rows)
        e = np.array(self._grid(energies, len(rows)))
        full = self.owner.full_nll(self.x[rows], e)
        self.evaluations += full.size
        d = self.owner.layer_nll(self.layer_x[rows], e) - full
        self._add(rows, np.log(e), d)
        return full

    def _add(self, rows: np.ndarray, u: np.ndarray, d: np.ndarray) -> None:
        ok = np.isfinite(d) & (np.abs(d) < 0.1 * _BIG)
        for k in range(u.shape[1]):  # one node per shower at a time: few columns, vectorised over showers
            self._append(rows[ok[:, k]], u[ok[:, k], k], d[ok[:, k], k])
        self._fit(np.unique(rows))

    def _append(self, rows: np.ndarray, u: np.ndarray, d: np.ndarray) -> None:
        if len(rows) == 0:
            return
        rows, first = np.unique(rows, return_index=True)  # a shower listed twice in one call keeps its first value
        u, d = u[first], d[first]
        span = np.maximum(self.b[rows] - self.a[rows], 1e-12)
        if self._u.shape[1]:
            valid = np.arange(self._u.shape[1])[None, :] < self._count[rows, None]
            dist = np.where(valid, np.abs(self._u[rows] - u[:, None]), np.inf)
            near = dist.argmin(axis=1)
            dup = dist[np.arange(len(rows)), near] <= np.maximum(1e-6 * span, self.owner.min_spacing)
        else:
            near, dup = np.zeros(len(rows), int), np.zeros(len(rows), bool)
        # (almost) the same energy again: keep the newer value; nodes closer than min_spacing would turn the
        # round-off noise of -ln L into slope
        self._u[rows[dup], near[dup]] = u[dup]
        self._d[rows[dup], near[dup]] = d[dup]
        new = ~dup
        if self._count[rows[new]].max(initial=0) >= self._u.shape[1]:
            self._u = np.pad(self._u, ((0, 0), (0, 4)))
            self._d = np.pad(self._d, ((0, 0), (0, 4)))
        r = rows[new]
        self._u[r, self._count[r]] = u[new]
        self._d[r, self._count[r]] = d[new]
        self._count[r] += 1
        self.a[r] = np.minimum(self.a[r], u[new])
        self.b[r] = np.maximum(self.b[r], u[new])

    def _fit(self, rows: np.ndarray) -> None:
        """Sort each row's nodes and compute their Floater-Hormann weights (zero for the padding)."""
        width = self._u.shape[1]
        if self._w.shape[1] < width:
            self._w = np.pad(self._w, ((0, 0), (0, width - self._w.shape[1])))
        valid = np.arange(width)[None, :] < self._count[rows, None]
        order = np.argsort(np.where(valid, self._u[rows], np.inf), axis=1)
        self._u[rows] = np.take_along_axis(self._u[rows], order, 1)
        self._d[rows] = np.take_along_axis(self._d[rows], order, 1)
        self._w[rows] = 0.0
        for k in np.unique(self._count[rows]):
            r = rows[self._count[rows] == k]
            if k > 0:
                self._w[r, :k] = _floater_hormann(self._u[r, :k], min(self.owner.order, k - 1))


def _floater_hormann(x: np.ndarray, d: int) -> np.ndarray:
    """Barycentric weights (m, k) of the Floater-Hormann interpolant of order ``d`` on sorted nodes ``x (m, k)``."""
    m, k = x.shape
    w = np.zeros((m, k))
    for j in range(k):
        for i in range(max(0, j - d), min(j, k - 1 - d) + 1):
            prod = np.ones(m)
            for q in range(i, i + d + 1):
                if q != j:
                    prod = prod / np.abs(x[:, j] - x[:, q])
            w[:, j] += prod
        w[:, j] *= (-1.0) ** (j - d)
    return w
