"""Single electrons and photons entering the calorimeter perpendicularly at the centre of the face."""

from __future__ import annotations

import numpy as np

from calinfer.errors import InputError
from calinfer.geometry import Geometry
from calinfer.showers import Showers
from calinfer.simulation.em import (
    EMShowerModel,
    block_rngs,
    deposit_particles,
    draw_energies,
    fixed_energies,
    resolve_readout,
    sample_response,
)

__all__ = ["PARTICLES", "simulate_showers"]

PARTICLES = ("photon", "electron")


def simulate_showers(
    n: int,
    *,
    energy: float | np.ndarray | None = None,
    energy_range: tuple[float, float] = (1.0, 100.0),
    prior: str = "uniform",
    particle: str = "photon",
    geometry: str | Geometry = "calogan",
    seed: int = 0,
    model: EMShowerModel | None = None,
    progress: bool = False,
) -> Showers:
    """Simulate ``n`` showers of single photons or electrons (see :mod:`calinfer.simulation.em`).

    Parameters
    ----------
    n: number of showers.
    energy: fixed incident energy (GeV) or an array of ``n`` energies; ``None`` draws them from ``prior``.
    energy_range: ``(low, high)`` GeV for the ``uniform`` and ``log-uniform`` priors.
    prior: ``"uniform"``, ``"log-uniform"`` or ``"calochallenge"`` (15 discrete energies 0.256-4194 GeV).
    particle: ``"photon"`` or ``"electron"``.
    geometry: preset name or :class:`Geometry` (``calogan``, ``calochallenge-ds1-photons``, ...).
    seed: the same seed (and settings) always gives the same showers.
    model: simulation settings, default :class:`EMShowerModel()`.

    Returns :class:`Showers` with calibrated voxel energies (GeV), ``incident_energy`` and the truth arrays
    ``start_depth_mm`` (depth of the shower start), ``t_max_x0``, ``alpha`` (longitudinal profile),
    ``true_deposit``, ``leak_back``, ``leak_side`` (GeV, before sampling; plus ``leak_dead`` for
    geometries with unread material).
    """
    if particle not in PARTICLES:
        raise InputError(f"unknown particle {particle!r}; use one of {', '.join(PARTICLES)} (or simulate_chi)")
    model = model or EMShowerModel()
    readout = resolve_readout(geometry, model)
    n = int(n)
    fixed = fixed_energies(energy, n)
    nv = readout.n_voxels
    voxels = np.zeros((n, nv), dtype=np.float32)
    energies = np.empty(n)
    keys = ("start_depth_mm", "t_max_x0", "alpha", "true_deposit", "leak_back", "leak_side", "leak_dead")
    truth = {k: np.empty(n, dtype=np.float32) for k in keys}
    for sl, rng in block_rngs(n, seed, progress=f"simulating {n} {particle}s" if progress else None):
        m = sl.stop - sl.start
        e = fixed[sl] if fixed is not None else draw_energies(m, rng, energy_range=energy_range, prior=prior)
        start = np.zeros((m, 3))
        direction = np.tile([0.0, 0.0, 1.0], (m, 1))
        dep = deposit_particles(e, start, direction, np.full(m, particle == "photon"), readout, model, rng)
        voxels[sl] = sample_response(dep.voxels, model, rng)
        energies[sl] = e
        truth["start_depth_mm"][sl] = dep.start_depth_mm
        truth["t_max_x0"][sl] = dep.t_max
        truth["alpha"][sl] = dep.alpha
        truth["true_deposit"][sl] = dep.voxels.sum(axis=1)
        truth["leak_back"][sl] = dep.leak_back
        truth["leak_side"][sl] = dep.leak_side
        truth["leak_dead"][sl] = dep.leak_dead
    if not np.any(readout.interval_layer < 0):
        del truth["leak_dead"]
    return Showers(
        voxels=voxels,
        geometry=readout.geometry,
        incident_energy=energies,
        extra=truth,
        source=f"<simulated {particle}s>",
    )
