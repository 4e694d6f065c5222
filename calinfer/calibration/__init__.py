"""Per-shower energy calibration: maximum likelihood with intervals, an MSE regression baseline, metrics.

* :mod:`calinfer.calibration.mle`: :class:`Calibrator` (scan, refine, spline, MIGRAD + MINOS, check against
  -ln L itself), :class:`Status`, :func:`profile_full`;
* :mod:`calinfer.calibration.scan`: the adaptive scan that finds the global minimum;
* :mod:`calinfer.calibration.coverage`: :class:`IntervalLevel`, interval levels with 68.3% coverage on the
  surrogate's own showers (Neyman construction);
* :mod:`calinfer.calibration.fullnll`: :class:`FullLikelihood`, the full likelihood from a few flow-II nodes;
* :mod:`calinfer.calibration.regression`: :func:`train_regressor`, the prior-dependent MSE baseline;
* :mod:`calinfer.calibration.metrics`: KDE mode, resolution, coverage, pulls at fixed true energy.
"""

from __future__ import annotations

from calinfer.calibration.coverage import IntervalLevel, likelihood_ratio_at_truth
from calinfer.calibration.fullnll import FullLikelihood, FullNLLTable
from calinfer.calibration.mle import (
    DEFAULT_ENERGY_RANGE,
    CalibrationResult,
    Calibrator,
    Status,
    describe_status,
    profile_full,
)
from calinfer.calibration.regression import EnergyRegressor, regression_features, train_regressor

__all__ = [
    "DEFAULT_ENERGY_RANGE",
    "CalibrationResult",
    "Calibrator",
    "EnergyRegressor",
    "FullLikelihood",
    "FullNLLTable",
    "IntervalLevel",
    "Status",
    "describe_status",
    "likelihood_ratio_at_truth",
    "profile_full",
    "regression_features",
    "train_regressor",
]
