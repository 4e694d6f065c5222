"""Background estimate after a cut, its uncertainty, and the discovery significance.

After a cut on the anomaly score, the expected background in the signal region is

    B = N_SR * eps,   eps = mean over the R replicas of the density-estimator ensemble of the fraction
                            of generated background passing the cut,

with ``N_SR`` the expected number of background events in the signal region before the cut
(e.g. from the sideband fit of :mod:`calinfer.resonant.bumphunt`). Its uncertainty (``sigma``) has
these parts, added in quadrature, none counted twice:

* ensemble (``sigma_ensemble``): the standard deviation ``s`` of the single replicas' pass fractions,
  not of their mean. The flows of all replicas train on the same sideband events (bootstrap resamples
  of them), so their errors are correlated and the mean does not average the data's own fluctuation
  away; the bootstrap spread of single members is the standard error of the estimate. It contains the
  binomial noise of every replica's generated sample, which is therefore not added again. With ``R``
  replicas ``s`` has ``R - 1`` degrees of freedom; the term is ``t_{R-1}(0.8413) s`` (Student's t:
  the half width of a 68.27% interval, 1.84 s for R = 2, 1.32 s for R = 3, 1.14 s for R = 5) and never
  less than the binomial standard deviation of one replica, the least a single member scatters;
* normalisation (``sigma_norm``): the uncertainty of ``N_SR``;
* calibration (``sigma_calibration``, only with factors ``k_r``, see below): the statistical error of the
  mean of the calibrated fractions, from the covariance of the replicas' calibration errors (their held-out
  sideband events overlap; the generated events each flow calibrates with are its own). The ensemble term
  of a calibrated estimate then holds only the flows' training fluctuation that the calibration leaves:
  the variance of the calibrated replicas less the part the calibration noise adds to it (known from its
  covariance), never below 0 and never above the variance before calibration (times the mean factor
  squared). The spread after calibration alone would hold each replica's calibration noise a second time,
  and in full where the mean holds only its average; the spread before it alone would keep the training
  fluctuation that the calibration removes.

``sigma_stat``, the binomial error of the mean pass fraction, is reported; it is the whole statistical
term only for a single replica (R = 1, no spread to measure) and the term of ``sigma_without_ensemble``.
Optionally each replica's fraction is multiplied by a calibration factor ``k_r`` (data pass fraction
over generated pass fraction on sideband events its flows never trained on, see
:meth:`calinfer.resonant.Cathode.cut`). The significance of ``n`` observed events uses Cowan's formula
for a counting experiment with a background uncertainty (as used in arXiv:2411.00085):

    Z = sqrt(2 [ n ln( n (b + s^2) / (b^2 + n s^2) ) - (b^2 / s^2) ln( 1 + s^2 (n - b) / (b (b + s^2)) ) ]),

``s`` the background uncertainty; for ``s -> 0`` it becomes ``sqrt(2 (n ln(n/b) - n + b))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import norm, t

from calinfer.errors import InputError

__all__ = ["BackgroundEstimate", "background_after_cut", "cowan_significance", "pull", "small_sample_factor"]

_ONE_SIGMA = float(norm.cdf(1.0))


def small_sample_factor(n_replicas: int) -> float:
    """``t_{R-1}(0.8413)``: the factor on a standard deviation from ``R`` values that gives a 68.27% interval."""
    if n_replicas < 2:
        raise InputError(f"a spread needs at least 2 replicas, got {n_replicas}")
    return float(t.ppf(_ONE_SIGMA, n_replicas - 1))


def cowan_significance(n: float | np.ndarray, b: float | np.ndarray, sigma_b: float | np.ndarray = 0.0) -> np.ndarray:
    """Discovery significance of ``n`` observed events over ``b +- sigma_b`` expected (signed: negative for n < b).

    Broadcasts over arrays; ``b > 0`` and ``sigma_b >= 0`` are required, ``n >= 0``.
    """
    n, b, s = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (n, b, sigma_b)))
    if np.any(b <= 0) or np.any(s < 0) or np.any(n < 0):
        raise InputError("need b > 0, sigma_b >= 0 and n >= 0")
    s2 = s**2
    with np.errstate(divide="ignore", invalid="ignore"):
        n_log_n = np.where(n > 0, n * np.log(np.where(n > 0, n, 1.0)), 0.0)
        no_unc = 2 * (n_log_n - n * np.log(b) - n + b)
        first = np.where(n > 0, n * np.log(n * (b + s2) / (b**2 + n * s2)), 0.0)
        second = np.where(s2 > 0, b**2 / np.where(s2 > 0, s2, 1.0) * np.log1p(s2 * (n - b) / (b * (b + s2))), 0.0)
        with_unc = 2 * (first - second)
    q = np.where(s2 > 1e-12 * b**2, with_unc, no_unc)
    z = np.sign(n - b) * np.sqrt(np.maximum(q, 0.0))
    return z if z.ndim else z[()]


def pull(n: float | np.ndarray, b: float | np.ndarray, sigma_b: float | np.ndarray = 0.0) -> np.ndarray:
    """``(n - b) / sqrt(b + sigma_b^2)``: Poisson plus background uncertainty; ~N(0, 1) when the estimate closes."""
    n, b, s = (np.asarray(v, dtype=np.float64) for v in (n, b, sigma_b))
    return (n - b) / np.sqrt(b + s**2)


@dataclass(frozen=True)
class BackgroundEstimate:
    """Expected background after a cut (events), its uncertainty components and the mean generated pass fraction.

    ``n_replicas``: members whose spread gave ``sigma_ensemble`` (1: none, the binomial term stands in)."""

    b: float
    sigma_stat: float
    sigma_ensemble: float
    sigma_norm: float
    pass_fraction: float
    sigma_calibration: float = 0.0
    calibration: float = 1.0
    n_replicas: int = 1

    @property
    def sigma(self) -> float:
        """Total uncertainty: ensemble (which contains the binomial noise), normalisation and calibration in
        quadrature; the binomial term instead of the ensemble term for a single replica."""
        sampling = self.sigma_ensemble if self.n_replicas > 1 else self.sigma_stat
        return float(np.sqrt(sampling**2 + self.sigma_norm**2 + self.sigma_calibration**2))

    @property
    def sigma_without_ensemble(self) -> float:
        """Uncertainty without the ensemble spread (statistics, normalisation, calibration)."""
        return float(np.sqrt(self.sigma_stat**2 + self.sigma_norm**2 + self.sigma_calibration**2))

    def significance(self, n_observed: float, *, include_ensemble: bool = True) -> float:
        """Cowan significance of ``n_observed`` (optionally without the ensemble term)."""
        sig = self.sigma if include_ensemble else self.sigma_without_ensemble
        return float(cowan_significance(n_observed, self.b, sig))

    def to_dict(self) -> dict:
        return {**asdict(self), "sigma": self.sigma}


def background_after_cut(
    pass_fraction: Sequence[float] | np.ndarray,
    n_generated: Sequence[int] | np.ndarray | int,
    n_sr: float,
    n_sr_sigma: float = 0.0,
    *,
    calibration: Sequence[float] | np.ndarray | None = None,
    calibration_sigma: Sequence[float] | np.ndarray | None = None,
    calibration_correlation: np.ndarray | None = None,
) -> BackgroundEstimate:
    """Background after a cut from an ensemble of generated samples (see the module docstring).

    ``pass_fraction[r]``: fraction of the background generated by replica ``r`` that passes the cut;
    ``n_generated[r]``: its sample size; ``n_sr +- n_sr_sigma``: expected background events in the signal
    region before the cut; ``calibration[r]``: optional factor for replica ``r``'s pass fraction, with
    ``calibration_sigma`` of shape ``(R,)`` or ``(R, G)`` (``G`` independent parts) and
    ``calibration_correlation`` of shape ``(R, R)`` or ``(G, R, R)``: the correlation of each part between
    replicas (default: fully correlated). The calibration term is the error of the mean factor-weighted
    fraction, ``sqrt(sum_rr' rho_rr' a_r a_r') / R`` over all pairs including ``r = r'`` (``a_r`` = pass
    fraction x error); the ensemble term is the training fluctuation left after calibration (module docstring).
    """
    eff = np.asarray(pass_fraction, dtype=np.float64).reshape(-1)
    ngen = np.broadcast_to(np.asarray(n_generated, dtype=np.float64), eff.shape)
    if len(eff) == 0 or np.any((eff < 0) | (eff > 1)) or np.any(ngen <= 0):
        raise InputError("need at least one pass fraction in [0, 1] and positive sample sizes")
    if n_sr <= 0 or n_sr_sigma < 0:
        raise InputError(f"need n_sr > 0 and n_sr_sigma >= 0, got {n_sr}, {n_sr_sigma}")
    k = np.ones_like(eff) if calibration is None else np.asarray(calibration, dtype=np.float64).reshape(-1)
    k_sigma = np.zeros_like(eff) if calibration_sigma is None else np.asarray(calibration_sigma, dtype=np.float64)
    k_sigma = k_sigma[:, None] if k_sigma.ndim == 1 else k_sigma
    bad_shape = k.shape != eff.shape or k_sigma.ndim != 2 or len(k_sigma) != len(eff)
    if bad_shape or np.any(~np.isfinite(k) | (k <= 0)) or np.any(k_sigma < 0):
        raise InputError("need one positive, finite calibration factor (and uncertainties >= 0) per pass fraction")
    n_rep = len(eff)
    mean_eff = float(eff.mean())
    corrected = eff * k
    binomial = k**2 * eff * (1 - eff) / ngen  # variance of each replica's fraction from its generated sample
    stat_eff = float(np.sqrt(np.sum(binomial)) / n_rep)  # of the mean: replicas' generated samples are independent
    # each part fully correlated across the replicas (linear mean), the parts independent (quadrature)
    a = eff[:, None] * k_sigma  # (R, G)
    rho = np.ones((a.shape[1], n_rep, n_rep)) if calibration_correlation is None else calibration_correlation
    rho = np.broadcast_to(np.asarray(rho, dtype=np.float64), (a.shape[1], n_rep, n_rep))
    cov = np.einsum("gr,grs,gs->rs", a.T, rho, a.T)  # (R, R): covariance of the replicas' calibration errors
    calib_var = float(cov.sum()) / n_rep**2  # of the mean over the replicas
    calib_eff = float(np.sqrt(max(calib_var, 0.0)))
    ens_eff = 0.0
    if n_rep > 1:
        # the flows' training fluctuation left after calibration: the spread after it less what the calibration
        # noise adds to that spread (the part of it in which the replicas differ), and at most the spread before
        # calibration (on the calibrated scale), which holds none of the calibration noise
        in_spread = float(np.trace(cov)) / n_rep - float(cov.sum() - np.trace(cov)) / (n_rep * (n_rep - 1))
        training = min(
            max(float(corrected.var(ddof=1)) - in_spread, 0.0), float(eff.var(ddof=1)) * float(k.mean()) ** 2
        )
        ens_eff = max(small_sample_factor(n_rep) * float(np.sqrt(training)), float(np.sqrt(binomial.mean())))
    return BackgroundEstimate(
        b=n_sr * float(corrected.mean()),
        sigma_stat=n_sr * stat_eff,
        sigma_ensemble=n_sr * ens_eff,
        sigma_norm=float(corrected.mean()) * n_sr_sigma,
        pass_fraction=mean_eff,
        sigma_calibration=n_sr * calib_eff,
        calibration=float(corrected.mean() / mean_eff) if mean_eff > 0 else 1.0,
        n_replicas=n_rep,
    )
