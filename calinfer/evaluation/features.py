"""High-level shower features (CaloChallenge style), computed in one vectorised pass per layer.

For every layer ``l`` of the geometry (``name`` = the layer's name, e.g. ``layer0``):

* ``E_<name>``: layer energy in GeV;
* ``cx_<name>``, ``cy_<name>``: energy-weighted centroid in mm, ``sum_i x_i E_i / sum_i E_i`` with the
  cell centres of :meth:`calinfer.geometry.Layer.cell_centers_mm` (for single-bin polar layers ``cx`` is
  the mean radius and ``cy`` is 0);
* ``wx_<name>``, ``wy_<name>``: energy-weighted width (standard deviation) in mm;
* ``sparsity_<name>``: fraction of the layer's voxels with an energy above ``threshold`` GeV.

Centroids and widths of a layer without energy are undefined and returned as NaN (they are not
set to 0, which would put a spike where real showers are); the layer energy and the sparsity of
such showers are still defined. Whole-shower features: ``E_dep`` (GeV) and, when the incident
energies are known, ``E_dep/E_inc``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calinfer.errors import InputError
from calinfer.geometry import Geometry
from calinfer.showers import Showers

__all__ = ["Feature", "feature_list", "shower_features"]


@dataclass(frozen=True)
class Feature:
    """Description of one high-level feature.

    Attributes
    ----------
    name: key in the dictionary returned by :func:`shower_features`.
    label: axis label with the unit.
    log: histogram it on a logarithmic axis (energies spanning decades).
    step: spacing of its possible values when it is discrete (sparsity: ``1 / n_cells``), else 0.
    layer: index of the layer it belongs to, ``None`` for whole-shower features.
    """

    name: str
    label: str
    log: bool = False
    step: float = 0.0
    layer: int | None = None


def feature_list(geometry: Geometry, *, incident: bool = True) -> list[Feature]:
    """The features :func:`shower_features` computes for ``geometry``, in a fixed order."""
    out = []
    for i, layer in enumerate(geometry.layers):
        n = layer.name
        out += [
            Feature(f"E_{n}", f"energy in {n} [GeV]", log=True, layer=i),
            Feature(f"cx_{n}", f"centroid x in {n} [mm]", layer=i),
            Feature(f"cy_{n}", f"centroid y in {n} [mm]", layer=i),
            Feature(f"wx_{n}", f"width x in {n} [mm]", layer=i),
            Feature(f"wy_{n}", f"width y in {n} [mm]", layer=i),
            Feature(f"sparsity_{n}", f"non-zero voxel fraction in {n}", step=1.0 / layer.n_cells, layer=i),
        ]
    out.append(Feature("E_dep", "deposited energy [GeV]", log=True))
    if incident:
        out.append(Feature("E_dep/E_inc", "deposited / incident energy"))
    return out


def shower_features(showers: Showers, *, threshold: float = 0.0) -> dict[str, np.ndarray]:
    """Compute every feature of :func:`feature_list` for ``showers``: name -> ``(N,)`` float64 array.

    ``threshold`` (GeV) only enters the sparsity: a voxel counts as non-zero when its energy exceeds it.
    Centroids and widths of empty layers are NaN (see the module docstring).
    """
    if threshold < 0:
        raise InputError(f"the sparsity threshold must be >= 0 GeV, got {threshold}")
    geometry = showers.geometry
    voxels = np.asarray(showers.voxels, dtype=np.float64)
    out: dict[str, np.ndarray] = {}
    for layer, sl in zip(geometry.layers, geometry.layer_slices, strict=True):
        cells = voxels[:, sl]
        x, y = layer.cell_centers_mm()
        energy = cells.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            weights = cells / energy[:, None]
        weights[energy <= 0] = np.nan
        cx, cy = weights @ x, weights @ y
        wx = np.sqrt(np.maximum(weights @ (x * x) - cx * cx, 0.0))
        wy = np.sqrt(np.maximum(weights @ (y * y) - cy * cy, 0.0))
        n = layer.name
        out[f"E_{n}"] = energy
        out[f"cx_{n}"], out[f"cy_{n}"] = cx, cy
        out[f"wx_{n}"], out[f"wy_{n}"] = wx, wy
        out[f"sparsity_{n}"] = (cells > threshold).mean(axis=1)
    out["E_dep"] = voxels.sum(axis=1)
    if showers.incident_energy is not None:
        out["E_dep/E_inc"] = out["E_dep"] / showers.incident_energy
    return out
