"""Calibration: interval logic on likelihoods with closed-form answers, status flags, coverage, metrics, baseline."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.special import lambertw

from calinfer.calibration import Calibrator, Status, describe_status
from calinfer.calibration.metrics import coverage, half_width, kde_mode, pulls, ratio_summary, sigma_vs_spread
from calinfer.calibration.regression import train_regressor
from calinfer.errors import InputError


class GaussianModel:
    """x ~ N(E, sigma): E_mle = x, MINOS interval exactly [x - sigma, x + sigma]."""

    def __init__(self, sigma: float) -> None:
        self.sigma = sigma
        self.calls = 0

    def log_prob_layers(self, x: np.ndarray, energies: np.ndarray) -> np.ndarray:
        self.calls += 1
        return -0.5 * ((x[:, :1] - energies) / self.sigma) ** 2


class PoissonModel:
    """n ~ Poisson(k E): E_mle = n / k; the edges solve k E - n ln(k E) - (n - n ln n) = 1/2."""

    def __init__(self, k: float) -> None:
        self.k = k

    def log_prob_layers(self, x: np.ndarray, energies: np.ndarray) -> np.ndarray:
        mu = self.k * energies
        return x[:, :1] * np.log(mu) - mu


class ResolutionModel:
    """x ~ N(E, a sqrt(E)): a calorimeter-like likelihood whose width grows with E (toy for coverage)."""

    def __init__(self, a: float) -> None:
        self.a = a

    def log_prob_layers(self, x: np.ndarray, energies: np.ndarray) -> np.ndarray:
        var = self.a**2 * energies
        return -0.5 * (x[:, :1] - energies) ** 2 / var - 0.5 * np.log(2 * np.pi * var)

    def sample(self, energy: float, n: int, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).normal(energy, self.a * np.sqrt(energy), size=(n, 1))


class BimodalModel:
    """Mixture of two narrow Gaussians at x and x + gap: two separated maxima of the likelihood."""

    def __init__(self, sigma: float, gap: float, weight: float) -> None:
        self.sigma, self.gap, self.weight = sigma, gap, weight

    def log_prob_layers(self, x: np.ndarray, energies: np.ndarray) -> np.ndarray:
        g1 = np.exp(-0.5 * ((x[:, :1] - energies) / self.sigma) ** 2)
        g2 = np.exp(-0.5 * ((x[:, :1] + self.gap - energies) / self.sigma) ** 2)
        return np.log(g1 + self.weight * g2 + 1e-300)


def test_gaussian_closed_form() -> None:
    x = np.random.default_rng(1).uniform(5, 90, size=(500, 1))
    res = Calibrator(GaussianModel(2.0)).fit(x)
    assert np.all(res.status == Status.CONVERGED)
    # MIGRAD stops at EDM ~ 1e-6: the minimum is known to ~1e-3 sigma, the crossings much better
    np.testing.assert_allclose(res.e_mle, x[:, 0], rtol=0, atol=2e-3 * 2.0)
    np.testing.assert_allclose(res.e_lo, x[:, 0] - 2.0, rtol=1e-4)
    np.testing.assert_allclose(res.e_hi, x[:, 0] + 2.0, rtol=1e-4)
    np.testing.assert_allclose(res.nll, 0.0, atol=1e-4)


@pytest.mark.parametrize("n", [3, 20, 400])
def test_poisson_minos_closed_form(n: int) -> None:
    k = 10.0
    res = Calibrator(PoissonModel(k), energy_range=(0.01, 1000.0)).fit(np.full((1, 1), float(n)))
    c = -np.exp(-(1 + 0.5 / n))
    lo, hi = -n * lambertw(c, 0).real / k, -n * lambertw(c, -1).real / k
    assert res.status[0] == Status.CONVERGED
    assert res.e_mle[0] == pytest.approx(n / k, abs=1e-3 * np.sqrt(n) / k)  # 1e-3 sigma
    assert res.e_lo[0] == pytest.approx(lo, rel=1e-4)
    assert res.e_hi[0] == pytest.approx(hi, rel=1e-4)
    assert res.e_hi[0] - res.e_mle[0] > res.e_mle[0] - res.e_lo[0]  # Poisson intervals are asymmetric


def test_refinement_resolves_narrow_likelihood() -> None:
    # 0.02 GeV wide at 50 GeV: far narrower than the coarse grid step (~12%) -> refinement rounds needed
    x = np.array([[50.0], [7.3]])
    res = Calibrator(GaussianModel(0.02)).fit(x)
    np.testing.assert_allclose(res.e_lo, x[:, 0] - 0.02, rtol=2e-5)
    np.testing.assert_allclose(res.e_hi, x[:, 0] + 0.02, rtol=2e-5)


def test_status_flags_at_range_edges() -> None:
    cal = Calibrator(GaussianModel(2.0), energy_range=(10.0, 60.0))
    x = np.array([[5.0], [10.5], [59.0], [75.0], [30.0]])
    res = cal.fit(x)
    names = [describe_status(s) for s in res.status]
    # minimum below the range: at the lower edge, interval open below, closed above where nll rises by 0.5
    assert names[0] == "CONVERGED|AT_BOUNDARY|OPEN_LOW"
    assert res.e_mle[0] == pytest.approx(10.0) and res.e_lo[0] == pytest.approx(10.0)
    assert res.e_hi[0] == pytest.approx(5.0 + np.sqrt(25.0 + 4.0), rel=1e-4)
    # minimum inside, but closer than sigma to an edge: open on that side only
    assert names[1] == "CONVERGED|OPEN_LOW" and res.e_mle[1] == pytest.approx(10.5, rel=1e-4)
    assert res.e_hi[1] == pytest.approx(12.5, rel=1e-4)
    assert names[2] == "CONVERGED|OPEN_HIGH" and res.e_lo[2] == pytest.approx(57.0, rel=1e-4)
    assert res.e_hi[2] == 60.0
    assert names[3] == "CONVERGED|AT_BOUNDARY|OPEN_HIGH" and res.e_mle[3] == pytest.approx(60.0)
    assert names[4] == "CONVERGED"
    assert describe_status(0) == "FAILED"


def test_multimodal_flag() -> None:
    x = np.array([[20.0]])
    # peaks at 20 and 50 GeV, 4 GeV wide (wider than the scan step there, so the scan sees both)
    bimodal = Calibrator(BimodalModel(sigma=4.0, gap=30.0, weight=0.5)).fit(x)
    assert bimodal.has(Status.MULTIMODAL)[0]
    assert bimodal.e_mle[0] == pytest.approx(20.0, rel=1e-3)  # the higher peak wins
    weak = Calibrator(BimodalModel(sigma=4.0, gap=30.0, weight=1e-4)).fit(x)  # second peak 9 units below
    assert not weak.has(Status.MULTIMODAL)[0]
    assert not Calibrator(GaussianModel(3.0)).fit(x).has(Status.MULTIMODAL)[0]


class TwoPartModel:
    """Full likelihood N(x1; E, 1) whose layers part N(x0; E, 3) peaks elsewhere (D = full - layers is quadratic)."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def log_prob(self, x: np.ndarray, energies: np.ndarray, part: str = "full", **_: object) -> np.ndarray:
        self.parts.append(part)
        column, sigma = (0, 3.0) if part == "layers" else (1, 1.0)
        return -0.5 * ((x[:, column : column + 1] - energies) / sigma) ** 2


@pytest.mark.parametrize("method", ["nodes", "dense"])
def test_full_likelihood_is_fitted_itself(method: str) -> None:
    model = TwoPartModel()
    x = np.array([[30.0, 31.0], [20.0, 60.0]])  # second shower: full minimum far from that of the layers part
    res = Calibrator(model, likelihood="full", full_method=method).fit(x)
    assert np.all(res.status == Status.CONVERGED)
    # the interpolant agrees with -ln L within edge_tolerance (0.02) at E_mle and the edges: E_mle within ~0.02 sigma
    np.testing.assert_allclose(res.e_mle, [31.0, 60.0], atol=2e-3 if method == "dense" else 2e-2)
    np.testing.assert_allclose(res.e_lo, [30.0, 59.0], rtol=1e-4)
    np.testing.assert_allclose(res.e_hi, [32.0, 61.0], rtol=1e-4)
    assert "full" in model.parts


def test_coverage_on_toy_model() -> None:
    model = ResolutionModel(a=0.5)
    cal = Calibrator(model, energy_range=(1.0, 200.0))
    for energy, seed in ((10.0, 1), (50.0, 2)):
        res = cal.fit(model.sample(energy, 2000, seed))
        p, err = coverage(res.e_lo, res.e_hi, np.full(2000, energy))
        assert abs(p - 0.6827) < 3 * err, (energy, p, err)
        pull = pulls(res.e_mle, res.e_lo, res.e_hi, np.full(2000, energy))
        assert np.mean(np.abs(pull) < 1) == pytest.approx(p)  # |pull| < 1 exactly when the interval covers
        ratio = sigma_vs_spread(res.e_mle, res.e_lo, res.e_hi)["ratio"]
        assert ratio == pytest.approx(1.0, abs=0.08)


def _crossing(f, u_hat: float, u_far: float) -> float:
    """Independent truth: the point between u_hat and u_far where f rises by 0.5 above f(u_hat) (brentq)."""
    f_hat = f(u_hat)
    return brentq(lambda u: f(u) - f_hat - 0.5, u_hat, u_far, xtol=1e-9)


def test_resolution_model_closed_form() -> None:
    """x ~ N(E, a^2 E): E_mle solves E^2 + a^2 E - x^2 = 0; the edges are brentq roots of the closed-form -ln L."""
    a = 0.5
    model = ResolutionModel(a=a)
    x = np.concatenate([model.sample(e, 5, seed=3) for e in (3.0, 20.0, 80.0)])
    res = Calibrator(model, energy_range=(0.05, 500.0)).fit(x)
    assert np.all(res.status == Status.CONVERGED)
    for i, xi in enumerate(x[:, 0]):
        def f(u: float, xi: float = xi) -> float:
            e = np.exp(u)
            return 0.5 * (xi - e) ** 2 / (a**2 * e) + 0.5 * np.log(2 * np.pi * a**2 * e)

        e_hat = 0.5 * (-(a**2) + np.sqrt(a**4 + 4 * xi**2))
        u_hat = np.log(e_hat)
        assert res.e_mle[i] == pytest.approx(e_hat, rel=2e-4)
        assert res.e_lo[i] == pytest.approx(np.exp(_crossing(f, u_hat, u_hat - 3.0)), rel=1e-4)
        assert res.e_hi[i] == pytest.approx(np.exp(_crossing(f, u_hat, u_hat + 3.0)), rel=1e-4)
        assert res.nll[i] == pytest.approx(f(u_hat), abs=1e-6)


class MixtureModel:
    """-ln L(E) = -ln(w1 N(ln E; m1, s1) + w2 N(ln E; m2, s2)) in u = ln E: closed form, two basins."""

    def __init__(self, m1: float, s1: float, m2: float, s2: float, w2: float) -> None:
        self.m1, self.s1, self.m2, self.s2, self.w2 = m1, s1, m2, s2, w2

    def nll_u(self, u: np.ndarray) -> np.ndarray:
        g1 = np.exp(-0.5 * ((u - self.m1) / self.s1) ** 2)
        g2 = self.w2 * np.exp(-0.5 * ((u - self.m2) / self.s2) ** 2)
        return -np.log(g1 + g2 + 1e-300)

    def log_prob_layers(self, x: np.ndarray, energies: np.ndarray) -> np.ndarray:
        return -self.nll_u(np.log(np.broadcast_to(energies, (len(x), np.shape(energies)[1]))))


def _truth(f, grid: np.ndarray) -> tuple[float, float, float]:
    """Dense-grid global minimum of a closed-form f(u), refined with scipy, and its brentq crossings."""
    from scipy.optimize import minimize_scalar

    j = int(np.argmin(f(grid)))
    u_hat = minimize_scalar(f, bracket=(grid[max(j - 1, 0)], grid[j], grid[min(j + 1, len(grid) - 1)]),
                            tol=1e-12).x
    return u_hat, _crossing(f, u_hat, grid[0]), _crossing(f, u_hat, grid[-1])


def test_narrow_global_minimum_beside_a_broad_false_one() -> None:
    """The issue's failure: a 2%-wide minimum at 90 GeV and a broad one at 45 GeV, 8 units higher. A 24-point scan
    (22% steps) lands in the broad one; the adaptive scan must find the narrow global minimum."""
    model = MixtureModel(m1=np.log(90.0), s1=0.02, m2=np.log(45.0), s2=0.15, w2=np.exp(-8.0))
    grid = np.linspace(0.0, np.log(100.0), 200_001)
    u_hat, u_lo, u_hi = _truth(model.nll_u, grid)
    plain = np.linspace(0.0, np.log(100.0), 24)
    assert abs(np.exp(plain[np.argmin(model.nll_u(plain))]) - 45.0) < 10  # the fixed coarse scan is fooled
    res = Calibrator(model).fit(np.zeros((1, 1)))
    assert describe_status(res.status[0]) == "CONVERGED"
    assert res.e_mle[0] == pytest.approx(np.exp(u_hat), rel=1e-4)
    assert res.e_lo[0] == pytest.approx(np.exp(u_lo), rel=1e-4)
    assert res.e_hi[0] == pytest.approx(np.exp(u_hi), rel=1e-4)


@pytest.mark.parametrize(("w2", "multimodal"), [(np.exp(-1.0), True), (np.exp(-8.0), False)])
def test_two_gaussian_mixture_global_minimum_and_flag(w2: float, multimodal: bool) -> None:
    model = MixtureModel(m1=np.log(30.0), s1=0.03, m2=np.log(60.0), s2=0.03, w2=w2)
    u_hat, u_lo, u_hi = _truth(model.nll_u, np.linspace(0.0, np.log(100.0), 200_001))
    res = Calibrator(model).fit(np.zeros((1, 1)))
    assert res.has(Status.CONVERGED)[0] and res.has(Status.MULTIMODAL)[0] == multimodal
    assert res.e_mle[0] == pytest.approx(np.exp(u_hat), rel=1e-4)  # 30 GeV, not 60
    assert res.e_lo[0] == pytest.approx(np.exp(u_lo), rel=1e-4)
    assert res.e_hi[0] == pytest.approx(np.exp(u_hi), rel=1e-4)


class TwoScaleModel:
    """Two-scale, kinked -ln L in u = ln E: |u - m| / w_lo below m (linear), ((u - m) / w_hi)^2 / 2 above; truth
    E_lo = exp(m - w_lo / 2), E_hi = exp(m + w_hi). A spline through a grid rounds the kink and misplaces edges."""

    def __init__(self, m: float, w_lo: float, w_hi: float) -> None:
        self.m, self.w_lo, self.w_hi = m, w_lo, w_hi

    def nll_u(self, u: np.ndarray) -> np.ndarray:
        d = u - self.m
        return np.where(d < 0, -d / self.w_lo, 0.5 * (d / self.w_hi) ** 2)

    def log_prob_layers(self, x: np.ndarray, energies: np.ndarray) -> np.ndarray:
        return -self.nll_u(np.log(np.broadcast_to(energies, (len(x), np.shape(energies)[1]))) + x[:, :1])


def test_edges_checked_against_the_likelihood_itself() -> None:
    """Every CONVERGED edge has Delta(-ln L) = 0.5 within the stated tolerance on -ln L itself (kinked, two-scale
    likelihoods); the interval matches the closed form."""
    model = TwoScaleModel(m=np.log(40.0), w_lo=0.08, w_hi=0.005)
    shift = np.linspace(-0.5, 0.5, 9)[:, None]  # minima from 24 to 66 GeV
    cal = Calibrator(model)
    res = cal.fit(shift)
    m = np.log(40.0) - shift[:, 0]
    assert np.all(res.has(Status.CONVERGED))
    for i in range(len(shift)):
        f_hat = model.nll_u(np.log(res.e_mle[i]) + shift[i, 0])
        for edge in (res.e_lo[i], res.e_hi[i]):
            assert abs(model.nll_u(np.log(edge) + shift[i, 0]) - f_hat - 0.5) <= cal.edge_tolerance
    np.testing.assert_allclose(res.e_mle, np.exp(m), rtol=2e-3)
    np.testing.assert_allclose(res.e_lo, np.exp(m - 0.04), rtol=cal.edge_tolerance * 0.08 * 2)
    np.testing.assert_allclose(res.e_hi, np.exp(m + 0.005), rtol=cal.edge_tolerance * 0.005 * 2 + 1e-5)


def test_a_missed_minimum_is_not_converged() -> None:
    """A minimum narrower than the scan can resolve (0.05% wide, below min_width / 2 and the spacing) beside a broad
    one 8 units higher: whatever is found must not be flagged CONVERGED unless it is the global minimum."""
    model = MixtureModel(m1=np.log(90.0), s1=0.0005, m2=np.log(45.0), s2=0.15, w2=np.exp(-8.0))
    u_hat, _, _ = _truth(model.nll_u, np.linspace(0.0, np.log(100.0), 2_000_001))
    res = Calibrator(model, max_scan=60).fit(np.zeros((1, 1)))
    found_global = abs(np.log(res.e_mle[0]) - u_hat) < 0.001
    assert found_global or not res.has(Status.CONVERGED)[0]


def test_batches_do_not_change_results_and_progress_counts() -> None:
    model = GaussianModel(1.5)
    x = np.random.default_rng(4).uniform(2, 95, size=(300, 1))
    done: list[int] = []
    small = Calibrator(model, batch_size=64).fit(x, progress=done.append)
    assert sum(done) == 300 and len(done) == 5
    big = Calibrator(model, batch_size=1000).fit(x)
    np.testing.assert_allclose(small.e_mle, big.e_mle, rtol=1e-10)
    assert small[10:20].e_lo.shape == (10,)


def test_invalid_inputs() -> None:
    with pytest.raises(InputError, match="likelihood"):
        Calibrator(GaussianModel(1.0), likelihood="voxels")
    with pytest.raises(InputError, match="energy range"):
        Calibrator(GaussianModel(1.0), energy_range=(10.0, 5.0))
    with pytest.raises(InputError, match="NaN"):
        Calibrator(GaussianModel(1.0)).fit(np.array([[1.0], [np.nan]]))


def test_kde_mode_and_half_width() -> None:
    rng = np.random.default_rng(5)
    values = rng.normal(1.0, 0.1, size=2000)
    mode, spread = kde_mode(values, seed=1)
    assert abs(mode - 1.0) < 0.02 and 0 < spread < 0.02
    assert half_width(values, 1.0) == pytest.approx(0.1, rel=0.05)
    # a skewed distribution: the mode is not the mean
    skewed = rng.gamma(4.0, 0.25, size=5000)  # mode (k - 1) theta = 0.75, mean 1.0
    assert kde_mode(skewed, seed=2)[0] == pytest.approx(0.75, abs=0.04)
    summary = ratio_summary(1.02 * rng.normal(10.0, 1.0, size=3000), np.full(3000, 10.0), seed=3)
    assert summary["mode"] == pytest.approx(1.02, abs=0.015)
    assert summary["resolution"] == pytest.approx(0.1, rel=0.08)


def test_coverage_binomial_error() -> None:
    p, err = coverage(np.zeros(4), np.ones(4), np.array([0.5, 2.0, 0.1, 0.9]))
    assert p == 0.75 and err == pytest.approx(np.sqrt(0.75 * 0.25 / 4))


def test_regression_depends_on_prior() -> None:
    rng = np.random.default_rng(6)

    def toy(energies: np.ndarray) -> np.ndarray:  # 30% resolution, energy shared among 3 layers
        total = energies * (1 + 0.3 * rng.standard_normal(len(energies)))
        frac = rng.dirichlet([4.0, 10.0, 2.0], size=len(energies))
        return np.clip(total[:, None] * frac, 0, None)

    e_uni = rng.uniform(1, 100, size=3000)
    e_log = np.exp(rng.uniform(0, np.log(100), size=3000))
    reg_uni = train_regressor(toy(e_uni), e_uni, epochs=20, seed=0)
    reg_log = train_regressor(toy(e_log), e_log, epochs=20, seed=0)
    test = toy(np.full(2000, 10.0))
    pred_uni, pred_log = np.median(reg_uni.predict(test)), np.median(reg_log.predict(test))
    # MSE -> posterior mean: the uniform prior (most mass far above 10 GeV) pulls the prediction up;
    # the log-uniform prior much less
    assert pred_uni > 11.5
    assert pred_log == pytest.approx(10.0, rel=0.08)
    small_x, small_e = toy(e_uni[:500]), e_uni[:500]
    first = train_regressor(small_x, small_e, epochs=3, seed=1).predict(test)
    np.testing.assert_array_equal(first, train_regressor(small_x, small_e, epochs=3, seed=1).predict(test))
    with pytest.raises(InputError, match="true incident energies"):
        train_regressor(small_x)


def test_workers_give_the_same_results() -> None:
    x = np.random.default_rng(7).uniform(2, 95, size=(257, 1))
    one = Calibrator(GaussianModel(1.5), batch_size=50).fit(x)
    two = Calibrator(GaussianModel(1.5), batch_size=50, workers=2).fit(x)
    for name in ("e_mle", "e_lo", "e_hi", "nll", "status"):
        np.testing.assert_array_equal(getattr(one, name), getattr(two, name))


@pytest.fixture(scope="module")
def tiny_surrogate():
    """An untrained small surrogate: its likelihood (preprocessing + near-identity flows) is smooth in E."""
    from calinfer.simulation import simulate_showers
    from calinfer.surrogate import ShowerSurrogate

    train = simulate_showers(400, seed=3)
    small = {"n_blocks": 1, "hidden": 8}
    model = ShowerSurrogate.create(
        "calogan", train.voxels, train.incident_energy, seed=1, layer_flow=small, voxel_flow=small
    )
    return model, simulate_showers(40, energy_range=(5.0, 80.0), seed=4)


def _dense_reference(fn, u_range: tuple[float, float], n: int = 401) -> tuple[float, float, float, float]:
    """Independent float64 truth for one shower: -ln L on a dense grid in u = ln E, the minimum refined by scipy
    on the function itself, the crossings by brentq (a range edge where -ln L stays below 0.5); (E_mle, E_lo, E_hi,
    multi-modal)."""
    from scipy.optimize import minimize_scalar

    grid = np.linspace(*u_range, n)
    y = fn(grid)
    j = int(np.argmin(y))
    lo, hi = grid[max(j - 1, 0)], grid[min(j + 1, n - 1)]
    u_hat = minimize_scalar(lambda u: fn(np.array([u]))[0], bounds=(lo, hi), method="bounded",
                            options={"xatol": 1e-7}).x
    f = lambda u: fn(np.array([u]))[0]  # noqa: E731
    edges = [u_end if f(u_end) - f(u_hat) < 0.5 else _crossing(f, u_hat, u_end) for u_end in u_range]  # open side
    # multi-modal: another local minimum of the dense grid within 2 of the best one, behind a barrier >= 0.5
    others = [k for k in range(1, n - 1) if y[k] < y[k - 1] and y[k] <= y[k + 1] and k != j]
    multimodal = any(y[k] - y[j] < 2.0 and y[min(j, k) : max(j, k) + 1].max() - y[k] >= 0.5 for k in others)
    return np.exp(u_hat), np.exp(edges[0]), np.exp(edges[1]), multimodal


@pytest.mark.parametrize("likelihood", ["layers", "full"])
def test_surrogate_fit_against_dense_float64_reference(tiny_surrogate, likelihood: str) -> None:
    """The fast fit (for the full likelihood: the flow-II nodes) against a dense float64 scan of the surrogate's
    own -ln L with scipy root finding: E_mle, E_lo, E_hi within 1e-3 relative, the nll the exact value."""
    import torch

    model, showers = tiny_surrogate
    fast = Calibrator(model, likelihood=likelihood, energy_range=(2.0, 90.0)).fit(showers)
    assert np.all(fast.has(Status.CONVERGED))
    part = "full" if likelihood == "full" else "layers"
    for i in range(0, len(showers), 8):
        def fn(u: np.ndarray, i: int = i) -> np.ndarray:
            return -model.log_prob(showers[i : i + 1], np.exp(u)[None, :], part=part, dtype=torch.float64)[0]

        e_mle, e_lo, e_hi, multimodal = _dense_reference(fn, (np.log(2.0), np.log(90.0)))
        assert fast.has(Status.MULTIMODAL)[i] == multimodal
        assert fast.has(Status.OPEN_LOW)[i] == (e_lo == 2.0) and fast.has(Status.OPEN_HIGH)[i] == (e_hi == 90.0)
        np.testing.assert_allclose([fast.e_mle[i], fast.e_lo[i], fast.e_hi[i]], [e_mle, e_lo, e_hi], rtol=1e-3)
        assert fast.nll[i] == pytest.approx(fn(np.log([fast.e_mle[i]]))[0], abs=2e-3)


class _ClosedFormFlow:
    """Stand-in for a conditional flow with a closed-form density: standard normal in its variables plus a polynomial
    ``c t + q t^2 + k t^3`` in ``t = context[:, 0]`` (the standardized log E). With it, the surrogate's likelihood in
    E is known exactly through the real preprocessing (``calinfer.preprocessing``), E-dependent Jacobian included."""

    def __init__(self, c: float = 0.0, q: float = 0.0, k: float = 0.0) -> None:
        self.c, self.q, self.k = c, q, k

    def eval(self) -> _ClosedFormFlow:
        return self

    def parameters(self):
        return iter(())

    def to(self, *_: object) -> _ClosedFormFlow:
        return self

    def __deepcopy__(self, memo: dict) -> _ClosedFormFlow:
        return self

    def log_prob(self, x, context):
        t = context[:, 0]
        return (-0.5 * (x**2).sum(dim=1) - 0.5 * x.shape[1] * np.log(2 * np.pi)
                + self.c * t + self.q * t**2 + self.k * t**3)


@pytest.fixture(scope="module")
def closed_form_surrogate():
    """A ShowerSurrogate with the real preprocessing and closed-form flows, and the exact -ln L(u) of its showers."""
    from calinfer.preprocessing import ShowerPreprocessing
    from calinfer.simulation import simulate_showers
    from calinfer.surrogate import ShowerSurrogate

    train = simulate_showers(400, seed=3)
    geometry = train.geometry
    pre = ShowerPreprocessing.fit(geometry, train.voxels, train.incident_energy)
    mu, s_e = pre.log_energy_mean, pre.log_energy_scale
    w = 1.0 / pre.layer_scale**2  # flow I: y_l = (log E~_l - u - m_l) / s_l, standard normal
    sigma_layers = 1.0 / np.sqrt(w.sum())
    # flow II: a pull of 3 layer-sigmas towards high E, curvature that narrows the likelihood 1.5x, a cubic term
    c = 3.0 * s_e * sigma_layers * w.sum() * sigma_layers
    q, k = -0.625 * s_e**2 * w.sum(), 0.05 * s_e**3 * w.sum() / sigma_layers
    model = ShowerSurrogate(geometry, pre, _ClosedFormFlow(), _ClosedFormFlow(c, q, k), energy_range=(1.0, 100.0))
    showers = simulate_showers(12, energy_range=(8.0, 60.0), seed=5)
    e_tilde = geometry.layer_energies(showers.voxels.astype(np.float64)) + 0.5 * pre.dequantization_width * \
        pre.layer_sizes
    a = np.log(e_tilde) - pre.layer_mean  # (N, L)

    def exact_nll(i: int, u: np.ndarray, part: str, constants: bool = False) -> np.ndarray:
        u = np.asarray(u, dtype=np.float64)
        layers = 0.5 * (w[:, None] * (a[i][:, None] - u[None, :]) ** 2).sum(axis=0)
        if constants:  # normal normalisation, Jacobian of log E~ (E-independent in total) and of the standardisation
            layers = layers + 0.5 * len(w) * np.log(2 * np.pi) + np.log(e_tilde[i] * pre.layer_scale).sum()
        if part == "layers":
            return layers
        t = (u - mu) / s_e
        return layers - c * t - q * t**2 - k * t**3

    return model, showers, exact_nll


@pytest.mark.parametrize("likelihood", ["layers", "full"])
def test_calibration_against_closed_form_surrogate(closed_form_surrogate, likelihood: str) -> None:
    """E_mle and the interval of a real ShowerSurrogate (closed-form flows) against the exact likelihood. The
    preprocessing's E-dependent Jacobian (-L log E of ScaleByIncident) cancels the E dependence of the Log step;
    with its sign flipped -ln L tilts by -2 L ln E and E_mle moves by 2 L sigma_u^2 (about 0.8 sigma here), far
    outside the tolerance."""
    model, showers, exact_nll = closed_form_surrogate
    res = Calibrator(model, likelihood=likelihood).fit(showers)
    assert np.all(res.status == Status.CONVERGED)
    grid = np.linspace(0.0, np.log(100.0), 4001)

    def truth(i: int) -> tuple[float, float, float]:
        return _truth(lambda u: exact_nll(i, np.atleast_1d(u), likelihood).reshape(np.shape(u))[()], grid)

    for i in range(len(showers)):
        u_hat, u_lo, u_hi = truth(i)
        sigma = 0.5 * (u_hi - u_lo)
        # stated accuracy: E_mle within 0.05 sigma, edges where Delta(-ln L) = 0.5 +- edge_tolerance (0.02 sigma)
        assert abs(np.log(res.e_mle[i]) - u_hat) < 0.05 * sigma, (i, res.e_mle[i], np.exp(u_hat))
        assert abs(np.log(res.e_lo[i]) - u_lo) < 0.03 * sigma
        assert abs(np.log(res.e_hi[i]) - u_hi) < 0.03 * sigma
        if likelihood == "layers":  # -ln L at E_mle is the closed form with its constants (density in GeV^-L)
            assert res.nll[i] == pytest.approx(exact_nll(i, np.array([u_hat]), "layers", constants=True)[0], abs=2e-3)


def test_cli_calibrate_writes_one_entry_per_shower(tiny_surrogate, tmp_path) -> None:
    import uproot
    from click.testing import CliRunner

    from calinfer.cli import main
    from calinfer.io import read_metadata, write_showers

    model, showers = tiny_surrogate
    model.save(tmp_path / "model")
    write_showers(tmp_path / "in.root", showers)
    out = tmp_path / "calib.root"
    args = ["calibrate", str(tmp_path / "in.root"), "--out", str(out), "--model", str(tmp_path / "model")]
    run = CliRunner().invoke(main, [*args, "--step-size", "15", "--workers", "2", "--energy-range", "2", "90"])
    assert run.exit_code == 0, run.output
    assert "converged" in run.output and "showers/s" in run.output
    with uproot.open(out) as f:
        tree = f["calibration"].arrays(library="np")
    assert set(tree) == {"E_mle", "E_lo", "E_hi", "status", "nll"}
    expected = Calibrator(model, energy_range=(2.0, 90.0)).fit(showers)
    np.testing.assert_allclose(tree["E_mle"], expected.e_mle, rtol=1e-5)  # input order kept across chunks
    np.testing.assert_array_equal(tree["status"], expected.status)
    meta = read_metadata(out)
    assert meta["likelihood"] == "layers" and meta["energy_range_gev"] == [2.0, 90.0]
    again = CliRunner().invoke(main, [*args[:2], "--out", str(tmp_path / "in.root"), *args[4:]])
    assert again.exit_code != 0  # never overwrite the input
    # --coverage-calibrated: same E_mle, edges at Delta(-ln L) = the level reported, evaluated on the model itself
    out2 = tmp_path / "calib-coverage.root"
    run = CliRunner().invoke(main, [*args[:2], "--out", str(out2), *args[4:], "--coverage-calibrated",
                                    "--energy-range", "2", "90", "--workers", "1"])
    assert run.exit_code == 0, run.output
    assert "interval level" in run.output
    with uproot.open(out2) as f:
        cov = f["calibration"].arrays(library="np")
    # the polish grid scales with the interval width: E_mle moves within the float32 noise of the flow's minimum
    np.testing.assert_allclose(cov["E_mle"], tree["E_mle"], rtol=1e-4)
    level_text = read_metadata(out2)["interval"]
    assert "68.3% of 2000 surrogate showers per energy" in level_text
    energies, levels = zip(*[(float(e), float(t)) for e, t in re.findall(r"([0-9.e+]+) GeV: ([0-9.]+)", level_text)],
                           strict=True)
    ok = (cov["status"] & int(Status.CONVERGED)) != 0
    ok &= (cov["status"] & int(Status.OPEN_LOW | Status.OPEN_HIGH)) == 0
    layers = showers.layer_energies()[ok]
    target = np.interp(np.log(cov["E_mle"][ok]), np.log(energies), levels)
    f_hat = -model.log_prob_layers(layers, cov["E_mle"][ok, None])[:, 0]
    for edge in ("E_lo", "E_hi"):
        delta = -model.log_prob_layers(layers, cov[edge][ok, None])[:, 0] - f_hat
        assert np.max(np.abs(delta - target)) < 0.03  # table printed to 3 decimals + the edge tolerance


@pytest.mark.parametrize("energy", [20, 50, 80])
def test_pretrained_default_calibration_closes_and_covers(energy: int) -> None:
    """The shipped surrogate's layer likelihood: unbiased E_mle and 68% intervals that cover at the nominal rate."""
    from calinfer import datasets, load_default

    showers = datasets.load(f"photons-test-{energy}")[:300]
    result = Calibrator(load_default()).fit(showers)
    assert np.mean(result.status & Status.CONVERGED) > 0.98
    assert abs(np.median(result.e_mle / energy) - 1) < 0.02
    frac, err = coverage(result.e_lo, result.e_hi, showers.incident_energy)
    assert abs(frac - 0.683) < 3.5 * err


def test_empty_showers_get_their_own_flag() -> None:
    from calinfer import datasets, load_default
    from calinfer.showers import Showers

    s = datasets.load("photons-test-50")[:6]
    vox = s.voxels.copy()
    vox[[1, 4]] = 0.0
    result = Calibrator(load_default()).fit(Showers(vox, s.geometry, s.incident_energy))
    assert [bool(st & Status.EMPTY) for st in result.status] == [False, True, False, False, True, False]


def test_full_likelihood_of_a_layer_context_surrogate_is_the_layer_fit_plus_a_constant(small_calogan_surrogate) -> None:
    from calinfer import datasets
    from calinfer.showers import Showers

    model = small_calogan_surrogate(datasets.load("photons-val")[:3000], "layers", voxel_noise=0.02)
    test = datasets.load("photons-test-50")[:12]
    showers = Showers(test.voxels, test.geometry, test.incident_energy)
    fast = Calibrator(model, likelihood="full").fit(showers)
    dense = Calibrator(model, likelihood="full", full_method="dense").fit(showers)  # the full likelihood everywhere
    layers = Calibrator(model).fit(showers)
    for name in ("e_mle", "e_lo", "e_hi"):
        np.testing.assert_allclose(getattr(fast, name), getattr(dense, name), rtol=1e-3)
        np.testing.assert_allclose(getattr(fast, name), getattr(layers, name), rtol=1e-4)  # float64 vs float32 flow I
    np.testing.assert_allclose(fast.nll, dense.nll, atol=0.05)
    assert np.all((fast.status & Status.CONVERGED) > 0)
