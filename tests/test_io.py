"""Shower I/O: ROOT and HDF5 round trips, chunked reading, per-layer branches, validation errors, atomic writes."""

from __future__ import annotations

import os
import tracemalloc
import warnings
from pathlib import Path

import awkward as ak
import h5py
import numpy as np
import pytest
import uproot

from calinfer import GeometryMismatchError, InputError, Showers, __version__, get_geometry
from calinfer.io import (
    NegativeEnergyWarning,
    RootTreeWriter,
    atomic_output,
    file_format,
    inspect_file,
    iterate_showers,
    read_metadata,
    read_showers,
    write_hdf5,
    write_showers,
    write_tree,
)

CALOGAN = get_geometry("calogan")
PHOTONS = get_geometry("calochallenge-ds1-photons")


def make_showers(n: int = 120, geometry=CALOGAN, seed: int = 0, dtype=np.float32) -> Showers:
    """Sparse exponential voxel energies (GeV) with uniform incident energies and two truth arrays."""
    rng = np.random.default_rng(seed)
    voxels = rng.exponential(0.05, size=(n, geometry.n_voxels)) * (rng.random((n, geometry.n_voxels)) < 0.3)
    return Showers(
        voxels=voxels.astype(dtype),
        geometry=geometry,
        incident_energy=rng.uniform(1.0, 100.0, n),
        extra={"decay_z": rng.normal(size=n), "photon_e": rng.uniform(size=(n, 2))},
    )


def calochallenge_file(path: Path, n: int = 50, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A CaloChallenge-layout file written with plain h5py (MeV); returns (E, voxels) in MeV."""
    rng = np.random.default_rng(seed)
    energy_mev = 2.0 ** rng.integers(8, 23, size=(n, 1)).astype(np.float64)
    voxels_mev = (rng.exponential(1.0, size=(n, PHOTONS.n_voxels)) * energy_mev / 400).astype(np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset("incident_energies", data=energy_mev)
        f.create_dataset("showers", data=voxels_mev)
    return energy_mev, voxels_mev


# ---------------------------------------------------------------- round trips


def test_root_round_trip(tmp_path: Path) -> None:
    showers = make_showers()
    first = write_showers(tmp_path / "a.root", showers, metadata={"sample": "test"})
    with uproot.open(first) as f:
        assert f.classname_of("showers") == "TTree"  # mktree/extend, never RNTuple
        assert f["showers"].num_entries == len(showers)
        assert f["showers"]["voxels"].typename == "float[504]"
    back = read_showers(first, "calogan", extra_branches="*")
    np.testing.assert_array_equal(back.voxels, showers.voxels)
    assert back.voxels.dtype == np.float32
    np.testing.assert_array_equal(back.incident_energy, showers.incident_energy)
    assert set(back.extra) == {"decay_z", "photon_e"}
    for key, values in showers.extra.items():
        np.testing.assert_array_equal(back.extra[key], values)
    assert back.source == str(first) and back.entry_start == 0

    second = write_showers(tmp_path / "b.root", back)
    again = read_showers(second, None, extra_branches=["decay_z"])
    np.testing.assert_array_equal(again.voxels, showers.voxels)
    np.testing.assert_array_equal(again.extra["decay_z"], showers.extra["decay_z"])

    meta = read_metadata(first)
    assert meta["geometry"] == CALOGAN.id and meta["geometry_name"] == "calogan"
    assert meta["creator"] == "calinfer" and meta["calinfer_version"] == __version__
    assert meta["n_entries"] == len(showers) and meta["units"] == "GeV" and meta["sample"] == "test"


def test_calochallenge_hdf5_to_root(tmp_path: Path) -> None:
    energy_mev, voxels_mev = calochallenge_file(tmp_path / "cc.h5")
    info = inspect_file(tmp_path / "cc.h5")
    assert info.layout == "calochallenge" and info.stored_unit == "MeV" and info.n_voxels == 368
    showers = read_showers(tmp_path / "cc.h5", None)  # geometry found by voxel count
    assert showers.geometry is PHOTONS
    np.testing.assert_allclose(showers.incident_energy, energy_mev[:, 0] / 1000, rtol=1e-15)
    np.testing.assert_allclose(showers.voxels, voxels_mev / 1000, rtol=1e-6)
    out = write_showers(tmp_path / "cc.root", showers)
    back = read_showers(out, "calochallenge-ds1-photons")
    np.testing.assert_array_equal(back.voxels, showers.voxels)
    np.testing.assert_array_equal(back.incident_energy, showers.incident_energy)
    assert read_metadata(tmp_path / "cc.h5") == {}


def test_calochallenge_hdf5_writer_stores_mev(tmp_path: Path) -> None:
    showers = make_showers(30, geometry=PHOTONS, dtype=np.float64)
    write_hdf5(tmp_path / "cc.h5", showers, layout="calochallenge")
    with h5py.File(tmp_path / "cc.h5") as f:
        assert f["incident_energies"].shape == (30, 1)
        np.testing.assert_allclose(f["incident_energies"][:, 0], showers.incident_energy * 1000)
        np.testing.assert_allclose(f["showers"][:], showers.voxels * 1000)
    back = read_showers(tmp_path / "cc.h5", "calochallenge-ds1-photons")
    np.testing.assert_allclose(back.voxels, showers.voxels, rtol=1e-14)


def test_calinfer_hdf5_layout(tmp_path: Path) -> None:
    showers = make_showers(80)
    path = write_showers(tmp_path / "s.h5", showers, metadata={"particle": "photon"})
    with h5py.File(path) as f:
        assert f["voxels"].compression == "gzip" and f["voxels"].shuffle
        assert "extra/decay_z" in f
    info = inspect_file(path)
    assert info.layout == "calinfer" and info.metadata["particle"] == "photon"
    back = read_showers(path, extra_branches="*")
    np.testing.assert_array_equal(back.voxels, showers.voxels)
    np.testing.assert_array_equal(back.extra["photon_e"], showers.extra["photon_e"])
    data = read_showers(path, energy_branch=None, extra_branches=["decay_z"])
    assert data.incident_energy is None
    np.testing.assert_array_equal(data.extra["decay_z"], showers.extra["decay_z"])


def test_read_without_incident_energy(tmp_path: Path) -> None:
    showers = make_showers(20)
    path = write_tree(tmp_path / "data.root", {"cells": showers.voxels}, tree="events")
    data = read_showers(path, "calogan", tree="events", voxel_branch="cells", energy_branch=None)
    assert data.incident_energy is None
    np.testing.assert_array_equal(data.voxels, showers.voxels)


def test_write_tree_friend(tmp_path: Path) -> None:
    showers = make_showers(40)
    source = write_showers(tmp_path / "in.root", showers)
    scores = np.linspace(0, 1, 40)
    out = write_tree(
        tmp_path / "scores.root",
        {"score": scores, "flag": scores > 0.5},
        tree="scores",
        metadata={"input": str(source)},
        inputs=[source],
    )
    with uproot.open(out) as f:
        assert f.classname_of("scores") == "TTree"
        np.testing.assert_array_equal(f["scores"]["score"].array(library="np"), scores)
        np.testing.assert_array_equal(f["scores"]["flag"].array(library="np"), scores > 0.5)
    meta = read_metadata(out)
    assert meta["tree"] == "scores" and meta["n_entries"] == 40 and meta["input"] == str(source)


def test_streaming_writer_appends_in_order(tmp_path: Path) -> None:
    showers = make_showers(90)
    with RootTreeWriter(tmp_path / "stream.root", tree="showers", metadata={"geometry": CALOGAN.id}) as writer:
        for part in (showers[:30], showers[30:31], showers[31:]):
            writer.extend({"incident_energy": part.incident_energy, "voxels": part.voxels})
    back = read_showers(tmp_path / "stream.root", None)
    np.testing.assert_array_equal(back.voxels, showers.voxels)
    np.testing.assert_array_equal(back.incident_energy, showers.incident_energy)


def test_format_detection_by_content(tmp_path: Path) -> None:
    root = write_showers(tmp_path / "a.root", make_showers(5))
    h5 = write_showers(tmp_path / "a.h5", make_showers(5))
    os.rename(root, tmp_path / "a.dat")
    os.rename(h5, tmp_path / "b.dat")
    assert file_format(tmp_path / "a.dat") == "root"
    assert file_format(tmp_path / "b.dat") == "hdf5"
    assert len(read_showers(tmp_path / "b.dat")) == 5
    (tmp_path / "c.txt").write_text("hello")
    with pytest.raises(InputError, match=r"c\.txt: unknown file format"):
        read_showers(tmp_path / "c.txt")


# ---------------------------------------------------------------- chunked reading


@pytest.mark.parametrize("suffix", [".root", ".h5"])
def test_chunks_equal_full_read(tmp_path: Path, suffix: str) -> None:
    showers = make_showers(250)
    path = write_showers(tmp_path / f"s{suffix}", showers)
    full = read_showers(path, extra_branches="*")
    chunks = list(iterate_showers(path, step_size=37, extra_branches="*"))
    assert all(len(c) <= 37 for c in chunks) and sum(len(c) for c in chunks) == 250
    assert [c.entry_start for c in chunks] == list(range(0, 250, 37))
    joined = Showers.concatenate(chunks)
    np.testing.assert_array_equal(joined.voxels, full.voxels)
    np.testing.assert_array_equal(joined.incident_energy, full.incident_energy)
    np.testing.assert_array_equal(joined.extra["photon_e"], full.extra["photon_e"])
    part = read_showers(path, entry_start=100, entry_stop=130)
    assert part.entry_start == 100
    np.testing.assert_array_equal(part.voxels, showers.voxels[100:130])


def _peak_bytes(run) -> int:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_chunked_reading_has_bounded_memory(tmp_path: Path) -> None:
    n = 12000  # 12000 x 504 float32 = 24 MB of voxels, written in ~2 MB baskets
    rng = np.random.default_rng(3)
    voxels = rng.exponential(0.05, size=(n, CALOGAN.n_voxels)).astype(np.float32)
    branches = {"incident_energy": rng.uniform(1, 100, n), "voxels": voxels}
    path = write_tree(tmp_path / "big.root", branches, tree="showers")
    full_bytes = voxels.nbytes
    del voxels
    for _ in iterate_showers(path, step_size=10, entry_stop=20):  # import everything lazily loaded first
        pass

    sizes: list[int] = []

    def chunked() -> None:
        for chunk in iterate_showers(path, step_size=500):
            sizes.append(len(chunk))

    peak_chunked = _peak_bytes(chunked)
    peak_full = _peak_bytes(lambda: read_showers(path))
    assert max(sizes) <= 500 and sum(sizes) == n
    assert peak_full > full_bytes  # the full read holds every voxel at once
    assert peak_chunked < full_bytes / 2, (peak_chunked, full_bytes)
    assert peak_chunked < peak_full / 5, (peak_chunked, peak_full)


# ---------------------------------------------------------------- per-layer branches


def _layer_arrays(voxels: np.ndarray) -> dict[str, np.ndarray]:
    images = CALOGAN.layer_images(voxels)
    return {"layer_0": images[0], "layer_1": images[1], "layer_2": images[2].reshape(len(voxels), -1)}


def test_per_layer_branches(tmp_path: Path) -> None:
    showers = make_showers(60)
    branches = {"energy": showers.incident_energy, **_layer_arrays(showers.voxels)}
    path = write_tree(tmp_path / "layers.root", branches, tree="showers")
    layers = ["layer_0", "layer_1", "layer_2"]
    back = read_showers(path, "calogan", layer_branches=layers, energy_branch="energy")
    np.testing.assert_array_equal(back.voxels, showers.voxels)
    chunks = list(iterate_showers(path, "calogan", step_size=25, layer_branches=layers, energy_branch="energy"))
    np.testing.assert_array_equal(Showers.concatenate(chunks).voxels, showers.voxels)
    with pytest.raises(GeometryMismatchError, match=r"layers\.root.*'layer_1' has 144 voxels.*layer0.*288"):
        read_showers(path, "calogan", layer_branches=["layer_1", "layer_0", "layer_2"], energy_branch="energy")
    with pytest.raises(GeometryMismatchError, match="2 layer branches given"):
        read_showers(path, "calogan", layer_branches=["layer_0", "layer_1"], energy_branch="energy")


def test_jagged_layer_branches(tmp_path: Path) -> None:
    showers = make_showers(12)
    flat = [a.reshape(len(a), -1) for a in _layer_arrays(showers.voxels).values()]
    path = tmp_path / "jagged.root"
    with uproot.recreate(path) as f:
        tree = f.mktree("showers", {f"l{i}": "var * float32" for i in range(3)})
        tree.extend({f"l{i}": ak.Array([list(row) for row in a]) for i, a in enumerate(flat)})
    back = read_showers(path, "calogan", layer_branches=["l0", "l1", "l2"], energy_branch=None)
    np.testing.assert_array_equal(back.voxels, showers.voxels)

    bad = tmp_path / "ragged.root"
    rows = [list(row) for row in flat[2]]
    rows[7] = rows[7][:-1]
    with uproot.recreate(bad) as f:
        tree = f.mktree("showers", {f"l{i}": "var * float32" for i in range(3)})
        columns = [[list(r) for r in flat[0]], [list(r) for r in flat[1]], rows]
        tree.extend({f"l{i}": ak.Array(c) for i, c in enumerate(columns)})
    with pytest.raises(InputError, match=r"ragged\.root \(entries 0-11\): branch 'l2' has 71 values at entry 7"):
        read_showers(bad, "calogan", layer_branches=["l0", "l1", "l2"], energy_branch=None)


# ---------------------------------------------------------------- bad inputs


def _bad_tree(tmp_path: Path, name: str, voxels: np.ndarray, energy: np.ndarray | None = None) -> Path:
    n = len(voxels)
    branches = {"incident_energy": np.full(n, 10.0) if energy is None else energy, "voxels": voxels}
    return write_tree(tmp_path / name, branches, tree="showers")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nothere\.root: no such file"):
        read_showers(tmp_path / "nothere.root")
    with pytest.raises(InputError, match=r"nothere\.h5: no such file"):
        iterate_showers(tmp_path / "nothere.h5")


def test_missing_tree_and_branch(tmp_path: Path) -> None:
    path = write_showers(tmp_path / "s.root", make_showers(5))
    with pytest.raises(InputError, match=r"s\.root: no tree named 'events'; its trees are: showers"):
        read_showers(path, tree="events")
    with pytest.raises(InputError, match=r"s\.root: tree 'showers' has no branch 'cells'.*incident_energy, voxels"):
        read_showers(path, voxel_branch="cells")
    with pytest.raises(InputError, match=r"no branch 'truth_x'"):
        read_showers(path, extra_branches=["truth_x"])
    h5 = write_showers(tmp_path / "s.h5", make_showers(5))
    with pytest.raises(InputError, match=r"s\.h5: no dataset 'cells'.*incident_energy"):
        read_showers(h5, voxel_branch="cells")


def test_wrong_voxel_count(tmp_path: Path) -> None:
    path = write_showers(tmp_path / "photons.root", make_showers(5, geometry=PHOTONS))
    with pytest.raises(GeometryMismatchError, match=r"photons\.root.*was written for geometry 'calochallenge-ds1"):
        read_showers(path, "calogan")
    plain = _bad_tree(tmp_path, "plain.root", np.ones((4, 368), np.float32))
    expected = r"plain\.root \(entries 0-3\).*368 voxels.*calochallenge-ds1-photons"
    with pytest.raises(GeometryMismatchError, match=expected):
        read_showers(plain, "calogan")
    odd = _bad_tree(tmp_path, "odd.root", np.ones((4, 100), np.float32))
    with pytest.raises(InputError, match=r"odd\.root.*100 voxels per shower match the preset geometries: none"):
        read_showers(odd, None)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_voxels(tmp_path: Path, bad: float) -> None:
    voxels = np.ones((300, 504), np.float32)
    voxels[250, 17] = bad
    path = _bad_tree(tmp_path, "nan.root", voxels)
    expected = r"nan\.root \(entries 200-299\): NaN or infinite.*1 shower\(s\), at entries 250"
    with pytest.raises(InputError, match=expected):
        for _ in iterate_showers(path, step_size=100):
            pass


def test_negative_energies(tmp_path: Path) -> None:
    voxels = np.full((10, 504), 0.01, np.float32)
    voxels[3, 5] = -1e-4
    voxels[6, 9] = -2e-4
    path = _bad_tree(tmp_path, "neg.root", voxels)
    expected = r"neg\.root \(entries 0-9\): negative voxel energies.*entries 3, 6.*clip_negative"
    with pytest.raises(InputError, match=expected):
        read_showers(path)
    with pytest.warns(NegativeEnergyWarning, match=r"neg\.root \(entries 0-9\): set 2 negative"):
        clipped = read_showers(path, clip_negative=1e-3)
    assert clipped.voxels[3, 5] == 0 and clipped.voxels[6, 9] == 0 and clipped.voxels.min() == 0
    assert clipped.voxels[0, 0] == np.float32(0.01)
    with pytest.raises(InputError, match=r"entries 6.*only values >= -0.00015 GeV are clipped"):
        read_showers(path, clip_negative=1.5e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_showers(_bad_tree(tmp_path, "ok.root", np.abs(voxels)))


def test_non_positive_incident_energy(tmp_path: Path) -> None:
    energy = np.full(8, 10.0)
    energy[5] = 0.0
    path = _bad_tree(tmp_path, "e0.root", np.ones((8, 504), np.float32), energy)
    expected = r"e0\.root \(entries 0-7\): incident energy must be finite and > 0.*entries 5"
    with pytest.raises(InputError, match=expected):
        read_showers(path)
    assert read_showers(path, energy_branch=None).incident_energy is None


def test_empty_inputs(tmp_path: Path) -> None:
    (tmp_path / "zero.root").write_bytes(b"")
    with pytest.raises(InputError, match=r"zero\.root: the file is empty"):
        read_showers(tmp_path / "zero.root")
    with uproot.recreate(tmp_path / "notree.root") as f:
        f["note"] = "no trees here"
    with pytest.raises(InputError, match=r"notree\.root: no tree named 'showers'; it contains no TTree"):
        read_showers(tmp_path / "notree.root")
    with uproot.recreate(tmp_path / "empty.root") as f:
        f.mktree("showers", {"incident_energy": np.float64, "voxels": np.dtype((np.float32, (504,)))})
    with pytest.raises(InputError, match=r"empty\.root: tree 'showers' has no entries"):
        read_showers(tmp_path / "empty.root")
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f.create_dataset("showers", shape=(0, 368), dtype=np.float32)
        f.create_dataset("incident_energies", shape=(0, 1), dtype=np.float64)
    with pytest.raises(InputError, match=r"empty\.h5: dataset 'showers' has no entries"):
        read_showers(tmp_path / "empty.h5", None)


def test_corrupt_files(tmp_path: Path) -> None:
    (tmp_path / "text.root").write_text("this is not a ROOT file" * 10)
    with pytest.raises(InputError, match=r"text\.root: cannot be opened as a ROOT file.*corrupt"):
        read_showers(tmp_path / "text.root")
    (tmp_path / "text.h5").write_text("this is not an HDF5 file" * 10)
    with pytest.raises(InputError, match=r"text\.h5: cannot be opened as an HDF5 file"):
        read_showers(tmp_path / "text.h5")

    good = write_showers(tmp_path / "good.root", make_showers(200)).read_bytes()
    (tmp_path / "cut.root").write_bytes(good[: len(good) // 2])
    with pytest.raises(InputError, match=r"cut\.root: the file is truncated"):
        read_showers(tmp_path / "cut.root")
    good_h5 = write_showers(tmp_path / "good.h5", make_showers(200)).read_bytes()
    (tmp_path / "cut.h5").write_bytes(good_h5[: len(good_h5) // 2])
    with pytest.raises(InputError, match=r"cut\.h5: cannot be opened as an HDF5 file.*truncated"):
        read_showers(tmp_path / "cut.h5")


def test_corrupt_basket_names_entries(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    voxels = rng.exponential(size=(3000, 504)).astype(np.float32)  # ~3 baskets of ~1000 entries
    path = write_tree(tmp_path / "bad.root", {"voxels": voxels}, tree="showers")
    data = bytearray(path.read_bytes())
    data[int(len(data) * 0.8) : int(len(data) * 0.8) + 2000] = b"\x00" * 2000
    path.write_bytes(bytes(data))
    good_chunks = []
    with pytest.raises(InputError, match=r"bad\.root \(entries (\d+)-(\d+)\): cannot read the data.*corrupt") as err:
        for chunk in iterate_showers(path, energy_branch=None, step_size=500):
            good_chunks.append(chunk)
    first_bad = int(err.value.args[0].split("(entries ")[1].split("-")[0])
    assert good_chunks and first_bad == good_chunks[-1].entry_start + 500  # the range of the failing chunk


# ---------------------------------------------------------------- atomic writes and input protection


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    showers = make_showers(10)
    showers.extra["label"] = np.array(["a"] * 10)  # strings cannot be written
    with pytest.raises(InputError, match="label"):
        write_showers(tmp_path / "out.root", showers)
    assert list(tmp_path.iterdir()) == []

    target = tmp_path / "keep.root"
    target.write_bytes(b"previous content")
    with pytest.raises(RuntimeError, match="boom"), RootTreeWriter(target, tree="t") as writer:
        writer.extend({"x": np.arange(5.0)})
        raise RuntimeError("boom")
    assert target.read_bytes() == b"previous content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.root"]

    with pytest.raises(ValueError, match="fail"), atomic_output(tmp_path / "x.bin") as tmp:
        tmp.write_bytes(b"partial")
        raise ValueError("fail")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.root"]


def test_refuses_to_overwrite_input(tmp_path: Path) -> None:
    path = write_showers(tmp_path / "in.root", make_showers(10))
    before = path.read_bytes()
    showers = read_showers(path)
    with pytest.raises(InputError, match=r"refusing to write .*in\.root: it is the input file"):
        write_showers(path, showers)
    with pytest.raises(InputError, match="refusing"):
        write_tree(path, {"score": np.zeros(10)}, tree="scores", inputs=[path])
    os.symlink(path, tmp_path / "link.root")
    with pytest.raises(InputError, match="refusing"):
        write_showers(tmp_path / "link.root", showers)
    assert path.read_bytes() == before
    with pytest.raises(InputError, match=r"directory .* does not exist"):
        write_showers(tmp_path / "no" / "out.root", showers)


def test_metadata_geometry_mismatch_hdf5(tmp_path: Path) -> None:
    path = write_showers(tmp_path / "s.h5", make_showers(5))
    with h5py.File(path, "a") as f:
        f.attrs["calinfer_metadata"] = '{"geometry": "calogan-00000000"}'
    with pytest.raises(GeometryMismatchError, match=r"s\.h5 .*written for geometry 'calogan-00000000'"):
        read_showers(path, "calogan")
    with h5py.File(path, "a") as f:
        f.attrs["calinfer_metadata"] = "not json"
    with pytest.raises(InputError, match="not valid JSON"):
        read_metadata(path)
