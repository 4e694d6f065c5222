"""Atomic output files: write to a temporary file in the target directory, then ``os.replace`` it."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from calinfer.errors import InputError

__all__ = ["atomic_output", "check_not_input"]


def check_not_input(path: str | os.PathLike, inputs: Iterable[str | os.PathLike | None]) -> None:
    """Raise :class:`InputError` if ``path`` is one of the existing files ``inputs`` (never overwritten)."""
    target = Path(path)
    for item in inputs:
        if item is None or not Path(item).is_file():
            continue
        source = Path(item)
        if target.resolve() == source.resolve() or (target.exists() and os.path.samefile(target, source)):
            raise InputError(
                f"refusing to write {target}: it is the input file being read; choose another output path"
            )


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, inputs: Iterable[str | os.PathLike | None] = ()) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on failure it is removed.

    ``inputs`` lists files that must not be overwritten (an :class:`InputError` is raised before anything
    is written). The directory of ``path`` must exist.
    """
    target = Path(path)
    check_not_input(target, inputs)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise InputError(f"cannot write {target}: directory {directory} does not exist")
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
