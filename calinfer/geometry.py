"""Calorimeter geometries: layers, cell grids, the flat voxel order and stable identifiers.

A shower is a flat vector of voxel energies (GeV). Layers are concatenated in the order
they are listed; inside a layer the cells are stored row-major over ``shape``:

* cartesian layers: ``shape = (n_y, n_x)`` with cell sizes ``(dy, dx)`` in mm, cell
  ``(iy, ix)`` at flat offset ``iy * n_x + ix``, the particle entering at the centre;
* polar layers (CaloChallenge): ``shape = (n_alpha, n_r)``, flat offset ``alpha * n_r + r``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from calinfer.errors import GeometryMismatchError, InputError

__all__ = ["GEOMETRIES", "Geometry", "Layer", "get_geometry"]


@dataclass(frozen=True)
class Layer:
    """One read-out layer.

    Attributes
    ----------
    name: layer name (``"layer0"``, ...).
    shape: cell grid, ``(n_y, n_x)`` for cartesian or ``(n_alpha, n_r)`` for polar layers.
    kind: ``"cartesian"`` or ``"polar"``.
    cell_size_mm: ``(dy, dx)`` in mm for cartesian layers, ``None`` for polar ones.
    r_edges_mm: radial bin edges in mm for polar layers, ``None`` for cartesian ones.
    depth_mm: ``(z_front, z_back)`` of the layer in mm, ``None`` when unknown.
    """

    name: str
    shape: tuple[int, int]
    kind: str = "cartesian"
    cell_size_mm: tuple[float, float] | None = None
    r_edges_mm: tuple[float, ...] | None = None
    depth_mm: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("cartesian", "polar"):
            raise ValueError(f"layer {self.name}: kind must be 'cartesian' or 'polar', not {self.kind!r}")
        if self.kind == "cartesian" and self.cell_size_mm is None:
            raise ValueError(f"layer {self.name}: a cartesian layer needs cell_size_mm")
        if self.kind == "polar":
            if self.r_edges_mm is None or len(self.r_edges_mm) != self.shape[1] + 1:
                raise ValueError(f"layer {self.name}: a polar layer needs n_r + 1 = {self.shape[1] + 1} r edges")

    @property
    def n_cells(self) -> int:
        """Number of voxels in the layer."""
        return int(self.shape[0] * self.shape[1])

    def cell_centers_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """Transverse (x, y) centres of the cells in mm, in flat order, relative to the beam axis."""
        n0, n1 = self.shape
        if self.kind == "cartesian":
            dy, dx = self.cell_size_mm  # type: ignore[misc]
            y = (np.arange(n0) - (n0 - 1) / 2) * dy
            x = (np.arange(n1) - (n1 - 1) / 2) * dx
            yy, xx = np.meshgrid(y, x, indexing="ij")
            return xx.ravel(), yy.ravel()
        edges = np.asarray(self.r_edges_mm, dtype=float)
        r = 0.5 * (edges[:-1] + edges[1:])
        alpha = (np.arange(n0) + 0.5) * 2 * np.pi / n0 if n0 > 1 else np.zeros(1)
        aa, rr = np.meshgrid(alpha, r, indexing="ij")
        return (rr * np.cos(aa)).ravel(), (rr * np.sin(aa)).ravel()

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "kind": self.kind,
            "cell_size_mm": None if self.cell_size_mm is None else list(self.cell_size_mm),
            "r_edges_mm": None if self.r_edges_mm is None else list(self.r_edges_mm),
            "depth_mm": None if self.depth_mm is None else list(self.depth_mm),
        }


@dataclass(frozen=True)
class Geometry:
    """An immutable calorimeter description: an ordered tuple of layers.

    ``id`` is stable across sessions (name plus a hash of the layer layout); files and
    checkpoints record it, and :meth:`check` refuses anything made for another geometry.
    """

    name: str
    layers: tuple[Layer, ...]
    description: str = ""

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @cached_property
    def n_voxels(self) -> int:
        """Total number of voxels in the flat shower vector."""
        return sum(layer.n_cells for layer in self.layers)

    @cached_property
    def layer_slices(self) -> tuple[slice, ...]:
        """Slice of each layer in the flat voxel vector."""
        out, start = [], 0
        for layer in self.layers:
            out.append(slice(start, start + layer.n_cells))
            start += layer.n_cells
        return tuple(out)

    @cached_property
    def layer_index(self) -> np.ndarray:
        """Layer number of every voxel, shape ``(n_voxels,)``."""
        return np.concatenate([np.full(layer.n_cells, i) for i, layer in enumerate(self.layers)])

    @cached_property
    def id(self) -> str:
        """Stable identifier, e.g. ``calogan-1a2b3c4d``."""
        layout = json.dumps([layer.to_dict() for layer in self.layers], sort_keys=True)
        return f"{self.name}-{hashlib.sha256(layout.encode()).hexdigest()[:8]}"

    def layer_energies(self, voxels: np.ndarray) -> np.ndarray:
        """Sum voxel energies per layer: ``(..., n_voxels) -> (..., n_layers)``."""
        voxels = np.asarray(voxels)
        return np.stack([voxels[..., s].sum(axis=-1) for s in self.layer_slices], axis=-1)

    def layer_images(self, voxels: np.ndarray) -> list[np.ndarray]:
        """Split flat voxels ``(N, n_voxels)`` into per-layer images ``(N, *shape)``."""
        voxels = np.asarray(voxels)
        return [
            voxels[..., s].reshape(*voxels.shape[:-1], *layer.shape)
            for s, layer in zip(self.layer_slices, self.layers, strict=False)
        ]

    def check(self, other: Geometry | str, what: str = "input") -> None:
        """Raise :class:`GeometryMismatchError` unless ``other`` (a geometry or an id) is this geometry."""
        other_id = other.id if isinstance(other, Geometry) else str(other)
        if other_id != self.id:
            raise GeometryMismatchError(
                f"{what} was made for geometry {other_id!r}, but geometry {self.id!r} is required"
            )

    def check_voxel_count(self, n: int, what: str = "input") -> None:
        """Raise :class:`GeometryMismatchError` unless ``n`` equals the number of voxels."""
        if n != self.n_voxels:
            matches = [g for g in GEOMETRIES.values() if g.n_voxels == n]
            hint = f" (it matches {', '.join(g.name for g in matches)})" if matches else ""
            raise GeometryMismatchError(
                f"{what} has {n} voxels per shower, geometry {self.name!r} has {self.n_voxels}{hint}"
            )

    def summary(self) -> str:
        """A human-readable multi-line description."""
        lines = [f"geometry {self.name} (id {self.id}): {self.n_layers} layers, {self.n_voxels} voxels"]
        for layer, s in zip(self.layers, self.layer_slices, strict=False):
            if layer.kind == "cartesian":
                size = f"cells {layer.cell_size_mm[0]:g} x {layer.cell_size_mm[1]:g} mm"  # type: ignore[index]
            else:
                size = f"r edges {', '.join(f'{e:g}' for e in layer.r_edges_mm)} mm"  # type: ignore[union-attr]
            lines.append(
                f"  {layer.name}: {layer.kind} {layer.shape[0]} x {layer.shape[1]}, "
                f"voxels {s.start}-{s.stop - 1}, {size}"
            )
        return "\n".join(lines)


def _polar(name: str, r_edges: list[float], n_alpha: int) -> Layer:
    return Layer(
        name=name, shape=(n_alpha, len(r_edges) - 1), kind="polar", r_edges_mm=tuple(float(e) for e in r_edges)
    )


CALOGAN = Geometry(
    name="calogan",
    description="CaloGAN Pb/LAr sampling calorimeter, 480 mm deep, 480 x 480 mm window (arXiv:1705.02355)",
    layers=(
        Layer("layer0", (3, 96), cell_size_mm=(160.0, 5.0), depth_mm=(0.0, 90.0)),
        Layer("layer1", (12, 12), cell_size_mm=(40.0, 40.0), depth_mm=(90.0, 437.0)),
        Layer("layer2", (12, 6), cell_size_mm=(40.0, 80.0), depth_mm=(437.0, 480.0)),
    ),
)

CALOCHALLENGE_DS1_PHOTONS = Geometry(
    name="calochallenge-ds1-photons",
    description="CaloChallenge 2022 dataset 1 photons, ATLAS layers 0,1,2,3,12 (arXiv:2410.21611)",
    layers=(
        _polar("layer0", [0, 5, 10, 30, 50, 100, 200, 400, 600], 1),
        _polar("layer1", [0, 2, 4, 6, 8, 10, 12, 15, 20, 30, 40, 50, 70, 90, 120, 150, 200], 10),
        _polar("layer2", [0, 2, 5, 10, 15, 20, 25, 30, 40, 50, 60, 80, 100, 130, 160, 200, 250, 300, 350, 400], 10),
        _polar("layer3", [0, 50, 100, 200, 400, 600], 1),
        _polar("layer12", [0, 100, 200, 400, 1000, 2000], 1),
    ),
)

CALOCHALLENGE_DS1_PIONS = Geometry(
    name="calochallenge-ds1-pions",
    description="CaloChallenge 2022 dataset 1 pions, ATLAS layers 0,1,2,3,12,13,14 (arXiv:2410.21611)",
    layers=(
        _polar("layer0", [0, 5, 10, 30, 50, 100, 200, 400, 600], 1),
        _polar("layer1", [0, 1, 4, 7, 10, 15, 30, 50, 90, 150, 200], 10),
        _polar("layer2", [0, 5, 10, 20, 30, 50, 80, 130, 200, 300, 400], 10),
        _polar("layer3", [0, 50, 100, 200, 400, 600], 1),
        _polar("layer12", [0, 10, 20, 30, 50, 80, 100, 130, 160, 200, 250, 300, 350, 400, 1000, 2000], 10),
        _polar("layer13", [0, 10, 20, 30, 50, 80, 100, 130, 160, 200, 250, 300, 350, 400, 600, 1000, 2000], 10),
        _polar("layer14", [0, 50, 100, 150, 200, 250, 300, 400, 600, 1000, 2000], 1),
    ),
)

GEOMETRIES: dict[str, Geometry] = {g.name: g for g in (CALOGAN, CALOCHALLENGE_DS1_PHOTONS, CALOCHALLENGE_DS1_PIONS)}


def get_geometry(name: str | Geometry) -> Geometry:
    """Return a preset geometry by name (or by id), or pass a :class:`Geometry` through."""
    if isinstance(name, Geometry):
        return name
    if name in GEOMETRIES:
        return GEOMETRIES[name]
    for g in GEOMETRIES.values():
        if g.id == name:
            return g
    raise InputError(f"unknown geometry {name!r}; known: {', '.join(GEOMETRIES)}")
