"""Readers for dijet events in the LHC Olympics R&D features layout and the standard CATHODE features.

The layout (GeV, one row per event, two large-radius jets) is
``pxj1 pyj1 pzj1 mj1 tau1j1 tau2j1 tau3j1 pxj2 pyj2 pzj2 mj2 tau1j2 tau2j2 tau3j2`` plus an optional
``label`` (1 signal, 0 background). It is read from pandas HDF5 files (key ``df``, e.g.
``events_anomalydetection_v2.features.h5`` or the chunks of ``analyses/generate_dijets.py``), from a
directory of such files, or from ROOT files with a TTree (default ``events``) with the same branch names.

:func:`dijet_features` turns the jets into the standard inputs of resonant anomaly searches (TeV):
``mjj`` (the resonance variable), ``mj_light`` (lighter jet mass), ``delta_mj`` (heavier minus lighter
jet mass), ``tau21_light`` and ``tau21_heavy`` (tau2/tau1 of the lighter and the heavier jet).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from calinfer.errors import InputError

__all__ = [
    "EXTRA_FEATURES",
    "JET_COLUMNS",
    "STANDARD_FEATURES",
    "dijet_features",
    "lhco_files",
    "load_dijets",
    "read_lhco",
    "read_lhco_metadata",
]

JET_COLUMNS: tuple[str, ...] = tuple(
    f"{q}j{j}" for j in (1, 2) for q in ("px", "py", "pz", "m", "tau1", "tau2", "tau3")
)
STANDARD_FEATURES: tuple[str, ...] = ("mj_light", "delta_mj", "tau21_light", "tau21_heavy")
EXTRA_FEATURES: tuple[str, ...] = (
    "mj_heavy",
    "tau32_light",
    "tau32_heavy",
    "pt_lead",
    "pt_sublead",
    "delta_y",
)
_HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")


def lhco_files(path: str | Path | Sequence[str | Path]) -> list[Path]:
    """Expand a file, a directory (its ``*.h5``/``*.hdf5``/``*.root`` files, sorted) or a list into files."""
    if isinstance(path, (str, Path)):
        p = Path(path)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix.lower() in (*_HDF5_SUFFIXES, ".root"))
            if not files:
                raise InputError(f"{p}: directory contains no .h5/.hdf5/.root files")
            return files
        if not p.exists():
            raise InputError(f"{p}: no such file or directory")
        return [p]
    files = [f for item in path for f in lhco_files(item)]
    if not files:
        raise InputError("no input files given")
    return files


def _read_hdf5(path: Path, key: str, columns: list[str]) -> pd.DataFrame:
    try:
        with pd.HDFStore(path, mode="r") as store:
            keys = [k.lstrip("/") for k in store.keys()]
            if key not in keys:
                raise InputError(
                    f"{path}: no pandas table {key!r} (found {keys or 'none'}); "
                    "LHCO features files store their events under key 'df'"
                )
            df = store.get(key)
    except InputError:
        raise
    except Exception as exc:  # corrupt file, not HDF5, not written by pandas
        raise InputError(f"{path}: cannot read as pandas HDF5 ({type(exc).__name__}: {exc})") from exc
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"{path}: key {key!r} holds a {type(df).__name__}, not a DataFrame")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing columns {missing}; found {list(df.columns)}")
    keep = [*columns, *(["label"] if "label" in df.columns else [])]
    return df[keep].reset_index(drop=True)


def _read_root(path: Path, tree: str, columns: list[str]) -> pd.DataFrame:
    import uproot

    try:
        f = uproot.open(path)
    except Exception as exc:
        raise InputError(f"{path}: cannot open as ROOT file ({type(exc).__name__}: {exc})") from exc
    with f:
        if tree not in f:
            found = [k.split(";")[0] for k in f.keys()]
            raise InputError(f"{path}: no tree {tree!r} (found {found or 'nothing'}); pass tree=...")
        t = f[tree]
        missing = [c for c in columns if c not in t.keys()]
        if missing:
            raise InputError(f"{path}: tree {tree!r} misses branches {missing}; found {list(t.keys())}")
        names = [*columns, *(["label"] if "label" in t.keys() else [])]
        try:
            arrays = t.arrays(names, library="np")
        except Exception as exc:
            raise InputError(f"{path}: cannot read tree {tree!r} ({type(exc).__name__}: {exc})") from exc
    return pd.DataFrame({k: np.asarray(arrays[k], dtype=np.float64) for k in names})


def read_lhco(
    path: str | Path | Sequence[str | Path],
    *,
    key: str = "df",
    tree: str = "events",
    drop_nonfinite: bool = True,
) -> pd.DataFrame:
    """Read LHCO-layout jets (GeV) from HDF5/ROOT files, a directory of them or a list.

    Returns the 14 jet columns plus ``label`` when every file has one. Rows with NaN/inf are
    dropped with a warning (``drop_nonfinite=True``) or rejected. Raises :class:`InputError` for
    missing files, keys, trees or columns, unreadable files and empty inputs.
    """
    columns = list(JET_COLUMNS)
    parts = []
    for f in lhco_files(path):
        if f.suffix.lower() == ".root":
            df = _read_root(f, tree, columns)
        elif f.suffix.lower() in _HDF5_SUFFIXES:
            df = _read_hdf5(f, key, columns)
        else:
            raise InputError(f"{f}: unknown file type {f.suffix!r}; use .h5/.hdf5 (pandas) or .root")
        if len(df) == 0:
            raise InputError(f"{f}: file contains no events")
        bad = ~np.isfinite(df.to_numpy(dtype=np.float64)).all(axis=1)
        if bad.any():
            if not drop_nonfinite:
                raise InputError(f"{f}: {int(bad.sum())} events with NaN/inf values (first at entry {np.argmax(bad)})")
            warnings.warn(f"{f}: dropping {int(bad.sum())} of {len(df)} events with NaN/inf values", stacklevel=2)
            df = df[~bad].reset_index(drop=True)
        parts.append(df)
    if any("label" not in p.columns for p in parts):
        parts = [p.drop(columns="label", errors="ignore") for p in parts]
    return pd.concat(parts, ignore_index=True)


def read_lhco_metadata(path: str | Path) -> dict:
    """Generator metadata (seed, settings, counts) stored by ``analyses/generate_dijets.py``; ``{}`` if none."""
    p = Path(path)
    if p.suffix.lower() not in _HDF5_SUFFIXES:
        return {}
    try:
        with pd.HDFStore(p, mode="r") as store:
            storer = store.get_storer("df")
            raw = getattr(storer.attrs, "calinfer_metadata", None) if storer is not None else None
    except Exception as exc:
        raise InputError(f"{p}: cannot read as pandas HDF5 ({type(exc).__name__}: {exc})") from exc
    return json.loads(raw) if raw else {}


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num/den, 0 where den is 0 (jets with a single constituent have tau1 = tau2 = 0)."""
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def dijet_features(jets: pd.DataFrame, extra: Sequence[str] = ()) -> pd.DataFrame:
    """Standard resonant-search features in TeV from LHCO-layout jets in GeV.

    Columns: ``mjj``, :data:`STANDARD_FEATURES`, then the requested ``extra`` (any of
    :data:`EXTRA_FEATURES`), then ``label`` if present.
    """
    unknown = [e for e in extra if e not in EXTRA_FEATURES]
    if unknown:
        raise InputError(f"unknown extra features {unknown}; known: {list(EXTRA_FEATURES)}")
    missing = [c for c in JET_COLUMNS if c not in jets.columns]
    if missing:
        raise InputError(f"jets lack columns {missing}")
    if len(jets) == 0:
        raise InputError("no events to compute features from")
    v = {c: jets[c].to_numpy(dtype=np.float64) for c in JET_COLUMNS}
    p = {}
    for j in (1, 2):
        px, py, pz, m = v[f"pxj{j}"], v[f"pyj{j}"], v[f"pzj{j}"], v[f"mj{j}"]
        p[j] = (np.sqrt(px**2 + py**2 + pz**2 + m**2), px, py, pz)
    e, px, py, pz = (p[1][i] + p[2][i] for i in range(4))
    mjj = np.sqrt(np.maximum(e**2 - px**2 - py**2 - pz**2, 0.0))
    first_light = v["mj1"] <= v["mj2"]

    def pick(name: str, light: bool) -> np.ndarray:
        a, b = v[f"{name}j1"], v[f"{name}j2"]
        return np.where(first_light == light, a, b)

    tau21 = {light: _safe_ratio(pick("tau2", light), pick("tau1", light)) for light in (True, False)}
    out = {
        "mjj": mjj / 1000.0,
        "mj_light": pick("m", True) / 1000.0,
        "delta_mj": (pick("m", False) - pick("m", True)) / 1000.0,
        "tau21_light": tau21[True],
        "tau21_heavy": tau21[False],
    }
    pt = {j: np.hypot(p[j][1], p[j][2]) for j in (1, 2)}
    rap = {j: 0.5 * np.log((p[j][0] + p[j][3]) / np.maximum(p[j][0] - p[j][3], 1e-300)) for j in (1, 2)}
    computed = {
        "mj_heavy": lambda: pick("m", False) / 1000.0,
        "tau32_light": lambda: _safe_ratio(pick("tau3", True), pick("tau2", True)),
        "tau32_heavy": lambda: _safe_ratio(pick("tau3", False), pick("tau2", False)),
        "pt_lead": lambda: np.maximum(pt[1], pt[2]) / 1000.0,
        "pt_sublead": lambda: np.minimum(pt[1], pt[2]) / 1000.0,
        "delta_y": lambda: np.abs(rap[1] - rap[2]),
    }
    for name in extra:
        out[name] = computed[name]()
    if "label" in jets.columns:
        out["label"] = jets["label"].to_numpy()
    return pd.DataFrame(out)


def load_dijets(
    path: str | Path | Sequence[str | Path],
    *,
    extra: Sequence[str] = (),
    key: str = "df",
    tree: str = "events",
) -> pd.DataFrame:
    """Read LHCO-layout files and return :func:`dijet_features` (TeV) in one call."""
    return dijet_features(read_lhco(path, key=key, tree=tree), extra=extra)
