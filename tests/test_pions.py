"""Charged-pion simulator, embedded pion sets and the shipped pion surrogate, against the documented reference facts
(Groom's f_em, non-compensation, exponential first interaction, resolution of hadron calorimeters, containment)."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from calinfer import datasets
from calinfer.cli import main
from calinfer.io import read_showers
from calinfer.simulation import PION_CALORIMETER, PionModel, groom_em_fraction, simulate_pions


@pytest.fixture(scope="module")
def pions() -> dict[int, object]:
    return {e: simulate_pions(1500, energy=float(e), seed=900 + e) for e in (10, 90)}


def _resolution(showers, energy: float) -> float:
    r = showers.deposited_energy() / energy
    lo, hi = np.percentile(r, [15.865, 84.135])
    return (hi - lo) / 2 / np.median(r)


def test_calorimeter_layout_matches_the_documented_depths():
    cal = PION_CALORIMETER
    lam = np.diff(cal.lambda_edges)
    names = [cal.geometry.layers[s.layer].name if s.layer >= 0 else "dead" for s in cal.segments]
    hcal = {n: lam[i] for i, n in enumerate(names) if n.startswith("layer1") and n != "layer1"}
    np.testing.assert_allclose([hcal["layer12"], hcal["layer13"], hcal["layer14"]], [1.5, 4.1, 1.8], rtol=1e-9)
    ecal_end = names.index("layer3") + 1
    assert 1.0 < cal.lambda_edges[ecal_end] < 1.15  # "a little over 1 lambda_I" of ECAL
    assert 24 < cal.x0_edges[ecal_end] < 26
    np.testing.assert_allclose(PION_CALORIMETER.hcal.lambda_int_mm, 1 / (14 / 17 / 167.7 + 3 / 17 / 770.7), rtol=1e-9)


def test_first_interaction_is_exponential_in_the_pion_interaction_length(pions):
    depth = np.concatenate([p.extra["interaction_depth_lambda"] for p in pions.values()])
    inside = depth[depth < PION_CALORIMETER.depth_lambda]
    # exponential with mean 1.2 lambda_I (PDG pion vs nuclear interaction length), truncated at the back face
    trunc = stats.truncexpon(b=PION_CALORIMETER.depth_lambda / 1.2, scale=1.2)
    assert stats.kstest(inside, trunc.cdf).pvalue > 1e-3
    assert stats.kstest(inside, stats.expon(scale=1.0).cdf).pvalue < 1e-6  # a mean of lambda_I is excluded


def test_em_fraction_follows_groom_and_is_skewed_to_high_values(pions):
    for sh in pions.values():
        ok = sh.extra["shower_energy"] > 0
        fem = sh.extra["em_fraction"][ok]
        # Groom: 1 - (E/1 GeV)^(0.83 - 1): 0.32 at 10 GeV, 0.53 at 90 GeV (of the shower energy)
        expected = groom_em_fraction(sh.extra["shower_energy"][ok], 1.0, 0.83).mean()
        assert abs(fem.mean() - expected) < 4 * fem.std() / np.sqrt(len(fem)) + 0.003
        assert stats.skew(fem) > 0.2
    assert 0.28 < pions[10].extra["em_fraction"].mean() < 0.35
    assert 0.5 < pions[90].extra["em_fraction"].mean() < 0.56


def test_non_compensation_hadronic_part_seen_at_h_over_e(pions):
    sh = pions[90]
    ok = sh.extra["shower_energy"] > 0
    e_h = (1 - sh.extra["em_fraction"][ok]) * sh.extra["shower_energy"][ok]
    invisible = sh.extra["invisible_energy"][ok]
    # mean invisible share of the hadronic energy is 1 - h/e = 0.3 (e/h = 1.43)
    assert abs(invisible.sum() / e_h.sum() - 0.3) < 0.01
    # so the response rises with energy: pi/e = f_em + (1 - f_em) h/e grows from 0.80 to 0.86
    r10 = np.mean(pions[10].deposited_energy() / 10)
    r90 = np.mean(pions[90].deposited_energy() / 90)
    assert 1.04 < r90 / r10 < 1.12
    assert 0.70 < r10 < 0.80 and 0.76 < r90 < 0.86  # below 1 (EM scale): h/e < 1, leakage, dead material


def test_resolution_matches_the_published_pion_study(pions):
    # arXiv:2404.18992 (pions, ECAL + HCAL): about 15% at 10 GeV, about 7% at 90 GeV
    assert 0.12 < _resolution(pions[10], 10.0) < 0.17
    assert 0.065 < _resolution(pions[90], 90.0) < 0.095
    # a compensating calorimeter (h/e = 1, no f_em fluctuation effect) would be much better at high energy
    ideal = simulate_pions(800, energy=90.0, seed=5, model=PionModel(h_over_e=1.0, intrinsic_term=0.01))
    assert _resolution(ideal, 90.0) < 0.75 * _resolution(pions[90], 90.0)


def test_lateral_and_longitudinal_containment(pions):
    sh = pions[90]
    geo = sh.geometry
    inner = 0.0
    total = 0.0
    for i in range(4, 7):  # tile layers: most energy within one lambda_I (195 mm) of the axis
        layer = geo.layers[i]
        img = sh.voxels[:, geo.layer_slices[i]].reshape(len(sh), *layer.shape)
        r_in = np.asarray(layer.r_edges_mm[1:]) <= 200.0
        inner += img[:, :, r_in].sum()
        total += img.sum()
    assert 0.9 < inner / total < 0.995
    # 5% longitudinal leakage for pions that interact 6 lambda before the back face (reference t_max + 2.5
    # lambda_att = 6.1 lambda at 90 GeV): between 2% and 10% of the visible energy
    x = sh.extra
    remain = PION_CALORIMETER.depth_lambda - x["interaction_depth_lambda"]
    visible = x["true_deposit"] + x["leak_back"] + x["leak_side"] + x["leak_dead"]
    late = (remain > 5.0) & (remain < 7.0)
    assert late.sum() > 30
    assert 0.02 < np.mean(x["leak_back"][late] / visible[late]) < 0.10


def test_seeded_and_regenerable():
    a = simulate_pions(150, energy_range=(5, 100), seed=3)
    b = simulate_pions(150, energy_range=(5, 100), seed=3)
    np.testing.assert_array_equal(a.voxels, b.voxels)
    stored = datasets.load("pions-test-50")
    assert len(stored) == 300 and stored.geometry.name == "calochallenge-ds1-pions"
    again = datasets.regenerate("pions-test-50", n=100)
    np.testing.assert_array_equal(again.voxels, stored.voxels[:100])
    assert datasets.describe("pions-train")["n_recipe"] == 50_000
    e = datasets.load("pions-train").incident_energy
    assert 5.0 <= e.min() and e.max() <= 100.0


def test_cli_simulates_pions(tmp_path):
    out = tmp_path / "pions.h5"
    result = CliRunner().invoke(main, ["simulate", "--particle", "pion", "--n", "100", "--energy", "20",
                                       "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    sh = read_showers(out, None)
    assert sh.geometry.name == "calochallenge-ds1-pions" and len(sh) == 100
    bad = CliRunner().invoke(main, ["simulate", "--particle", "pion", "--geometry", "calochallenge-ds1-photons",
                                    "--n", "10", "--out", str(tmp_path / "x.h5"), "--no-progress"])
    assert bad.exit_code != 0 and "Error" in bad.output


@pytest.mark.slow
def test_shipped_pion_model_calibrates_with_covering_intervals():
    torch = pytest.importorskip("torch")
    from calinfer.calibration import Calibrator
    from calinfer.surrogate import load_model

    torch.set_num_threads(1)
    model = load_model("pions")
    assert model.geometry.name == "calochallenge-ds1-pions"
    assert model.provenance["likelihood"].startswith("layers only")  # flow II is a placeholder
    showers = [datasets.load(f"pions-test-{e}") for e in (20, 50, 80)]
    truth = np.concatenate([s.incident_energy for s in showers])
    layers = np.concatenate([s.layer_energies() for s in showers])
    res = Calibrator(model, likelihood="layers").fit(layers)
    inside = (res.e_lo <= truth) & (truth <= res.e_hi)
    # 900 showers: 68.3% coverage, binomial sigma 1.6% (0.651 in the study; 0.658 on the surrogate's own draws)
    assert abs(inside.mean() - 0.683) < 0.06
    assert abs(np.median(res.e_mle / truth) - 1.0) < 0.03
    assert np.mean(res.status & 1) > 0.97


@pytest.mark.slow
def test_fitter_matches_a_dense_scan_on_broad_skewed_pion_likelihoods():
    torch = pytest.importorskip("torch")
    from calinfer.calibration import Calibrator, Status
    from calinfer.surrogate import load_model

    torch.set_num_threads(1)
    showers = [datasets.load(f"pions-test-{e}") for e in (10, 30, 60, 90)]
    layers = np.concatenate([s.layer_energies() for s in showers])
    deep = np.concatenate([s.extra["interaction_depth_lambda"] for s in showers]) > 2.0  # late, leaking showers
    x = layers[deep][:80]
    cal = Calibrator(load_model("pions"), likelihood="layers")
    res = cal.fit(x)
    u = np.linspace(np.log(cal.energy_range[0]), np.log(cal.energy_range[1]), 1200)
    y = cal.nll(x, np.exp(u)[None, :])
    y = y - y.min(axis=1, keepdims=True)
    best = np.exp(u[np.argmin(y, axis=1)])
    inside = y <= 0.5
    lo = np.exp(u[np.argmax(inside, axis=1)])  # first grid point inside the 0.5 level (a single basin here)
    hi = np.exp(u[len(u) - 1 - np.argmax(inside[:, ::-1], axis=1)])
    sigma = 0.5 * (hi - lo)
    step = np.exp(u[1] - u[0]) - 1  # relative grid step
    tol = 0.1 * sigma + 2 * step * best
    assert np.mean(np.abs(res.e_mle - best) < tol) > 0.95
    # single-basin likelihoods: the edges are the dense scan's first 0.5 crossings
    single = ~res.has(Status.MULTIMODAL)
    assert single.mean() > 0.9
    assert np.all(np.abs(res.e_lo - lo)[single] < tol[single]) and np.all(np.abs(res.e_hi - hi)[single] < tol[single])
    # every shower (a flagged wiggly one may stop at a shoulder): E_mle within 0.05 of the scan's minimum, each closed
    # edge at Delta(-ln L) = 0.5 above E_mle within the calibrator's edge tolerance, on -ln L itself
    scan_min = cal.nll(x, np.exp(u)[None, :]).min(axis=1)
    at = cal.nll(x, np.column_stack([res.e_mle, res.e_lo, res.e_hi])) - scan_min[:, None]
    assert np.all(at[:, 0] < 0.05)
    closed = np.column_stack([~res.has(Status.OPEN_LOW), ~res.has(Status.OPEN_HIGH)])
    assert np.all(np.abs(at[:, 1:] - at[:, :1] - 0.5)[closed] <= cal.edge_tolerance + 1e-3)
    asym = (hi - best) / np.maximum(best - lo, 1e-9)
    assert np.quantile(asym, 0.9) > 1.1 or np.quantile(asym, 0.1) < 0.9  # the sample has skewed likelihoods
    open_hi = hi >= np.exp(u[-1]) * (1 - 1e-9)
    np.testing.assert_array_equal(res.has(Status.OPEN_HIGH), open_hi)
    assert np.all(res.has(Status.CONVERGED))
