"""HDF5 shower files: the CaloChallenge layout (MeV) and the compressed calinfer layout (GeV).

* CaloChallenge: datasets ``incident_energies`` ``(N, 1)`` and ``showers`` ``(N, n_voxels)``, both in MeV.
* calinfer: ``incident_energy`` ``(N,)`` and ``voxels`` ``(N, n_voxels)`` in GeV, gzip + shuffle compressed,
  truth arrays in the group ``extra/``, the metadata JSON in the root attribute ``calinfer_metadata``.

The reader detects the layout from the dataset names.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from calinfer.errors import CalinferError, InputError
from calinfer.io.atomic import atomic_output
from calinfer.io.metadata import METADATA_KEY, build_metadata, dumps_metadata, loads_metadata
from calinfer.io.source import Chunk, FileInfo, check_readable, column_to_matrix
from calinfer.io.validation import entries_label
from calinfer.showers import Showers

__all__ = [
    "CALOCHALLENGE_ENERGY",
    "CALOCHALLENGE_VOXELS",
    "HDF5_SUFFIXES",
    "Hdf5Reader",
    "read_hdf5_metadata",
    "write_hdf5",
]

CALOCHALLENGE_ENERGY = "incident_energies"
CALOCHALLENGE_VOXELS = "showers"
HDF5_SUFFIXES = frozenset({".h5", ".hdf5", ".hdf", ".he5"})
"""File name suffixes of HDF5 files (lower case)."""
_MEV_PER_GEV = 1000.0
_CHUNK_BYTES = 1024 * 1024


def _datasets(group, prefix: str = "") -> list[str]:
    import h5py

    names = []
    for key, item in group.items():
        if isinstance(item, h5py.Dataset):
            names.append(prefix + key)
        elif isinstance(item, h5py.Group):
            names.extend(_datasets(item, f"{prefix}{key}/"))
    return names


class Hdf5Reader:
    """Reads showers from an HDF5 file (either layout) in chunks of entries; same interface as the ROOT reader.

    ``voxel_branch``, ``energy_branch`` and ``layer_branches`` name datasets of the calinfer layout; for a
    CaloChallenge file the defaults map to ``showers`` and ``incident_energies`` and energies are converted
    from MeV to GeV. Extra datasets are looked up in ``extra/`` first; ``extra_branches="*"`` reads them all.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        energy_branch: str | None = "incident_energy",
        voxel_branch: str = "voxels",
        layer_branches: Sequence[str] | None = None,
        extra_branches: Sequence[str] | str = (),
    ) -> None:
        self.path = check_readable(path)
        self._file = self.open_file(self.path)
        try:
            self.info = self._describe(energy_branch, voxel_branch, layer_branches, extra_branches)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def open_file(path: Path):
        """Open ``path`` read-only with h5py; unreadable files raise :class:`InputError`."""
        import h5py

        try:
            return h5py.File(path, "r")
        except Exception as err:
            raise InputError(
                f"{path}: cannot be opened as an HDF5 file ({type(err).__name__}: {err}); "
                "the file is corrupt, truncated or not an HDF5 file"
            ) from err

    def _describe(self, energy_branch, voxel_branch, layer_branches, extra_branches) -> FileInfo:
        f = self._file
        available = _datasets(f)
        layout, unit = "calinfer", "GeV"
        if layer_branches:
            voxel_columns = list(layer_branches)
        elif voxel_branch in available:
            voxel_columns = [voxel_branch]
        elif voxel_branch == "voxels" and CALOCHALLENGE_VOXELS in available:
            layout, unit = "calochallenge", "MeV"
            voxel_columns = [CALOCHALLENGE_VOXELS]
            if energy_branch == "incident_energy":
                energy_branch = CALOCHALLENGE_ENERGY
        else:
            voxel_columns = [voxel_branch]
        used = [*voxel_columns, *([energy_branch] if energy_branch else [])]
        if extra_branches == "*":
            extras = [d for d in available if d not in used]
        else:
            extras = [f"extra/{e}" if f"extra/{e}" in available and e not in available else e for e in extra_branches]
        missing = [d for d in [*used, *extras] if d not in available]
        if missing:
            raise InputError(
                f"{self.path}: no dataset {', '.join(map(repr, missing))}; its datasets are: "
                f"{', '.join(available) or 'none'}. Expected the calinfer layout (voxels, incident_energy) or the "
                "CaloChallenge layout (showers, incident_energies); name datasets with voxel_branch=/energy_branch="
            )
        lengths = {d: len(f[d]) if f[d].shape else 0 for d in [*used, *extras]}
        n = lengths[voxel_columns[0]]
        wrong = {d: m for d, m in lengths.items() if m != n}
        if wrong:
            raise InputError(f"{self.path}: datasets have different numbers of entries: {lengths}")
        if n == 0:
            raise InputError(f"{self.path}: dataset {voxel_columns[0]!r} has no entries")
        return FileInfo(
            path=self.path,
            format="hdf5",
            layout=layout,
            container="/",
            n_entries=n,
            voxel_columns=voxel_columns,
            column_sizes=[int(np.prod(f[d].shape[1:], dtype=int)) for d in voxel_columns],
            energy_column=energy_branch,
            extra_columns=extras,
            available=available,
            per_layer=bool(layer_branches),
            metadata=_metadata(f, self.path),
            stored_unit=unit,
        )

    def chunks(self, step_size: int, entry_start: int = 0, entry_stop: int | None = None) -> Iterator[Chunk]:
        """Yield :class:`Chunk` objects of at most ``step_size`` entries from ``[entry_start, entry_stop)``."""
        info = self.info
        stop = info.n_entries if entry_stop is None else min(entry_stop, info.n_entries)
        for start in range(entry_start, stop, step_size):
            end = min(start + step_size, stop)
            yield self._chunk(start, end)

    def _chunk(self, start: int, stop: int) -> Chunk:
        info, f = self.info, self._file
        label = entries_label(str(self.path), start, stop)
        try:
            parts = [
                column_to_matrix(f[name][start:stop], size=size, name=name, label=label, start=start)
                for name, size in zip(info.voxel_columns, info.column_sizes, strict=True)
            ]
            energy = None
            if info.energy_column is not None:
                raw = f[info.energy_column][start:stop]
                energy = column_to_matrix(raw, size=1, name=info.energy_column, label=label, start=start)
            extra = {name.removeprefix("extra/"): f[name][start:stop] for name in info.extra_columns}
        except CalinferError:
            raise
        except Exception as err:
            raise InputError(
                f"{label}: cannot read the data ({type(err).__name__}: {err}); the file is corrupt"
            ) from err
        voxels = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        if info.stored_unit == "MeV":
            voxels = voxels / _MEV_PER_GEV
            energy = None if energy is None else energy / _MEV_PER_GEV
        return Chunk(start, stop, voxels, energy, extra)

    def close(self) -> None:
        self._file.close()


def _dataset(group, name: str, data: np.ndarray) -> None:
    row_bytes = max(1, data.itemsize * int(np.prod(data.shape[1:], dtype=int)))
    rows = max(1, min(len(data), _CHUNK_BYTES // row_bytes))
    group.create_dataset(
        name,
        data=data,
        chunks=(rows, *data.shape[1:]),
        maxshape=(None, *data.shape[1:]),
        compression="gzip",
        compression_opts=4,
        shuffle=True,
    )


def write_hdf5(
    path: str | os.PathLike,
    showers: Showers,
    *,
    layout: str = "calinfer",
    metadata: dict | None = None,
    inputs: Iterable[str | os.PathLike | None] = (),
) -> Path:
    """Write ``showers`` to a new HDF5 file atomically, in the ``"calinfer"`` (GeV) or ``"calochallenge"`` (MeV) layout.

    Truth arrays of ``showers.extra`` go to the group ``extra/`` in both layouts; the metadata JSON (geometry
    id, creator, version, number of entries plus ``metadata``) to the root attribute ``calinfer_metadata``.
    """
    import h5py

    if Path(path).suffix.lower() == ".root":
        raise InputError(f"{path}: this writes an HDF5 file, which a .root name would disguise; name the output .h5")
    if layout not in ("calinfer", "calochallenge"):
        raise InputError(f"unknown HDF5 layout {layout!r}; use 'calinfer' or 'calochallenge'")
    if layout == "calochallenge" and showers.incident_energy is None:
        raise InputError(f"{path}: the CaloChallenge layout needs incident energies, but the showers have none")
    meta = build_metadata(
        {
            **(metadata or {}),
            "geometry": showers.geometry.id,
            "geometry_name": showers.geometry.name,
            "n_entries": len(showers),
            "layout": layout,
            "units": "MeV" if layout == "calochallenge" else "GeV",
        }
    )
    for name, values in showers.extra.items():
        if np.asarray(values).dtype.kind not in "biuf":
            raise InputError(f"{path}: extra array {name!r} of dtype {np.asarray(values).dtype} cannot be written")
    with atomic_output(path, inputs=[*inputs, showers.source]) as tmp, h5py.File(tmp, "w") as f:
        if layout == "calochallenge":
            _dataset(f, CALOCHALLENGE_ENERGY, (showers.incident_energy * _MEV_PER_GEV).reshape(-1, 1))
            _dataset(f, CALOCHALLENGE_VOXELS, showers.voxels * _MEV_PER_GEV)
        else:
            _dataset(f, "voxels", showers.voxels)
            if showers.incident_energy is not None:
                _dataset(f, "incident_energy", showers.incident_energy)
        if showers.extra:
            group = f.create_group("extra")
            for name, values in showers.extra.items():
                _dataset(group, name, np.asarray(values))
        f.attrs[METADATA_KEY] = dumps_metadata(meta)
    return Path(path)


def read_hdf5_metadata(path: str | os.PathLike) -> dict:
    """The calinfer metadata of an HDF5 file, ``{}`` if it has none."""
    with Hdf5Reader.open_file(check_readable(path)) as f:
        return _metadata(f, Path(path))


def _metadata(f, path: Path) -> dict:
    text = f.attrs.get(METADATA_KEY)
    if text is None:
        return {}
    return loads_metadata(text.decode() if isinstance(text, bytes) else str(text), str(path))
