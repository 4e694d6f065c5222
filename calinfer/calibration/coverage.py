"""Interval levels calibrated for coverage on the surrogate's own showers (a Neyman construction in E).

The likelihood interval ``{E : Delta(-ln L)(E) <= t}`` holds the true energy exactly when the likelihood-ratio
statistic ``q = -ln L(E_true) + ln L(E_mle)`` is at most ``t``. Wilks' theorem gives ``P(q <= 0.5) = 68.3%`` when
the likelihood is Gaussian in some parametrisation of E; a single hadron shower's is not (broad, skewed, cut by
the energy range), and an exponential toy (one observation, mean E) shows the size of the effect: 64.5%.

:class:`IntervalLevel` measures the distribution of ``q`` on showers drawn from the surrogate itself at a grid of
true energies and keeps its ``content`` quantile ``t(E)``. Intervals ``{E : Delta(-ln L)(E) <= t(E)}`` are then
Neyman intervals with the likelihood-ratio ordering (as in Feldman and Cousins) and cover ``content`` by
construction wherever the surrogate describes the data. :class:`calinfer.calibration.Calibrator` takes the level
at each shower's E_mle (``t`` varies slowly with E): that is the one approximation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

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
    levels: the ``content`` quantile of ``q`` at each energy.
    errors: bootstrap standard deviation of each level.
    content: the target coverage (default 68.3%).
    n_per_energy: surrogate showers per energy.
    likelihood: ``"layers"`` or ``"full"``, the calibrator's likelihood.

    Calling it with energies (GeV) interpolates the levels linearly in ``ln E`` (constant beyond the grid).
    """

    energies: tuple[float, ...]
    levels: tuple[float, ...]
    errors: tuple[float, ...]
    content: float
    n_per_energy: int
    likelihood: str

    def __post_init__(self) -> None:
        e, t = np.asarray(self.energies, float), np.asarray(self.levels, float)
        if len(e) == 0 or len(e) != len(t) or len(self.errors) != len(e):
            raise InputError("IntervalLevel needs as many levels and errors as energies (at least one)")
        if not (np.all(np.diff(e) > 0) and e[0] > 0 and np.all(np.isfinite(t) & (t > 0))):
            raise InputError("IntervalLevel needs increasing positive energies and positive finite levels")

    def __call__(self, energies: np.ndarray | float) -> np.ndarray:
        u = np.log(np.asarray(energies, dtype=np.float64))
        return np.interp(u, np.log(self.energies), self.levels)

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
        return cls(tuple(float(v) for v in energies), tuple(levels), tuple(errors), float(content),
                   int(n_per_energy), likelihood)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> IntervalLevel:
        return cls(**{**data, **{k: tuple(data[k]) for k in ("energies", "levels", "errors")}})
