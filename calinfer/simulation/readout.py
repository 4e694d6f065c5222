"""Mapping of energy-deposit positions to the voxels of a geometry.

Coordinates are in mm: ``z`` is the depth behind the calorimeter front face, ``(x, y)`` the transverse
position relative to the axis through the centre of the cell grids (the nominal particle direction).
Cartesian layers span ``[-n_x dx / 2, n_x dx / 2] x [-n_y dy / 2, n_y dy / 2]``; polar layers cover
``r < r_max`` with angle bins starting at ``alpha = 0`` along ``+x``.

The depth of each layer comes from ``Layer.depth_mm``. The CaloChallenge geometries carry no depths;
for them :data:`CALOCHALLENGE_DEPTHS_X0` gives an approximate ATLAS-barrel-like layout in radiation
lengths of the simulated medium (dead material in front and between the presampler and the strips is
not read out).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calinfer.errors import InputError
from calinfer.geometry import Geometry

__all__ = ["CALOCHALLENGE_DEPTHS_X0", "Readout"]

CALOCHALLENGE_DEPTHS_X0: dict[str, tuple[float, float]] = {
    "layer0": (2.0, 2.4),
    "layer1": (2.9, 7.2),
    "layer2": (7.2, 23.2),
    "layer3": (23.2, 25.2),
    "layer12": (25.2, 60.0),
    "layer13": (60.0, 90.0),
    "layer14": (90.0, 110.0),
}
"""Approximate depths (radiation lengths) of the CaloChallenge dataset-1 layers used by the simulator."""


@dataclass(frozen=True)
class Readout:
    """Voxel lookup for one geometry; ``x0_mm`` converts :data:`CALOCHALLENGE_DEPTHS_X0` to mm."""

    geometry: Geometry
    z_edges: np.ndarray  # sorted depth boundaries (mm)
    interval_layer: np.ndarray  # layer index of each depth interval, -1 for dead material

    @classmethod
    def for_geometry(cls, geometry: Geometry, x0_mm: float) -> Readout:
        depths = []
        for layer in geometry.layers:
            if layer.depth_mm is not None:
                depths.append(tuple(layer.depth_mm))
            elif layer.name in CALOCHALLENGE_DEPTHS_X0 and geometry.name.startswith("calochallenge"):
                lo, hi = CALOCHALLENGE_DEPTHS_X0[layer.name]
                depths.append((lo * x0_mm, hi * x0_mm))
            else:
                raise InputError(
                    f"geometry {geometry.name!r}: layer {layer.name} has no depth (Layer.depth_mm); the simulator "
                    "needs the depth range of every layer"
                )
        edges: list[float] = []
        owner: list[int] = []
        for index, (lo, hi) in enumerate(depths):
            if edges and lo < edges[-1] - 1e-9:
                name = geometry.layers[index].name
                raise InputError(f"geometry {geometry.name!r}: layer {name} overlaps the previous one")
            if edges and lo > edges[-1] + 1e-9:
                edges.append(lo)
                owner.append(-1)
            elif not edges:
                edges.append(lo)
            edges.append(hi)
            owner.append(index)
        if edges[0] > 0:
            edges.insert(0, 0.0)
            owner.insert(0, -1)
        return cls(geometry=geometry, z_edges=np.asarray(edges, dtype=np.float64), interval_layer=np.asarray(owner))

    @property
    def depth_mm(self) -> float:
        """Depth of the back face (mm)."""
        return float(self.z_edges[-1])

    @property
    def n_voxels(self) -> int:
        return self.geometry.n_voxels

    def locate(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Flat voxel index of each position, or ``n_voxels`` (lost out of the back), ``n_voxels + 1`` (lost
        out of the sides or the front) and ``n_voxels + 2`` (dead material)."""
        nv = self.n_voxels
        out = np.full(x.shape, nv + 1, dtype=np.int64)
        interval = np.searchsorted(self.z_edges, z, side="right") - 1
        out[z >= self.z_edges[-1]] = nv
        inside = (interval >= 0) & (interval < len(self.interval_layer))
        layer_of = np.full(x.shape, -2, dtype=np.int64)
        layer_of[inside] = self.interval_layer[interval[inside]]
        out[layer_of == -1] = nv + 2
        if all(layer.kind == "cartesian" for layer in self.geometry.layers):
            return self._locate_cartesian(x, y, layer_of, out)
        for index, (layer, sl) in enumerate(zip(self.geometry.layers, self.geometry.layer_slices, strict=True)):
            sel = np.flatnonzero(layer_of == index)
            if sel.size == 0:
                continue
            xs, ys = x[sel], y[sel]
            n0, n1 = layer.shape
            if layer.kind == "cartesian":
                dy, dx = layer.cell_size_mm  # type: ignore[misc]
                ix = np.floor(np.clip(xs / dx + n1 / 2, -1.0, n1)).astype(np.int64)
                iy = np.floor(np.clip(ys / dy + n0 / 2, -1.0, n0)).astype(np.int64)
                ok = (ix >= 0) & (ix < n1) & (iy >= 0) & (iy < n0)
                cell = iy * n1 + ix
            else:
                edges = np.asarray(layer.r_edges_mm, dtype=np.float64)
                r = np.hypot(xs, ys)
                ir = np.searchsorted(edges, r, side="right") - 1
                ok = ir < n1
                alpha = np.mod(np.arctan2(ys, xs), 2 * np.pi)
                ia = np.minimum((alpha * (n0 / (2 * np.pi))).astype(np.int64), n0 - 1)
                cell = ia * n1 + ir
            out[sel] = np.where(ok, sl.start + cell, nv + 1)
        return out

    def _locate_cartesian(self, x: np.ndarray, y: np.ndarray, layer_of: np.ndarray, out: np.ndarray) -> np.ndarray:
        """All layers cartesian: one pass with per-layer constants looked up by layer index."""
        layers = self.geometry.layers
        dy_t = np.array([layer.cell_size_mm[0] for layer in layers], dtype=np.float64)  # type: ignore[index]
        dx_t = np.array([layer.cell_size_mm[1] for layer in layers], dtype=np.float64)  # type: ignore[index]
        n0_t = np.array([layer.shape[0] for layer in layers], dtype=np.int64)
        n1_t = np.array([layer.shape[1] for layer in layers], dtype=np.int64)
        start_t = np.array([sl.start for sl in self.geometry.layer_slices], dtype=np.int64)
        read = layer_of >= 0
        lay = np.where(read, layer_of, 0)
        n0, n1 = n0_t[lay], n1_t[lay]
        # clipping keeps far-away (or non-finite) positions out of the grid without overflowing the integer cast
        ix = np.floor(np.clip(x / dx_t[lay] + n1 / 2, -1.0, n1)).astype(np.int64)
        iy = np.floor(np.clip(y / dy_t[lay] + n0 / 2, -1.0, n0)).astype(np.int64)
        ok = read & (ix >= 0) & (ix < n1) & (iy >= 0) & (iy < n0)
        return np.where(ok, start_t[lay] + iy * n1 + ix, np.where(read, self.n_voxels + 1, out))
