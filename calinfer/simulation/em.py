"""Parameterised electromagnetic showers in a sampling calorimeter (Grindhammer & Peters, hep-ex/0001020).

Every particle (electron or photon) is simulated as follows; all steps are vectorised over particles and
energy spots.

1. **Shower start.** Electrons start showering where they enter; photons first travel an exponentially
   distributed path with mean 9/7 X0 (pair conversion).
2. **Longitudinal profile.** ``dE/dt = E b^a t^(a-1) e^(-b t) / Gamma(a)`` with ``t`` in radiation lengths
   measured from the shower start and ``T = (a-1)/b`` the depth of the maximum. ``ln T`` and ``ln a`` are
   drawn per shower from correlated Gaussians with the homogeneous-medium means of the paper evaluated for
   the effective medium (``y = E/E_c``) and shifted for the sampling structure,
   ``T_sam = T_hom - 0.59/F_S - 0.53 (1 - e/mip)``, ``a_sam = a_hom - 0.444/F_S``, with the widths
   ``sigma(ln T) = 1/(-2.5 + 1.25 ln y)``, ``sigma(ln a) = 1/(-0.82 + 0.79 ln y)`` (both at most 0.5) and
   correlation ``0.784 - 0.023 ln y`` of the sampling-calorimeter fit.
3. **Energy spots.** The energy of each longitudinal step (``step_x0``) follows the energy profile; the
   number of spots per step follows the spot profile (``T_spot = T_hom (0.698 + 0.00212 Z)``,
   ``a_spot = a_hom (0.639 + 0.00334 Z)``) with ``N_spot = 10.3 / a_samp E^0.959`` spots in all, drawn as one
   multinomial per shower; each spot of a step carries the step energy divided by the step's spot count
   (a step with energy but no spot gets one spot, so no energy is lost).
4. **Lateral profile.** Each spot sits at radius ``r`` (Moliere radii) from the shower axis drawn from
   ``p f_C + (1-p) f_T`` with ``f_X(r) = 2 r R_X^2 / (r^2 + R_X^2)^2`` and the depth (``tau = t/T``) and
   energy dependent ``R_C``, ``R_T`` and ``p`` of the paper (shared formulas, homogeneous coefficients with
   ``Z_eff``), uniform in azimuth, in the plane perpendicular to the particle direction.
5. **Read-out.** Spots are binned into the voxels of the geometry; energy beyond the back face, outside the
   cell grid or in dead material is leakage (reported per shower). Up to here energy is conserved exactly:
   ``sum(voxels) + leak_back + leak_side + leak_dead = E``.
6. **Sampling.** Only the active (argon) layers are read out. The deposit ``D`` of each voxel is replaced by
   a Gamma variate with mean ``D`` and variance ``a_samp^2 D`` (``a_samp`` from
   :attr:`SamplingStack.stochastic_term`, 10.8%/sqrt(GeV) for CaloGAN; the sum of independent voxels is
   again such a Gamma variate, so the resolution does not depend on the granularity), every shower is scaled
   by ``1 + c N(0, 1)`` (constant term ``c``), and voxels below ``threshold_gev`` are set to zero.

**Energy scale.** Voxel energies are *calibrated*: the sampled argon energy divided by the electromagnetic
sampling fraction ``S_e`` (about 0.17 for Pb/LAr, :attr:`SamplingStack.sampling_fraction`), as the CaloGAN
files multiply the argon energy by a fixed factor of about 5. The recorded energy sum therefore equals the
incident energy minus leakage on average (``E_dep / E_inc`` about 0.98 for CaloGAN photons) with the
sampling resolution. ``calibrated=False`` returns the raw argon energy (``S_e`` times smaller); the
threshold then applies before the scaling.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import gammainc

from calinfer.errors import InputError
from calinfer.geometry import Geometry, get_geometry
from calinfer.simulation.materials import CALOGAN_STACK, SamplingStack
from calinfer.simulation.readout import Readout

__all__ = [
    "BLOCK_SIZE",
    "CALOCHALLENGE_ENERGIES",
    "EMShowerModel",
    "ParticleDeposits",
    "bin_spots",
    "block_rngs",
    "deposit_particles",
    "draw_energies",
    "fixed_energies",
    "resolve_readout",
    "sample_response",
]

BLOCK_SIZE = 100
"""Showers simulated per random-number block; block ``b`` of seed ``s`` uses ``SeedSequence(s, spawn_key=(b,))``."""

CALOCHALLENGE_ENERGIES = 2.0 ** np.arange(8, 23) / 1000.0
"""The 15 discrete CaloChallenge incident energies, 2^8 ... 2^22 MeV, in GeV."""

_PHOTON_MEAN_FREE_PATH_X0 = 9.0 / 7.0
_SPOT_N1, _SPOT_N2 = 10.3, 0.959


@dataclass(frozen=True)
class EMShowerModel:
    """Settings of the shower simulation.

    Attributes
    ----------
    stack: the absorber/active stack whose effective medium the showers develop in.
    step_x0: longitudinal step (radiation lengths) of the energy and spot profiles.
    spot_scale: multiplies the number of spots (fewer spots: faster, coarser lateral fluctuations).
    constant_term: relative per-shower calibration spread (constant term of the resolution).
    threshold_gev: calibrated voxel energies below this are set to zero (GeV).
    calibrated: divide the argon energy by the sampling fraction (see the module docstring).
    """

    stack: SamplingStack = CALOGAN_STACK
    step_x0: float = 0.25
    spot_scale: float = 1.0
    constant_term: float = 0.007
    threshold_gev: float = 1e-4
    calibrated: bool = True

    def __post_init__(self) -> None:
        if self.step_x0 <= 0 or self.spot_scale <= 0 or self.constant_term < 0 or self.threshold_gev < 0:
            raise InputError(f"invalid shower model settings: {self}")

    def to_dict(self) -> dict:
        """JSON-serialisable description (stored in file metadata)."""
        out = asdict(self)
        out["stack"] = self.stack.summary()
        return out


def block_rngs(
    n: int, seed: int, block: int = BLOCK_SIZE, progress: str | None = None
) -> Iterator[tuple[slice, np.random.Generator]]:
    """Split ``n`` showers into blocks of ``block`` with independent generators derived from ``seed``.

    With ``progress`` (the bar's label) the blocks come with a progress bar.
    """
    if n < 0:
        raise InputError(f"number of showers must be non-negative, got {n}")
    starts = range(0, n, block)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, unit="block", desc=progress)
    for b, start in enumerate(starts):
        sequence = np.random.SeedSequence(int(seed), spawn_key=(b,))
        yield slice(start, min(start + block, n)), np.random.default_rng(sequence)


def fixed_energies(energy: float | np.ndarray | None, n: int) -> np.ndarray | None:
    """``n`` given incident energies (GeV) from a number or an array, checked; ``None`` when none are given."""
    if energy is None:
        return None
    fixed = np.asarray(energy, dtype=np.float64)
    if fixed.ndim == 0:
        fixed = np.full(n, float(fixed))
    if fixed.shape != (n,):
        raise InputError(f"energy must be a number or an array of {n} energies, got shape {fixed.shape}")
    if not np.all(np.isfinite(fixed) & (fixed > 0)):
        raise InputError("incident energies must be finite and positive (GeV)")
    return fixed


def draw_energies(
    n: int,
    rng: np.random.Generator,
    *,
    energy_range: tuple[float, float] = (1.0, 100.0),
    prior: str = "uniform",
) -> np.ndarray:
    """Incident energies (GeV): ``uniform`` or ``log-uniform`` in ``energy_range``, or ``calochallenge``
    (the 15 discrete CaloChallenge energies, each equally likely)."""
    lo, hi = (float(v) for v in energy_range)
    if prior == "calochallenge":
        return rng.choice(CALOCHALLENGE_ENERGIES, size=n)
    if not 0 < lo <= hi:
        raise InputError(f"energy range must satisfy 0 < low <= high (GeV), got {energy_range}")
    if prior == "uniform":
        return rng.uniform(lo, hi, size=n)
    if prior == "log-uniform":
        return np.exp(rng.uniform(np.log(lo), np.log(hi), size=n))
    raise InputError(f"unknown energy prior {prior!r}; use 'uniform', 'log-uniform' or 'calochallenge'")


@dataclass
class _Profiles:
    t_max: np.ndarray  # sampling-calorimeter shower maximum (X0)
    alpha: np.ndarray
    t_spot: np.ndarray
    alpha_spot: np.ndarray


def _draw_profiles(energy: np.ndarray, stack: SamplingStack, rng: np.random.Generator) -> _Profiles:
    z_eff = stack.z_eff
    ln_y = np.log(np.maximum(energy * 1000.0 / stack.critical_energy_mev, np.e))
    ln_y_fluct = np.maximum(ln_y, 3.0)  # keeps the width formulas finite and at most 0.5 for soft particles
    t_hom = np.maximum(ln_y - 0.812, 0.1)
    a_hom = np.maximum(0.81 + (0.458 + 2.26 / z_eff) * ln_y, 0.1)
    t_sam = np.maximum(t_hom - 0.59 / stack.sampling_frequency - 0.53 * (1 - stack.e_over_mip), 0.1)
    a_sam = np.maximum(a_hom - 0.444 / stack.sampling_frequency, 0.1)

    def widths(c0: float, c1: float) -> np.ndarray:
        return np.minimum(0.5, 1.0 / (c0 + c1 * ln_y_fluct))

    sig_t_hom, sig_a_hom = widths(-1.4, 1.26), widths(-0.58, 0.86)
    sig_t, sig_a = widths(-2.5, 1.25), widths(-0.82, 0.79)
    rho_hom = 0.705 - 0.023 * ln_y
    rho = 0.784 - 0.023 * ln_y_fluct
    g1, g2 = rng.standard_normal((2, len(energy)))

    def correlated(r: np.ndarray, sign: float) -> np.ndarray:
        return np.sqrt((1 + r) / 2) * g1 + sign * np.sqrt((1 - r) / 2) * g2

    t_max = np.maximum(np.exp(np.log(t_sam) + sig_t * correlated(rho, 1.0)), 0.5)
    alpha = np.maximum(np.exp(np.log(a_sam) + sig_a * correlated(rho, -1.0)), 1.1)
    t_h = np.exp(np.log(t_hom) + sig_t_hom * correlated(rho_hom, 1.0))
    a_h = np.exp(np.log(a_hom) + sig_a_hom * correlated(rho_hom, -1.0))
    return _Profiles(
        t_max=t_max,
        alpha=alpha,
        t_spot=np.maximum(t_h * (0.698 + 0.00212 * z_eff), 0.5),
        alpha_spot=np.maximum(a_h * (0.639 + 0.00334 * z_eff), 1.1),
    )


def _lateral_parameters(tau: np.ndarray, energy: np.ndarray, z_eff: float) -> tuple[np.ndarray, ...]:
    """Core radius, tail radius (Moliere radii) and core probability at depth ``tau = t/T``; ``energy`` (GeV)
    broadcasts against ``tau``."""
    ln_e = np.log(np.maximum(energy, 1e-3))
    r_core = (0.0251 + 0.00319 * ln_e) + (0.1162 - 0.000381 * z_eff) * tau
    k1, k2, k3 = 0.659 - 0.00309 * z_eff, 0.645, -2.59
    k4 = 0.3585 + 0.0412 * ln_e
    r_tail = k1 * (np.exp(k3 * (tau - k2)) + np.exp(k4 * (tau - k2)))
    p1, p2 = 2.632 - 0.00094 * z_eff, 0.401 + 0.00187 * z_eff
    p3 = 1.313 - 0.0686 * ln_e
    x = (p2 - tau) / p3
    p_core = np.clip(p1 * np.exp(x - np.exp(x)), 0.0, 1.0)
    return np.maximum(r_core, 1e-3), np.maximum(r_tail, 1e-3), p_core


def _orthonormal(direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors perpendicular to each (forward-going) unit direction; ``(x, y)`` for the +z axis."""
    dx, dz = direction[:, 0], direction[:, 2]
    norm = np.sqrt(dx**2 + dz**2)
    e1 = np.stack([dz / norm, np.zeros_like(dx), -dx / norm], axis=1)
    e2 = np.cross(direction, e1)
    return e1, e2


@dataclass
class ParticleDeposits:
    """Energy deposited by each simulated particle before sampling (GeV).

    ``voxels`` has shape ``(M, n_voxels)``; ``leak_back``, ``leak_side``, ``leak_dead`` are the energies lost
    out of the back face, out of the sides or front, and in dead material. ``start_depth_mm`` is the depth
    of the shower start behind the face, ``t_max``/``alpha`` the drawn profile parameters.
    """

    voxels: np.ndarray
    leak_back: np.ndarray
    leak_side: np.ndarray
    leak_dead: np.ndarray
    start_depth_mm: np.ndarray
    t_max: np.ndarray
    alpha: np.ndarray


def deposit_particles(
    energy: np.ndarray,
    start_mm: np.ndarray,
    direction: np.ndarray,
    photon: np.ndarray,
    readout: Readout,
    model: EMShowerModel,
    rng: np.random.Generator,
) -> ParticleDeposits:
    """Simulate ``M`` particles and return their voxel deposits before sampling.

    ``energy`` (GeV, > 0), ``start_mm`` ``(M, 3)`` where each particle is (or enters) in the calorimeter
    (``z >= 0``), ``direction`` ``(M, 3)`` unit vectors with positive ``z`` component, ``photon`` boolean.
    """
    stack = model.stack
    energy = np.asarray(energy, dtype=np.float64)
    m = len(energy)
    nv = readout.n_voxels
    if m == 0:
        empty = np.zeros(0)
        return ParticleDeposits(np.zeros((0, nv)), empty, empty, empty, empty, empty, empty)
    x0 = stack.x0_mm
    prof = _draw_profiles(energy, stack, rng)
    s0 = np.where(photon, rng.exponential(_PHOTON_MEAN_FREE_PATH_X0, size=m), 0.0)  # X0 before showering
    dz = direction[:, 2]
    path_x0 = (readout.depth_mm - start_mm[:, 2]) / dz / x0 - s0
    dt = model.step_x0
    n_steps = int(np.clip(np.ceil(path_x0.max() / dt), 1, np.ceil(200.0 / dt)))
    t_edges = np.arange(n_steps + 1) * dt
    cdf_e = gammainc(prof.alpha[:, None], ((prof.alpha - 1) / prof.t_max)[:, None] * t_edges)
    cdf_s = gammainc(prof.alpha_spot[:, None], ((prof.alpha_spot - 1) / prof.t_spot)[:, None] * t_edges)
    step_energy = energy[:, None] * np.diff(cdf_e, axis=1)
    beyond = energy * (1.0 - cdf_e[:, -1])
    q = np.diff(cdf_s, axis=1)
    total_q = q.sum(axis=1, keepdims=True)
    q = np.where(total_q > 0, q / np.where(total_q > 0, total_q, 1.0), 1.0 / n_steps)
    mean_spots = model.spot_scale * _SPOT_N1 / stack.stochastic_term * energy**_SPOT_N2
    n_spots = np.maximum(1, np.rint(mean_spots)).astype(np.int64)
    counts = rng.multinomial(n_spots, q)
    counts[(counts == 0) & (step_energy > 0)] = 1

    flat_counts = counts.ravel()

    def per_spot(values: np.ndarray) -> np.ndarray:
        """Expand a per-(particle, step) quantity to one entry per spot (spots of a step are contiguous)."""
        return np.repeat(np.broadcast_to(values, (m, n_steps)).ravel(), flat_counts)

    spot_energy = per_spot(step_energy / np.maximum(counts, 1))
    part = per_spot(np.arange(m)[:, None])
    step = per_spot(np.arange(n_steps)[None, :])
    n_total = len(part)

    centres = (np.arange(n_steps) + 0.5) * dt
    r_core, r_tail, p_core = _lateral_parameters(centres[None, :] / prof.t_max[:, None], energy[:, None], stack.z_eff)
    u = rng.random((4, n_total), dtype=np.float32)
    radius = np.where(u[1] < per_spot(p_core), per_spot(r_core), per_spot(r_tail))
    u_r = np.minimum(u[2].astype(np.float64), 1.0 - 1e-9)
    r_mm = radius * stack.moliere_mm * np.sqrt(u_r / (1.0 - u_r))
    phi = (2 * np.pi) * u[3].astype(np.float64)
    lat1, lat2 = r_mm * np.cos(phi), r_mm * np.sin(phi)
    s_mm = (per_spot(s0[:, None]) + (step + u[0]) * dt) * x0
    if np.all(direction[:, :2] == 0):
        x = per_spot(start_mm[:, 0:1]) + lat1
        y = per_spot(start_mm[:, 1:2]) + lat2
        z = per_spot(start_mm[:, 2:3]) + s_mm
    else:
        e1, e2 = _orthonormal(direction)
        x, y, z = (
            per_spot(start_mm[:, i : i + 1])
            + s_mm * per_spot(direction[:, i : i + 1])
            + lat1 * per_spot(e1[:, i : i + 1])
            + lat2 * per_spot(e2[:, i : i + 1])
            for i in range(3)
        )
    sums = bin_spots(readout, m, part, x, y, z, spot_energy)
    return ParticleDeposits(
        voxels=sums[:, :nv],
        leak_back=sums[:, nv] + beyond,
        leak_side=sums[:, nv + 1],
        leak_dead=sums[:, nv + 2],
        start_depth_mm=start_mm[:, 2] + s0 * x0 * dz,
        t_max=prof.t_max,
        alpha=prof.alpha,
    )


def bin_spots(
    readout: Readout, m: int, part: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray, energy: np.ndarray
) -> np.ndarray:
    """Sum spot energies per particle ``part`` (``0..m-1``) and voxel: ``(m, n_voxels + 3)``, the last three
    columns holding the energy lost out of the back, out of the sides/front and in dead material."""
    width = readout.n_voxels + 3
    index = part * width + readout.locate(x, y, z)
    return np.bincount(index, weights=energy, minlength=m * width).reshape(m, width)


def sample_response(deposits: np.ndarray, model: EMShowerModel, rng: np.random.Generator) -> np.ndarray:
    """Recorded voxel energies (GeV, calibrated unless ``model.calibrated`` is false) from the deposits
    ``(N, n_voxels)`` before sampling: Gamma sampling fluctuations, constant term, threshold."""
    stack = model.stack
    var_scale = stack.stochastic_term**2  # GeV
    out = np.zeros_like(deposits, dtype=np.float64)
    hit = deposits > 0
    out[hit] = rng.gamma(deposits[hit] / var_scale, var_scale)
    if model.constant_term > 0:
        out *= np.maximum(1.0 + model.constant_term * rng.standard_normal(len(out)), 0.0)[:, None]
    out[out < model.threshold_gev] = 0.0
    if not model.calibrated:
        out *= stack.sampling_fraction
    return out


def resolve_readout(geometry: str | Geometry, model: EMShowerModel) -> Readout:
    """The voxel lookup of ``geometry`` for ``model``'s medium."""
    return Readout.for_geometry(get_geometry(geometry), model.stack.x0_mm)
