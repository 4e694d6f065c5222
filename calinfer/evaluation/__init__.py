"""Quality of generated showers, CaloChallenge style (arXiv:2410.21611).

* :mod:`~calinfer.evaluation.features`: high-level features (layer energies, centroids, widths, sparsity);
* :mod:`~calinfer.evaluation.separation`: separation power of feature histograms with its noise floor;
* :mod:`~calinfer.evaluation.classifier_test`: AUC of a classifier separating generated from reference showers;
* :mod:`~calinfer.evaluation.report`: all of these in one call, as tables and JSON.
"""

from __future__ import annotations

from calinfer.evaluation.classifier_test import INPUTS, ClassifierResult, classifier_inputs, classifier_test
from calinfer.evaluation.features import Feature, feature_list, shower_features
from calinfer.evaluation.report import Evaluation, evaluate_showers
from calinfer.evaluation.separation import (
    Separation,
    bin_edges,
    compare_feature,
    separation_noise_floor,
    separation_power,
)

__all__ = [
    "INPUTS",
    "ClassifierResult",
    "Evaluation",
    "Feature",
    "Separation",
    "bin_edges",
    "classifier_inputs",
    "classifier_test",
    "compare_feature",
    "evaluate_showers",
    "feature_list",
    "separation_noise_floor",
    "separation_power",
    "shower_features",
]
