"""Interval levels calibrated for coverage on the surrogate's own showers (a Neyman construction in E).

The likelihood interval ``{E : Delta(-ln L)(E) <= t}`` holds the true energy exactly when the likelihood-ratio
statistic ``q = -ln L(E_true) + ln L(E_mle)`` is at most ``t``. Wilks' theorem gives ``P(q <= 0.5) = 68.3%`` when
the likelihood is Gaussian in some parametrisation of E; a single hadron shower's is not (broad, skewed, cut by
the energy range), and an exponential toy (one observation, mean E) shows the size of the effect: 64.5%.

:class:`IntervalLevel` measures the distribution of ``q`` on showers drawn from the surrogate itself at a grid of
true energies and keeps its ``content`` quantile ``t(E)``. Intervals ``{E : Delta(-ln L)(E) <= t(E)}`` are then
Neyman intervals with the likelihood-ratio ordering (as in Feldman and Cousins) and cover ``content`` by
construction wherever the surrogate describes the data. The quantiles scatter by their sampling error (about
0.02 for 2000 showers); the level used is a weighted least-squares quadratic in ``ln E`` through them (iminuit),
constant beyond the grid. :class:`calinfer.calibration.Calibrator` takes the level at each shower's E_mle (``t``
varies slowly with E): that is the one approximation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from iminuit import Minuit
from iminuit.cost import LeastSquares

from calinfer.calibration.metrics import CL68
from calinfer.calibration.mle import Calibrator
from calinfer.errors import InputError

__all__ = ["IntervalLevel", "likelihood_ratio_at_truth"]


def likelihood_ratio_at_truth(calibrator: Calibrator, x: np.ndarray, e_true: float) -> np.ndarray:
    """``q = -ln L(E_true) - min_E(-ln L)`` of every row of ``x`` (the calibrator's inputs), clipped at 0."""
    fit = calibrator.fit(x, check_intervals=False)
    at_truth = calibrator.nll(x, np.full((len(x), 1), float(e_true)))[:, 0]
    return np.maximum(at_truth - fit.nll, 0.0)


@dataclass(frozen=True)
class IntervalLevel:
    """``Delta(-ln L)`` of intervals with coverage ``content``, as a function of the energy (GeV).

    Attributes
    ----------
    energies: true energies of the calibration (GeV), increasing.
    quantiles: the ``content`` quantile of ``q`` at each energy.
    errors: bootstrap standard deviation of each quantile.
    coefficients: the quadratic in ``ln E`` fitted to the quantiles (constant, linear, quadratic term).
    chi2_ndf: its chi^2 per degree of freedom (near 1 when a quadratic describes the quantiles).
    content: the target coverage (default 68.3%).
    n_per_energy: surrogate showers per energy.
    likelihood: ``"layers"`` or ``"full"``, the calibrator's likelihood.

    Calling it with energies (GeV) gives the fitted quadratic there (at the nearest grid end beyond the grid).
    """

    energies: tuple[float, ...]
    quantiles: tuple[float, ...]
    errors: tuple[float, ...]
    coefficients: tuple[float, float, float]
    chi2_ndf: float
    content: float
    n_per_energy: int
    likelihood: str

    def __post_init__(self) -> None:
        e, t = np.asarray(self.energies, float), np.asarray(self.quantiles, float)
        if len(e) == 0 or len(e) != len(t) or len(self.errors) != len(e) or len(self.coefficients) != 3:
            raise InputError("IntervalLevel needs as many quantiles and errors as energies and 3 coefficients")
        if not (np.all(np.diff(e) > 0) and e[0] > 0 and np.all(np.isfinite(t) & (t > 0))):
            raise InputError("IntervalLevel needs increasing positive energies and positive finite quantiles")

    def __call__(self, energies: np.ndarray | float) -> np.ndarray:
        u = np.clip(np.log(np.asarray(energies, dtype=np.float64)), math.log(self.energies[0]),
                    math.log(self.energies[-1])) - _pivot(self.energies)
        c0, c1, c2 = self.coefficients
        return c0 + c1 * u + c2 * u**2

    @property
    def levels(self) -> np.ndarray:
        """The fitted level at each calibration energy."""
        return self(np.asarray(self.energies))

    @classmethod
    def fit(
        cls,
        surrogate: object,
        *,
        energies: Sequence[float] | None = None,
        n_per_energy: int = 2000,
        content: float = CL68,
        likelihood: str = "layers",
        seed: int = 0,
        n_boot: int = 50,
        progress: Callable[[int], None] | None = None,
        **calibrator_options: object,
    ) -> IntervalLevel:
        """Draw ``n_per_energy`` showers from ``surrogate`` at each energy (default: 10 log-spaced energies over
        the inner 90% of its range in ln E), fit them with ``Calibrator(surrogate, likelihood=..., **options)``
        and keep the ``content`` quantile of ``q``. ``progress(n)`` after each energy with its shower count.

        ``likelihood="layers"`` draws layer energies (``sample_layers``, clipped at 0 GeV as recorded energies
        are); ``"full"`` whole showers (``sample``).
        """
        if not 0 < content < 1 or n_per_energy < 20:
            raise InputError(f"need 0 < content < 1 and n_per_energy >= 20, got {content}, {n_per_energy}")
        calibrator = Calibrator(surrogate, likelihood=likelihood, **calibrator_options)  # type: ignore[arg-type]
        if energies is None:
            lo, hi = np.log(calibrator.energy_range)
            pad = 0.05 * (hi - lo)
            energies = np.exp(np.linspace(lo + pad, hi - pad, 10))
        energies = np.sort(np.asarray(energies, dtype=np.float64))
        if len(energies) < 3:
            raise InputError(f"IntervalLevel.fit needs at least 3 energies for its quadratic, got {len(energies)}")
        rng = np.random.default_rng(seed)
        levels, errors = [], []
        for k, e_true in enumerate(energies):
            e = np.full(n_per_energy, e_true)
            if likelihood == "layers":
                x = np.clip(surrogate.sample_layers(e, seed=seed + 7919 * k), 0.0, None)  # type: ignore[attr-defined]
            else:
                x = calibrator.inputs(surrogate.sample(e, seed=seed + 7919 * k))  # type: ignore[attr-defined]
            q = likelihood_ratio_at_truth(calibrator, x, e_true)
            levels.append(float(np.quantile(q, content)))
            boot = [np.quantile(rng.choice(q, size=len(q)), content) for _ in range(n_boot)]
            errors.append(float(np.std(boot, ddof=1)))
            if progress is not None:
                progress(n_per_energy)
        coefficients, chi2_ndf = _quadratic(energies, np.array(levels), np.maximum(errors, 1e-6))
        return cls(tuple(float(v) for v in energies), tuple(levels), tuple(errors), coefficients, chi2_ndf,
                   float(content), int(n_per_energy), likelihood)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> IntervalLevel:
        return cls(**{**data, **{k: tuple(data[k]) for k in ("energies", "quantiles", "errors", "coefficients")}})


def _pivot(energies: Sequence[float]) -> float:
    """The origin of the quadratic: the middle of the grid in ln E."""
    return 0.5 * (math.log(energies[0]) + math.log(energies[-1]))


def _quadratic(
    energies: np.ndarray, values: np.ndarray, errors: np.ndarray
) -> tuple[tuple[float, float, float], float]:
    """Weighted least-squares quadratic in ``ln E - pivot`` (iminuit); coefficients and chi^2 / ndf."""
    u = np.log(energies) - _pivot(energies)

    def model(x: np.ndarray, c0: float, c1: float, c2: float) -> np.ndarray:
        return c0 + c1 * x + c2 * x**2

    m = Minuit(LeastSquares(u, values, errors, model), c0=float(np.mean(values)), c1=0.0, c2=0.0)
    m.migrad()
    ndf = max(len(u) - 3, 1)
    return (float(m.values[0]), float(m.values[1]), float(m.values[2])), float(m.fval / ndf)
