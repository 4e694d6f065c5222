"""Anomalous showers: a boosted pseudoscalar ``chi -> gamma gamma`` (flow anomaly-detection study, arXiv:2312.11618).

The chi is produced ``face_distance`` (1.24 m) in front of the calorimeter face, on the axis through the
centre of the face, and flies along it with energy ``E``. It decays after a fixed distance or after an
exponentially distributed flight with mean ``beta gamma c tau``. In its rest frame the two photons are
emitted back to back, isotropically; boosted to the lab frame photon 1 has

``E_1 = gamma m/2 (1 + beta cos theta*)``, ``p_z = gamma m/2 (cos theta* + beta)``, ``p_T = m/2 sin theta*``

and photon 2 the rest, giving opening angles of about ``2 m / E``. A photon from a decay in front of the face
enters where its line crosses the face (``z = 0``) and showers from there (conversion depth included); a
photon from a decay inside the calorimeter starts at the decay point; photons moving backwards (possible only
for slow chis) and decays behind the calorimeter deposit nothing. Both photon showers go through the same
sampling response.

Coordinates of the truth arrays are those of :mod:`calinfer.simulation.readout` (mm, ``z = 0`` at the face).
"""

from __future__ import annotations

import numpy as np

from calinfer.errors import InputError
from calinfer.geometry import Geometry
from calinfer.showers import Showers
from calinfer.simulation.em import EMShowerModel, block_rngs, deposit_particles, resolve_readout, sample_response

__all__ = ["C_MM_PER_NS", "FACE_DISTANCE_M", "chi_decay", "simulate_chi"]

FACE_DISTANCE_M = 1.24
"""Distance from the chi production point to the calorimeter face (m)."""

C_MM_PER_NS = 299.792458


def chi_decay(
    n: int, mass: float, energy: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Lab-frame photon energies ``(n,)`` x 2 (GeV) and unit directions ``(n, 3)`` x 2 of ``chi -> gamma gamma``
    for a chi of ``mass`` and ``energy`` (GeV) moving along ``+z``; isotropic decay in the rest frame."""
    gamma = energy / mass
    beta = np.sqrt(1.0 - 1.0 / gamma**2)
    cos_t = rng.uniform(-1.0, 1.0, size=n)
    sin_t = np.sqrt(np.maximum(1.0 - cos_t**2, 0.0))
    phi = rng.uniform(0.0, 2 * np.pi, size=n)
    half = 0.5 * mass
    e1 = gamma * half * (1.0 + beta * cos_t)
    e2 = energy - e1
    pz1 = gamma * half * (cos_t + beta)
    pz2 = gamma * half * (beta - cos_t)
    pt = half * sin_t
    p1 = np.stack([pt * np.cos(phi), pt * np.sin(phi), pz1], axis=1)
    p2 = np.stack([-p1[:, 0], -p1[:, 1], pz2], axis=1)
    d1 = p1 / np.linalg.norm(p1, axis=1, keepdims=True)
    d2 = p2 / np.linalg.norm(p2, axis=1, keepdims=True)
    return e1, e2, d1, d2


def _opening_angle(d1: np.ndarray, d2: np.ndarray) -> np.ndarray:
    return np.arctan2(np.linalg.norm(np.cross(d1, d2), axis=1), np.einsum("ij,ij->i", d1, d2))


def simulate_chi(
    n: int,
    *,
    mass: float,
    energy: float = 50.0,
    decay_distance: float | None = None,
    lifetime: float | None = None,
    face_distance: float = FACE_DISTANCE_M,
    geometry: str | Geometry = "calogan",
    seed: int = 0,
    model: EMShowerModel | None = None,
    progress: bool = False,
) -> Showers:
    """Simulate ``n`` showers of ``chi -> gamma gamma`` (see the module docstring).

    Parameters
    ----------
    mass, energy: chi mass and energy (GeV), ``0 < mass < energy``.
    decay_distance: fixed decay distance from the production point (m); or
    lifetime: proper lifetime (ns), the flight distance is exponential with mean ``beta gamma c tau``.
    face_distance: production point to calorimeter face (m).

    Returns :class:`Showers` with ``incident_energy = energy`` and truth arrays ``decay_distance_m``,
    ``decay_z_mm`` (decay position relative to the face, negative in front), ``photon{1,2}_energy`` (GeV),
    ``photon{1,2}_{x,y,z}_mm`` (where the photon enters the calorimeter or, for decays inside, starts; NaN
    if it never reaches it), ``photon{1,2}_tx``/``_ty`` (direction slopes dx/dz, dy/dz), ``opening_angle``
    (rad), ``true_deposit``, ``leak_back``, ``leak_side`` (GeV, before sampling).
    """
    mass, energy = float(mass), float(energy)
    if not 0 < mass < energy:
        raise InputError(f"chi mass must satisfy 0 < mass < energy, got mass {mass} GeV and energy {energy} GeV")
    if (decay_distance is None) == (lifetime is None):
        raise InputError("give exactly one of decay_distance (m) or lifetime (ns)")
    if (decay_distance is not None and decay_distance < 0) or (lifetime is not None and lifetime <= 0):
        raise InputError("decay_distance must be >= 0 m and lifetime > 0 ns")
    model = model or EMShowerModel()
    readout = resolve_readout(geometry, model)
    n, nv = int(n), readout.n_voxels
    face_mm = 1000.0 * face_distance
    beta_gamma = np.sqrt(energy**2 - mass**2) / mass
    voxels = np.zeros((n, nv), dtype=np.float32)
    names = ["decay_distance_m", "decay_z_mm", "opening_angle", "true_deposit", "leak_back", "leak_side"]
    for i in (1, 2):
        names += [f"photon{i}_{k}" for k in ("energy", "x_mm", "y_mm", "z_mm", "tx", "ty")]
    truth = {k: np.empty(n, dtype=np.float32) for k in names}
    for sl, rng in block_rngs(n, seed, progress=f"simulating {n} chi decays" if progress else None):
        m = sl.stop - sl.start
        if decay_distance is not None:
            flight = np.full(m, 1000.0 * decay_distance)
        else:
            flight = rng.exponential(beta_gamma * C_MM_PER_NS * lifetime, size=m)
        z_decay = flight - face_mm
        e1, e2, d1, d2 = chi_decay(m, mass, energy, rng)
        energies = np.concatenate([e1, e2])
        directions = np.concatenate([d1, d2])
        zd = np.concatenate([z_decay, z_decay])
        inside = (zd >= 0) & (zd < readout.depth_mm)
        reaches = (zd < 0) & (directions[:, 2] > 0)
        active = (inside | reaches) & (directions[:, 2] > 0) & (energies > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            tx, ty = directions[:, 0] / directions[:, 2], directions[:, 1] / directions[:, 2]
        to_face = np.where(reaches, -zd, 0.0)
        start = np.stack([tx * to_face, ty * to_face, np.where(reaches, 0.0, zd)], axis=1)
        start[~active] = np.nan
        idx = np.flatnonzero(active)
        dep = deposit_particles(
            energies[idx], start[idx], directions[idx], np.ones(len(idx), dtype=bool), readout, model, rng
        )
        event = idx % m
        summed = np.zeros((m, nv))
        np.add.at(summed, event, dep.voxels)
        voxels[sl] = sample_response(summed, model, rng)
        for key, values in (("leak_back", dep.leak_back), ("leak_side", dep.leak_side)):
            truth[key][sl] = np.bincount(event, weights=values, minlength=m)
        truth["true_deposit"][sl] = summed.sum(axis=1)
        truth["decay_distance_m"][sl] = flight / 1000.0
        truth["decay_z_mm"][sl] = z_decay
        truth["opening_angle"][sl] = _opening_angle(d1, d2)
        for i, half in ((1, slice(0, m)), (2, slice(m, 2 * m))):
            truth[f"photon{i}_energy"][sl] = energies[half]
            truth[f"photon{i}_x_mm"][sl] = start[half, 0]
            truth[f"photon{i}_y_mm"][sl] = start[half, 1]
            truth[f"photon{i}_z_mm"][sl] = start[half, 2]
            truth[f"photon{i}_tx"][sl] = tx[half]
            truth[f"photon{i}_ty"][sl] = ty[half]
    return Showers(
        voxels=voxels,
        geometry=readout.geometry,
        incident_energy=np.full(n, energy),
        extra=truth,
        source=f"<simulated chi m={mass:g} GeV>",
    )
