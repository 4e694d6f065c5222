"""Resonant anomaly detection (CATHODE, arXiv:2109.00546) with background estimates and a bump hunt."""

from __future__ import annotations

from calinfer.resonant.bumphunt import BumpHuntResult, DijetFunction, bump_hunt, global_significance, scan
from calinfer.resonant.classifier import (
    BoostedTreeEnsemble,
    CrossFitScores,
    EnsembleMLP,
    KFoldScores,
    crossfit_scores,
    kfold_scores,
)
from calinfer.resonant.density import DensityEstimator
from calinfer.resonant.injection import inject_signal, n_signal_for
from calinfer.resonant.latent import LatentClassifier
from calinfer.resonant.methods import CALIBRATIONS, Anode, Cathode, CutResult, CWoLa, IdealizedAD, Supervised
from calinfer.resonant.preprocessing import LogitScaler
from calinfer.resonant.sampler import MassSampler, generate_background
from calinfer.resonant.significance import BackgroundEstimate, background_after_cut, cowan_significance, pull
from calinfer.resonant.windows import SignalRegion, sliding_windows

__all__ = [
    "CALIBRATIONS",
    "Anode",
    "BackgroundEstimate",
    "BoostedTreeEnsemble",
    "BumpHuntResult",
    "CWoLa",
    "Cathode",
    "CrossFitScores",
    "CutResult",
    "DensityEstimator",
    "DijetFunction",
    "EnsembleMLP",
    "IdealizedAD",
    "KFoldScores",
    "LatentClassifier",
    "LogitScaler",
    "MassSampler",
    "SignalRegion",
    "Supervised",
    "background_after_cut",
    "bump_hunt",
    "cowan_significance",
    "crossfit_scores",
    "generate_background",
    "global_significance",
    "inject_signal",
    "kfold_scores",
    "n_signal_for",
    "pull",
    "scan",
    "sliding_windows",
]
