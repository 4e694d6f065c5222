"""calinfer: likelihood-based inference for calorimeter showers with normalizing-flow surrogates."""

from __future__ import annotations

from calinfer.errors import CalinferError, GeometryMismatchError, InputError, ModelError
from calinfer.geometry import GEOMETRIES, Geometry, Layer, get_geometry
from calinfer.showers import Showers

__version__ = "0.1.0"

__all__ = [
    "GEOMETRIES",
    "CalinferError",
    "Geometry",
    "GeometryMismatchError",
    "InputError",
    "Layer",
    "ModelError",
    "Showers",
    "__version__",
    "get_geometry",
]
