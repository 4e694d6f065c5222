"""The format-independent view of an open shower file that the ROOT and HDF5 readers provide."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from calinfer.errors import InputError

__all__ = ["Chunk", "FileInfo", "check_readable", "column_to_matrix"]


@dataclass
class FileInfo:
    """What a reader found in a file before reading any shower.

    Attributes
    ----------
    path: the file.
    format: ``"root"`` or ``"hdf5"``.
    layout: ``"ttree"`` (ROOT), ``"calinfer"`` (HDF5, GeV) or ``"calochallenge"`` (HDF5, MeV).
    container: tree name (ROOT) or ``"/"`` (HDF5).
    n_entries: number of showers.
    voxel_columns: branches/datasets the voxel vector is assembled from, in order.
    column_sizes: voxels per shower in each of ``voxel_columns``.
    energy_column: branch/dataset of the incident energy, ``None`` when not read.
    extra_columns: truth branches/datasets read along.
    available: every branch/dataset name in the container.
    metadata: the calinfer metadata recorded in the file (empty if none).
    stored_unit: unit of the stored energies, ``"GeV"`` or ``"MeV"`` (readers return GeV).
    per_layer: whether the voxel vector is assembled from one column per layer.
    """

    path: Path
    format: str
    layout: str
    container: str
    n_entries: int
    voxel_columns: list[str]
    column_sizes: list[int]
    energy_column: str | None
    extra_columns: list[str]
    available: list[str]
    metadata: dict = field(default_factory=dict)
    stored_unit: str = "GeV"
    per_layer: bool = False

    @property
    def n_voxels(self) -> int:
        """Voxels per shower after assembling all voxel columns."""
        return int(sum(self.column_sizes))


@dataclass
class Chunk:
    """Entries ``[start, stop)`` of a file, energies already in GeV but not yet validated."""

    start: int
    stop: int
    voxels: np.ndarray
    energy: np.ndarray | None
    extra: dict[str, np.ndarray]


def column_to_matrix(values: np.ndarray, *, size: int, name: str, label: str, start: int) -> np.ndarray:
    """Turn one voxel column of a chunk (fixed-size or jagged per entry) into an ``(n, size)`` float array."""
    if values.dtype == object:
        lengths = np.array([np.asarray(v).size for v in values])
        bad = np.flatnonzero(lengths != size)
        if len(bad):
            raise InputError(
                f"{label}: branch {name!r} has {lengths[bad[0]]} values at entry {start + int(bad[0])}, "
                f"expected {size} per shower like the first entry"
            )
        values = np.stack([np.asarray(v).reshape(-1) for v in values]) if len(values) else np.zeros((0, size))
    values = values.reshape(len(values), -1)
    if values.shape[1] != size:
        raise InputError(f"{label}: branch {name!r} has {values.shape[1]} values per shower, expected {size}")
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float64)
    return values


def check_readable(path: str | Path) -> Path:
    """Raise :class:`InputError` for a missing, non-regular or empty file; return it as a ``Path``."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path")
    if not path.is_file():
        raise InputError(f"{path}: is not a regular file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty (0 bytes); it was probably not written completely")
    return path
