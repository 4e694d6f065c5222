"""Geometry presets, voxel order, stable ids, mismatch errors and the Showers container."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from calinfer import GEOMETRIES, Geometry, GeometryMismatchError, InputError, Layer, Showers, get_geometry


@pytest.mark.parametrize(
    ("name", "n_voxels", "cells"),
    [
        ("calogan", 504, [288, 144, 72]),
        ("calochallenge-ds1-photons", 368, [8, 160, 190, 5, 5]),
        ("calochallenge-ds1-pions", 533, [8, 100, 100, 5, 150, 160, 10]),
    ],
)
def test_preset_voxel_counts(name: str, n_voxels: int, cells: list[int]) -> None:
    g = get_geometry(name)
    assert g.n_voxels == n_voxels
    assert [layer.n_cells for layer in g.layers] == cells
    assert g.n_layers == len(cells)


def test_calogan_layout_matches_paper() -> None:
    g = get_geometry("calogan")
    assert [layer.shape for layer in g.layers] == [(3, 96), (12, 12), (12, 6)]
    # every layer spans the same 480 mm x 480 mm window
    for layer in g.layers:
        dy, dx = layer.cell_size_mm
        assert layer.shape[0] * dy == pytest.approx(480.0)
        assert layer.shape[1] * dx == pytest.approx(480.0)
    assert g.layers[-1].depth_mm[1] == pytest.approx(480.0)


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_layer_slices_tile_the_flat_vector(name: str) -> None:
    g = get_geometry(name)
    slices = g.layer_slices
    assert slices[0].start == 0
    assert slices[-1].stop == g.n_voxels
    for a, b in itertools.pairwise(slices):
        assert a.stop == b.start
    assert np.array_equal(np.bincount(g.layer_index), [layer.n_cells for layer in g.layers])


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_layer_energies_and_images(name: str) -> None:
    g = get_geometry(name)
    rng = np.random.default_rng(1)
    voxels = rng.exponential(size=(7, g.n_voxels))
    layers = g.layer_energies(voxels)
    assert layers.shape == (7, g.n_layers)
    np.testing.assert_allclose(layers.sum(axis=1), voxels.sum(axis=1))
    expected = np.stack([np.bincount(g.layer_index, weights=v) for v in voxels])
    np.testing.assert_allclose(layers, expected)
    images = g.layer_images(voxels)
    for image, layer, s in zip(images, g.layers, g.layer_slices, strict=True):
        assert image.shape == (7, *layer.shape)
        np.testing.assert_array_equal(image.reshape(7, -1), voxels[:, s])


def test_cell_centres() -> None:
    layer = get_geometry("calogan").layers[0]
    x, y = layer.cell_centers_mm()
    assert x.shape == y.shape == (288,)
    assert x.mean() == pytest.approx(0.0, abs=1e-9) and y.mean() == pytest.approx(0.0, abs=1e-9)
    # row-major (iy, ix): consecutive voxels step in x by the 5 mm cell width
    assert x[1] - x[0] == pytest.approx(5.0)
    assert y[96] - y[0] == pytest.approx(160.0)
    assert np.abs(x).max() == pytest.approx(240.0 - 2.5)
    polar = get_geometry("calochallenge-ds1-photons").layers[1]
    px, py = polar.cell_centers_mm()
    r = np.hypot(px, py)
    edges = np.asarray(polar.r_edges_mm)
    n_alpha, n_r = polar.shape
    # flat index alpha * n_r + r: the radius repeats for every alpha bin
    np.testing.assert_allclose(r.reshape(n_alpha, n_r), np.tile(0.5 * (edges[:-1] + edges[1:]), (n_alpha, 1)))


def test_ids_are_stable_and_distinct() -> None:
    expected = {
        "calogan": "calogan-0e10c002",
        "calochallenge-ds1-photons": "calochallenge-ds1-photons-6c0a8307",
        "calochallenge-ds1-pions": "calochallenge-ds1-pions-251ace67",
    }
    assert {name: g.id for name, g in GEOMETRIES.items()} == expected
    calogan = get_geometry("calogan")
    rebuilt = Geometry(name="calogan", layers=tuple(calogan.layers))
    assert rebuilt.id == calogan.id
    changed_layer = Layer("layer2", (12, 6), cell_size_mm=(40.0, 81.0), depth_mm=(437.0, 480.0))
    changed = Geometry(name="calogan", layers=(*calogan.layers[:2], changed_layer))
    assert changed.id != calogan.id
    assert get_geometry(calogan.id) is calogan
    assert get_geometry(calogan) is calogan


def test_mismatch_errors() -> None:
    calogan = get_geometry("calogan")
    photons = get_geometry("calochallenge-ds1-photons")
    calogan.check(calogan)
    calogan.check(calogan.id)
    with pytest.raises(GeometryMismatchError, match="calochallenge-ds1-photons"):
        calogan.check(photons, what="model.pt")
    with pytest.raises(GeometryMismatchError, match=r"368 voxels.*matches calochallenge-ds1-photons"):
        calogan.check_voxel_count(368, what="file.root")
    with pytest.raises(GeometryMismatchError, match="500 voxels"):
        calogan.check_voxel_count(500)
    with pytest.raises(InputError, match="unknown geometry"):
        get_geometry("atlas")


def test_layer_validation() -> None:
    with pytest.raises(ValueError, match="kind"):
        Layer("x", (1, 1), kind="hexagonal", cell_size_mm=(1.0, 1.0))
    with pytest.raises(ValueError, match="cell_size_mm"):
        Layer("x", (2, 2))
    with pytest.raises(ValueError, match="r edges"):
        Layer("x", (1, 3), kind="polar", r_edges_mm=(0.0, 1.0))


def test_summary_lists_layers() -> None:
    text = get_geometry("calogan").summary()
    assert "504 voxels" in text and "voxels 288-431" in text


def _showers(n: int = 6) -> Showers:
    g = get_geometry("calogan")
    rng = np.random.default_rng(2)
    return Showers(
        voxels=rng.exponential(size=(n, g.n_voxels)),
        geometry=g,
        incident_energy=rng.uniform(1, 100, n),
        extra={"z": np.arange(n)},
        source="x.root",
        entry_start=10,
    )


def test_showers_validation() -> None:
    g = get_geometry("calogan")
    with pytest.raises(InputError, match="2-dimensional"):
        Showers(np.zeros(504), g)
    with pytest.raises(GeometryMismatchError, match=r"x\.root has 368 voxels"):
        Showers(np.zeros((3, 368)), g, source="x.root")
    with pytest.raises(InputError, match="2 incident energies for 3 showers"):
        Showers(np.zeros((3, 504)), g, incident_energy=np.ones(2))
    with pytest.raises(InputError, match="extra branch 'z'"):
        Showers(np.zeros((3, 504)), g, extra={"z": np.ones(4)})


def test_showers_slicing_and_sums() -> None:
    s = _showers()
    np.testing.assert_allclose(s.deposited_energy(), s.voxels.sum(axis=1))
    np.testing.assert_allclose(s.layer_energies().sum(axis=1), s.deposited_energy())
    part = s[2:5]
    assert len(part) == 3 and part.entry_start == 12 and part.entry_range == "12-14"
    np.testing.assert_array_equal(part.extra["z"], [2, 3, 4])
    np.testing.assert_array_equal(part.incident_energy, s.incident_energy[2:5])


def test_showers_concatenate() -> None:
    s = _showers()
    joined = Showers.concatenate([s[:2], s[2:]])
    np.testing.assert_array_equal(joined.voxels, s.voxels)
    np.testing.assert_array_equal(joined.incident_energy, s.incident_energy)
    np.testing.assert_array_equal(joined.extra["z"], s.extra["z"])
    assert joined.entry_start == 10
    data = Showers(s.voxels[:2], s.geometry)
    assert Showers.concatenate([s[:2], data]).incident_energy is None
    other = Showers(np.zeros((1, 368)), get_geometry("calochallenge-ds1-photons"), source="y.root")
    with pytest.raises(GeometryMismatchError):
        Showers.concatenate([s, other])
    with pytest.raises(InputError, match="no showers"):
        Showers.concatenate([])
