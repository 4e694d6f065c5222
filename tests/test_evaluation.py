"""Tests of calinfer.evaluation (features, separation power, classifier test) and `calinfer evaluate`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from calinfer.errors import InputError
from calinfer.evaluation import (
    Feature,
    bin_edges,
    classifier_test,
    compare_feature,
    feature_list,
    separation_noise_floor,
    separation_power,
    shower_features,
)
from calinfer.geometry import get_geometry
from calinfer.showers import Showers

CALOGAN = get_geometry("calogan")


# --- features --------------------------------------------------------------------------------------------


def _calogan_shower() -> Showers:
    """Two showers: hand-placed deposits in layers 1 and 2 (layer 0 empty) and one in layer 0 only."""
    vox = np.zeros((2, CALOGAN.n_voxels))
    s0, s1, s2 = CALOGAN.layer_slices
    # layer 1: 12 x 12 cells of 40 mm; cell (iy, ix) is at x = (ix - 5.5) * 40, y = (iy - 5.5) * 40
    vox[0, s1.start + 0 * 12 + 0] = 1.0  # x = -220, y = -220
    vox[0, s1.start + 0 * 12 + 1] = 3.0  # x = -180, y = -220
    vox[0, s1.start + 7 * 12 + 1] = 1e-6  # below a 1e-5 GeV threshold
    # layer 2: 12 x 6 cells of 40 (y) x 80 (x) mm; cell (iy=6, ix=3) is at x = 40, y = 20
    vox[0, s2.start + 6 * 6 + 3] = 2.0
    # layer 0: 3 x 96 cells of 160 (y) x 5 (x) mm; cells (1, 0) and (2, 95): x = -237.5 / +237.5, y = 0 / 160
    vox[1, s0.start + 1 * 96 + 0] = 1.0
    vox[1, s0.start + 2 * 96 + 95] = 1.0
    return Showers(vox, CALOGAN, incident_energy=np.array([10.0, 4.0]))


def test_features_match_hand_computation():
    f = shower_features(_calogan_shower(), threshold=1e-5)
    assert [x.name for x in feature_list(CALOGAN)] == list(f)
    e_dep0 = 6.0 + 1e-6
    np.testing.assert_allclose(f["E_layer1"], [4.0 + 1e-6, 0.0])
    np.testing.assert_allclose(f["E_layer2"], [2.0, 0.0])
    np.testing.assert_allclose(f["E_dep"], [e_dep0, 2.0])
    np.testing.assert_allclose(f["E_dep/E_inc"], [e_dep0 / 10.0, 0.5])
    # layer 1 of shower 0: weights 1/4, 3/4 at x = -220, -180 (the 1e-6 GeV voxel shifts it by < 1e-4 mm)
    np.testing.assert_allclose(f["cx_layer1"][0], -190.0, atol=1e-3)
    np.testing.assert_allclose(f["cy_layer1"][0], -220.0, atol=1e-3)
    np.testing.assert_allclose(f["wx_layer1"][0], math.sqrt(0.25 * 30**2 + 0.75 * 10**2), atol=1e-3)
    w_small = 1e-6 / (4.0 + 1e-6)  # the small voxel sits 280 mm away in y: width 280 * sqrt(w (1 - w))
    np.testing.assert_allclose(f["wy_layer1"][0], 280.0 * math.sqrt(w_small * (1 - w_small)), rtol=1e-6)
    np.testing.assert_allclose([f["cx_layer2"][0], f["cy_layer2"][0]], [40.0, 20.0])
    np.testing.assert_allclose([f["wx_layer2"][0], f["wy_layer2"][0]], [0.0, 0.0], atol=1e-9)
    # shower 1, layer 0: two equal deposits at (-237.5, 0) and (237.5, 160)
    np.testing.assert_allclose([f["cx_layer0"][1], f["cy_layer0"][1]], [0.0, 80.0])
    np.testing.assert_allclose([f["wx_layer0"][1], f["wy_layer0"][1]], [237.5, 80.0])
    # sparsity counts voxels above the threshold only
    np.testing.assert_allclose(f["sparsity_layer1"], [2 / 144, 0.0])
    np.testing.assert_allclose(f["sparsity_layer0"], [0.0, 2 / 288])
    np.testing.assert_allclose(shower_features(_calogan_shower())["sparsity_layer1"], [3 / 144, 0.0])
    # empty layers: energy 0, centroid and width undefined
    for name in ("cx_layer0", "cy_layer0", "wx_layer0", "wy_layer0"):
        assert np.isnan(f[name][0])
    for name in ("cx_layer1", "wx_layer2"):
        assert np.isnan(f[name][1])


def test_features_polar_layer_and_no_incident_energy():
    geo = get_geometry("calochallenge-ds1-photons")
    vox = np.zeros((1, geo.n_voxels))
    vox[0, 0] = vox[0, 1] = 1.0  # layer0 r bins [0, 5) and [5, 10) mm, one alpha bin
    f = shower_features(Showers(vox, geo))
    assert "E_dep/E_inc" not in f
    np.testing.assert_allclose([f["cx_layer0"][0], f["cy_layer0"][0], f["wx_layer0"][0]], [5.0, 0.0, 2.5])
    with pytest.raises(InputError):
        shower_features(Showers(vox, geo), threshold=-1.0)


# --- separation power ------------------------------------------------------------------------------------


def test_separation_power_limits_and_value():
    h = np.array([1.0, 5.0, 3.0, 0.0])
    assert separation_power(h, 7 * h) == 0.0
    assert separation_power([3, 2, 0, 0], [0, 0, 1, 9]) == pytest.approx(1.0)
    # p = (1/2, 1/2), q = (1, 0): 0.5 * ((1/2)^2 / (3/2) + (1/2)^2 / (1/2)) = 1/3
    assert separation_power([1, 1], [4, 0]) == pytest.approx(1 / 3)
    with pytest.raises(InputError):
        separation_power([1, 2], [1, 2, 3])
    with pytest.raises(InputError):
        separation_power([0, 0], [1, 2])


def test_compare_feature_counts_outside_and_undefined_values():
    feat = Feature("x", "x")
    rng = np.random.default_rng(0)
    ref = rng.normal(size=2000)
    same = compare_feature(ref, ref, feat, n_bins=20)
    assert same.value == 0.0 and len(same.edges) == 21 and same.reference.sum() == 2000
    # all generated values beyond the reference range (overflow) or undefined: fully separated
    assert compare_feature(ref, ref + 100.0, feat).value == pytest.approx(1.0)
    assert compare_feature(ref, np.full(500, np.nan), feat).value == pytest.approx(1.0)
    half = np.where(np.arange(2000) % 2 == 0, ref, np.nan)
    result = compare_feature(ref, half, feat, n_bins=20)
    assert result.generated[-1] == 1000 and result.value > 0.3


def test_noise_floor_predicts_same_distribution_separation():
    """Averaged over replicas, S of two samples of one distribution matches (K - 1)/4 (1/N1 + 1/N2)."""
    rng = np.random.default_rng(1)
    feat = Feature("x", "x", log=True)
    values, floors = [], []
    for _ in range(60):
        r = compare_feature(rng.exponential(size=3000), rng.exponential(size=1000), feat, n_bins=30)
        values.append(r.value)
        floors.append(r.noise_floor)
    assert np.mean(values) == pytest.approx(np.mean(floors), rel=0.1)
    assert separation_noise_floor([10, 10, 0], [5, 5, 0]) == pytest.approx(0.25 * (1 / 20 + 1 / 10))


def test_bin_edges_log_and_discrete():
    log_edges = bin_edges(np.array([0.0, 0.1, 1.0, 10.0]), Feature("e", "e", log=True), n_bins=4)
    assert log_edges[0] == pytest.approx(0.1) and log_edges[-1] == pytest.approx(10.0)
    np.testing.assert_allclose(np.diff(np.log(log_edges)), np.log(100) / 4, rtol=1e-6)
    step = 1 / 144
    values = np.arange(3, 120) * step
    edges = bin_edges(values, Feature("s", "s", step=step), n_bins=50)
    k = edges / step + 0.5  # edges sit half-way between possible values
    np.testing.assert_allclose(k, np.round(k), atol=1e-9)
    counts, _ = np.histogram(values, edges)
    assert len(counts) <= 50 and counts.sum() == len(values) and counts.max() - counts.min() <= 1
    with pytest.raises(InputError):
        bin_edges(np.array([np.nan]), Feature("x", "x"))


# --- classifier test -------------------------------------------------------------------------------------


def _toy_showers(n: int, seed: int, layer1_scale: float = 1.0) -> Showers:
    """Cheap random showers: sparse gamma-distributed voxels with a layer-dependent scale."""
    rng = np.random.default_rng(seed)
    energy = rng.uniform(1, 100, n)
    vox = rng.gamma(2.0, 1.0, (n, CALOGAN.n_voxels)) * (rng.random((n, CALOGAN.n_voxels)) < 0.2)
    vox *= energy[:, None] / 100
    vox[:, CALOGAN.layer_slices[1]] *= layer1_scale
    return Showers(vox, CALOGAN, incident_energy=energy)


def test_classifier_auc_half_for_one_distribution_one_for_different():
    ref = _toy_showers(1500, seed=0)
    same = classifier_test(ref, _toy_showers(1500, seed=1), n_runs=3, seed=0, n_threads=1)
    assert same.aucs.shape == (3,) and same.n_test == 450 and same.n_train == 1050
    assert abs(same.mean - 0.5) < 0.05 and same.std < 0.05
    different = classifier_test(ref, _toy_showers(1500, seed=2, layer1_scale=2.0), n_runs=2, n_threads=1)
    assert different.mean > 0.97
    voxels = classifier_test(
        ref[:600], _toy_showers(600, seed=3, layer1_scale=2.0), inputs="voxels", n_runs=2, n_threads=1
    )
    assert voxels.mean > 0.9
    again = classifier_test(ref, _toy_showers(1500, seed=1), n_runs=3, seed=0, n_threads=1)
    np.testing.assert_array_equal(again.aucs, same.aucs)
    with pytest.raises(InputError):
        classifier_test(ref[:50], ref[:50])
    with pytest.raises(InputError):
        classifier_test(ref, ref, inputs="pixels")


# --- command line ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from calinfer.simulation import simulate_showers
    from calinfer.surrogate import ShowerSurrogate

    train = simulate_showers(300, seed=11)
    model = ShowerSurrogate.create(
        "calogan", train.voxels, train.incident_energy, voxel_flow={"n_blocks": 1, "hidden": 16}, seed=3
    )
    return model.save(tmp_path_factory.mktemp("model") / "tiny")


def test_cli_evaluate_writes_tables_json_and_plots(tiny_model, tmp_path):
    from click.testing import CliRunner

    from calinfer.cli import main
    from calinfer.io import write_showers
    from calinfer.simulation import simulate_showers

    ref_file = tmp_path / "ref.h5"
    write_showers(ref_file, simulate_showers(400, seed=12))
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(tiny_model), "--reference", str(ref_file), "--n", "300", "--out", str(out)]
    result = CliRunner().invoke(
        main, [*args, "--classifier", "features", "--runs", "2", "--bins", "20", "--threads", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "E_dep/E_inc" in result.output and "AUC" in result.output
    report = json.loads((out / "evaluation.json").read_text())
    assert report["n_reference"] == report["n_generated"] == 300
    assert len(report["separation"]) == len(feature_list(CALOGAN))
    # an untrained surrogate is easy to tell from the simulator
    assert report["classifier"][0]["auc_mean"] > 0.8 and report["mean_separation_power"] > 0.1
    assert "| E_layer0 |" in (out / "evaluation.md").read_text()
    assert (out / "hist_E_dep_over_E_inc.png").stat().st_size > 0 and (out / "separation.png").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    both = CliRunner().invoke(main, [*args, "--dataset", "photons-val", "--no-plots"])
    assert both.exit_code != 0 and "only one of" in both.output
