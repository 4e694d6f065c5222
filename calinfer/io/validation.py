"""Physical sanity checks applied to every chunk a reader returns; errors name the file and the entries."""

from __future__ import annotations

import numpy as np

from calinfer.errors import InputError

__all__ = ["NegativeEnergyWarning", "entries_label", "validate_incident_energy", "validate_voxels"]


class NegativeEnergyWarning(UserWarning):
    """Tiny negative voxel energies were set to zero (``clip_negative``)."""


def entries_label(source: str, start: int, stop: int) -> str:
    """``"file.root (entries 0-99)"``: the prefix of every reader error message."""
    return f"{source} (entries {start}-{stop - 1})"


def _first_bad(mask: np.ndarray, start: int) -> str:
    rows = np.flatnonzero(mask)
    shown = ", ".join(str(start + int(i)) for i in rows[:5])
    more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
    return f"{len(rows)} shower(s), at entries {shown}{more}"


def validate_voxels(
    voxels: np.ndarray, *, source: str, start: int, clip_negative: float = 0.0
) -> tuple[np.ndarray, int]:
    """Check voxel energies (GeV) of entries ``start ...`` for NaN/inf and negative values.

    Values in ``[-clip_negative, 0)`` are set to zero (in a copy); anything below ``-clip_negative`` is an
    error. Returns the checked array and the number of clipped values.
    """
    label = entries_label(source, start, start + len(voxels))
    if clip_negative < 0:
        raise InputError(f"clip_negative must be >= 0 (a tolerance in GeV), got {clip_negative}")
    finite = np.isfinite(voxels)
    if not finite.all():
        raise InputError(
            f"{label}: NaN or infinite voxel energies in {_first_bad(~finite.all(axis=1), start)}; "
            "fix or drop these entries"
        )
    negative = voxels < 0
    if not negative.any():
        return voxels, 0
    too_negative = voxels < -clip_negative
    if too_negative.any():
        worst = float(voxels.min())
        hint = (
            f"pass clip_negative >= {-worst:.3g} to set them to zero"
            if clip_negative == 0
            else f"only values >= -{clip_negative:g} GeV are clipped"
        )
        raise InputError(
            f"{label}: negative voxel energies (down to {worst:.3g} GeV) in "
            f"{_first_bad(too_negative.any(axis=1), start)}; {hint}"
        )
    clipped = np.where(negative, np.zeros((), dtype=voxels.dtype), voxels)
    return clipped, int(negative.sum())


def validate_incident_energy(energy: np.ndarray, *, source: str, start: int) -> np.ndarray:
    """Check that incident energies (GeV) are finite and positive; return them as float64 ``(N,)``."""
    energy = np.asarray(energy, dtype=np.float64).reshape(-1)
    bad = ~(np.isfinite(energy) & (energy > 0))
    if bad.any():
        label = entries_label(source, start, start + len(energy))
        raise InputError(
            f"{label}: incident energy must be finite and > 0 GeV, but it is not for {_first_bad(bad, start)} "
            f"(values e.g. {energy[bad][:3].tolist()}); read with energy_branch=None if the file has no truth energy"
        )
    return energy
