"""A second anomaly family: late, broad showers of a neutral hadron (K_L / neutron-like toy model).

Not a hadronic shower simulation, but a simple, documented topology that differs from photon showers:

* the first nuclear interaction happens at a depth drawn from an exponential with the effective interaction
  length of the stack (374 mm for CaloGAN), *conditioned on lying in the front* ``START_FRACTION = 0.8``
  *of the depth* (so every event leaves a visible shower);
* a fraction ``f_em`` of the energy goes into neutral pions, i.e. an electromagnetic shower started at the
  interaction point (photon, conversion depth included); ``f_em`` is Beta-distributed around Groom's mean
  ``1 - (E / 1 GeV)^(k - 1)``, ``k = 0.82``, with concentration 10;
* the rest is hadronic: only ``h/e = 0.65`` of it is visible on the electromagnetic scale (the remainder is
  nuclear binding and other invisible energy); it is deposited in spots whose depth behind the interaction
  is Gamma-distributed (shape 2, scale 0.35 lambda_I) and whose radius follows
  ``2 r R^2 / (r^2 + R^2)^2`` with ``R = 30 mm`` (60%) or ``R = 120 mm`` (40%).

Both parts go through the sampling response of :func:`calinfer.simulation.em.sample_response`. Energy is
conserved before sampling: ``sum(voxels) + leak_back + leak_side + invisible_energy = E``.
"""

from __future__ import annotations

import numpy as np

from calinfer.geometry import Geometry
from calinfer.showers import Showers
from calinfer.simulation.em import (
    EMShowerModel,
    bin_spots,
    block_rngs,
    deposit_particles,
    draw_energies,
    resolve_readout,
    sample_response,
)

__all__ = ["H_OVER_E", "START_FRACTION", "simulate_hadron_like"]

H_OVER_E = 0.65
START_FRACTION = 0.8
_GROOM_K = 0.82
_FEM_CONCENTRATION = 10.0
_DEPTH_SHAPE, _DEPTH_SCALE_LAMBDA = 2.0, 0.35
_RADII_MM, _CORE_WEIGHT = (30.0, 120.0), 0.6
_SPOTS_PER_SQRT_GEV = 300.0


def simulate_hadron_like(
    n: int,
    *,
    energy: float | None = None,
    energy_range: tuple[float, float] = (1.0, 100.0),
    prior: str = "uniform",
    geometry: str | Geometry = "calogan",
    seed: int = 0,
    model: EMShowerModel | None = None,
    progress: bool = False,
) -> Showers:
    """Simulate ``n`` late neutral-hadron-like showers (see the module docstring); energies as in
    :func:`calinfer.simulation.simulate_showers`. Truth arrays: ``start_depth_mm`` (interaction depth),
    ``em_fraction``, ``invisible_energy``, ``true_deposit``, ``leak_back``, ``leak_side`` (GeV)."""
    model = model or EMShowerModel()
    readout = resolve_readout(geometry, model)
    stack = model.stack
    n, nv = int(n), readout.n_voxels
    lam, depth = stack.lambda_int_mm, readout.depth_mm
    voxels = np.zeros((n, nv), dtype=np.float32)
    energies = np.empty(n)
    keys = ("start_depth_mm", "em_fraction", "invisible_energy", "true_deposit", "leak_back", "leak_side")
    truth = {k: np.empty(n, dtype=np.float32) for k in keys}
    for sl, rng in block_rngs(n, seed, progress=f"simulating {n} hadron-like showers" if progress else None):
        m = sl.stop - sl.start
        if energy is not None:
            e = np.full(m, float(energy))
        else:
            e = draw_energies(m, rng, energy_range=energy_range, prior=prior)
        u = rng.random(m)
        z_int = -lam * np.log1p(-u * (1.0 - np.exp(-START_FRACTION * depth / lam)))
        mean_fem = np.clip(1.0 - np.maximum(e, 1.0) ** (_GROOM_K - 1.0), 0.05, 0.95)
        f_em = rng.beta(mean_fem * _FEM_CONCENTRATION, (1.0 - mean_fem) * _FEM_CONCENTRATION)
        start = np.stack([np.zeros(m), np.zeros(m), z_int], axis=1)
        direction = np.tile([0.0, 0.0, 1.0], (m, 1))
        em = deposit_particles(f_em * e, start, direction, np.ones(m, dtype=bool), readout, model, rng)

        visible_h = (1.0 - f_em) * e * H_OVER_E
        n_spots = np.maximum(1, np.rint(_SPOTS_PER_SQRT_GEV * np.sqrt(e))).astype(np.int64)
        part = np.repeat(np.arange(m), n_spots)
        spot_e = (visible_h / n_spots)[part]
        z = z_int[part] + rng.gamma(_DEPTH_SHAPE, _DEPTH_SCALE_LAMBDA * lam, size=len(part))
        radius = np.where(rng.random(len(part)) < _CORE_WEIGHT, *_RADII_MM)
        w = np.minimum(rng.random(len(part)), 1.0 - 1e-9)
        r = radius * np.sqrt(w / (1.0 - w))
        phi = rng.uniform(0.0, 2 * np.pi, size=len(part))
        had = bin_spots(readout, m, part, r * np.cos(phi), r * np.sin(phi), z, spot_e)

        total = em.voxels + had[:, :nv]
        voxels[sl] = sample_response(total, model, rng)
        energies[sl] = e
        truth["start_depth_mm"][sl] = z_int
        truth["em_fraction"][sl] = f_em
        truth["invisible_energy"][sl] = (1.0 - f_em) * e * (1.0 - H_OVER_E)
        truth["true_deposit"][sl] = total.sum(axis=1)
        truth["leak_back"][sl] = em.leak_back + had[:, nv]
        truth["leak_side"][sl] = em.leak_side + had[:, nv + 1] + em.leak_dead + had[:, nv + 2]
    return Showers(
        voxels=voxels, geometry=readout.geometry, incident_energy=energies, extra=truth, source="<simulated hadrons>"
    )
