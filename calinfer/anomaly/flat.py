"""Energy-flat anomaly scores: the tail probability of a likelihood score among the surrogate's own showers.

The plain likelihood scores mostly measure the incident energy (``-log p`` of a photon grows with E through the
Jacobians), so a cut on them selects by energy as much as by anomaly. :class:`TailScore` replaces a base score
``s(x)`` (``nll``, ``profile``, their ``-mixed`` variants, ``layers``, ``voxels``) by

    ``tail(x) = P(s(X) >= s(x) | E = E(x))``,  ``X ~`` the surrogate's showers at incident energy ``E(x)``,

with ``E(x)`` the energy the base score evaluates at (``E_rec`` clipped to the range, or the profiled ``E_hat``),
and reports ``score = -ln tail`` (and ``z``, the normal quantile of ``1 - tail``). If the background follows the
surrogate, ``tail`` is uniform on (0, 1) at every energy, so the score has the same distribution at every energy
by construction; what remains is the surrogate's mismodelling of the background.

The distribution of ``s`` is estimated by sampling: :meth:`TailScore.calibrate` draws ``n_per_energy`` showers at
each of ``n_energies`` log-spaced energies, scores them with the base score and stores, per energy, the empirical
quantiles of ``s`` down to the survival probability ``tail_fraction``; beyond it the survival is exponential,
``tail = tail_fraction * exp(-(s - u) / beta)`` (peaks over the threshold ``u``, ``beta`` the mean excess, its
logarithm smoothed linearly in ln E). Between grid energies the quantiles are interpolated linearly in ln E
(horizontally, so a distribution that shifts with E is followed, not mixed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calinfer.errors import InputError
from calinfer.showers import Showers

__all__ = ["TailScore", "TailTable"]


@dataclass(frozen=True)
class TailTable:
    """Survival function of a score on a grid of incident energies.

    Attributes
    ----------
    log_energies: ``(G,)`` ln(E / GeV) of the grid, increasing.
    survival: ``(J,)`` survival probabilities of the quantile knots, decreasing from about 1 to ``tail_fraction``.
    quantiles: ``(G, J)`` score value with ``P(s >= value | E_g) = survival[j]`` (non-decreasing along j).
    beta: ``(G,)`` scale of the exponential tail beyond the last knot (score units).
    n_per_energy: sampled showers per grid energy.
    """

    log_energies: np.ndarray
    survival: np.ndarray
    quantiles: np.ndarray
    beta: np.ndarray
    n_per_energy: int

    @classmethod
    def from_samples(
        cls, log_energies: np.ndarray, scores: np.ndarray, *, tail_fraction: float = 0.1, n_knots: int = 48
    ) -> TailTable:
        """Build the table from ``scores`` ``(G, M)``: ``M`` sampled scores at each grid energy ``log_energies``."""
        x = np.asarray(log_energies, dtype=np.float64)
        s = np.asarray(scores, dtype=np.float64)
        if s.ndim != 2 or s.shape[0] != x.size or x.size < 2 or np.any(np.diff(x) <= 0):
            raise InputError("the tail table needs scores (G, M) on G >= 2 increasing grid energies")
        m = s.shape[1]
        if not 0 < tail_fraction < 1 or tail_fraction * m < 10:
            raise InputError(
                f"tail_fraction {tail_fraction} leaves fewer than 10 of {m} samples per energy in the tail"
            )
        if not np.all(np.isfinite(s)):
            raise InputError("non-finite scores of the surrogate's own showers; the surrogate or the score is broken")
        survival = np.linspace(1.0 - 0.5 / m, tail_fraction, n_knots)
        quantiles = np.quantile(s, 1.0 - survival, axis=1).T  # (G, J)
        quantiles = np.maximum.accumulate(quantiles, axis=1)
        excess = np.where(s > quantiles[:, -1:], s - quantiles[:, -1:], np.nan)
        beta = np.nanmean(excess, axis=1)
        beta = np.where(np.isfinite(beta) & (beta > 0), beta, np.nanmedian(beta))
        # ln beta varies slowly with energy: a straight line in ln E removes most of its sampling noise
        coef = np.polyfit(x, np.log(beta), 1)
        return cls(log_energies=x, survival=survival, quantiles=quantiles, beta=np.exp(np.polyval(coef, x)),
                   n_per_energy=int(m))

    def log_survival(self, scores: np.ndarray, energies: np.ndarray) -> np.ndarray:
        """``ln P(s >= scores | E = energies)`` (energies in GeV, clipped to the grid), per shower."""
        s = np.asarray(scores, dtype=np.float64)
        x = np.clip(np.log(np.asarray(energies, dtype=np.float64)), self.log_energies[0], self.log_energies[-1])
        k = np.clip(np.searchsorted(self.log_energies, x, side="right") - 1, 0, self.log_energies.size - 2)
        w = ((x - self.log_energies[k]) / (self.log_energies[k + 1] - self.log_energies[k]))[:, None]
        q = (1 - w) * self.quantiles[k] + w * self.quantiles[k + 1]  # (N, J), non-decreasing along J
        beta = np.exp((1 - w[:, 0]) * np.log(self.beta[k]) + w[:, 0] * np.log(self.beta[k + 1]))
        log_surv = np.log(self.survival)
        j = np.clip(np.sum(q <= s[:, None], axis=1), 1, q.shape[1] - 1)  # knot interval [j - 1, j]
        rows = np.arange(s.size)
        q0, q1 = q[rows, j - 1], q[rows, j]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.clip(np.where(q1 > q0, (s - q0) / (q1 - q0), 1.0), 0.0, 1.0)
        inside = log_surv[j - 1] + t * (log_surv[j] - log_surv[j - 1])
        beyond = log_surv[-1] - (s - q[:, -1]) / beta
        return np.where(s > q[:, -1], beyond, inside)

    def to_dict(self) -> dict:
        return {
            "log_energies": self.log_energies.tolist(),
            "survival": self.survival.tolist(),
            "quantiles": self.quantiles.tolist(),
            "beta": self.beta.tolist(),
            "n_per_energy": self.n_per_energy,
        }


def _evaluation_energy(out: dict[str, np.ndarray], energy_range: tuple[float, float]) -> np.ndarray:
    """The energy (GeV) a base score evaluated at: the profiled E_hat, else E_rec clipped to the range."""
    if "e_hat" in out:
        return out["e_hat"]
    if "e_rec" in out:
        return np.clip(out["e_rec"], *energy_range)
    raise InputError("the base score reports neither e_hat nor e_rec; it cannot be made energy-flat")


class TailScore:
    """``-ln P(s(X) >= s(x) | E(x))`` of a base likelihood score ``s`` under the surrogate's own showers.

    Parameters
    ----------
    base: a likelihood score (:class:`~calinfer.anomaly.scores.LikelihoodScore` or
        :class:`~calinfer.anomaly.scores.ProfileScore`) whose ``surrogate`` can ``sample(energies, seed)``.
    n_energies: log-spaced grid energies over the base score's energy range.
    n_per_energy: surrogate showers sampled per grid energy (the tail beyond ``tail_fraction`` is extrapolated).
    tail_fraction: survival probability below which the tail is exponential.
    seed: seed of the surrogate samples (the calibration is reproducible).
    threshold: read-out threshold of the data (GeV): sampled voxels below it are set to zero, as the detector
        does (the surrogate smears the threshold and puts some energy below it, which changes the number of empty
        voxels and so every likelihood score). ``"auto"``: the smallest non-zero voxel energy of the showers given
        to :meth:`fit` (or, when calibrating on first use, of the first showers evaluated); ``None``: samples as
        drawn.
    chunk: showers scored at once during the calibration.

    :meth:`fit` fits the base score (lambda for ``nll``) and calibrates; :meth:`evaluate` calibrates on first use
    when that was not done; :meth:`transform` turns outputs of the base score already computed into this score.
    Outputs: the base score's outputs, plus ``base_score``, ``log_tail`` (ln of the tail probability), ``z`` (its
    normal quantile, one-sided) and ``score = -log_tail``.
    """

    def __init__(
        self,
        base,
        *,
        n_energies: int = 16,
        n_per_energy: int = 400,
        tail_fraction: float = 0.1,
        seed: int = 0,
        threshold: float | str | None = "auto",
        chunk: int = 2000,
    ) -> None:
        if not hasattr(base.surrogate, "sample"):
            raise InputError("the energy-flat score samples the surrogate: it needs surrogate.sample(energies, seed)")
        if n_energies < 2 or n_per_energy * tail_fraction < 10:
            raise InputError("the energy-flat score needs n_energies >= 2 and n_per_energy * tail_fraction >= 10")
        self.base = base
        self.surrogate = base.surrogate
        self.part = base.part
        self.energy_range = base.energy_range
        self.name = f"{base.name}-tail"
        self.n_energies, self.n_per_energy = int(n_energies), int(n_per_energy)
        self.tail_fraction, self.seed, self.chunk = float(tail_fraction), int(seed), int(chunk)
        if threshold != "auto" and threshold is not None and not float(threshold) >= 0:
            raise InputError(f"the read-out threshold must be >= 0 GeV, None or 'auto', got {threshold!r}")
        self.threshold = threshold
        self.table: TailTable | None = None
        self.threshold_used: float | None = None

    def fit(self, background: Showers) -> TailScore:
        """Fit the base score on labelled background (lambda for ``nll``), then :meth:`calibrate`."""
        self.base.fit(background)
        return self.calibrate(background)

    def calibrate(self, data: Showers | None = None) -> TailScore:
        """Sample the surrogate on the energy grid, score the samples with the base score, build the table.

        ``data``: recorded showers the ``"auto"`` read-out threshold is taken from (not needed otherwise).
        """
        threshold = self.threshold
        if threshold == "auto":
            positive = None if data is None else data.voxels[data.voxels > 0]
            threshold = float(positive.min()) if positive is not None and positive.size else None
        self.threshold_used = threshold
        log_e = np.linspace(*np.log(self.energy_range), self.n_energies)
        energies = np.repeat(np.exp(log_e), self.n_per_energy)
        samples = self.surrogate.sample(energies, seed=self.seed)
        if threshold:
            voxels = np.where(samples.voxels < threshold, 0.0, samples.voxels).astype(samples.voxels.dtype)
            samples = Showers(voxels=voxels, geometry=samples.geometry, incident_energy=samples.incident_energy,
                              source=f"{samples.source}, threshold {threshold:g} GeV")
        scores = np.concatenate([
            self.base.evaluate(samples[a : a + self.chunk])["score"] for a in range(0, len(samples), self.chunk)
        ])
        self.table = TailTable.from_samples(
            log_e, scores.reshape(self.n_energies, self.n_per_energy), tail_fraction=self.tail_fraction
        )
        return self

    def evaluate(self, showers: Showers) -> dict[str, np.ndarray]:
        if self.table is None:
            self.calibrate(showers)
        return self.transform(self.base.evaluate(showers))

    def transform(self, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The tail score from the base score's outputs ``out`` (as :meth:`evaluate` returns, computed once)."""
        from scipy.special import ndtri_exp

        if self.table is None:
            raise InputError(f"score {self.name!r} is not calibrated: call fit(background) or calibrate() first")
        out = dict(out)
        log_tail = self.table.log_survival(out["score"], _evaluation_energy(out, self.energy_range))
        out["base_score"] = out["score"]
        out["log_tail"] = log_tail
        out["z"] = -ndtri_exp(log_tail)
        out["score"] = -log_tail
        return out
