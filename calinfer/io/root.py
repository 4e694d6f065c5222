"""ROOT files through uproot: a chunked TTree reader and an atomic, streaming TTree writer (never RNTuple)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from calinfer.errors import CalinferError, InputError
from calinfer.io.atomic import atomic_output
from calinfer.io.hdf5 import HDF5_SUFFIXES
from calinfer.io.metadata import METADATA_KEY, build_metadata, dumps_metadata, loads_metadata
from calinfer.io.source import Chunk, FileInfo, check_readable, column_to_matrix
from calinfer.io.validation import entries_label

__all__ = ["RootReader", "RootTreeWriter", "open_root_file", "read_root_metadata", "write_tree"]

_BASKET_BYTES = 2 * 1024 * 1024
"""Target uncompressed size of one basket: readers hold at most a few baskets of each branch in memory."""


def open_root_file(path: str | Path):
    """Open a ROOT file for reading with uproot; corrupt, truncated or non-ROOT files raise :class:`InputError`."""
    import uproot

    path = check_readable(path)
    try:
        handle = uproot.open(path, array_cache=None)
    except Exception as err:
        raise InputError(
            f"{path}: cannot be opened as a ROOT file ({type(err).__name__}: {str(err).splitlines()[0]}); "
            "the file is corrupt, truncated or not a ROOT file"
        ) from err
    size = path.stat().st_size
    if size < handle.file.fEND:
        raise InputError(
            f"{path}: the file is truncated ({size} bytes on disk, the header announces {handle.file.fEND}); "
            "it was not written completely"
        )
    return handle


def read_root_metadata(handle, path: str | Path) -> dict:
    """The calinfer metadata of an open ROOT file, ``{}`` if it has none."""
    if METADATA_KEY not in handle.keys(cycle=False):
        return {}
    return loads_metadata(str(handle[METADATA_KEY]), str(path))


def _find_tree(handle, path: Path, name: str):
    classes = handle.classnames(cycle=False)
    trees = sorted(k for k, c in classes.items() if c in ("TTree", "TNtuple"))
    if name not in classes:
        listing = f"its trees are: {', '.join(trees)}" if trees else "it contains no TTree"
        others = sorted(set(classes) - set(trees))
        extra = f" (other objects: {', '.join(others)})" if others else ""
        raise InputError(f"{path}: no tree named {name!r}; {listing}{extra}. Choose one with tree=/--tree")
    if name not in trees:
        raise InputError(f"{path}: {name!r} is a {classes[name]}, not a TTree; calinfer reads TTrees")
    return handle[name]


class RootReader:
    """Reads showers from one TTree in chunks of entries.

    Voxels come from ``voxel_branch`` or are concatenated from ``layer_branches`` (one per layer, in the
    geometry's layer order); branches may be fixed-size arrays or variable-length vectors of constant length.
    ``extra_branches="*"`` reads every other branch (counters of jagged branches excluded).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        tree: str = "showers",
        energy_branch: str | None = "incident_energy",
        voxel_branch: str = "voxels",
        layer_branches: Sequence[str] | None = None,
        extra_branches: Sequence[str] | str = (),
    ) -> None:
        self.path = Path(path)
        self._file = open_root_file(self.path)
        try:
            self._tree = _find_tree(self._file, self.path, tree)
            self.info = self._describe(tree, energy_branch, voxel_branch, layer_branches, extra_branches)
        except BaseException:
            self.close()
            raise

    def _describe(self, tree, energy_branch, voxel_branch, layer_branches, extra_branches) -> FileInfo:
        t = self._tree
        available = list(t.keys())
        voxel_columns = list(layer_branches) if layer_branches else [voxel_branch]
        used = [*voxel_columns, *([energy_branch] if energy_branch else [])]
        if extra_branches == "*":
            counters = {b.count_branch.name for b in t.branches if getattr(b, "count_branch", None) is not None}
            extras = [b for b in t.keys(recursive=False) if b not in used and b not in counters]
        else:
            extras = list(extra_branches)
        missing = [b for b in [*used, *extras] if b not in available]
        if missing:
            raise InputError(
                f"{self.path}: tree {tree!r} has no branch {', '.join(map(repr, missing))}; its branches are: "
                f"{', '.join(available)}. Name them with voxel_branch=/layer_branches=/energy_branch= "
                "(energy_branch=None for data without incident energy)"
            )
        n = int(t.num_entries)
        if n == 0:
            raise InputError(f"{self.path}: tree {tree!r} has no entries")
        sizes = []
        for name in voxel_columns:
            first = self._guarded(lambda name=name: t[name].array(entry_stop=1, library="np"), 0, 1)
            sizes.append(int(np.asarray(first[0]).size))
        return FileInfo(
            path=self.path,
            format="root",
            layout="ttree",
            container=tree,
            n_entries=n,
            voxel_columns=voxel_columns,
            column_sizes=sizes,
            energy_column=energy_branch,
            extra_columns=extras,
            available=available,
            per_layer=bool(layer_branches),
            metadata=read_root_metadata(self._file, self.path),
        )

    def _guarded(self, read, start: int, stop: int):
        try:
            return read()
        except CalinferError:
            raise
        except Exception as err:
            raise InputError(
                f"{entries_label(str(self.path), start, stop)}: cannot read the data "
                f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); the file is corrupt"
            ) from err

    def chunks(self, step_size: int, entry_start: int = 0, entry_stop: int | None = None) -> Iterator[Chunk]:
        """Yield :class:`Chunk` objects of at most ``step_size`` entries from ``[entry_start, entry_stop)``."""
        info = self.info
        stop = info.n_entries if entry_stop is None else min(entry_stop, info.n_entries)
        wanted = set(info.voxel_columns) | set(info.extra_columns) | ({info.energy_column} - {None})
        iterator = self._tree.iterate(
            filter_name=lambda name: name in wanted,
            step_size=step_size,
            entry_start=entry_start,
            entry_stop=stop,
            library="np",
            report=True,
        )
        start = entry_start
        while start < stop:
            end = min(start + step_size, stop)
            try:
                arrays, report = self._guarded(lambda: next(iterator), start, end)
            except StopIteration:
                return
            start, end = int(report.tree_entry_start), int(report.tree_entry_stop)
            yield self._chunk(arrays, start, end)
            start = end

    def _chunk(self, arrays: dict, start: int, stop: int) -> Chunk:
        info = self.info
        label = entries_label(str(self.path), start, stop)
        parts = [
            column_to_matrix(arrays[name], size=size, name=name, label=label, start=start)
            for name, size in zip(info.voxel_columns, info.column_sizes, strict=True)
        ]
        voxels = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        energy = None
        if info.energy_column is not None:
            raw = arrays[info.energy_column]
            energy = column_to_matrix(raw, size=1, name=info.energy_column, label=label, start=start)
        return Chunk(start, stop, voxels, energy, {name: arrays[name] for name in info.extra_columns})

    def close(self) -> None:
        self._file.close()


def _branch_type(name: str, values: np.ndarray) -> np.dtype:
    if values.dtype.kind not in "biuf":
        raise InputError(f"branch {name!r}: cannot write arrays of dtype {values.dtype}; use numeric fixed-size arrays")
    return np.dtype((values.dtype, values.shape[1:])) if values.ndim > 1 else values.dtype


class RootTreeWriter:
    """Streams branches into one TTree of a new ROOT file, atomically (temporary file + rename on success).

    Use as a context manager and call :meth:`extend` once per chunk; every call must give the same
    branches with the same per-entry shapes. The metadata (JSON: creator, version, tree, number of
    entries plus ``metadata``) is stored as a TObjString named ``calinfer_metadata``. ``inputs`` are files
    that must never be overwritten.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        tree: str = "showers",
        metadata: dict | None = None,
        inputs: Iterable[str | os.PathLike | None] = (),
        title: str = "",
    ) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() in HDF5_SUFFIXES:
            raise InputError(
                f"{self.path}: this writes a ROOT file (TTree {tree!r}), which an HDF5 name would disguise "
                "(calinfer and other tools pick the reader by the suffix); name the output .root"
            )
        self.tree = tree
        self.title = title
        self.metadata = dict(metadata or {})
        self.n_entries = 0
        self._inputs = list(inputs)
        self._stack = contextlib.ExitStack()
        self._file = None
        self._tree = None
        self._types: dict[str, np.dtype] | None = None

    def __enter__(self) -> RootTreeWriter:
        import uproot

        tmp = self._stack.enter_context(atomic_output(self.path, inputs=self._inputs))
        try:
            self._file = uproot.recreate(tmp)
        except BaseException:
            self._stack.__exit__(*sys.exc_info())
            raise
        self._stack.callback(self._file.close)
        return self

    def extend(self, branches: dict[str, np.ndarray]) -> None:
        """Append entries: every array has the same length and a numeric dtype."""
        if self._file is None:
            raise RuntimeError("RootTreeWriter.extend called outside its with-block")
        arrays = {name: np.ascontiguousarray(values) for name, values in branches.items()}
        if not arrays:
            raise InputError(f"{self.path}: no branches given to write")
        lengths = {name: len(a) for name, a in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise InputError(f"{self.path}: branches of different lengths cannot form one tree: {lengths}")
        types = {name: _branch_type(name, a) for name, a in arrays.items()}
        if self._types is None:
            self._types = types
            self._tree = self._file.mktree(self.tree, types, title=self.title)
        elif types != self._types:
            raise InputError(f"{self.path}: branches changed between chunks: {self._types} then {types}")
        n = next(iter(lengths.values()))
        per_entry = max(1, sum(a.itemsize * int(np.prod(a.shape[1:])) for a in arrays.values()))
        step = max(1, _BASKET_BYTES // per_entry)
        for i in range(0, n, step):
            self._tree.extend({name: a[i : i + step] for name, a in arrays.items()})
        self.n_entries += n

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._stack.__exit__(exc_type, exc, tb)  # the temporary file is removed, the target left alone
            return
        with self._stack:
            if self._types is None:
                raise InputError(f"{self.path}: nothing was written (no branches given)")
            meta = build_metadata(self.metadata, tree=self.tree, n_entries=self.n_entries)
            self._file[METADATA_KEY] = dumps_metadata(meta)


def write_tree(
    path: str | os.PathLike,
    branches: dict[str, np.ndarray],
    *,
    tree: str,
    metadata: dict | None = None,
    inputs: Iterable[str | os.PathLike | None] = (),
) -> Path:
    """Write ``branches`` (equal-length numeric arrays, one entry per row) as a TTree in a new ROOT file.

    Written atomically; ``inputs`` are files that must not be overwritten (e.g. the file the entries came
    from, when the result is meant as its friend tree). Returns the path written.
    """
    with RootTreeWriter(path, tree=tree, metadata=metadata, inputs=inputs) as writer:
        writer.extend(branches)
    return Path(path)
