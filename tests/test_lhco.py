"""LHCO-layout readers and the standard dijet features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import uproot

from calinfer.errors import InputError
from calinfer.io.lhco import JET_COLUMNS, dijet_features, load_dijets, read_lhco


def back_to_back(n: int, m1: np.ndarray, m2: np.ndarray, pt: float = 1500.0) -> pd.DataFrame:
    """Jets at rapidity 0, back to back in phi, with tau1 = 0.4, tau2 = 0.2 (jet 1) / 0.3 (jet 2)."""
    phi = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    cols = {
        "pxj1": pt * np.cos(phi), "pyj1": pt * np.sin(phi), "pzj1": np.zeros(n), "mj1": m1,
        "tau1j1": np.full(n, 0.4), "tau2j1": np.full(n, 0.2), "tau3j1": np.full(n, 0.1),
        "pxj2": -pt * np.cos(phi), "pyj2": -pt * np.sin(phi), "pzj2": np.zeros(n), "mj2": m2,
        "tau1j2": np.full(n, 0.4), "tau2j2": np.full(n, 0.3), "tau3j2": np.full(n, 0.15),
        "label": np.arange(n) % 2,
    }  # fmt: skip
    return pd.DataFrame(cols)


def expected_mjj(pt: float, m1: np.ndarray, m2: np.ndarray) -> np.ndarray:
    return np.sqrt(pt**2 + m1**2) + np.sqrt(pt**2 + m2**2)  # back to back at y = 0: p_total = 0


def test_features_analytic_and_jet_order_independent():
    m1 = np.array([100.0, 500.0, 300.0])
    m2 = np.array([500.0, 100.0, 300.0])
    f = dijet_features(back_to_back(3, m1, m2), extra=["mj_heavy", "tau32_light", "pt_lead", "delta_y"])
    np.testing.assert_allclose(f["mjj"], expected_mjj(1500.0, m1, m2) / 1000, rtol=1e-12)
    np.testing.assert_allclose(f["mj_light"], [0.1, 0.1, 0.3])
    np.testing.assert_allclose(f["delta_mj"], [0.4, 0.4, 0.0], atol=1e-12)
    np.testing.assert_allclose(f["mj_heavy"], [0.5, 0.5, 0.3])
    # the lighter jet's tau21: jet 1 (0.5) in row 0, jet 2 (0.75) in row 1
    np.testing.assert_allclose(f["tau21_light"][:2], [0.5, 0.75])
    np.testing.assert_allclose(f["tau21_heavy"][:2], [0.75, 0.5])
    np.testing.assert_allclose(f["tau32_light"][:2], [0.5, 0.5])
    np.testing.assert_allclose(f["pt_lead"], 1.5)
    np.testing.assert_allclose(f["delta_y"], 0.0, atol=1e-12)
    assert list(f.columns[:5]) == ["mjj", "mj_light", "delta_mj", "tau21_light", "tau21_heavy"]


def test_zero_tau1_gives_zero_ratio_not_nan():
    jets = back_to_back(2, np.full(2, 10.0), np.full(2, 20.0))
    jets.loc[0, ["tau1j1", "tau2j1"]] = 0.0
    f = dijet_features(jets)
    assert np.isfinite(f.to_numpy()).all() and f["tau21_light"][0] == 0.0


def test_hdf5_directory_and_root_agree(tmp_path):
    rng = np.random.default_rng(3)
    jets = back_to_back(40, rng.uniform(30, 600, 40), rng.uniform(30, 600, 40))
    (tmp_path / "h5").mkdir()
    jets[:25].to_hdf(tmp_path / "h5" / "a.h5", key="df", mode="w")
    jets[25:].to_hdf(tmp_path / "h5" / "b.h5", key="df", mode="w")
    with uproot.recreate(tmp_path / "jets.root") as f:
        f["events"] = {c: jets[c].to_numpy() for c in jets.columns}
    from_h5 = load_dijets(tmp_path / "h5")
    from_root = load_dijets(tmp_path / "jets.root")
    pd.testing.assert_frame_equal(from_h5, from_root, check_dtype=False)
    assert len(from_h5) == 40 and set(from_h5["label"]) == {0, 1}


def test_nonfinite_rows_dropped_with_warning_or_rejected(tmp_path):
    jets = back_to_back(5, np.full(5, 50.0), np.full(5, 80.0))
    jets.loc[2, "tau2j2"] = np.nan
    jets.to_hdf(tmp_path / "nan.h5", key="df", mode="w")
    with pytest.warns(UserWarning, match="dropping 1 of 5"):
        assert len(read_lhco(tmp_path / "nan.h5")) == 4
    with pytest.raises(InputError, match="NaN"):
        read_lhco(tmp_path / "nan.h5", drop_nonfinite=False)


def test_clear_errors(tmp_path):
    jets = back_to_back(3, np.full(3, 50.0), np.full(3, 80.0))
    with pytest.raises(InputError, match="no such file"):
        read_lhco(tmp_path / "missing.h5")
    jets.drop(columns=["tau3j2"]).to_hdf(tmp_path / "cols.h5", key="df", mode="w")
    with pytest.raises(InputError, match=r"missing columns.*tau3j2"):
        read_lhco(tmp_path / "cols.h5")
    jets.to_hdf(tmp_path / "key.h5", key="events", mode="w")
    with pytest.raises(InputError, match="no pandas table 'df'"):
        read_lhco(tmp_path / "key.h5")
    jets[:0].to_hdf(tmp_path / "empty.h5", key="df", mode="w")
    with pytest.raises(InputError, match="no events"):
        read_lhco(tmp_path / "empty.h5")
    (tmp_path / "corrupt.h5").write_bytes(b"not an hdf5 file at all" * 10)
    with pytest.raises(InputError, match="cannot read"):
        read_lhco(tmp_path / "corrupt.h5")
    with uproot.recreate(tmp_path / "tree.root") as f:
        f["jets"] = {c: jets[c].to_numpy() for c in JET_COLUMNS}
    with pytest.raises(InputError, match=r"no tree 'events'.*jets"):
        read_lhco(tmp_path / "tree.root")
    (tmp_path / "bad.root").write_bytes(b"garbage" * 20)
    with pytest.raises(InputError, match="cannot open as ROOT"):
        read_lhco(tmp_path / "bad.root")
    with pytest.raises(InputError, match="unknown extra"):
        dijet_features(jets, extra=["mass_of_the_universe"])
