"""Run a chunk task over many shower files: one friend file per input, entries in input order.

Every file is split into entry ranges of ``chunk_size``; each range is one job on the executor (a local
process pool, in-process, or a Dask cluster). Results are gathered as they finish, put back in entry order,
and every input's output file is written atomically by the calling process as soon as all of its chunks
are in. A job that fails for a transient reason (a lost worker, a broken pool, an I/O error) is submitted
again up to ``retries`` times; a chunk that still fails, or fails with a calinfer error (bad data, which
a retry cannot fix), is reported and only its own file is left unwritten.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import glob
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calinfer.distributed.executors import CompletionQueue, InlineExecutor, process_pool, submit
from calinfer.distributed.tasks import ChunkTask
from calinfer.errors import CalinferError, InputError

__all__ = ["Failure", "FileChunk", "RunReport", "expand_inputs", "output_paths", "plan_chunks", "run_over_files"]

_GLOB_CHARS = set("*?[")


def expand_inputs(patterns: Sequence[str | os.PathLike]) -> list[Path]:
    """Input files from paths and glob patterns (``**`` recursive), in the given order, sorted within a pattern.

    A file named twice is kept once; a pattern without matches or a missing file is an error.
    """
    found: list[Path] = []
    for pattern in patterns:
        text = os.path.expanduser(str(pattern))
        if _GLOB_CHARS & set(text) and not Path(text).exists():
            matches = [Path(m) for m in sorted(glob.glob(text, recursive=True)) if Path(m).is_file()]
            if not matches:
                raise InputError(f"no file matches {text!r}; check the pattern (quote it to let calinfer expand it)")
            found += matches
        elif Path(text).is_file():
            found.append(Path(text))
        else:
            raise InputError(f"{text}: no such file; check the path")
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    if not unique:
        raise InputError("no input files given")
    return list(unique.values())


def output_paths(
    files: Sequence[Path],
    *,
    out_dir: str | os.PathLike | None = None,
    outputs: Sequence[str | os.PathLike] | None = None,
    suffix: str,
) -> list[Path]:
    """The output file of every input: ``outputs`` as given, or ``OUT_DIR/<input stem>.<suffix>.root``.

    ``out_dir`` is created if needed; two inputs that would share an output name, or an output that is
    one of the inputs, are an error.
    """
    from calinfer.io.atomic import check_not_input

    if (out_dir is None) == (outputs is None):
        raise InputError("give either an output directory or one output path per input file")
    if outputs is not None:
        if len(outputs) != len(files):
            raise InputError(f"{len(files)} input files but {len(outputs)} output paths; use an output directory")
        paths = [Path(p) for p in outputs]
    else:
        directory = Path(out_dir)  # type: ignore[arg-type]
        if directory.exists() and not directory.is_dir():
            raise InputError(f"output directory {directory} is an existing file")
        directory.mkdir(parents=True, exist_ok=True)
        paths = [directory / f"{Path(f).stem}.{suffix}.root" for f in files]
    seen: dict[Path, Path] = {}
    for target in paths:
        check_not_input(target, files)
    for source, target in zip(files, paths, strict=True):
        other = seen.setdefault(target.resolve(), Path(source))
        if other != Path(source):
            raise InputError(
                f"inputs {other} and {source} would both be written to {target}; rename one, or run them into "
                "separate output directories"
            )
    return paths


@dataclass(frozen=True)
class FileChunk:
    """Entries ``[start, stop)`` of input number ``file`` (``path``)."""

    file: int
    path: str
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start

    def label(self) -> str:
        return f"{self.path} (entries {self.start}-{self.stop - 1})"


def plan_chunks(path: str, n_entries: int, chunk_size: int, file: int = 0) -> list[FileChunk]:
    """Split ``n_entries`` entries of ``path`` into consecutive chunks of at most ``chunk_size``."""
    if chunk_size < 1:
        raise InputError(f"the chunk size must be a positive number of showers, got {chunk_size}")
    return [FileChunk(file, path, s, min(s + chunk_size, n_entries)) for s in range(0, n_entries, chunk_size)]


@dataclass(frozen=True)
class Failure:
    """A chunk (or, with ``start=None``, a whole file) that could not be processed, after ``attempts`` tries."""

    path: str
    start: int | None
    stop: int | None
    attempts: int
    error: str

    def __str__(self) -> str:
        where = self.path if self.start is None else f"{self.path} (entries {self.start}-{self.stop - 1})"
        tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        return f"{where}{tries}: {self.error}"


@dataclass
class RunReport:
    """What :func:`run_over_files` did: written outputs (input -> output), failures and counts."""

    outputs: dict[str, Path] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    n_files: int = 0
    n_chunks: int = 0
    n_showers: int = 0
    n_retried: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def failed_files(self) -> list[str]:
        return list(dict.fromkeys(f.path for f in self.failures))

    def raise_for_failures(self) -> None:
        """Raise :class:`CalinferError` naming every failed file and chunk (the other outputs stay written)."""
        if self.failures:
            lines = "\n  ".join(str(f) for f in self.failures)
            raise CalinferError(
                f"{len(self.failed_files)} of {self.n_files} files were not processed (their outputs were not "
                f"written; the other {len(self.outputs)} were):\n  {lines}\nfix the cause and rerun those files"
            )


def _describe(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def _retryable(err: BaseException) -> bool:
    """Transient failures (lost workers, broken pools, I/O) are retried; calinfer's own errors are not."""
    return not isinstance(err, CalinferError | TypeError | ValueError)


class _Progress:
    def __init__(self, progress: bool | Callable[[int], None], total: int, desc: str) -> None:
        self._callback = progress if callable(progress) else None
        self._bar = None
        if progress is True:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, unit="shower", desc=desc, smoothing=0.1)

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)
        if self._callback is not None:
            self._callback(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class _Executor:
    """The executor in use; a process pool owned by the run is replaced when one of its workers dies."""

    def __init__(self, executor: Any | None, jobs: int | None) -> None:
        self.owned = executor is None
        self.jobs = jobs
        self.generation = 0
        if executor is not None:
            self.current = executor
        elif jobs == 1:
            self.current = InlineExecutor()
        else:
            self.current = process_pool(jobs)

    def replace_broken(self, generation: int) -> None:
        """Start a fresh pool if the pool of ``generation`` broke (only once per breakage)."""
        if self.owned and generation == self.generation:
            self.current.shutdown(wait=False, cancel_futures=True)
            self.current = process_pool(self.jobs)
            self.generation += 1

    def close(self) -> None:
        if self.owned:
            self.current.shutdown(wait=True, cancel_futures=True)


def _check_result(chunk: FileChunk, branches: Any) -> dict[str, np.ndarray]:
    if not isinstance(branches, dict) or not branches:
        raise InputError(f"{chunk.label()}: the task returned {type(branches).__name__}, not a dict of branches")
    arrays = {name: np.asarray(values) for name, values in branches.items()}
    wrong = {name: len(a) for name, a in arrays.items() if len(a) != len(chunk)}
    if wrong:
        raise InputError(f"{chunk.label()}: the task returned {wrong} entries instead of {len(chunk)}")
    return arrays


def _write(task: ChunkTask, path: str, out: Path, parts: list[dict[str, np.ndarray]]) -> None:
    from calinfer.io import RootTreeWriter

    with RootTreeWriter(out, tree=task.tree, metadata=task.metadata(path), inputs=[path]) as writer:
        for branches in parts:
            writer.extend(branches)


def run_over_files(
    files: Sequence[str | os.PathLike],
    task: ChunkTask,
    *,
    out_dir: str | os.PathLike | None = None,
    outputs: Sequence[str | os.PathLike] | None = None,
    chunk_size: int = 20_000,
    executor: Any | None = None,
    jobs: int | None = None,
    retries: int = 2,
    progress: bool | Callable[[int], None] = False,
    on_file: Callable[[str, Path, dict[str, np.ndarray]], None] | None = None,
) -> RunReport:
    """Apply ``task`` to every shower of ``files`` (paths or glob patterns) and write one output per input.

    Parameters
    ----------
    task: a :class:`~calinfer.distributed.tasks.ChunkTask` (e.g. :class:`CalibrateTask`, :class:`AnomalyTask`).
    out_dir / outputs: write ``OUT_DIR/<stem>.<task.tree>.root``, or to the given paths (one per input).
    chunk_size: showers per job.
    executor: a ``concurrent.futures`` executor or a ``distributed.Client``; ``None``: a process pool of
        ``jobs`` processes (default all cores; ``jobs=1`` runs in this process).
    retries: extra attempts for a chunk that failed for a transient reason.
    progress: ``True`` for a progress bar (showers), or a callable receiving the showers of every finished chunk.
    on_file: called as ``on_file(input, output, branches)`` after each output file is written.

    Input paths are made absolute before they are sent to the workers (``RunReport.outputs`` is keyed by
    them). Returns a :class:`RunReport`; failures are reported there (see :meth:`RunReport.raise_for_failures`),
    never by losing the other files.
    """
    start_time = time.perf_counter()
    if chunk_size < 1:
        raise InputError(f"the chunk size must be a positive number of showers, got {chunk_size}")
    if retries < 0:
        raise InputError(f"retries must be zero or more, got {retries}")
    paths = expand_inputs(files)
    outs = output_paths(paths, out_dir=out_dir, outputs=outputs, suffix=task.tree)
    report = RunReport(n_files=len(paths))
    chunks: list[list[FileChunk]] = []
    for i, path in enumerate(paths):
        where = os.path.abspath(path)  # workers may run in another directory
        try:
            chunks.append(plan_chunks(where, task.entries(where), chunk_size, file=i))
        except CalinferError as err:
            report.failures.append(Failure(where, None, None, 0, str(err)))
            chunks.append([])
    report.n_chunks = sum(len(c) for c in chunks)
    results: list[dict[int, dict[str, np.ndarray]]] = [{} for _ in paths]
    failed = {f.path for f in report.failures}
    pool = _Executor(executor, jobs)
    bar = _Progress(progress, sum(len(c) for file_chunks in chunks for c in file_chunks), desc=task.tree)
    finished = CompletionQueue()
    in_flight: dict[int, Any] = {}

    def send(chunk: FileChunk, attempt: int) -> None:
        key = f"{task.tree}-{chunk.file}-{chunk.start}"
        future = submit(pool.current, task, chunk.path, chunk.start, chunk.stop, key=key, priority=-chunk.file)
        in_flight[id(future)] = future
        finished.add(future, (chunk, attempt, pool.generation))

    completed = False
    try:
        for file_chunks in chunks:
            for chunk in file_chunks:
                send(chunk, 1)
        for future, (chunk, attempt, generation) in finished:
            in_flight.pop(id(future), None)
            try:
                branches = _check_result(chunk, future.result())
            except Exception as err:  # reported per chunk, never allowed to stop the other files
                if isinstance(err, concurrent.futures.BrokenExecutor):
                    pool.replace_broken(generation)
                if _retryable(err) and attempt <= retries:
                    report.n_retried += 1
                    send(chunk, attempt + 1)
                    continue
                report.failures.append(Failure(chunk.path, chunk.start, chunk.stop, attempt, _describe(err)))
                failed.add(chunk.path)
                results[chunk.file].clear()
                continue
            del future  # on Dask, lets the cluster forget the result
            if chunk.path in failed:
                continue
            results[chunk.file][chunk.start] = branches
            bar.update(len(chunk))
            if len(results[chunk.file]) == len(chunks[chunk.file]):
                parts = [results[chunk.file].pop(c.start) for c in chunks[chunk.file]]
                out = outs[chunk.file]
                try:
                    _write(task, chunk.path, out, parts)
                except (CalinferError, OSError) as err:
                    report.failures.append(Failure(chunk.path, None, None, 1, f"writing {out}: {_describe(err)}"))
                    continue
                report.outputs[chunk.path] = out
                report.n_showers += sum(len(c) for c in chunks[chunk.file])
                if on_file is not None:
                    on_file(chunk.path, out, {k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
        completed = True
    finally:
        if not completed:  # interrupted: do not leave chunks running on a shared cluster
            for future in in_flight.values():
                future.cancel()
        bar.close()
        with contextlib.suppress(Exception):
            pool.close()
    report.seconds = time.perf_counter() - start_time
    return report
