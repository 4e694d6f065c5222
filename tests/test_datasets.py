"""Embedded data sets: presence, content, metadata, storage rounding and regeneration from the recorded seed."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from calinfer import InputError, datasets, get_geometry
from calinfer.cli import main
from calinfer.io import read_metadata, read_showers

REQUIRED = ["photons-train", "photons-val", *(f"photons-test-{e}" for e in range(10, 100, 10))]


def test_every_registered_set_is_shipped_and_the_required_ones_exist():
    names = datasets.names()
    assert set(REQUIRED) <= set(names)
    assert sum(n.startswith("chi-") for n in names) == 16
    for name in names:
        assert datasets.path(name).stat().st_size > 10_000
    with pytest.raises(InputError, match="unknown data set"):
        datasets.load("photons-test-15")


def test_fixed_energy_test_set_content_and_metadata():
    sh = datasets.load("photons-test-50")
    assert len(sh) == 1000
    get_geometry("calogan").check(sh.geometry)
    np.testing.assert_array_equal(sh.incident_energy, 50.0)
    ratio = sh.deposited_energy() / 50.0
    assert 0.98 < ratio.mean() < 1.0
    assert 0.01 < ratio.std() < 0.025  # about 10.8%/sqrt(50) plus constant term
    meta = datasets.describe("photons-test-50")
    assert meta["seed"] == datasets.spec("photons-test-50").seed
    assert meta["params"]["energy"] == 50.0
    assert meta["model"]["stack"]["absorber"] == "Pb"
    assert meta["storage"]["mantissa_bits"] == datasets.STORAGE_MANTISSA_BITS


def test_training_set_covers_the_energy_range():
    sh = datasets.load("photons-val")
    assert len(sh) == 10_000
    e = sh.incident_energy
    assert 1.0 <= e.min() < 2.0 and 99.0 < e.max() <= 100.0
    assert np.histogram(e, bins=5, range=(1, 100))[0].min() > 1800  # uniform prior
    assert np.mean(sh.voxels == 0) > 0.5  # sparse, exact zeros kept


def test_regeneration_reproduces_the_stored_showers():
    for name in ("photons-test-10", "chi-m5-d0.33"):
        stored = datasets.load(name)
        again = datasets.regenerate(name, n=100)
        np.testing.assert_array_equal(again.voxels, stored.voxels[:100])
        np.testing.assert_array_equal(again.incident_energy, stored.incident_energy[:100])
        assert set(again.extra) == set(stored.extra)
        for key, values in again.extra.items():
            np.testing.assert_array_equal(values, stored.extra[key][:100])


def test_chi_set_truth():
    sh = datasets.load("chi-m0.5-d1.44")
    assert len(sh) == 300
    np.testing.assert_allclose(sh.extra["decay_z_mm"], 1440.0 - 1240.0, atol=1e-3)
    np.testing.assert_allclose(sh.extra["photon1_energy"] + sh.extra["photon2_energy"], 50.0, rtol=1e-5)
    assert sh.layer_energies()[:, 0].max() == 0


def test_round_mantissa_precision_and_zeros():
    rng = np.random.default_rng(0)
    x = rng.lognormal(-3, 3, 10_000)
    x[::7] = 0.0
    r = datasets.round_mantissa(x)
    assert r.dtype == np.float32
    assert np.all(r[::7] == 0)
    nz = x > 0
    assert np.max(np.abs(r[nz] / x[nz] - 1)) <= 2.0 ** -(datasets.STORAGE_MANTISSA_BITS + 1) * 1.0001
    np.testing.assert_array_equal(datasets.round_mantissa(r), r)  # idempotent


def test_cli_regenerates_a_data_set_and_simulates_chi(tmp_path):
    runner = CliRunner()
    out = tmp_path / "test10.h5"
    result = runner.invoke(main, ["simulate", "--dataset", "photons-test-10", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(read_showers(out).voxels, datasets.load("photons-test-10").voxels)
    chi = tmp_path / "chi.root"
    args = ["simulate", "--particle", "chi", "--chi-mass", "0.05", "--decay-distance", "0.66", "--n", "50"]
    result = runner.invoke(main, [*args, "--seed", "4", "--out", str(chi), "--no-progress"])
    assert result.exit_code == 0, result.output
    sh = read_showers(chi, extra_branches=["photon1_energy", "decay_z_mm"])
    assert len(sh) == 50
    np.testing.assert_allclose(sh.extra["decay_z_mm"], 660.0 - 1240.0, atol=1e-3)
    meta = read_metadata(chi)
    assert meta["seed"] == 4 and meta["params"]["mass"] == 0.05
    result = runner.invoke(main, ["simulate", "--particle", "chi", "--n", "5", "--out", str(tmp_path / "x.root")])
    assert result.exit_code != 0 and "--chi-mass" in result.output
