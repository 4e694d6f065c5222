"""Coverage-calibrated interval levels: an exponential toy whose likelihood-ratio statistic has a closed form."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize, stats

from calinfer.calibration import Calibrator, IntervalLevel, Status
from calinfer.calibration.metrics import CL68, coverage
from calinfer.errors import InputError


class ExponentialModel:
    """One 'layer' x ~ Exp(mean E): -ln L = ln E + x / E, E_mle = x; q(E) = r - 1 - ln r with r = x / E ~ Exp(1),
    whatever E, so P(q <= t) and the level with 68.3% coverage are known in closed form. The range is wide enough
    for r to stay inside it (the scan then needs more than the default 400 points: ``SCAN``)."""

    energy_range = (1e-3, 1e5)

    def log_prob_layers(self, x: np.ndarray, energies: np.ndarray) -> np.ndarray:
        return -np.log(energies) - x[:, :1] / energies

    def sample_layers(self, energies: np.ndarray, seed: int = 0) -> np.ndarray:
        return np.random.default_rng(seed).exponential(np.asarray(energies, float))[:, None]


SCAN = {"max_scan": 2000}


def closed_form_coverage(t: float) -> float:
    """P(q <= t) for r ~ Exp(1): the two roots of r - 1 - ln r = t and the exponential cdf."""
    f = lambda r: r - 1 - np.log(r) - t  # noqa: E731
    r1, r2 = optimize.brentq(f, 1e-14, 1.0), optimize.brentq(f, 1.0, 1e3)
    return float(stats.expon.cdf(r2) - stats.expon.cdf(r1))


def test_interval_level_restores_coverage_where_wilks_undercovers() -> None:
    model = ExponentialModel()
    t_star = optimize.brentq(lambda t: closed_form_coverage(t) - CL68, 0.05, 3.0)  # 0.584
    assert closed_form_coverage(0.5) == pytest.approx(0.645, abs=0.001)  # Delta = 0.5 undercovers here

    level = IntervalLevel.fit(model, energies=[3.0, 30.0, 300.0], n_per_energy=4000, seed=1, **SCAN)
    assert level.likelihood == "layers" and level.n_per_energy == 4000
    for t, err in zip(level.quantiles, level.errors, strict=True):
        assert 0.005 < err < 0.05
        assert abs(t - t_star) < 3.5 * err, (t, t_star, err)
    # the smoothed level: a quadratic through 3 points passes through them; constant beyond the grid
    np.testing.assert_allclose(level.levels, level.quantiles, atol=1e-6)
    assert level(np.array([1.0, 1e4])) == pytest.approx([level.quantiles[0], level.quantiles[2]], abs=1e-6)
    assert IntervalLevel.from_dict(level.to_dict()) == level

    for energy, seed in ((10.0, 11), (100.0, 12)):  # fresh showers, energies off the calibration grid
        x = model.sample_layers(np.full(4000, energy), seed=seed)
        truth = np.full(len(x), energy)
        plain = Calibrator(model, **SCAN).fit(x)
        calibrated = Calibrator(model, interval_level=level, **SCAN).fit(x)
        assert calibrated.has(Status.CONVERGED).mean() > 0.99
        np.testing.assert_allclose(calibrated.e_mle, plain.e_mle, rtol=1e-6)  # only the edges move
        p_plain, err = coverage(plain.e_lo, plain.e_hi, truth)
        p_cal, err_cal = coverage(calibrated.e_lo, calibrated.e_hi, truth)
        assert abs(p_plain - closed_form_coverage(0.5)) < 3 * err
        assert abs(p_cal - CL68) < 3 * err_cal, (energy, p_cal)
        # the edges sit at Delta(-ln L) = level(E_mle), checked on -ln L itself
        ok = calibrated.has(Status.CONVERGED) & ~calibrated.has(Status.OPEN_LOW | Status.OPEN_HIGH)
        xs, target = x[ok, 0], level(calibrated.e_mle[ok])
        f_hat = np.log(calibrated.e_mle[ok]) + xs / calibrated.e_mle[ok]
        for edge in (calibrated.e_lo[ok], calibrated.e_hi[ok]):
            assert np.max(np.abs(np.log(edge) + xs / edge - f_hat - target)) < 0.02


def test_smoothed_level_averages_the_quantiles_sampling_noise() -> None:
    """A constant true level (the toy is a scale family) at 8 energies: the quadratic through the quantiles is
    nearer the closed form than the quantiles themselves, and its chi^2 / ndf is that of pure noise."""
    t_star = optimize.brentq(lambda t: closed_form_coverage(t) - CL68, 0.05, 3.0)
    level = IntervalLevel.fit(ExponentialModel(), energies=np.geomspace(2.0, 500.0, 8), n_per_energy=1500, seed=3,
                              **SCAN)
    raw = np.abs(np.array(level.quantiles) - t_star)
    smooth = np.abs(level.levels - t_star)
    assert np.sqrt(np.mean(smooth**2)) < np.sqrt(np.mean(raw**2))
    assert np.max(smooth) < 3 * np.mean(level.errors)
    assert 0.1 < level.chi2_ndf < 3.5


def test_interval_level_is_checked() -> None:
    model = ExponentialModel()
    with pytest.raises(InputError, match="interval_level"):
        Calibrator(model, interval_level=lambda e: np.full(np.shape(e), -1.0))
    with pytest.raises(InputError, match="bracket_rise"):
        Calibrator(model, interval_level=2.5)
    with pytest.raises(InputError, match="increasing"):
        IntervalLevel((30.0, 3.0), (0.5, 0.5), (0.01, 0.01), (0.5, 0.0, 0.0), 1.0, CL68, 100, "layers")
    with pytest.raises(InputError, match="at least 3 energies"):
        IntervalLevel.fit(model, energies=[3.0, 30.0], n_per_energy=100)
