"""Per-shower energy calibration: maximum likelihood with intervals, an MSE regression baseline, metrics.

* :mod:`calinfer.calibration.mle`: :class:`Calibrator` (scan, refine, spline, MIGRAD + MINOS), :class:`Status`;
* :mod:`calinfer.calibration.regression`: :func:`train_regressor`, the prior-dependent MSE baseline;
* :mod:`calinfer.calibration.metrics`: KDE mode, resolution, coverage, pulls at fixed true energy.
"""

from __future__ import annotations

from calinfer.calibration.mle import DEFAULT_ENERGY_RANGE, CalibrationResult, Calibrator, Status, describe_status
from calinfer.calibration.regression import EnergyRegressor, regression_features, train_regressor

__all__ = [
    "DEFAULT_ENERGY_RANGE",
    "CalibrationResult",
    "Calibrator",
    "EnergyRegressor",
    "Status",
    "describe_status",
    "regression_features",
    "train_regressor",
]
