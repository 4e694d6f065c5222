"""Exception hierarchy: every error calinfer raises on purpose derives from CalinferError."""

from __future__ import annotations

__all__ = ["CalinferError", "GeometryMismatchError", "InputError", "ModelError", "TrainingError"]


class CalinferError(Exception):
    """Base class of all calinfer errors."""


class InputError(CalinferError, ValueError):
    """A file or array given to calinfer is missing, malformed or physically invalid."""


class GeometryMismatchError(InputError):
    """Showers, files or models were made for different calorimeter geometries."""


class ModelError(CalinferError):
    """A surrogate checkpoint is missing, corrupt or incompatible."""


class TrainingError(CalinferError):
    """Training could not produce a usable model (non-finite losses, a non-finite validation likelihood)."""
