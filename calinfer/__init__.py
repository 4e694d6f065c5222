"""calinfer: likelihood-based inference for calorimeter showers with normalizing-flow surrogates."""

from __future__ import annotations

from calinfer.errors import CalinferError, GeometryMismatchError, InputError, ModelError, TrainingError
from calinfer.geometry import GEOMETRIES, Geometry, Layer, get_geometry
from calinfer.showers import Showers

__version__ = "0.1.0"


def load_default(geometry: Geometry | str | None = None):
    """The pretrained surrogate shipped with calinfer (imports torch on first use).

    See :func:`calinfer.surrogate.load_default`.
    """
    from calinfer.surrogate import load_default as _load_default

    return _load_default(geometry)


def load_model(path_or_name, geometry: Geometry | str | None = None):
    """A surrogate (or ensemble) directory, or a shipped model by name (``"default"``, ``"pions"``).

    See :func:`calinfer.surrogate.load_model`.
    """
    from calinfer.surrogate import load_model as _load_model

    return _load_model(path_or_name, geometry)


__all__ = [
    "GEOMETRIES",
    "CalinferError",
    "Geometry",
    "GeometryMismatchError",
    "InputError",
    "Layer",
    "ModelError",
    "Showers",
    "TrainingError",
    "__version__",
    "get_geometry",
    "load_default",
    "load_model",
]
