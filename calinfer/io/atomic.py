"""Safe output files: atomic writes, no silent clobbering, one writer per output, no stale temporaries.

* :func:`atomic_output` writes to a hidden temporary file ``.NAME.XXXXXXXX.tmp`` next to the target and
  moves it into place only on success. While it writes it holds an exclusive lock on ``.NAME.lock``
  (``flock``, released by the kernel even when the process is killed), so a second writer of the same
  output fails at once instead of silently replacing the first one's result; temporary files left by a
  killed run are removed (with a :class:`StaleTemporaryWarning`) by the next writer of that output.
* Without ``overwrite`` an existing target is never replaced: the check is made before anything is
  written and again, race-free (a hard link that fails if the name exists), when the result is moved in.
* :func:`reserve_outputs` takes the same locks and checks for a whole command run, before the expensive
  work, and sets the overwrite policy of every :func:`atomic_output` inside it (the CLI's ``--overwrite``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from calinfer.errors import InputError

__all__ = [
    "StaleTemporaryWarning",
    "atomic_output",
    "check_not_input",
    "check_output_dir",
    "check_output_file",
    "reserve_outputs",
]

_TMP_CHARS = "[a-z0-9_]{8}"
"""The random part of :func:`tempfile.mkstemp` names."""

_HELD: dict[Path, int] = {}
"""Outputs locked by this process (resolved path -> lock file descriptor)."""

_POLICY = {"overwrite": True}
"""Whether :func:`atomic_output` may replace an existing target when not told (the API default: yes)."""


class StaleTemporaryWarning(UserWarning):
    """A temporary output file left by an interrupted run was removed."""


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


def check_output_file(path: str | os.PathLike, *, overwrite: bool) -> Path:
    """Raise :class:`InputError` unless ``path`` can be written as a new file (or replaced, with ``overwrite``)."""
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise InputError(f"cannot write {target}: it is a directory; give a file name")
    if not directory.is_dir():
        raise InputError(f"cannot write {target}: directory {directory} does not exist")
    if not overwrite and (target.exists() or target.is_symlink()):
        raise InputError(f"refusing to overwrite {target}: the file exists; pass --overwrite to replace it")
    return target


def check_output_dir(path: str | os.PathLike, *, overwrite: bool) -> Path:
    """Raise :class:`InputError` if ``path`` is a file, or (without ``overwrite``) a directory that holds files."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise InputError(f"cannot use {target} as output directory: it is an existing file")
    if not overwrite and target.is_dir():
        held = sorted(p.name for p in target.iterdir() if not p.name.startswith("."))
        if held:
            shown = ", ".join(held[:4]) + (f" and {len(held) - 4} more" if len(held) > 4 else "")
            raise InputError(
                f"refusing to write into {target}: the directory already holds {shown}; pass --overwrite to "
                "replace those files, or choose a new directory"
            )
    return target


def _lock_path(target: Path) -> Path:
    return target.parent / f".{target.name}.lock"


def _acquire(target: Path) -> int:
    """Lock ``target`` for this process (``.NAME.lock`` next to it); raise :class:`InputError` if another holds it."""
    import fcntl

    lock = _lock_path(target)
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise InputError(
                f"cannot write {target}: cannot create files in {lock.parent} ({err.strerror or err})"
            ) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            other = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise InputError(f"cannot lock {lock} ({err.strerror or err})") from err
            who = f" (process {other})" if other else ""
            raise InputError(
                f"{target}: another calinfer run{who} is writing this output right now; wait for it to finish "
                "or choose another output"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino  # not unlinked by a finishing run meanwhile
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            return fd
        os.close(fd)


def _release(target: Path, fd: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_lock_path(target))
    os.close(fd)


def _remove_stale(target: Path) -> None:
    """Remove the temporaries of ``target`` left by killed runs (only called while holding its lock).

    Files ``.NAME.XXXXXXXX.tmp`` (:func:`atomic_output`) and directories ``.NAME.tmp-XXXXXXXX`` /
    ``.NAME.old-XXXXXXXX`` (a surrogate directory being saved or replaced).
    """
    name = re.escape(target.name)
    files = re.compile(rf"\.{name}\.{_TMP_CHARS}\.tmp")
    directories = re.compile(rf"\.{name}\.(tmp|old)-{_TMP_CHARS}")
    directory = target.parent if str(target.parent) else Path(".")
    for item in directory.iterdir():
        is_file = files.fullmatch(item.name) and item.is_file() and not item.is_symlink()
        is_dir = directories.fullmatch(item.name) and item.is_dir() and not item.is_symlink()
        if is_file or is_dir:
            with contextlib.suppress(FileNotFoundError):
                if is_dir:
                    shutil.rmtree(item)
                else:
                    item.unlink()
                warnings.warn(
                    f"removed {item}, a temporary {'directory' if is_dir else 'file'} of {target} left by an "
                    "interrupted run",
                    StaleTemporaryWarning,
                    stacklevel=4,
                )


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    """Hold the lock of ``target`` (re-entrant within this process) and clear its stale temporaries."""
    key = target.resolve()
    if key in _HELD:
        yield
        return
    fd = _acquire(target)
    _HELD[key] = fd
    try:
        _remove_stale(target)
        yield
    finally:
        del _HELD[key]
        _release(target, fd)


def _move_into_place(tmp: Path, target: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target)  # fails if the name exists: no clobbering even against other programs
    except FileExistsError:
        raise InputError(
            f"{target} was created by another program while this run was writing it; it was left alone and this "
            "result was not saved"
        ) from None
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if target.exists():  # a file system without hard links: check, then rename
            raise InputError(
                f"refusing to overwrite {target}: the file exists; pass --overwrite to replace it"
            ) from None
        os.replace(tmp, target)
        return
    tmp.unlink()


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike,
    *,
    inputs: Iterable[str | os.PathLike | None] = (),
    overwrite: bool | None = None,
) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it becomes ``path``, on failure it is removed.

    ``inputs`` lists files that must not be overwritten (an :class:`InputError` is raised before anything
    is written). The directory of ``path`` must exist. ``overwrite``: whether an existing ``path`` may be
    replaced (default: the policy of an enclosing :func:`reserve_outputs`, else yes). Another process
    writing the same ``path`` at the same time is an :class:`InputError`.
    """
    target = Path(path)
    allowed = _POLICY["overwrite"] if overwrite is None else overwrite
    check_not_input(target, inputs)
    check_output_file(target, overwrite=allowed)
    directory = target.parent if str(target.parent) else Path(".")
    with _locked(target):
        check_output_file(target, overwrite=allowed)  # again, now that no calinfer run can create it
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            yield tmp
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            _move_into_place(tmp, target, allowed)
        finally:
            if tmp.exists():
                tmp.unlink()


@contextlib.contextmanager
def reserve_outputs(
    files: Iterable[str | os.PathLike] = (),
    directories: Iterable[str | os.PathLike] = (),
    *,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike | None] = (),
) -> Iterator[None]:
    """Check and lock the outputs of a whole run before it starts (a command line tool's outputs).

    ``files`` must be new (or, with ``overwrite``, may be replaced); ``directories`` must not exist or hold no
    files yet (with ``overwrite``: any) and are created. Every output is locked until the block ends, so a
    second run on one of them fails at once; stale temporary files are removed. Inside the block
    :func:`atomic_output` follows ``overwrite``. Nothing is created when a check fails.
    """
    files = [Path(f) for f in files]
    directories = [Path(d) for d in directories]
    inputs = list(inputs)
    for target in files:
        check_not_input(target, inputs)
        check_output_file(target, overwrite=overwrite)
    for target in directories:
        check_output_dir(target, overwrite=overwrite)
        parent = target.parent if str(target.parent) else Path(".")
        if not parent.is_dir():
            raise InputError(f"cannot create {target}: directory {parent} does not exist")
    old = _POLICY["overwrite"]
    with contextlib.ExitStack() as stack:
        for target in [*files, *directories]:
            stack.enter_context(_locked(target))
        for target in files:
            check_output_file(target, overwrite=overwrite)
        for target in directories:
            check_output_dir(target, overwrite=overwrite)
        created = [target for target in directories if not target.exists()]
        for target in directories:
            try:
                target.mkdir(exist_ok=True)
            except OSError as err:
                raise InputError(f"cannot create {target} ({err.strerror or err})") from err
        _POLICY["overwrite"] = overwrite
        stack.callback(_POLICY.__setitem__, "overwrite", old)
        try:
            yield
        except BaseException:
            for target in created:  # a failed run leaves no empty directory behind
                with contextlib.suppress(OSError):
                    target.rmdir()
            raise
