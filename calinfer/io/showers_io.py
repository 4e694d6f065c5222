"""Format-independent shower reading and writing: chooses ROOT or HDF5, checks geometry, validates every chunk."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from calinfer.errors import GeometryMismatchError, InputError
from calinfer.geometry import GEOMETRIES, Geometry, get_geometry
from calinfer.io.hdf5 import HDF5_SUFFIXES, Hdf5Reader, read_hdf5_metadata, write_hdf5
from calinfer.io.root import RootReader, RootTreeWriter, open_root_file, read_root_metadata
from calinfer.io.source import FileInfo, check_readable
from calinfer.io.validation import NegativeEnergyWarning, validate_incident_energy, validate_voxels
from calinfer.showers import Showers

__all__ = [
    "file_format",
    "inspect_file",
    "iterate_showers",
    "matching_geometries",
    "open_reader",
    "read_metadata",
    "read_showers",
    "resolve_geometry",
    "write_showers",
]

_ROOT_SUFFIXES = {".root"}
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def file_format(path: str | os.PathLike, *, sniff: bool = True) -> str:
    """``"root"`` or ``"hdf5"`` from the suffix, else (``sniff``) from the first bytes of an existing file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in _ROOT_SUFFIXES:
        return "root"
    if suffix in HDF5_SUFFIXES:
        return "hdf5"
    if sniff and path.is_file():
        with path.open("rb") as handle:
            head = handle.read(2048 + 8)
        if head.startswith(b"root"):
            return "root"
        if any(head[offset : offset + 8] == _HDF5_SIGNATURE for offset in (0, 512, 1024, 2048)):
            return "hdf5"
    raise InputError(
        f"{path}: unknown file format; use a .root file (TTree) or an .h5/.hdf5 file "
        "(CaloChallenge or calinfer layout)"
    )


def open_reader(
    path: str | os.PathLike,
    *,
    tree: str = "showers",
    energy_branch: str | None = "incident_energy",
    voxel_branch: str = "voxels",
    layer_branches: Sequence[str] | None = None,
    extra_branches: Sequence[str] | str = (),
) -> RootReader | Hdf5Reader:
    """Open a shower file and check its structure; the reader has ``.info``, ``.chunks()`` and ``.close()``."""
    path = check_readable(path)
    options = dict(
        energy_branch=energy_branch,
        voxel_branch=voxel_branch,
        layer_branches=layer_branches,
        extra_branches=extra_branches,
    )
    if file_format(path) == "root":
        return RootReader(path, tree=tree, **options)
    return Hdf5Reader(path, **options)


def inspect_file(path: str | os.PathLike, **options) -> FileInfo:
    """Describe a shower file (entries, voxels per shower, layout, metadata) without reading the showers.

    ``options`` are those of :func:`open_reader`.
    """
    reader = open_reader(path, **options)
    reader.close()
    return reader.info


def matching_geometries(n_voxels: int) -> list[Geometry]:
    """Preset geometries with ``n_voxels`` voxels per shower."""
    return [g for g in GEOMETRIES.values() if g.n_voxels == n_voxels]


def resolve_geometry(geometry: str | Geometry | None, info: FileInfo) -> Geometry:
    """The geometry to read ``info.path`` with, checked against the recorded id and the voxel count.

    ``geometry=None`` takes the geometry recorded in the file, or else the only preset with the file's
    number of voxels per shower.
    """
    where = f"{info.path} (entries 0-{info.n_entries - 1})"
    recorded = info.metadata.get("geometry")
    if geometry is None:
        if recorded is not None:
            try:
                chosen = get_geometry(recorded)
            except InputError as err:
                raise InputError(f"{where} records geometry {recorded!r}, which is not a preset: {err}") from err
        else:
            matches = matching_geometries(info.n_voxels)
            if len(matches) != 1:
                names = ", ".join(g.name for g in matches) or "none"
                raise InputError(
                    f"{where}: {info.n_voxels} voxels per shower match the preset geometries: {names}; "
                    "pass the geometry explicitly"
                )
            chosen = matches[0]
    else:
        chosen = get_geometry(geometry)
        if recorded is not None and recorded != chosen.id:
            raise GeometryMismatchError(
                f"{where} was written for geometry {recorded!r}, but geometry {chosen.id!r} was requested; "
                f"read it with geometry={info.metadata.get('geometry_name', recorded)!r}"
            )
    if info.per_layer:
        if len(info.voxel_columns) != chosen.n_layers:
            raise GeometryMismatchError(
                f"{where}: {len(info.voxel_columns)} layer branches given, geometry {chosen.name!r} has "
                f"{chosen.n_layers} layers ({', '.join(layer.name for layer in chosen.layers)})"
            )
        for name, size, layer in zip(info.voxel_columns, info.column_sizes, chosen.layers, strict=True):
            if size != layer.n_cells:
                raise GeometryMismatchError(
                    f"{where}: branch {name!r} has {size} voxels per shower, but {layer.name} of geometry "
                    f"{chosen.name!r} has {layer.n_cells} ({layer.shape[0]} x {layer.shape[1]}); give the layer "
                    "branches in the geometry's layer order"
                )
    else:
        chosen.check_voxel_count(info.n_voxels, what=f"{where}, {info.voxel_columns[0]!r}")
    return chosen


def _check_range(info: FileInfo, step_size: int, entry_start: int, entry_stop: int | None) -> int:
    if step_size < 1:
        raise InputError(f"step_size must be a positive number of entries, got {step_size}")
    stop = info.n_entries if entry_stop is None else min(int(entry_stop), info.n_entries)
    if not 0 <= entry_start < stop:
        raise InputError(
            f"{info.path}: entry range [{entry_start}, {entry_stop}) is empty or outside 0-{info.n_entries - 1}"
        )
    return stop


def _showers(
    reader: RootReader | Hdf5Reader,
    geometry: Geometry,
    *,
    step_size: int,
    entry_start: int,
    entry_stop: int,
    clip_negative: float,
    progress: bool,
) -> Iterator[tuple[Showers, int]]:
    """Yield validated chunks and how many negative voxel values were clipped in each; closes the reader."""
    from tqdm.auto import tqdm

    source = str(reader.info.path)
    try:
        with tqdm(
            total=entry_stop - entry_start, unit="shower", desc=reader.info.path.name, disable=not progress
        ) as bar:
            for chunk in reader.chunks(step_size, entry_start, entry_stop):
                voxels, n_clipped = validate_voxels(
                    chunk.voxels, source=source, start=chunk.start, clip_negative=clip_negative
                )
                energy = None
                if chunk.energy is not None:
                    energy = validate_incident_energy(chunk.energy, source=source, start=chunk.start)
                showers = Showers(
                    voxels=voxels,
                    geometry=geometry,
                    incident_energy=energy,
                    extra=chunk.extra,
                    source=source,
                    entry_start=chunk.start,
                )
                bar.update(len(showers))
                yield showers, n_clipped
    finally:
        reader.close()


def _warn_clipped(source: str, start: int, stop: int, n_clipped: int, clip_negative: float) -> None:
    warnings.warn(
        f"{source} (entries {start}-{stop - 1}): set {n_clipped} negative voxel energies >= -{clip_negative:g} GeV "
        "to zero",
        NegativeEnergyWarning,
        stacklevel=3,
    )


def _prepare(path, geometry, step_size, entry_start, entry_stop, options) -> tuple:
    reader = open_reader(path, **options)
    try:
        chosen = resolve_geometry(geometry, reader.info)
        stop = _check_range(reader.info, step_size, entry_start, entry_stop)
    except BaseException:
        reader.close()
        raise
    return reader, chosen, stop


def iterate_showers(
    path: str | os.PathLike,
    geometry: str | Geometry | None = "calogan",
    *,
    step_size: int = 10_000,
    entry_start: int = 0,
    entry_stop: int | None = None,
    tree: str = "showers",
    energy_branch: str | None = "incident_energy",
    voxel_branch: str = "voxels",
    layer_branches: Sequence[str] | None = None,
    extra_branches: Sequence[str] | str = (),
    clip_negative: float = 0.0,
    progress: bool = False,
) -> Iterator[Showers]:
    """Read a shower file in chunks of at most ``step_size`` entries (bounded memory); yields :class:`Showers`.

    The file's structure and geometry are checked at call time; every chunk is validated when read
    (NaN/inf, negative voxel energies, non-positive incident energies). Energies are returned in GeV.
    See :func:`read_showers` for the options.
    """
    options = dict(
        tree=tree,
        energy_branch=energy_branch,
        voxel_branch=voxel_branch,
        layer_branches=layer_branches,
        extra_branches=extra_branches,
    )
    reader, chosen, stop = _prepare(path, geometry, step_size, entry_start, entry_stop, options)

    def generate() -> Iterator[Showers]:
        chunks = _showers(
            reader,
            chosen,
            step_size=step_size,
            entry_start=entry_start,
            entry_stop=stop,
            clip_negative=clip_negative,
            progress=progress,
        )
        for showers, n_clipped in chunks:
            if n_clipped:
                end = showers.entry_start + len(showers)
                _warn_clipped(showers.source, showers.entry_start, end, n_clipped, clip_negative)
            yield showers

    return generate()


def read_showers(
    path: str | os.PathLike,
    geometry: str | Geometry | None = "calogan",
    *,
    tree: str = "showers",
    energy_branch: str | None = "incident_energy",
    voxel_branch: str = "voxels",
    layer_branches: Sequence[str] | None = None,
    extra_branches: Sequence[str] | str = (),
    clip_negative: float = 0.0,
    progress: bool = False,
    entry_start: int = 0,
    entry_stop: int | None = None,
    step_size: int = 100_000,
) -> Showers:
    """Read showers (GeV) from a ROOT TTree or an HDF5 file (CaloChallenge MeV or calinfer GeV layout).

    Parameters
    ----------
    path: ``.root`` or ``.h5``/``.hdf5`` file (other suffixes are recognised by content).
    geometry: preset name, id or :class:`Geometry`; ``None`` uses the geometry recorded in the file or the
        only preset with the file's voxel count. A recorded geometry id must match.
    tree: TTree name (ROOT only).
    energy_branch: incident energy branch/dataset in GeV; ``None`` for data without incident energy.
    voxel_branch: flat voxel array branch/dataset in GeV, in the geometry's voxel order.
    layer_branches: instead of ``voxel_branch``, one branch per layer in the geometry's layer order; their
        per-layer sizes are checked and they are concatenated.
    extra_branches: truth branches to read into ``Showers.extra``; ``"*"`` for all other branches.
    clip_negative: voxel energies in ``[-clip_negative, 0)`` GeV are set to zero with a
        :class:`NegativeEnergyWarning`; lower values are an error.
    progress: show a tqdm progress bar.
    entry_start, entry_stop: entry range to read.
    step_size: entries read per chunk.
    """
    options = dict(
        tree=tree,
        energy_branch=energy_branch,
        voxel_branch=voxel_branch,
        layer_branches=layer_branches,
        extra_branches=extra_branches,
    )
    reader, chosen, stop = _prepare(path, geometry, step_size, entry_start, entry_stop, options)
    parts, clipped = [], 0
    for showers, n_clipped in _showers(
        reader,
        chosen,
        step_size=step_size,
        entry_start=entry_start,
        entry_stop=stop,
        clip_negative=clip_negative,
        progress=progress,
    ):
        parts.append(showers)
        clipped += n_clipped
    if clipped:
        _warn_clipped(str(reader.info.path), entry_start, stop, clipped, clip_negative)
    return parts[0] if len(parts) == 1 else Showers.concatenate(parts)


def write_showers(
    path: str | os.PathLike,
    showers: Showers,
    *,
    tree: str = "showers",
    metadata: dict | None = None,
    layout: str = "calinfer",
    inputs: Iterable[str | os.PathLike | None] = (),
) -> Path:
    """Write showers to a new ``.root`` (TTree ``tree``) or ``.h5`` file, atomically, one entry per shower in order.

    Branches: ``incident_energy`` (GeV, if known), ``voxels`` (GeV, fixed-size array) and every array of
    ``showers.extra``. The metadata JSON records the geometry id, creator and version plus ``metadata``.
    ``layout`` (HDF5 only) is ``"calinfer"`` (GeV) or ``"calochallenge"`` (MeV). The file the showers were
    read from and ``inputs`` are never overwritten.
    """
    protected = [*inputs, showers.source]
    if file_format(path, sniff=False) == "hdf5":
        return write_hdf5(path, showers, layout=layout, metadata=metadata, inputs=protected)
    clash = {"voxels", "incident_energy"} & set(showers.extra)
    if clash:
        raise InputError(f"{path}: extra arrays {sorted(clash)} clash with the shower branches; rename them")
    branches: dict[str, np.ndarray] = {}
    if showers.incident_energy is not None:
        branches["incident_energy"] = showers.incident_energy
    branches["voxels"] = showers.voxels
    branches.update({name: np.asarray(values) for name, values in showers.extra.items()})
    meta = {**(metadata or {}), "geometry": showers.geometry.id, "geometry_name": showers.geometry.name, "units": "GeV"}
    with RootTreeWriter(path, tree=tree, metadata=meta, inputs=protected) as writer:
        writer.extend(branches)
    return Path(path)


def read_metadata(path: str | os.PathLike) -> dict:
    """The calinfer metadata (JSON object) stored in a ROOT or HDF5 file, ``{}`` if it has none."""
    path = check_readable(path)
    if file_format(path) == "hdf5":
        return read_hdf5_metadata(path)
    handle = open_root_file(path)
    try:
        return read_root_metadata(handle, path)
    finally:
        handle.close()
