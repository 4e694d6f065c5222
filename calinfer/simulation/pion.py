"""Parameterised charged-pion showers in an ATLAS-barrel-like ECAL + HCAL (``calochallenge-ds1-pions``).

The read-out is the 7-layer, 533-voxel CaloChallenge dataset-1 pion geometry (arXiv:2410.21611). Its layers carry
no depths, so :data:`PION_CALORIMETER` documents a calorimeter of our own that follows the ATLAS barrel layout
(the reference facts are collected in ``shared/README.md`` section 6; cite the sources below):

* **ECAL**, layers 0-3 (presampler, strips, middle, back): the Pb/LAr stack of CaloGAN (2 mm Pb + 4 mm LAr,
  effective X0 = 15.6 mm, lambda_I = 374 mm), with the depths of
  :data:`calinfer.simulation.readout.CALOCHALLENGE_DEPTHS_X0` in its radiation lengths (2 X0 of dead material
  in front, a 0.5 X0 gap behind the presampler): 25.2 X0 = 1.05 lambda_I in all (ATLAS: about 22 X0, a little
  over 1 lambda_I).
* a **cryostat** of :data:`CRYOSTAT_LAMBDA` = 0.3 lambda_I of iron, not read out;
* **HCAL**, layers 12-14 (tile samplings A, BC, D): 14 mm iron + 3 mm polystyrene scintillator (ATLAS Tile
  volume ratio about 4.7 : 1), lambda_I = 195 mm, of 1.5, 4.1 and 1.8 lambda_I.

Material constants are the PDG values ("Atomic and nuclear properties of materials"), the effective media those
of :class:`calinfer.simulation.materials.SamplingStack`. One shower of incident energy ``E`` (GeV):

1. **First interaction.** Depth exponential in the pion interaction length, ``PION_LAMBDA_RATIO`` = 1.2 times the
   nuclear interaction length of the medium (PDG: pi+- in iron 20.4 cm vs lambda_I = 16.8 cm); the depth is
   counted in interaction lengths through the layers, so it crosses media correctly. Before it the pion is a
   minimum-ionising track along the axis (PDG dE/dx_min of every material; the loss is taken from the shower
   energy and seen on the electromagnetic scale as ``loss / (e/mip)`` of the medium). A pion that does not
   interact leaves only the track (punch-through).
2. **Electromagnetic fraction** of the shower energy ``E_s = E - loss``: Gamma-distributed (capped at 0.99)
   with Groom's mean ``1 - (E_s / E0)^(m - 1)``, ``E0`` = 1 GeV, ``m`` = :data:`GROOM_M` = 0.83 (PDG review
   "Calorimetry"; 0.32 at 10 GeV, 0.54 at 100 GeV) and relative width :data:`FEM_REL_WIDTH` (a Gamma is skewed
   towards high f_em, skewness ``2 FEM_REL_WIDTH``, the tail of an energetic early pi0; the width sets the
   non-compensation constant term and was chosen, with :data:`INTRINSIC_TERM`, so that the resolution lies
   in the reference range, see ``analyses/pion_validation.py``).
3. **pi0 component**: :data:`N_EM_SHOWERS` photon showers of :mod:`calinfer.simulation.em` (Grindhammer-Peters,
   in the medium where each starts, conversion depth included); the first-generation one starts at the
   interaction point and carries a Beta(3, 2) share of the EM energy, the others start at depths drawn from the
   hadronic longitudinal profile (later generations of the cascade). Their depths are counted in radiation
   lengths through the layers.
4. **Hadronic component** ``(1 - f_em) E_s``: visible on the electromagnetic scale with ``h/e`` =
   :data:`H_OVER_E` = 0.7 (e/h = 1.43; iron/scintillator h/e about 0.6-0.7, shared README section 6), with an
   intrinsic (nuclear binding, invisible-energy) fluctuation of relative width :data:`INTRINSIC_TERM` /
   sqrt(E_h / GeV) as a Gamma variate; deposited in spots whose depth behind the interaction (in interaction
   lengths of the media crossed) is Gamma-distributed with the Bock et al. (NIM 186 (1981) 533) iron shape
   ``a = 0.6165 + 0.3183 ln E`` and rate ``d = 0.9099 - 0.0237 ln E`` (per lambda_I), ``ln a`` fluctuating by
   :data:`SHAPE_SPREAD` per shower; their radius follows ``2 r R^2 / (r^2 + R^2)^2`` (the GFlash form) with a
   core ``R`` = :data:`CORE_RADIUS_LAMBDA` and a halo ``R`` = :data:`HALO_RADIUS_LAMBDA` interaction lengths of the
   local medium (core share :data:`CORE_WEIGHT`), both growing by :data:`RADIUS_GROWTH` per lambda of depth, so that
   about 95% of the energy lies within one lambda_I (shared README section 6).
5. **Read-out and sampling.** Energy behind the back face, outside the cell grids or in dead material is leakage.
   Every voxel deposit ``D`` becomes a Gamma variate with mean ``D`` and variance ``a^2 D``, ``a`` the sampling
   term of the stack the layer belongs to (10.8%/sqrt(GeV) for Pb/LAr, 24.3% for Fe/scintillator, from
   :attr:`SamplingStack.stochastic_term`); each shower is scaled by ``1 + c N(0, 1)``, ``c`` =
   :data:`CONSTANT_TERM`, and voxels below ``threshold_gev`` are zeroed.

Voxel energies are on the **electromagnetic scale** (the active energy divided by each stack's electron sampling
fraction): an electron of energy E gives E on average, a pion ``pi/e = f_em + (1 - f_em) h/e`` of it, less leakage
(non-compensation: the mean response rises with energy). Energy is conserved before sampling:
``true_deposit + leak_back + leak_side + leak_dead = E_s (f_em + (1 - f_em) h/e) + track signal``, the difference
to ``E`` being ``invisible_energy`` (and the e/mip factor of the track).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property

import numpy as np

from calinfer.errors import InputError
from calinfer.geometry import Geometry, get_geometry
from calinfer.showers import Showers
from calinfer.simulation.em import (
    EMShowerModel,
    bin_spots,
    block_rngs,
    deposit_particles,
    draw_energies,
    fixed_energies,
)
from calinfer.simulation.materials import CALOGAN_STACK, Material, SamplingStack
from calinfer.simulation.readout import CALOCHALLENGE_DEPTHS_X0, Readout

__all__ = [
    "CONSTANT_TERM",
    "CORE_RADIUS_LAMBDA",
    "CORE_WEIGHT",
    "CRYOSTAT_LAMBDA",
    "FEM_REL_WIDTH",
    "GROOM_E0",
    "GROOM_M",
    "HALO_RADIUS_LAMBDA",
    "HCAL_STACK",
    "H_OVER_E",
    "INTRINSIC_TERM",
    "IRON",
    "N_EM_SHOWERS",
    "PION_CALORIMETER",
    "PION_LAMBDA_RATIO",
    "RADIUS_GROWTH",
    "SCINTILLATOR",
    "SHAPE_SPREAD",
    "PionCalorimeter",
    "PionModel",
    "groom_em_fraction",
    "simulate_pions",
]

IRON = Material("Fe", 26.0, 55.845, 7.874, 17.57, 21.68, 17.19, 1.451, 167.7)
"""Iron (PDG): X0 = 1.757 cm, E_c = 21.68 MeV, R_M = 1.719 cm, dE/dx_min = 1.451 MeV cm^2/g, lambda_I = 16.77 cm."""
SCINTILLATOR = Material("PS", 5.6, 11.2, 1.060, 413.1, 93.11, 95.9, 2.052, 770.7)
"""Polystyrene scintillator (PDG; Z, A mass-weighted for C8H8): X0 = 41.31 cm, lambda_I = 77.07 cm."""
HCAL_STACK = SamplingStack(IRON, SCINTILLATOR, absorber_mm=14.0, active_mm=3.0, n_layers=85)
"""The tile calorimeter: 14 mm iron + 3 mm scintillator (lambda_I = 195 mm)."""

PION_LAMBDA_RATIO = 1.2
GROOM_E0, GROOM_M = 1.0, 0.83
FEM_REL_WIDTH = 0.2
N_EM_SHOWERS = 2
H_OVER_E = 0.7
INTRINSIC_TERM = 0.45
SHAPE_SPREAD = 0.2
CORE_RADIUS_LAMBDA, HALO_RADIUS_LAMBDA, CORE_WEIGHT, RADIUS_GROWTH = 0.04, 0.18, 0.5, 0.15
CRYOSTAT_LAMBDA = 0.3
CONSTANT_TERM = 0.01
_SPOTS_PER_SQRT_GEV = 300.0
_BOCK_A, _BOCK_D = (0.6165, 0.3183), (0.9099, -0.0237)

_HCAL_LAMBDA = {"layer12": 1.5, "layer13": 4.1, "layer14": 1.8}


@dataclass(frozen=True)
class _Segment:
    """A slab of the calorimeter: ``[z0, z1)`` mm of ``medium`` (a stack or a dead material), read out as ``layer``
    (index in the geometry, -1 for dead material) sampled with ``stack``'s response."""

    z0: float
    z1: float
    layer: int
    x0_mm: float
    lambda_mm: float
    mip_mev_per_mm: float  # mean minimum-ionising loss
    mip_visible: float  # electromagnetic-scale signal per MeV of loss (1 / (e/mip)); 0 for dead material
    stochastic: float  # sampling term (GeV^1/2) of the active layers


def _stack_loss(stack: SamplingStack) -> float:
    """Mean minimum-ionising loss of a stack (MeV/mm)."""
    a, b = stack.absorber, stack.active
    return (a.mip_loss_mev_per_mm * stack.absorber_mm + b.mip_loss_mev_per_mm * stack.active_mm) / stack.period_mm


@dataclass(frozen=True)
class PionCalorimeter:
    """The ECAL + cryostat + HCAL layout of the module docstring, mapped onto ``geometry``'s layers."""

    geometry_name: str = "calochallenge-ds1-pions"
    ecal: SamplingStack = CALOGAN_STACK
    hcal: SamplingStack = HCAL_STACK
    cryostat: Material = IRON
    cryostat_lambda: float = CRYOSTAT_LAMBDA
    ecal_depths_x0: dict = field(default_factory=lambda: {k: CALOCHALLENGE_DEPTHS_X0[k] for k in
                                                          ("layer0", "layer1", "layer2", "layer3")})
    hcal_depths_lambda: dict = field(default_factory=lambda: dict(_HCAL_LAMBDA))

    def __hash__(self) -> int:
        return hash((self.geometry_name, self.ecal, self.hcal, self.cryostat, self.cryostat_lambda))

    @cached_property
    def geometry(self) -> Geometry:
        return get_geometry(self.geometry_name)

    @cached_property
    def segments(self) -> tuple[_Segment, ...]:
        """Slabs from the front face to the back, dead ones included."""
        names = [layer.name for layer in self.geometry.layers]
        out: list[_Segment] = []

        def add(length: float, layer: int, stack: SamplingStack | None, dead: Material | None = None) -> None:
            z = out[-1].z1 if out else 0.0
            if stack is not None:
                out.append(_Segment(z, z + length, layer, stack.x0_mm, stack.lambda_int_mm, _stack_loss(stack),
                                    1.0 / stack.e_over_mip if layer >= 0 else 0.0, stack.stochastic_term))
            else:
                assert dead is not None
                out.append(_Segment(z, z + length, -1, dead.x0_mm, dead.lambda_int_mm, dead.mip_loss_mev_per_mm,
                                    0.0, 0.0))

        t = 0.0
        for name in ("layer0", "layer1", "layer2", "layer3"):
            lo, hi = self.ecal_depths_x0[name]
            if lo > t:
                add((lo - t) * self.ecal.x0_mm, -1, self.ecal)
            add((hi - lo) * self.ecal.x0_mm, names.index(name), self.ecal)
            t = hi
        add(self.cryostat_lambda * self.cryostat.lambda_int_mm, -1, None, self.cryostat)
        for name in ("layer12", "layer13", "layer14"):
            add(self.hcal_depths_lambda[name] * self.hcal.lambda_int_mm, names.index(name), self.hcal)
        return tuple(out)

    @property
    def ecal_depth_mm(self) -> float:
        """Depth of the back of the ECAL (the cryostat and the HCAL behind it)."""
        return float(self.ecal_depths_x0["layer3"][1] * self.ecal.x0_mm)

    @cached_property
    def z_edges(self) -> np.ndarray:
        """Slab boundaries (mm)."""
        return np.array([self.segments[0].z0] + [s.z1 for s in self.segments])

    def _cumulative(self, unit: str) -> np.ndarray:
        lengths = np.array([(s.z1 - s.z0) / getattr(s, unit) for s in self.segments])
        return np.concatenate([[0.0], np.cumsum(lengths)])

    @cached_property
    def x0_edges(self) -> np.ndarray:
        """Slab boundaries in radiation lengths from the face."""
        return self._cumulative("x0_mm")

    @cached_property
    def lambda_edges(self) -> np.ndarray:
        """Slab boundaries in nuclear interaction lengths from the face."""
        return self._cumulative("lambda_mm")

    def to_lambda(self, z_mm: np.ndarray) -> np.ndarray:
        """Depth (mm) -> interaction lengths from the face (linear beyond the back face)."""
        return _extrapolating_interp(z_mm, self.z_edges, self.lambda_edges)

    def from_lambda(self, t: np.ndarray) -> np.ndarray:
        """Interaction lengths from the face -> depth (mm)."""
        return _extrapolating_interp(t, self.lambda_edges, self.z_edges)

    def to_x0(self, z_mm: np.ndarray) -> np.ndarray:
        """Depth (mm) -> radiation lengths from the face."""
        return _extrapolating_interp(z_mm, self.z_edges, self.x0_edges)

    def readout(self, scale_mm: float | None = None) -> Readout:
        """Voxel lookup in physical depth (``scale_mm=None``) or in radiation lengths times ``scale_mm`` (the depth
        coordinate in which a shower of a medium with ``X0 = scale_mm`` crosses the slabs correctly)."""
        edges = self.z_edges if scale_mm is None else self.x0_edges * scale_mm
        owner = np.array([s.layer for s in self.segments])
        return Readout(geometry=self.geometry, z_edges=edges.astype(np.float64), interval_layer=owner)

    @property
    def depth_lambda(self) -> float:
        return float(self.lambda_edges[-1])

    def layer_stochastic(self) -> np.ndarray:
        """Sampling term of every voxel's layer (GeV^1/2), shape ``(n_voxels,)``."""
        terms = np.zeros(self.geometry.n_layers)
        for s in self.segments:
            if s.layer >= 0:
                terms[s.layer] = s.stochastic
        return terms[self.geometry.layer_index]

    def summary(self) -> dict:
        """Slabs with depths in mm, X0 and lambda_I (stored in file metadata)."""
        names = [layer.name for layer in self.geometry.layers]
        return {
            "geometry": self.geometry_name,
            "ecal": self.ecal.summary(),
            "hcal": self.hcal.summary(),
            "cryostat": {"material": self.cryostat.name, "lambda": self.cryostat_lambda},
            "slabs": [
                {"layer": names[s.layer] if s.layer >= 0 else "dead", "z_mm": [round(s.z0, 2), round(s.z1, 2)],
                 "x0": round(float(self.x0_edges[i + 1] - self.x0_edges[i]), 3),
                 "lambda": round(float(self.lambda_edges[i + 1] - self.lambda_edges[i]), 4)}
                for i, s in enumerate(self.segments)
            ],
        }


def _extrapolating_interp(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """Piecewise-linear map through ``(xp, fp)``, continued with the last slope beyond the end."""
    x = np.asarray(x, dtype=np.float64)
    out = np.interp(x, xp, fp)
    slope = (fp[-1] - fp[-2]) / (xp[-1] - xp[-2])
    beyond = x > xp[-1]
    out[beyond] = fp[-1] + (x[beyond] - xp[-1]) * slope
    return out


PION_CALORIMETER = PionCalorimeter()


@dataclass(frozen=True)
class PionModel:
    """Parameters of the pion shower simulation (defaults: the documented values of the module docstring)."""

    calorimeter: PionCalorimeter = PION_CALORIMETER
    pion_lambda_ratio: float = PION_LAMBDA_RATIO
    groom_e0: float = GROOM_E0
    groom_m: float = GROOM_M
    fem_rel_width: float = FEM_REL_WIDTH
    n_em_showers: int = N_EM_SHOWERS
    h_over_e: float = H_OVER_E
    intrinsic_term: float = INTRINSIC_TERM
    shape_spread: float = SHAPE_SPREAD
    core_radius_lambda: float = CORE_RADIUS_LAMBDA
    halo_radius_lambda: float = HALO_RADIUS_LAMBDA
    core_weight: float = CORE_WEIGHT
    radius_growth: float = RADIUS_GROWTH
    constant_term: float = CONSTANT_TERM
    threshold_gev: float = 1e-4
    em_step_x0: float = 0.5
    em_spot_scale: float = 0.5

    def __post_init__(self) -> None:
        if not (0 < self.h_over_e <= 1.5 and self.fem_rel_width > 0 and self.n_em_showers >= 1
                and 0 <= self.core_weight <= 1 and self.pion_lambda_ratio > 0 and self.groom_m < 1):
            raise InputError(f"invalid pion model settings: {self}")

    def to_dict(self) -> dict:
        """JSON-serialisable description (stored in file metadata)."""
        out = {k: v for k, v in asdict(self).items() if k != "calorimeter"}
        out["calorimeter"] = self.calorimeter.summary()
        return out


def groom_em_fraction(energy: np.ndarray, e0: float = GROOM_E0, m: float = GROOM_M) -> np.ndarray:
    """Groom's mean electromagnetic fraction ``1 - (E / E0)^(m - 1)`` of a pion shower (0 below ``E0``)."""
    return 1.0 - np.maximum(np.asarray(energy, dtype=np.float64) / e0, 1.0) ** (m - 1.0)


def _track(cal: PionCalorimeter, z_int: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimum-ionising track from the face to ``z_int`` (mm): (energy lost (GeV), electromagnetic-scale signal per
    layer (GeV, ``(M, n_layers)``), energy lost in dead material (GeV))."""
    lost = np.zeros(len(z_int))
    dead = np.zeros(len(z_int))
    signal = np.zeros((len(z_int), cal.geometry.n_layers))
    for s in cal.segments:
        path = np.clip(z_int, s.z0, s.z1) - s.z0
        loss = path * s.mip_mev_per_mm / 1000.0
        lost += loss
        if s.layer >= 0:
            signal[:, s.layer] += loss * s.mip_visible
        else:
            dead += loss
    return lost, signal, dead


def _em_showers(
    cal: PionCalorimeter, model: PionModel, energy: np.ndarray, z_start: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Photon showers of ``energy`` (GeV) starting at depth ``z_start`` (mm) on the axis, each in the medium where
    it starts: (voxel deposits, leak back, leak side, leak dead) before sampling."""
    m, nv = len(energy), cal.geometry.n_voxels
    vox = np.zeros((m, nv))
    leaks = np.zeros((3, m))
    x0_start = cal.to_x0(z_start)
    in_hcal = z_start >= cal.ecal_depth_mm  # the cryostat is iron: showers starting there develop as in the HCAL
    for stack, sel in ((cal.ecal, ~in_hcal), (cal.hcal, in_hcal)):
        idx = np.flatnonzero(sel & (energy > 0))
        if idx.size == 0:
            continue
        em_model = EMShowerModel(stack=stack, step_x0=model.em_step_x0, spot_scale=model.em_spot_scale)
        readout = cal.readout(scale_mm=stack.x0_mm)
        start = np.zeros((idx.size, 3))
        start[:, 2] = x0_start[idx] * stack.x0_mm
        direction = np.tile([0.0, 0.0, 1.0], (idx.size, 1))
        dep = deposit_particles(energy[idx], start, direction, np.ones(idx.size, dtype=bool), readout, em_model, rng)
        vox[idx] = dep.voxels
        leaks[:, idx] = dep.leak_back, dep.leak_side, dep.leak_dead
    return vox, leaks[0], leaks[1], leaks[2]


def _hadronic(
    cal: PionCalorimeter,
    model: PionModel,
    visible: np.ndarray,
    shower_energy: np.ndarray,
    t_int: np.ndarray,
    shape: np.ndarray,
    rate: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Spots of the visible hadronic energy: ``(M, n_voxels + 3)`` (last three: leak back, side, dead)."""
    m = len(visible)
    n_spots = np.maximum(1, np.rint(_SPOTS_PER_SQRT_GEV * np.sqrt(shower_energy))).astype(np.int64)
    n_spots[visible <= 0] = 0
    part = np.repeat(np.arange(m), n_spots)
    spot_e = (visible / np.maximum(n_spots, 1))[part]
    depth = rng.gamma(shape[part], 1.0 / rate[part])  # interaction lengths behind the interaction point
    t = t_int[part] + depth
    z = cal.from_lambda(t)
    seg = np.clip(np.searchsorted(cal.z_edges, z, side="right") - 1, 0, len(cal.segments) - 1)
    lam_mm = np.array([s.lambda_mm for s in cal.segments])[seg]
    grow = 1.0 + model.radius_growth * depth
    core = rng.random(len(part)) < model.core_weight
    radius = np.where(core, model.core_radius_lambda, model.halo_radius_lambda) * grow * lam_mm
    w = np.minimum(rng.random(len(part)), 1.0 - 1e-9)
    r = radius * np.sqrt(w / (1.0 - w))
    phi = rng.uniform(0.0, 2 * np.pi, size=len(part))
    return bin_spots(cal.readout(), m, part, r * np.cos(phi), r * np.sin(phi), z, spot_e)


def _sample(deposits: np.ndarray, terms: np.ndarray, model: PionModel, rng: np.random.Generator) -> np.ndarray:
    """Gamma sampling fluctuations with the per-voxel sampling term, constant term and threshold."""
    out = np.zeros_like(deposits)
    hit = deposits > 0
    var_scale = np.broadcast_to(terms**2, deposits.shape)[hit]
    out[hit] = rng.gamma(deposits[hit] / var_scale, var_scale)
    if model.constant_term > 0:
        out *= np.maximum(1.0 + model.constant_term * rng.standard_normal(len(out)), 0.0)[:, None]
    out[out < model.threshold_gev] = 0.0
    return out


_TRUTH = (
    "interaction_depth_mm",
    "interaction_depth_lambda",
    "em_fraction",
    "shower_energy",
    "track_loss",
    "invisible_energy",
    "true_deposit",
    "leak_back",
    "leak_side",
    "leak_dead",
)


def simulate_pions(
    n: int,
    *,
    energy: float | np.ndarray | None = None,
    energy_range: tuple[float, float] = (10.0, 90.0),
    prior: str = "uniform",
    geometry: str | Geometry = "calochallenge-ds1-pions",
    seed: int = 0,
    model: PionModel | None = None,
    progress: bool = False,
) -> Showers:
    """Simulate ``n`` charged-pion showers (see the module docstring); energies as in
    :func:`calinfer.simulation.simulate_showers`.

    Returns :class:`Showers` on the electromagnetic scale (GeV) with the truth arrays ``interaction_depth_mm``,
    ``interaction_depth_lambda`` (first interaction; beyond the back face for a punch-through), ``em_fraction``,
    ``shower_energy``, ``track_loss``, ``invisible_energy``, ``true_deposit`` (before sampling), ``leak_back``,
    ``leak_side``, ``leak_dead`` (GeV, electromagnetic scale).
    """
    model = model or PionModel()
    cal = model.calorimeter
    geo = get_geometry(geometry)
    cal.geometry.check(geo, what="the pion simulator's calorimeter")
    n = int(n)
    fixed = fixed_energies(energy, n)
    nv = geo.n_voxels
    terms = cal.layer_stochastic()
    voxels = np.zeros((n, nv), dtype=np.float32)
    energies = np.empty(n)
    truth = {k: np.empty(n, dtype=np.float32) for k in _TRUTH}
    for sl, rng in block_rngs(n, seed, progress=f"simulating {n} pions" if progress else None):
        m = sl.stop - sl.start
        e = fixed[sl] if fixed is not None else draw_energies(m, rng, energy_range=energy_range, prior=prior)
        # 1. first interaction and the track before it
        t_int = rng.exponential(model.pion_lambda_ratio, size=m)
        z_int = cal.from_lambda(t_int)
        interacts = t_int < cal.depth_lambda
        loss, track_signal, track_dead = _track(cal, z_int)
        loss = np.minimum(loss, e)
        e_s = np.where(interacts, e - loss, 0.0)
        # 2. electromagnetic fraction
        mean_fem = np.clip(groom_em_fraction(e_s, model.groom_e0, model.groom_m), 0.02, 0.98)
        k_fem = 1.0 / model.fem_rel_width**2
        f_em = np.minimum(rng.gamma(k_fem, mean_fem / k_fem), 0.99)
        # hadronic longitudinal shape (Bock, iron), fluctuating per shower
        ln_e = np.log(np.maximum(e_s, 1.0))
        shape = (_BOCK_A[0] + _BOCK_A[1] * ln_e) * np.exp(model.shape_spread * rng.standard_normal(m))
        rate = _BOCK_D[0] + _BOCK_D[1] * ln_e
        # 3. pi0 showers: the first at the interaction point, later ones deeper in the cascade
        k = model.n_em_showers
        share = np.ones((m, 1)) if k == 1 else np.concatenate(
            [(lead := rng.beta(3.0, 2.0, size=(m, 1))),
             (1.0 - lead) * rng.dirichlet(np.ones(k - 1), size=m)], axis=1)
        em_e = (f_em * e_s)[:, None] * share
        later = rng.gamma(np.repeat(shape[:, None], k - 1, axis=1), 1.0 / rate[:, None])
        em_t = np.concatenate([t_int[:, None], t_int[:, None] + later], axis=1)
        em_vox, em_back, em_side, em_dead = _em_showers(cal, model, em_e.ravel(), cal.from_lambda(em_t.ravel()), rng)
        em_vox = em_vox.reshape(m, k, nv).sum(axis=1)
        em_back, em_side, em_dead = (v.reshape(m, k).sum(axis=1) for v in (em_back, em_side, em_dead))
        # 4. hadronic part with its intrinsic fluctuation
        e_h = (1.0 - f_em) * e_s
        mean_vis = model.h_over_e * e_h
        visible = mean_vis
        if model.intrinsic_term > 0:
            rel_var = model.intrinsic_term**2 / np.maximum(e_h, 1e-3)
            visible = np.where(e_h > 0, rng.gamma(1.0 / rel_var, mean_vis * rel_var), 0.0)
        had = _hadronic(cal, model, visible, e_s, t_int, shape, rate, rng)
        deposits = em_vox + had[:, :nv]
        for layer, s in enumerate(geo.layer_slices):
            deposits[:, s.start] += track_signal[:, layer]  # the track runs along the axis: first r and alpha bin
        voxels[sl] = _sample(deposits, terms, model, rng)
        energies[sl] = e
        truth["interaction_depth_mm"][sl] = z_int
        truth["interaction_depth_lambda"][sl] = cal.to_lambda(z_int)
        truth["em_fraction"][sl] = np.where(interacts, f_em, 0.0)
        truth["shower_energy"][sl] = e_s
        truth["track_loss"][sl] = loss
        truth["invisible_energy"][sl] = e_h - visible
        truth["true_deposit"][sl] = deposits.sum(axis=1)
        truth["leak_back"][sl] = em_back + had[:, nv]
        truth["leak_side"][sl] = em_side + had[:, nv + 1]
        truth["leak_dead"][sl] = em_dead + had[:, nv + 2] + track_dead
    return Showers(voxels=voxels, geometry=geo, incident_energy=energies, extra=truth, source="<simulated pions>")
