"""Built-in fast simulation of electromagnetic showers in sampling calorimeters (calinfer's default data).

The simulator is a vectorised Grindhammer-Peters (GFlash-style) parameterisation, see
:mod:`calinfer.simulation.em` for the physics and the energy scale, :mod:`calinfer.simulation.materials`
for the effective medium, :mod:`calinfer.simulation.chi` for the anomalous two-photon showers and
:mod:`calinfer.simulation.hadron` for the second anomaly family (late neutral-hadron-like showers) and
:mod:`calinfer.simulation.pion` for charged-pion showers in an ECAL + HCAL (``calochallenge-ds1-pions``).
Nothing else in calinfer depends on it: showers from Geant4 files are used through :mod:`calinfer.io`.
"""

from __future__ import annotations

from calinfer.simulation.chi import FACE_DISTANCE_M, chi_decay, simulate_chi
from calinfer.simulation.em import CALOCHALLENGE_ENERGIES, EMShowerModel, draw_energies
from calinfer.simulation.hadron import simulate_hadron_like
from calinfer.simulation.materials import CALOGAN_STACK, LEAD, LIQUID_ARGON, Material, SamplingStack
from calinfer.simulation.pion import PION_CALORIMETER, PionCalorimeter, PionModel, groom_em_fraction, simulate_pions
from calinfer.simulation.single import PARTICLES, simulate_showers

__all__ = [
    "CALOCHALLENGE_ENERGIES",
    "CALOGAN_STACK",
    "FACE_DISTANCE_M",
    "LEAD",
    "LIQUID_ARGON",
    "PARTICLES",
    "PION_CALORIMETER",
    "EMShowerModel",
    "Material",
    "PionCalorimeter",
    "PionModel",
    "SamplingStack",
    "chi_decay",
    "draw_energies",
    "groom_em_fraction",
    "simulate_chi",
    "simulate_hadron_like",
    "simulate_pions",
    "simulate_showers",
]
