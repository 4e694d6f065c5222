"""Unsupervised anomaly detection for showers: likelihood scores under a surrogate, and baselines.

A surrogate trained only on ordinary photon showers scores every shower by how unlikely it is
(arXiv:2312.11618). See :mod:`calinfer.anomaly.scores` for the likelihood scores and
:mod:`calinfer.anomaly.flat` for the energy-flat tail-probability scores and
:mod:`calinfer.anomaly.baselines` for the physics-variable, autoencoder and supervised baselines;
:mod:`calinfer.metrics` turns scores of labelled samples into ROC/SIC figures of merit.
"""

from __future__ import annotations

from calinfer.anomaly.baselines import (
    PHYSICS_VARIABLES,
    AutoencoderScore,
    PhysicsScore,
    SupervisedClassifier,
    shower_features,
    voxel_inputs,
)
from calinfer.anomaly.flat import TailScore, TailTable
from calinfer.anomaly.scores import (
    BASE_SCORE_NAMES,
    PARTS,
    SCORE_NAMES,
    EnergyScale,
    LikelihoodScore,
    ProfileScore,
    Score,
    dequantization_width_of,
    make_score,
)

__all__ = [
    "BASE_SCORE_NAMES",
    "PARTS",
    "PHYSICS_VARIABLES",
    "SCORE_NAMES",
    "AutoencoderScore",
    "EnergyScale",
    "LikelihoodScore",
    "PhysicsScore",
    "ProfileScore",
    "Score",
    "SupervisedClassifier",
    "TailScore",
    "TailTable",
    "dequantization_width_of",
    "make_score",
    "shower_features",
    "voxel_inputs",
]
