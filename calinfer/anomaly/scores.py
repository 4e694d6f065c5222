"""Likelihood anomaly scores of showers under a surrogate trained on ordinary photon showers.

Every score is an object with ``fit(background)`` (calibration on a labelled background sample, a no-op where
nothing is calibrated) and ``evaluate(showers) -> dict`` of per-shower arrays: ``"score"`` (higher = more
anomalous) plus auxiliary quantities (``"log_prob"``, ``"e_dep"``, ``"e_rec"`` / ``"e_hat"`` in GeV, ...).

* :class:`LikelihoodScore`: ``-log p(x | E_rec)`` with ``E_rec = E_dep / lambda`` and ``lambda`` fitted on
  background (:class:`EnergyScale`); ``part="layers"`` uses flow I only (layer energies), ``part="voxels"`` flow II
  only (voxels given layer energies), ``part="full"`` both.
* :class:`ProfileScore`: ``-max_E log p(x | E)``, the likelihood profiled over the incident energy (no lambda):
  a log-spaced grid with zoom refinement, then a few parabolic steps (optionally located with the cheap layer
  flow only, ``locate="layers"``).
* ``mixed=True`` variants (``"nll-mixed"``, ``"profile-mixed"``) count empty voxels with (the midpoint-rule
  estimate of) their probability instead of the dequantized density, removing the bias towards sparse showers
  (see :class:`LikelihoodScore` for exactly what is approximated).
* ``"<name>-tail"``: the energy-flat tail probability of any of these among the surrogate's own showers
  (:class:`calinfer.anomaly.flat.TailScore`).

The surrogate only needs ``log_prob(showers, energies, *, part=..., device=..., batch_size=...)`` with
energies of shape ``(N,)`` or ``(N, G)`` (see ``calinfer.surrogate.ShowerSurrogate``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

from calinfer.anomaly.flat import TailScore
from calinfer.errors import InputError
from calinfer.showers import Showers

__all__ = [
    "BASE_SCORE_NAMES",
    "PARTS",
    "SCORE_NAMES",
    "TAIL_OPTIONS",
    "EnergyScale",
    "LikelihoodScore",
    "ProfileScore",
    "Score",
    "SurrogateLike",
    "dequantization_width_of",
    "make_score",
]

PARTS = ("full", "layers", "voxels")
BASE_SCORE_NAMES = ("nll", "profile", "layers", "voxels", "nll-mixed", "profile-mixed")
SCORE_NAMES = (*BASE_SCORE_NAMES, *(f"{name}-tail" for name in BASE_SCORE_NAMES))
"""Names accepted by :func:`make_score` (and by ``calinfer anomaly --score``); ``<base>-tail`` is the energy-flat
:class:`~calinfer.anomaly.flat.TailScore` of the base score."""
TAIL_OPTIONS = ("n_energies", "n_per_energy", "tail_fraction", "seed", "threshold", "chunk")
"""Options of :func:`make_score` that go to the :class:`~calinfer.anomaly.flat.TailScore` of a ``-tail`` name."""

DEFAULT_ENERGY_RANGE = (1.0, 100.0)
"""Incident energies (GeV) the surrogate is trusted on when it does not say (the photon training range)."""


class SurrogateLike(Protocol):
    """What a score needs from a surrogate."""

    def log_prob(self, showers: Showers, energies: np.ndarray, *, part: str = "full", **kwargs) -> np.ndarray: ...


class Score(Protocol):
    """An anomaly score: ``fit`` on background, then ``evaluate`` showers (higher ``"score"`` = more anomalous)."""

    name: str

    def fit(self, background: Showers) -> Score: ...

    def evaluate(self, showers: Showers) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class EnergyScale:
    """The detector response ``lambda = E_dep / E_inc`` of background showers; ``E_rec = E_dep / lambda``.

    Attributes
    ----------
    value: fitted lambda (dimensionless).
    uncertainty: bootstrap standard deviation of ``value``.
    method: ``"median"`` (median of E_dep/E_inc), ``"mode"`` (maximum of a Gaussian KDE of E_dep/E_inc with Scott
        bandwidth) or ``"ratio"`` (sum E_dep / sum E_inc: the least-squares fit of E_dep = lambda E_inc with
        variance proportional to E_inc, as for sampling fluctuations).
    n_showers: size of the calibration sample.
    """

    value: float
    uncertainty: float
    method: str
    n_showers: int

    @classmethod
    def fit(cls, background: Showers, *, method: str = "median", n_bootstrap: int = 20, seed: int = 0) -> EnergyScale:
        """Fit lambda on background showers with known incident energies."""
        if background.incident_energy is None:
            raise InputError(
                f"{background.source}: the energy-scale calibration needs showers with known incident energies "
                "(a labelled background sample, e.g. calinfer.datasets.load('photons-val'))"
            )
        e_dep = background.deposited_energy().astype(np.float64)
        e_inc = background.incident_energy
        keep = e_inc > 0
        if keep.sum() < 10:
            raise InputError(f"{background.source}: {int(keep.sum())} showers are too few to fit the energy scale")
        e_dep, e_inc = e_dep[keep], e_inc[keep]
        estimator = _SCALE_METHODS.get(method)
        if estimator is None:
            raise InputError(f"unknown energy-scale method {method!r}; use one of {sorted(_SCALE_METHODS)}")
        value = estimator(e_dep, e_inc)
        rng = np.random.default_rng(seed)
        reps = []
        for _ in range(n_bootstrap):
            idx = rng.integers(0, e_dep.size, e_dep.size)
            reps.append(estimator(e_dep[idx], e_inc[idx]))
        unc = float(np.std(reps, ddof=1)) if n_bootstrap > 1 else float("nan")
        if not value > 0:
            raise InputError(f"{background.source}: fitted energy scale {value} is not positive; check the sample")
        return cls(value=float(value), uncertainty=unc, method=method, n_showers=int(e_dep.size))

    def reconstruct(self, e_dep: np.ndarray) -> np.ndarray:
        """Reconstructed incident energy ``E_dep / lambda`` (GeV)."""
        return np.asarray(e_dep, dtype=np.float64) / self.value

    def to_dict(self) -> dict:
        return asdict(self)


def _scale_median(e_dep: np.ndarray, e_inc: np.ndarray) -> float:
    return float(np.median(e_dep / e_inc))


def _scale_ratio(e_dep: np.ndarray, e_inc: np.ndarray) -> float:
    return float(e_dep.sum() / e_inc.sum())


def _scale_mode(e_dep: np.ndarray, e_inc: np.ndarray) -> float:
    from scipy.optimize import minimize_scalar
    from scipy.stats import gaussian_kde

    r = e_dep / e_inc
    kde = gaussian_kde(r, bw_method="scott")
    lo, hi = np.percentile(r, [1, 99])
    grid = np.linspace(lo, hi, 256)
    i = int(np.argmax(kde(grid)))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    res = minimize_scalar(lambda x: -kde(x)[0], bounds=(a, b), method="bounded", options={"xatol": 1e-6 * hi})
    return float(res.x)


_SCALE_METHODS = {"median": _scale_median, "mode": _scale_mode, "ratio": _scale_ratio}


def _check_part(part: str) -> str:
    if part not in PARTS:
        raise InputError(f"unknown surrogate part {part!r}; use one of {PARTS}")
    return part


def _energy_range(surrogate: SurrogateLike, energy_range: tuple[float, float] | None) -> tuple[float, float]:
    lo, hi = energy_range or getattr(surrogate, "energy_range", None) or DEFAULT_ENERGY_RANGE
    if not 0 < lo < hi:
        raise InputError(f"energy range must satisfy 0 < low < high, got ({lo}, {hi})")
    return float(lo), float(hi)


CPU_BATCH = 1024
"""(shower, energy) pairs per flow-II call on a CPU when the score is not told: the fastest of 64-4096 for the shipped
default on the 2-core development machine, 1 and 2 threads (``benchmarks/bench_anomaly.py --batch-size``)."""


def _flow_batch(batch_size: int | None, device: str | None) -> int | None:
    """``batch_size``, else :data:`CPU_BATCH` when the surrogate will run on the CPU, else its own default."""
    if batch_size is not None:
        return int(batch_size)
    if device is None:
        import torch

        return None if torch.cuda.is_available() else CPU_BATCH
    return CPU_BATCH if str(device).startswith("cpu") else None


def dequantization_width_of(surrogate: SurrogateLike) -> float:
    """The width (GeV) over which the surrogate spreads a recorded zero: ``surrogate.dequantization_width``, or
    that of its preprocessing, or of the first ensemble member."""
    for obj in (surrogate, getattr(surrogate, "preprocessing", None), *getattr(surrogate, "members", [])[:1]):
        for candidate in (obj, getattr(obj, "preprocessing", None)):
            width = getattr(candidate, "dequantization_width", None)
            if width is not None:
                return float(width)
    raise InputError(
        "the surrogate does not say its dequantization width; pass dequantization_width=... (GeV) for the "
        "'mixed' likelihood scores"
    )


def _empty_correction(showers: Showers, width: float) -> tuple[np.ndarray, np.ndarray]:
    """(number of empty voxels, ``n_empty * ln(width)``): the shift from the dequantized density at the cell
    midpoints to the midpoint-rule estimate of the mixed likelihood (see :class:`LikelihoodScore`)."""
    n_empty = np.count_nonzero(showers.voxels <= 0, axis=1)
    return n_empty, n_empty * np.log(width)


class LikelihoodScore:
    """``-log p(x | E_rec)`` under the surrogate, ``E_rec = E_dep / lambda`` clipped to the surrogate's energy range.

    Parameters
    ----------
    surrogate: object with ``log_prob`` (see module docstring).
    part: ``"full"`` (name ``"nll"``), ``"layers"`` (flow I only) or ``"voxels"`` (flow II only).
    scale: fitted :class:`EnergyScale`, a fixed lambda, or ``None`` (call :meth:`fit` first).
    energy_range: GeV range where the surrogate is evaluated (default: ``surrogate.energy_range`` or 1-100 GeV);
        E_rec outside is clipped to it, the unclipped value is reported as ``e_rec``.
    scale_method: method for :meth:`fit`, see :class:`EnergyScale`.
    mixed: score with the *mixed* likelihood (``part="full"`` only, name ``"nll-mixed"``). The surrogate's
        density is that of dequantized voxels, so every empty voxel contributes about ``ln(1 / delta)`` (delta =
        ``dequantization_width``, 1e-5 GeV: +11.5) and sparse showers look very likely whatever else they do. The
        mixed likelihood of a shower with empty voxels ``Z`` (``k`` of them) is the probability of their cells
        times the density of the others, ``L = integral over [0, delta)^k of p(x~_rest, u_Z | E) du_Z`` with
        ``x~_rest = x_rest + delta/2``. It is approximated by the *midpoint rule*, ``delta^k p(x~ | E)`` at
        ``u_Z = delta/2`` (that is, ``log_prob + n_empty * ln(delta)``): exact for a density affine in every empty
        voxel over its cell, off by ``(delta^2 / 24) * sum_Z p''/p`` for one smooth on the cell scale, and not
        controlled for the surrogate, whose density of ``ln x~`` is smooth but whose density of ``x~`` is not
        on [0, delta): per empty voxel, ``ln(integral / midpoint)`` of a log-normal cell density is -0.6 ... +1
        nats depending on its median and width (measured on the shipped surrogate: +0.19 on average, up to +1.0).
        The error grows with the number of empty voxels, so it is energy-dependent; the ``-tail`` scores are
        immune to it (they rank showers against the surrogate's own showers scored the same way).
    dequantization_width: delta in GeV (default: read from the surrogate).
    device, batch_size: passed to ``surrogate.log_prob`` (``None``: the surrogate's default device, GPU when
        present; :data:`CPU_BATCH` pairs per flow-II call on a CPU, the surrogate's default on a GPU).
    """

    def __init__(
        self,
        surrogate: SurrogateLike,
        *,
        part: str = "full",
        scale: EnergyScale | float | None = None,
        energy_range: tuple[float, float] | None = None,
        scale_method: str = "median",
        mixed: bool = False,
        dequantization_width: float | None = None,
        device: str | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.surrogate = surrogate
        self.part = _check_part(part)
        if mixed and part != "full":
            raise InputError("the mixed likelihood is defined for part='full' only")
        self.mixed = bool(mixed)
        self.width = (dequantization_width or dequantization_width_of(surrogate)) if mixed else None
        self.name = ("nll-mixed" if mixed else "nll") if part == "full" else part
        if isinstance(scale, (int, float)):
            scale = EnergyScale(value=float(scale), uncertainty=0.0, method="fixed", n_showers=0)
        self.scale = scale
        self.energy_range = _energy_range(surrogate, energy_range)
        self.scale_method = scale_method
        self.device = device
        self.batch_size = _flow_batch(batch_size, device)

    def fit(self, background: Showers) -> LikelihoodScore:
        """Fit lambda on labelled background showers."""
        self.scale = EnergyScale.fit(background, method=self.scale_method)
        return self

    def evaluate(self, showers: Showers) -> dict[str, np.ndarray]:
        """``score`` = ``-log_prob`` at E_rec, with ``log_prob``, ``e_dep`` and ``e_rec`` (GeV).

        For ``part="full"`` the two parts are reported too (``log_prob_layers`` from flow I, which is cheap, and
        ``log_prob_voxels`` = full - layers), so the per-part scores come at almost no extra cost.
        """
        if self.scale is None:
            raise InputError(
                f"score {self.name!r} needs the energy scale lambda: call fit(background) or pass scale=..."
            )
        e_dep = showers.deposited_energy().astype(np.float64)
        e_rec = self.scale.reconstruct(e_dep)
        e_eval = np.clip(e_rec, *self.energy_range)
        lp = np.asarray(
            self.surrogate.log_prob(showers, e_eval, part=self.part, device=self.device, batch_size=self.batch_size),
            dtype=np.float64,
        )
        out = {"score": -lp, "log_prob": lp, "e_dep": e_dep, "e_rec": e_rec}
        if self.part == "full":  # flow I alone is cheap and fastest in the surrogate's large default batches
            lp_layers = np.asarray(
                self.surrogate.log_prob(showers, e_eval, part="layers", device=self.device), dtype=np.float64
            )
            out["log_prob_layers"], out["log_prob_voxels"] = lp_layers, lp - lp_layers
        if self.mixed:
            out["n_empty"], shift = _empty_correction(showers, self.width)
            out["log_prob_mixed"] = lp + shift
            out["score"] = -out["log_prob_mixed"]
        return out


class ProfileScore:
    """``-max_E log p(x | E)``: the likelihood maximized over the incident energy on the surrogate's range.

    1. *locate*: the ``locate`` part (default: ``part`` itself) is evaluated on ``n_grid`` log-spaced energies,
       then refined ``n_refine`` times, each round evaluating ``n_zoom`` points between the neighbours of the
       current best point (the bracket shrinks by ``(n_zoom - 1) / 2`` per round);
    2. *polish*: ``n_polish`` safeguarded parabolic steps in ln E on ``part``, starting from the best point and
       its neighbours (or, when ``locate`` is another part, from the located energy and ``step`` on either side).

    Every step evaluates ``part`` once per shower, so the cost is ``n_grid + n_refine * n_zoom + n_polish``
    evaluations per shower. ``locate="layers"`` makes stage 1 cheap (flow I only) but is only right when the
    voxel flow moves the maximum by less than about ``step``; check it against the default on a few showers.
    ``locate="calibration"`` (``part="full"`` only) takes the full-likelihood minimum of
    :func:`calinfer.calibration.profile_full` (flow II on a few Chebyshev nodes in ln E inside the window flow I
    allows, -ln L evaluated exactly at E_mle; about 4-5 evaluations per shower) and evaluates the full density
    at the flow-I maximum as a guard (1 more); where the fit is not CONVERGED or the guard is better, the better
    point is polished (``2 + n_polish`` more). About 6 evaluations per shower instead of 44.
    The best value ever evaluated is kept, so refinement never lowers the maximum; a narrow peak between two
    coarse grid points can still be missed (increase ``n_grid``).

    For a surrogate whose voxel density does not depend on E (``voxel_density_depends_on_energy`` false)
    and ``part="full"``, the layer likelihood is profiled (stages 1 and 2 on flow I) and flow II is evaluated
    once at its maximum: ``max_E [log p(layers | E) + c] = max_E log p(layers | E) + c``.

    ``mixed=True`` (``part="full"`` only, name ``"profile-mixed"``) scores with the mixed likelihood, see
    :class:`LikelihoodScore`; the shift does not depend on E, so the maximizing energy is the same.

    Outputs: ``score``, ``log_prob`` (the maximum), ``e_hat`` (the maximizing energy, GeV), ``e_dep`` and
    ``at_edge`` (1 where the maximum sits on the boundary of the energy range); with ``mixed`` also ``n_empty``
    and ``log_prob_mixed``.
    """

    def __init__(
        self,
        surrogate: SurrogateLike,
        *,
        part: str = "full",
        locate: str | None = None,
        energy_range: tuple[float, float] | None = None,
        n_grid: int = 32,
        n_refine: int = 2,
        n_zoom: int = 5,
        n_polish: int = 2,
        step: float = 0.05,
        mixed: bool = False,
        dequantization_width: float | None = None,
        device: str | None = None,
        batch_size: int | None = None,
    ) -> None:
        if mixed and part != "full":
            raise InputError("the mixed likelihood is defined for part='full' only")
        if n_grid < 3 or n_zoom < 3 or n_refine < 0 or n_polish < 0 or not step > 0:
            raise InputError("profile score needs n_grid >= 3, n_zoom >= 3, n_refine >= 0, n_polish >= 0, step > 0")
        self.surrogate = surrogate
        self.part = _check_part(part)
        if locate == "calibration" and part != "full":
            raise InputError("locate='calibration' profiles the full likelihood: it needs part='full'")
        self.locate = self.part if locate is None else locate if locate == "calibration" else _check_part(locate)
        self.mixed = bool(mixed)
        self.width = (dequantization_width or dequantization_width_of(surrogate)) if mixed else None
        self.name = ("profile-mixed" if mixed else "profile") if part == "full" else f"profile-{part}"
        self.energy_range = _energy_range(surrogate, energy_range)
        self.n_grid, self.n_refine, self.n_zoom = int(n_grid), int(n_refine), int(n_zoom)
        self.step, self.n_polish = float(step), int(n_polish)
        self.device = device
        self.batch_size = _flow_batch(batch_size, device)

    def fit(self, background: Showers) -> ProfileScore:
        """Nothing to calibrate: the profile needs no energy scale."""
        return self

    def _log_prob(self, showers: Showers, log_e: np.ndarray, part: str) -> np.ndarray:
        lp = np.asarray(
            self.surrogate.log_prob(showers, np.exp(log_e), part=part, device=self.device, batch_size=self.batch_size),
            dtype=np.float64,
        )
        return np.where(np.isnan(lp), -np.inf, lp)

    def _locate(self, showers: Showers, part: str) -> tuple[np.ndarray, np.ndarray]:
        """Grid plus zoom rounds on ``part``: the best point and its two neighbours, ``(N, 3)`` ln E and log p."""
        lo, hi = np.log(self.energy_range)
        rows = np.arange(len(showers))
        xs = np.linspace(lo, hi, self.n_grid)[None, :]
        fs = self._log_prob(showers, xs, part)  # (1, G): every shower at every grid energy
        xs = np.broadcast_to(xs, fs.shape)
        for _ in range(self.n_refine):
            k = np.argmax(fs, axis=1)
            a, b = xs[rows, np.maximum(k - 1, 0)], xs[rows, np.minimum(k + 1, xs.shape[1] - 1)]
            xs = a[:, None] + (b - a)[:, None] * np.linspace(0.0, 1.0, self.n_zoom)[None, :]
            fs = self._log_prob(showers, xs, part)
        j = np.clip(np.argmax(fs, axis=1), 1, xs.shape[1] - 2)  # three points, shifted inwards at the range edges
        idx = np.stack([j - 1, j, j + 1], axis=1)
        return np.take_along_axis(xs, idx, 1), np.take_along_axis(fs, idx, 1)

    def _polish(
        self, showers: Showers, xs: np.ndarray, fs: np.ndarray, part: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Safeguarded parabolic maximization of ``part`` (default: the score's) in ln E from evaluated points
        ``xs``, ``fs`` (N, >=3)."""
        lo, hi = np.log(self.energy_range)
        rows = np.arange(len(showers))
        for _ in range(self.n_polish):
            order = np.argsort(xs, axis=1)
            xs_s, fs_s = np.take_along_axis(xs, order, 1), np.take_along_axis(fs, order, 1)
            j = np.clip(np.argmax(fs_s, axis=1), 1, xs.shape[1] - 2)  # best point with its nearest neighbours
            x_0, x_1, x_2 = xs_s[rows, j - 1], xs_s[rows, j], xs_s[rows, j + 1]
            f_0, f_1, f_2 = fs_s[rows, j - 1], fs_s[rows, j], fs_s[rows, j + 1]
            with np.errstate(divide="ignore", invalid="ignore"):  # -inf densities give NaN: handled by `ok`
                num = (x_1 - x_0) ** 2 * (f_1 - f_2) - (x_1 - x_2) ** 2 * (f_1 - f_0)
                den = (x_1 - x_0) * (f_1 - f_2) - (x_1 - x_2) * (f_1 - f_0)
                vertex = x_1 - 0.5 * num / den
            # concave parabola: jump to its vertex (at most two bracket widths away); otherwise step past the
            # better end of the bracket
            width = x_2 - x_0
            x_best = xs[rows, np.argmax(fs, axis=1)]
            fallback = np.where(f_2 >= f_0, x_2 + width, x_0 - width)
            ok = np.isfinite(vertex) & (den > 0)
            new = np.clip(np.where(ok, np.clip(vertex, x_best - 2 * width, x_best + 2 * width), fallback), lo, hi)
            xs = np.concatenate([xs, new[:, None]], axis=1)
            fs = np.concatenate([fs, self._log_prob(showers, new, part or self.part)[:, None]], axis=1)
        k = np.argmax(fs, axis=1)
        return xs[rows, k], fs[rows, k]

    def _profile_calibrated(self, showers: Showers) -> tuple[np.ndarray, np.ndarray]:
        """Maximum via the calibration: its full-likelihood minimum (exact -ln L at E_mle) is kept where the fit
        converged and beats the full density at the flow-I maximum; elsewhere the better of the two is polished
        with neighbours at ``step``. Returns ln E and log p of the maximum."""
        from calinfer.calibration import Status, profile_full

        lo, hi = np.log(self.energy_range)
        rows = np.arange(len(showers))
        fit = profile_full(self.surrogate, showers, energy_range=self.energy_range, device=self.device)
        x_fit = np.log(np.clip(fit.e_mle, *self.energy_range))
        f_fit = np.where(np.isfinite(fit.nll), -fit.nll, -np.inf)
        xs, fs = self._locate(showers, "layers")
        x_layers = xs[rows, np.argmax(fs, axis=1)]
        f_layers = self._log_prob(showers, x_layers, self.part)
        fit_better = f_fit >= f_layers
        best_x, best_lp = np.where(fit_better, x_fit, x_layers), np.maximum(f_fit, f_layers)
        redo = np.flatnonzero(~(fit_better & ((fit.status & int(Status.CONVERGED)) != 0)))
        if redo.size:
            sub = showers[redo]
            other = np.where(fit_better, x_layers, x_fit)[redo]
            f_other = np.where(fit_better, f_layers, f_fit)[redo]
            centre = np.clip(best_x[redo], lo + self.step, hi - self.step)  # neighbours stay inside the range
            sides = np.stack([centre - self.step, centre + self.step], axis=1)
            f_sides = self._log_prob(sub, sides, self.part)
            xs = np.stack([sides[:, 0], best_x[redo], sides[:, 1], other], axis=1)
            fs = np.stack([f_sides[:, 0], best_lp[redo], f_sides[:, 1], f_other], axis=1)
            best_x[redo], best_lp[redo] = self._polish(sub, xs, fs)
        return best_x, best_lp

    def evaluate(self, showers: Showers) -> dict[str, np.ndarray]:
        lo, hi = np.log(self.energy_range)
        if self.part == "full" and not getattr(self.surrogate, "voxel_density_depends_on_energy", True):
            # log p(voxels | layers) does not depend on E: profile the layer likelihood, add it once
            xs, fs = self._locate(showers, "layers")
            best_x, best_lp = self._polish(showers, xs, fs, "layers")
            best_lp = best_lp + self._log_prob(showers, best_x, "voxels")
        elif self.locate == "calibration":
            best_x, best_lp = self._profile_calibrated(showers)
        else:
            xs, fs = self._locate(showers, self.locate)
            if self.locate != self.part:  # restart the polish on the target part around the located energy
                centre = np.clip(xs[np.arange(len(xs)), np.argmax(fs, axis=1)], lo + self.step, hi - self.step)
                xs = np.stack([centre - self.step, centre, centre + self.step], axis=1)
                fs = self._log_prob(showers, xs, self.part)
            best_x, best_lp = self._polish(showers, xs, fs)
        tol = 1e-3 * (hi - lo) / (self.n_grid - 1)
        at_edge = (best_x <= lo + tol) | (best_x >= hi - tol)
        out = {
            "score": -best_lp,
            "log_prob": best_lp,
            "e_hat": np.exp(best_x),
            "e_dep": showers.deposited_energy().astype(np.float64),
            "at_edge": at_edge.astype(np.int8),
        }
        if self.mixed:
            out["n_empty"], shift = _empty_correction(showers, self.width)
            out["log_prob_mixed"] = best_lp + shift
            out["score"] = -out["log_prob_mixed"]
        return out


def make_score(name: str, surrogate: SurrogateLike, **options) -> LikelihoodScore | ProfileScore | TailScore:
    """Build a score by name (:data:`SCORE_NAMES`): ``"nll"``, ``"layers"``, ``"voxels"`` (at E_rec), ``"profile"``
    (over E), the mixed-likelihood variants ``"nll-mixed"``, ``"profile-mixed"``, and ``"<any of these>-tail"``, the
    energy-flat tail probability of that score among the surrogate's own showers (options :data:`TAIL_OPTIONS` go
    to :class:`~calinfer.anomaly.flat.TailScore`, the rest to the base score)."""
    if name.endswith("-tail") and name[: -len("-tail")] in BASE_SCORE_NAMES:
        tail = {k: options.pop(k) for k in TAIL_OPTIONS if k in options}
        return TailScore(make_score(name[: -len("-tail")], surrogate, **options), **tail)
    if name in ("profile", "profile-mixed"):
        return ProfileScore(surrogate, mixed=name.endswith("-mixed"), **options)
    if name in ("nll", "nll-mixed", "layers", "voxels"):
        part = name if name in ("layers", "voxels") else "full"
        return LikelihoodScore(surrogate, part=part, mixed=name.endswith("-mixed"), **options)
    raise InputError(f"unknown anomaly score {name!r}; use one of {SCORE_NAMES}")
