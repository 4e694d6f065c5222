"""calinfer.metrics against hand-computed values, brute-force references and statistical expectations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from calinfer import metrics
from calinfer.errors import InputError


def brute_auc(s, b, ws=None, wb=None):
    ws = np.ones(len(s)) if ws is None else np.asarray(ws, float)
    wb = np.ones(len(b)) if wb is None else np.asarray(wb, float)
    s, b = np.asarray(s, float)[:, None], np.asarray(b, float)[None, :]
    pair = (s > b) + 0.5 * (s == b)
    return float((ws[:, None] * wb[None, :] * pair).sum() / (ws.sum() * wb.sum()))


def test_perfect_and_inverted_separation():
    assert metrics.auc([3, 2], [1, 0]) == 1.0
    assert metrics.auc([0, 1], [2, 3]) == 0.0
    assert metrics.auc([1, 1, 1], [1, 1]) == 0.5  # everything tied: a coin flip


def test_ties_count_half():
    roc = metrics.roc_curve([1, 1], [1, 0])
    np.testing.assert_array_equal(roc.thresholds, [np.inf, 1, 0])
    np.testing.assert_array_equal(roc.tpr, [0, 1, 1])
    np.testing.assert_array_equal(roc.fpr, [0, 0.5, 1])
    # pairs (1,1) x2 tie -> 1/2 each, (1,0) x2 win -> 1 each: (0.5+0.5+1+1)/4
    assert roc.auc == pytest.approx(0.75)


def test_weights_hand_computed_and_equal_to_duplication():
    # s=2 (w=3) beats both background events, s=0 (w=1) beats only -1: (3*2 + 1*1) / (4*2)
    assert metrics.auc([2, 0], [1, -1], weights_signal=[3, 1]) == pytest.approx(7 / 8)
    rng = np.random.default_rng(1)
    s, b = rng.integers(0, 5, 40).astype(float), rng.integers(0, 4, 30).astype(float)
    ws, wb = rng.integers(1, 4, 40), rng.integers(1, 4, 30)
    dup = metrics.auc(np.repeat(s, ws), np.repeat(b, wb))
    assert metrics.auc(s, b, weights_signal=ws, weights_background=wb) == pytest.approx(dup, abs=1e-12)


def test_auc_matches_pairwise_definition_with_ties_and_weights():
    rng = np.random.default_rng(2)
    s = np.round(rng.normal(0.5, 1, 300), 1)
    b = np.round(rng.normal(0.0, 1, 200), 1)  # rounding creates many ties
    ws, wb = rng.uniform(0, 2, 300), rng.uniform(0, 2, 200)
    assert metrics.auc(s, b) == pytest.approx(brute_auc(s, b), abs=1e-12)
    got = metrics.auc(s, b, weights_signal=ws, weights_background=wb)
    assert got == pytest.approx(brute_auc(s, b, ws, wb), abs=1e-12)


def test_infinite_scores_are_allowed():
    assert metrics.auc([np.inf, 1.0], [0.0, -np.inf]) == 1.0


def test_effective_counts():
    roc = metrics.roc_curve([5.0], [3.0, 2.0, 1.0], weights_background=[1.0, 3.0, 1.0])
    # passing background after each threshold: {}, {}, {1}, {1,3}, {1,3,1}
    np.testing.assert_allclose(roc.n_background, [0, 0, 1, 16 / 10, 25 / 11])
    np.testing.assert_array_equal(roc.n_background_raw, [0, 0, 1, 2, 3])


def test_sic_background_floor():
    s = np.full(100, 5000.0)  # all signal above every background event
    b = np.arange(1000.0)
    # a cut keeping the k highest background events: TPR = 1, FPR = k/1000, SIC = sqrt(1000/k)
    assert metrics.max_sic(s, b, min_background=0) == pytest.approx(np.sqrt(1000))  # the sqrt(N) artefact
    assert metrics.max_sic(s, b) == pytest.approx(np.sqrt(1000 / 50))  # default floor 50
    point = metrics.max_sic_point(s, b, min_background=200)
    assert point.sic == pytest.approx(np.sqrt(5))
    assert point.n_background == 200 and point.tpr == 1 and point.threshold == 800
    tpr, sic = metrics.sic_curve(s, b, min_background=50)
    assert sic.max() == pytest.approx(np.sqrt(20)) and tpr.size == 1000 - 50 + 1
    # uniform weights change nothing: the effective count is the raw count
    assert metrics.max_sic(s, b, weights_background=np.full(1000, 2.5)) == pytest.approx(np.sqrt(20))


def test_weighted_floor_uses_effective_counts():
    rng = np.random.default_rng(3)
    s, b = rng.normal(1.5, 1, 400), rng.normal(0, 1, 3000)
    wb = rng.choice([0.2, 1.0, 5.0], 3000)
    ws = rng.uniform(0.5, 1.5, 400)
    floor = 40
    best = -np.inf
    for t in np.unique(np.concatenate([s, b])):  # brute force over every cut
        passed = wb[b >= t]
        if passed.size == 0 or passed.sum() ** 2 / (passed**2).sum() < floor:
            continue
        best = max(best, ws[s >= t].sum() / ws.sum() / np.sqrt(passed.sum() / wb.sum()))
    got = metrics.max_sic(s, b, min_background=floor, weights_signal=ws, weights_background=wb)
    assert got == pytest.approx(best, rel=1e-12)


def test_rejection_interpolates_along_the_curve():
    s, b = [4, 3, 2, 1], [3.5, 2.5, 1.5, 0.5]
    assert metrics.rejection_at(s, b, 0.5) == pytest.approx(4)  # cut at 3: 2/4 signal, 1/4 background
    assert metrics.rejection_at(s, b, 0.3) == pytest.approx(4)  # between (0.25, 0.25) and (0.5, 0.25)
    assert metrics.rejection_at(s, b, 0.25) == np.inf  # the first signal event passes alone
    # a tie group is a straight segment from (0, 0) to (tpr 1, fpr 1/2)
    assert metrics.rejection_at([1, 1], [1, 0], 0.5) == pytest.approx(4)
    # Gaussian check: s ~ N(2,1), b ~ N(0,1): FPR at TPR 0.3 = 1 - Phi(2 + Phi^-1(0.7))
    rng = np.random.default_rng(4)
    expected = 1 / norm.sf(2 + norm.ppf(0.7))
    got = metrics.rejection_at(rng.normal(2, 1, 20000), rng.normal(0, 1, 200000), 0.3)
    assert got == pytest.approx(expected, rel=0.05)


def test_clear_errors():
    with pytest.raises(InputError, match="no signal scores"):
        metrics.auc([], [1.0])
    with pytest.raises(InputError, match="no background scores"):
        metrics.roc_curve([1.0], np.array([]))
    with pytest.raises(InputError, match="NaN"):
        metrics.auc([1.0, np.nan], [0.0])
    with pytest.raises(InputError, match="sum to zero"):
        metrics.auc([1.0], [0.0], weights_background=[0.0])
    with pytest.raises(InputError, match="non-negative"):
        metrics.auc([1.0], [0.0], weights_signal=[-1.0])
    with pytest.raises(InputError, match="2 weights for 1 scores"):
        metrics.auc([1.0], [0.0], weights_signal=[1.0, 1.0])
    with pytest.raises(InputError, match="min_background"):
        metrics.max_sic([1.0], np.arange(10.0), min_background=50)
    with pytest.raises(InputError, match=r"\(0, 1\]"):
        metrics.rejection_at([1.0], [0.0], 0.0)


def test_bootstrap_spread_matches_analytic_auc_error():
    rng = np.random.default_rng(5)
    n_s, n_b = 500, 500
    s, b = rng.normal(1, 1, n_s), rng.normal(0, 1, n_b)
    res = metrics.bootstrap(s, b, ("auc", "max_sic"), n_bootstrap=300, seed=7, min_background=20)
    a = res["auc"].value
    # Hanley & McNeil (1982) standard error of the AUC
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = np.sqrt((a * (1 - a) + (n_s - 1) * (q1 - a * a) + (n_b - 1) * (q2 - a * a)) / (n_s * n_b))
    assert res["auc"].std == pytest.approx(se, rel=0.25)
    assert res["auc"].low < a < res["auc"].high
    assert res["auc"].value == pytest.approx(norm.cdf(1 / np.sqrt(2)), abs=3 * se)
    again = metrics.bootstrap(s, b, ("auc", "max_sic"), n_bootstrap=300, seed=7, min_background=20)
    assert again == res  # a seed fixes every replicate


def test_curve_band():
    rng = np.random.default_rng(6)
    s, b = rng.normal(2, 1, 400), rng.normal(0, 1, 2000)
    grid = [0.7, 0.8, 0.95]
    band = metrics.curve_band(s, b, kind="sic", tpr_grid=grid, n_bootstrap=100, seed=1)
    # direct value at TPR 0.8: FPR interpolated on the curve
    fpr = metrics.fpr_at_tpr(metrics.roc_curve(s, b), 0.8)[0]
    assert band.value[1] == pytest.approx(0.8 / np.sqrt(fpr))
    assert np.all(band.low <= band.value) and np.all(band.value <= band.high)
    # the analytic SIC of the two Gaussians lies inside a generous version of the band
    true = np.array([t / np.sqrt(norm.sf(2 + norm.ppf(1 - t))) for t in grid])
    assert np.all(np.abs(band.value - true) < 3 * (band.high - band.low))
    rej = metrics.curve_band(s, b, kind="rejection", tpr_grid=[0.8], n_bootstrap=50, seed=1)
    assert rej.value[0] == pytest.approx(1 / fpr)
    # the floor: with 2000 background events and floor 50, FPR below 2.5% (here about 0.2%) is not a SIC point
    strict = metrics.curve_band(s, b, tpr_grid=[0.2], n_bootstrap=20, seed=1, min_background=50)
    assert np.isnan(strict.value[0])


def test_summarize_is_consistent():
    rng = np.random.default_rng(8)
    s, b = rng.normal(1, 1, 300), rng.normal(0, 1, 1000)
    out = metrics.summarize(s, b, n_bootstrap=20, seed=0)
    assert out["auc"] == pytest.approx(metrics.auc(s, b))
    assert out["max_sic"] == pytest.approx(metrics.max_sic(s, b))
    assert out["rejection"] == pytest.approx(metrics.rejection_at(s, b, 0.3))
    assert out["sic_cap"] == pytest.approx(np.sqrt(1000 / 50))
    assert out["max_sic_n_background"] >= 50
    assert set(out["bootstrap"]) == {"auc", "max_sic", "rejection"}
