"""``Showers``: the in-memory currency every reader returns and every estimator takes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from calinfer.errors import InputError
from calinfer.geometry import Geometry

__all__ = ["Showers"]


@dataclass
class Showers:
    """A batch of calorimeter showers.

    Attributes
    ----------
    voxels: ``(N, n_voxels)`` voxel energies in GeV, in the geometry's flat order.
    geometry: the calorimeter the voxels belong to.
    incident_energy: ``(N,)`` true incident energies in GeV, or ``None`` for data.
    extra: further per-shower arrays (truth branches), each of length N.
    source: where the showers came from (file name), used in error messages.
    entry_start: index of the first shower in ``source``.
    """

    voxels: np.ndarray
    geometry: Geometry
    incident_energy: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = "<memory>"
    entry_start: int = 0

    def __post_init__(self) -> None:
        self.voxels = np.asarray(self.voxels)
        if self.voxels.ndim != 2:
            raise InputError(
                f"{self.source}: voxels must be 2-dimensional (N, n_voxels), got shape {self.voxels.shape}"
            )
        self.geometry.check_voxel_count(self.voxels.shape[1], what=self.source)
        n = len(self.voxels)
        if self.incident_energy is not None:
            self.incident_energy = np.asarray(self.incident_energy, dtype=np.float64).reshape(-1)
            if len(self.incident_energy) != n:
                raise InputError(f"{self.source}: {len(self.incident_energy)} incident energies for {n} showers")
        for key, value in self.extra.items():
            if len(value) != n:
                raise InputError(f"{self.source}: extra branch {key!r} has {len(value)} entries for {n} showers")

    def __len__(self) -> int:
        return len(self.voxels)

    def __getitem__(self, index: slice | np.ndarray) -> Showers:
        start = self.entry_start + (index.start or 0) if isinstance(index, slice) else self.entry_start
        return Showers(
            voxels=self.voxels[index],
            geometry=self.geometry,
            incident_energy=None if self.incident_energy is None else self.incident_energy[index],
            extra={k: v[index] for k, v in self.extra.items()},
            source=self.source,
            entry_start=start,
        )

    @property
    def entry_range(self) -> str:
        """Human-readable ``first-last`` entry range in the source."""
        return f"{self.entry_start}-{self.entry_start + len(self) - 1}"

    def layer_energies(self) -> np.ndarray:
        """``(N, n_layers)`` energy per layer in GeV."""
        return self.geometry.layer_energies(self.voxels)

    def deposited_energy(self) -> np.ndarray:
        """``(N,)`` total recorded energy in GeV."""
        return self.voxels.sum(axis=1)

    @classmethod
    def concatenate(cls, parts: list[Showers]) -> Showers:
        """Join batches of the same geometry (e.g. the chunks of one file)."""
        if not parts:
            raise InputError("no showers to concatenate")
        geometry = parts[0].geometry
        for p in parts[1:]:
            geometry.check(p.geometry, what=p.source)
        has_e = all(p.incident_energy is not None for p in parts)
        keys = set(parts[0].extra).intersection(*(p.extra for p in parts[1:]))
        return cls(
            voxels=np.concatenate([p.voxels for p in parts]),
            geometry=geometry,
            incident_energy=np.concatenate([p.incident_energy for p in parts]) if has_e else None,  # type: ignore[misc]
            extra={k: np.concatenate([p.extra[k] for p in parts]) for k in sorted(keys)},
            source=parts[0].source,
            entry_start=parts[0].entry_start,
        )
