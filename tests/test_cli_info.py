"""``calinfer info``: numbers checked against numpy on a project-written ROOT file and CaloChallenge HDF5."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from calinfer import Showers, get_geometry
from calinfer.cli import main
from calinfer.io import write_showers, write_tree


def _invoke(*args: str):
    return CliRunner().invoke(main, ["info", *args])


def _table_row(output: str, name: str) -> list[str]:
    rows = [line.split() for line in output.splitlines() if line.split()[:1] == [name]]
    assert len(rows) == 1, output
    return rows[0]


def _check_numbers(summary: dict, voxels: np.ndarray, energy: np.ndarray | None, geometry) -> None:
    voxels = voxels.astype(np.float64)
    layers = np.stack([voxels[:, s].sum(axis=1) for s in geometry.layer_slices], axis=1)
    total = voxels.sum(axis=1)
    assert summary["entries"] == len(voxels)
    assert summary["voxels_per_shower"] == geometry.n_voxels
    assert summary["geometry"] == geometry.name and summary["geometry_id"] == geometry.id
    names = [layer.name for layer in geometry.layers]
    for row, name, mean, std in zip(summary["layers"], names, layers.mean(0), layers.std(0), strict=True):
        assert row["name"] == name
        assert row["mean"] == pytest.approx(mean, rel=1e-5)
        assert row["std"] == pytest.approx(std, rel=1e-4)
        assert row["fraction"] == pytest.approx(mean / total.mean(), rel=1e-5)
    assert summary["total_energy"]["mean"] == pytest.approx(total.mean(), rel=1e-5)
    assert summary["total_energy"]["std"] == pytest.approx(total.std(), rel=1e-4)
    if energy is None:
        assert summary["incident_energy"] is None
    else:
        assert summary["incident_energy"]["min"] == pytest.approx(energy.min(), rel=1e-12)
        assert summary["incident_energy"]["max"] == pytest.approx(energy.max(), rel=1e-12)
        assert summary["incident_energy"]["mean"] == pytest.approx(energy.mean(), rel=1e-12)
        ratio = summary["incident_energy"]["deposited_over_incident"]
        assert ratio == pytest.approx((total / energy).mean(), rel=1e-5)


def test_info_on_project_root_file(tmp_path: Path) -> None:
    g = get_geometry("calogan")
    rng = np.random.default_rng(5)
    n = 333
    voxels = (rng.exponential(0.02, size=(n, g.n_voxels)) * np.linspace(2, 0.1, g.n_voxels)).astype(np.float32)
    energy = rng.uniform(1, 100, n)
    path = write_showers(tmp_path / "showers.root", Showers(voxels, g, energy))

    result = _invoke(str(path), "--json", "--step-size", "50")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    _check_numbers(summary, voxels, energy, g)
    assert summary["recorded_geometry"] == g.id and summary["matching_presets"] == ["calogan"]
    assert summary["format"] == "root" and summary["container"] == "showers"

    table = _invoke(str(path))
    assert table.exit_code == 0, table.output
    assert "recorded geometry       calogan-0e10c002 (matches)" in table.stdout
    assert f"entries                 {n}" in table.stdout
    layer1 = _table_row(table.stdout, "layer1")
    assert layer1[1] == "144"
    assert float(layer1[2]) == pytest.approx(voxels[:, g.layer_slices[1]].astype(np.float64).sum(1).mean(), rel=1e-5)
    total = _table_row(table.stdout, "total")
    assert float(total[2]) == pytest.approx(voxels.astype(np.float64).sum(1).mean(), rel=1e-5)


def test_info_on_calochallenge_hdf5(tmp_path: Path) -> None:
    g = get_geometry("calochallenge-ds1-photons")
    rng = np.random.default_rng(6)
    n = 120
    energy_mev = 2.0 ** rng.integers(8, 23, size=(n, 1)).astype(np.float64)
    voxels_mev = (rng.exponential(size=(n, g.n_voxels)) * energy_mev / 368).astype(np.float32)
    path = tmp_path / "dataset_1_photons.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("incident_energies", data=energy_mev)
        f.create_dataset("showers", data=voxels_mev)

    result = _invoke(str(path), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    _check_numbers(summary, voxels_mev / 1000, energy_mev[:, 0] / 1000, g)  # reported in GeV
    assert summary["layout"] == "calochallenge" and summary["recorded_geometry"] is None
    assert summary["matching_presets"] == ["calochallenge-ds1-photons"]

    table = _invoke(str(path))
    assert "HDF5, CaloChallenge layout (MeV, converted to GeV)" in table.stdout
    assert "recorded geometry       none recorded" in table.stdout
    assert f"{energy_mev.min() / 1000:.6g} - {energy_mev.max() / 1000:.6g} GeV" in table.stdout


def test_info_data_file_per_layer_branches(tmp_path: Path) -> None:
    g = get_geometry("calogan")
    rng = np.random.default_rng(7)
    voxels = rng.exponential(0.03, size=(40, g.n_voxels))
    images = g.layer_images(voxels)
    path = write_tree(tmp_path / "data.root", {f"L{i}": im for i, im in enumerate(images)}, tree="events")
    result = _invoke(str(path), "--tree", "events", "--layer-branches", "L0,L1,L2", "--no-energy", "--json")
    assert result.exit_code == 0, result.output
    _check_numbers(json.loads(result.stdout), voxels, None, g)
    table = _invoke(str(path), "--tree", "events", "--layer-branches", "L0,L1,L2", "--no-energy")
    assert "incident energy         not read" in table.stdout


def test_info_errors(tmp_path: Path) -> None:
    missing = _invoke(str(tmp_path / "nope.root"))
    assert missing.exit_code == 1 and "nope.root: no such file" in missing.output
    (tmp_path / "junk.root").write_text("garbage" * 20)
    junk = _invoke(str(tmp_path / "junk.root"))
    assert junk.exit_code == 1 and "junk.root: cannot be opened as a ROOT file" in junk.output
    g = get_geometry("calogan")
    path = write_showers(tmp_path / "s.root", Showers(np.ones((3, g.n_voxels)), g, np.ones(3)))
    wrong = _invoke(str(path), "--geometry", "calochallenge-ds1-pions")
    assert wrong.exit_code == 1 and "s.root (entries 0-2) was written for geometry 'calogan-0e10c002'" in wrong.output
    no_energy = _invoke(str(path), "--energy-branch", "E_true")
    assert no_energy.exit_code == 1 and "no branch 'E_true'" in no_energy.output


def test_help_lists_info() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and "info" in result.output
