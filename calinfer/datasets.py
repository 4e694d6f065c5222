"""Embedded default data sets: CaloGAN-geometry showers made with :mod:`calinfer.simulation`.

The files live in ``calinfer/data/<name>.h5`` (calinfer HDF5 layout, GeV). Each records its generator,
seed and parameters in the file metadata, and :func:`regenerate` remakes it from them. To keep the package
small the stored voxel energies are rounded to ``STORAGE_MANTISSA_BITS`` mantissa bits (relative rounding
error below 2^-9, i.e. 0.2%, far below the sampling fluctuations of a voxel); zeros stay exact.

Sets (``names()``):

* ``photons-train`` (50k) and ``photons-val`` (10k): photons, incident energy uniform in 1-100 GeV;
* ``photons-test-10`` ... ``photons-test-90``: 1000 photons each at 10, 20, ..., 90 GeV;
* ``chi-m<mass>-d<distance>``: 300 showers of a 50 GeV pseudoscalar chi -> gamma gamma with mass 0.005,
  0.05, 0.5, 5 GeV decaying 0.33, 0.66, 1.00 or 1.44 m from its production point (the face is at 1.24 m);
* ``hadron-late``: 300 late, broad neutral-hadron-like showers (second anomaly family), 1-100 GeV.

Charged-pion sets (``calochallenge-ds1-pions`` geometry, :mod:`calinfer.simulation.pion`, electromagnetic scale).
To keep the package small only the first showers of each recipe are stored; ``regenerate(name, n=N)`` remakes
the full sample (its first stored showers equal the file's, every block of 100 showers has its own stream):

* ``pions-train`` (recipe 50k, 2000 stored) and ``pions-train-log`` (recipe 50k, 1000 stored): E uniform /
  log-uniform in 5-100 GeV (a margin around the 10-90 GeV of the calibration study);
* ``pions-val`` (recipe 10k, 1000 stored), E uniform in 5-100 GeV;
* ``pions-test-10`` ... ``pions-test-90``: 300 stored (recipe 2000) at 10, 20, ..., 90 GeV.

Dijet sets for the resonant search (``dijet_names()``; LHC Olympics R&D layout, pandas HDF5 key ``df``,
GeV, read with :mod:`calinfer.io.lhco`), packed by ``analyses/pack_dijets.py`` from the Pythia 8 chunks of
``analyses/generate_dijets.py`` (seeds, settings, chunk list and counts in the file metadata, see
:func:`describe_dijets`), cut to m_jj >= 2.8 TeV:

* ``dijets-qcd``: QCD background, the "data" of the search (two of every three generated chunks);
* ``dijets-qcd-reference``: an independent QCD sample (the other chunks) for the idealized-AD baseline;
* ``dijets-signal``: W'(3.5 TeV) -> X(500 GeV) Y(100 GeV), X, Y -> q qbar, for signal injection;
* ``dijets-signal-x700-y250``: a second signal hypothesis, W'(3.5 TeV) -> X(700 GeV) Y(250 GeV)
  (``analyses/generate_dijets.py --process signal --m-x 700 --m-y 250 --seed 21``, packed with
  ``analyses/pack_dijets.py --signal-set``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from calinfer.errors import InputError
from calinfer.showers import Showers

__all__ = [
    "CHI_DISTANCES_M",
    "CHI_MASSES_GEV",
    "STORAGE_MANTISSA_BITS",
    "DatasetSpec",
    "DijetSpec",
    "data_dir",
    "describe",
    "describe_dijets",
    "dijet_names",
    "dijet_path",
    "dijet_spec",
    "load",
    "load_dijets",
    "names",
    "path",
    "regenerate",
    "round_mantissa",
    "spec",
]

STORAGE_MANTISSA_BITS = 8
"""Mantissa bits kept in the stored voxel energies (float32 has 23)."""

CHI_MASSES_GEV = (0.005, 0.05, 0.5, 5.0)
CHI_DISTANCES_M = (0.33, 0.66, 1.00, 1.44)
TEST_ENERGIES_GEV = (10, 20, 30, 40, 50, 60, 70, 80, 90)


@dataclass(frozen=True)
class DatasetSpec:
    """How an embedded set is made: ``generator`` (``"showers"``, ``"chi"``, ``"hadron"`` or ``"pions"``) called
    with ``n``, ``seed`` and ``params``; ``keep_extra`` names the truth arrays stored; ``n_recipe`` (if set) is the
    size of the full sample of which the file stores the first ``n`` showers."""

    name: str
    description: str
    generator: str
    n: int
    seed: int
    params: dict = field(default_factory=dict)
    keep_extra: tuple[str, ...] = ()
    n_recipe: int | None = None  # size of the full sample when only the first ``n`` showers are stored

    def to_dict(self) -> dict:
        return {
            "dataset": self.name,
            "description": self.description,
            "generator": f"calinfer.simulation:{self.generator}",
            "n": self.n,
            "seed": self.seed,
            "params": dict(self.params),
            "keep_extra": list(self.keep_extra),
            **({} if self.n_recipe is None else {"n_recipe": self.n_recipe}),
        }


_CHI_TRUTH = (
    "decay_distance_m",
    "decay_z_mm",
    "photon1_energy",
    "photon2_energy",
    "photon1_x_mm",
    "photon1_y_mm",
    "photon1_z_mm",
    "photon2_x_mm",
    "photon2_y_mm",
    "photon2_z_mm",
    "photon1_tx",
    "photon1_ty",
    "photon2_tx",
    "photon2_ty",
    "opening_angle",
)


def _specs() -> dict[str, DatasetSpec]:
    uniform = {"energy_range": [1.0, 100.0], "prior": "uniform", "particle": "photon", "geometry": "calogan"}
    out = [
        DatasetSpec("photons-train", "photons, E uniform 1-100 GeV (training)", "showers", 50_000, 1001, uniform),
        DatasetSpec("photons-val", "photons, E uniform 1-100 GeV (validation)", "showers", 10_000, 1002, uniform),
    ]
    for e in TEST_ENERGIES_GEV:
        params = {"energy": float(e), "particle": "photon", "geometry": "calogan"}
        out.append(DatasetSpec(f"photons-test-{e}", f"photons at {e} GeV (test)", "showers", 1000, 1100 + e, params))
    for i, mass in enumerate(CHI_MASSES_GEV):
        for j, dist in enumerate(CHI_DISTANCES_M):
            params = {"mass": mass, "energy": 50.0, "decay_distance": dist, "geometry": "calogan"}
            out.append(
                DatasetSpec(
                    f"chi-m{mass:g}-d{dist:.2f}",
                    f"50 GeV chi -> gamma gamma, m = {mass:g} GeV, decay at {dist:.2f} m",
                    "chi",
                    300,
                    2000 + 10 * i + j,
                    params,
                    _CHI_TRUTH,
                )
            )
    out.append(
        DatasetSpec(
            "hadron-late",
            "late neutral-hadron-like showers, E uniform 1-100 GeV (second anomaly family)",
            "hadron",
            300,
            3001,
            {"energy_range": [1.0, 100.0], "geometry": "calogan"},
            ("start_depth_mm", "em_fraction", "invisible_energy"),
        )
    )
    out.extend(_pion_specs())
    return {s.name: s for s in out}


_PION_TRUTH = ("interaction_depth_lambda", "em_fraction", "leak_back", "leak_dead")


def _pion_specs() -> list[DatasetSpec]:
    geo = "calochallenge-ds1-pions"
    out = []
    for name, prior, n, recipe, seed in (
        ("pions-train", "uniform", 2000, 50_000, 4001),
        ("pions-train-log", "log-uniform", 1000, 50_000, 4003),
        ("pions-val", "uniform", 1000, 10_000, 4002),
    ):
        params = {"energy_range": [5.0, 100.0], "prior": prior, "geometry": geo}
        what = "validation" if name == "pions-val" else "training"
        out.append(
            DatasetSpec(
                name,
                f"charged pions, E {prior} 5-100 GeV ({what}; first {n} of {recipe})",
                "pions",
                n,
                seed,
                params,
                _PION_TRUTH,
                n_recipe=recipe,
            )
        )
    for e in TEST_ENERGIES_GEV:
        out.append(
            DatasetSpec(
                f"pions-test-{e}",
                f"charged pions at {e} GeV (test; first 300 of 2000)",
                "pions",
                300,
                4100 + e,
                {"energy": float(e), "geometry": geo},
                _PION_TRUTH,
                n_recipe=2000,
            )
        )
    return out


_SPECS = _specs()


def names() -> list[str]:
    """Names of all embedded data sets."""
    return list(_SPECS)


def spec(name: str) -> DatasetSpec:
    """The generation recipe of an embedded set."""
    try:
        return _SPECS[name]
    except KeyError:
        raise InputError(f"unknown data set {name!r}; known: {', '.join(_SPECS)}") from None


@dataclass(frozen=True)
class DijetSpec:
    """An embedded dijet set: ``process`` of ``analyses/generate_dijets.py`` and its ``role`` in the search
    (``"data"``, ``"reference"`` or ``"signal"``)."""

    name: str
    description: str
    process: str
    role: str


_DIJET_SPECS = {
    s.name: s
    for s in (
        DijetSpec("dijets-qcd", "QCD dijets, m_jj >= 2.8 TeV (search data)", "qcd", "data"),
        DijetSpec("dijets-qcd-reference", "independent QCD dijets, m_jj >= 2.8 TeV (idealized AD)", "qcd", "reference"),
        DijetSpec("dijets-signal", "W'(3.5 TeV) -> X(500) Y(100 GeV) -> 4 quarks, m_jj >= 2.8 TeV", "signal", "signal"),
        DijetSpec(
            "dijets-signal-x700-y250",
            "W'(3.5 TeV) -> X(700) Y(250 GeV) -> 4 quarks, m_jj >= 2.8 TeV (second signal hypothesis)",
            "signal",
            "signal",
        ),
    )
}


def dijet_names() -> list[str]:
    """Names of the embedded dijet sets."""
    return list(_DIJET_SPECS)


def dijet_spec(name: str) -> DijetSpec:
    """Description, process and role of an embedded dijet set."""
    try:
        return _DIJET_SPECS[name]
    except KeyError:
        raise InputError(f"unknown dijet set {name!r}; known: {', '.join(_DIJET_SPECS)}") from None


def dijet_path(name: str) -> Path:
    """File of an embedded dijet set (raises if the set is unknown or its file is missing)."""
    dijet_spec(name)
    p = data_dir() / f"{name}.h5"
    if not p.is_file():
        raise InputError(
            f"{p}: the embedded dijet set {name!r} is missing from this installation; generate chunks with "
            "analyses/generate_dijets.py and pack them with analyses/pack_dijets.py"
        )
    return p


def load_dijets(name: str, *, extra: tuple[str, ...] = ()):
    """An embedded dijet set as the features frame of :func:`calinfer.io.lhco.load_dijets` (TeV, with ``label``)."""
    from calinfer.io.lhco import load_dijets as load_lhco

    return load_lhco(dijet_path(name), extra=extra)


def describe_dijets(name: str) -> dict:
    """The metadata of an embedded dijet set (seeds, generator settings, chunks, cut, event counts)."""
    from calinfer.io.lhco import read_lhco_metadata

    return read_lhco_metadata(dijet_path(name))


def data_dir() -> Path:
    """Directory holding the embedded files."""
    return Path(__file__).resolve().parent / "data"


def path(name: str) -> Path:
    """File of an embedded set (raises if the set is unknown or its file is missing)."""
    spec(name)
    p = data_dir() / f"{name}.h5"
    if not p.is_file():
        raise InputError(
            f"{p}: the embedded data set {name!r} is missing from this installation; remake it with "
            f"calinfer.datasets.regenerate({name!r}, out=...) or `calinfer simulate --dataset {name} --out FILE`"
        )
    return p


def load(name: str) -> Showers:
    """Load an embedded set as :class:`Showers` (voxels in GeV, CaloGAN geometry, truth arrays in ``extra``)."""
    from calinfer.io import read_showers

    return read_showers(path(name), None, extra_branches="*")


def describe(name: str) -> dict:
    """The metadata stored in an embedded file (generator, seed, parameters, model, storage rounding)."""
    from calinfer.io import read_metadata

    return read_metadata(path(name))


def round_mantissa(values: np.ndarray, bits: int = STORAGE_MANTISSA_BITS) -> np.ndarray:
    """Round to nearest float32 with ``bits`` mantissa bits (zeros and signs kept); returns float32."""
    if not 0 < bits <= 23:
        raise InputError(f"mantissa bits must be in 1-23, got {bits}")
    raw = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    drop = 23 - bits
    if drop == 0:
        return raw.view(np.float32).copy()
    half = np.uint32(1 << (drop - 1))
    mask = np.uint32((0xFFFFFFFF << drop) & 0xFFFFFFFF)
    return ((raw + half) & mask).view(np.float32)


def _simulate(s: DatasetSpec, n: int | None, progress: bool) -> Showers:
    from calinfer import simulation

    n = s.n if n is None else int(n)
    params = dict(s.params)
    if "energy_range" in params:
        params["energy_range"] = tuple(params["energy_range"])
    if s.generator == "showers":
        showers = simulation.simulate_showers(n, seed=s.seed, progress=progress, **params)
    elif s.generator == "chi":
        showers = simulation.simulate_chi(n, seed=s.seed, progress=progress, **params)
    elif s.generator == "hadron":
        showers = simulation.simulate_hadron_like(n, seed=s.seed, progress=progress, **params)
    elif s.generator == "pions":
        showers = simulation.simulate_pions(n, seed=s.seed, progress=progress, **params)
    else:  # pragma: no cover - the registry only holds the generators above
        raise InputError(f"data set {s.name!r}: unknown generator {s.generator!r}")
    showers.voxels = round_mantissa(showers.voxels)
    showers.extra = {k: np.asarray(showers.extra[k], dtype=np.float32) for k in s.keep_extra}
    showers.source = f"<regenerated {s.name}>"
    return showers


def regenerate(
    name: str, out: str | os.PathLike | None = None, *, n: int | None = None, progress: bool = False
) -> Showers:
    """Remake an embedded set from its recorded seed and parameters (rounded as stored).

    ``n`` makes a smaller sample; its showers equal the first ``n`` stored ones when ``n`` is a multiple of
    :data:`calinfer.simulation.em.BLOCK_SIZE` (every block has its own random stream). ``out`` (``.h5`` or
    ``.root``) writes the file with the full metadata.
    """
    from calinfer.io import write_showers
    from calinfer.simulation import EMShowerModel, PionModel

    s = spec(name)
    showers = _simulate(s, n, progress)
    if out is not None:
        meta = {
            **s.to_dict(),
            "n": len(showers),
            "model": (PionModel() if s.generator == "pions" else EMShowerModel()).to_dict(),
            "storage": {"mantissa_bits": STORAGE_MANTISSA_BITS},
        }
        write_showers(out, showers, metadata=meta)
    return showers
