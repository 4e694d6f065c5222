"""Command-line glue for many files: the shared options of ``calinfer calibrate`` / ``calinfer anomaly``.

:func:`scale_out_options` adds ``--out-dir``, ``--scheduler``, ``--dask-workers``, ``--jobs`` and
``--retries`` and ``--overwrite`` to a command whose first argument is ``FILES...``; :meth:`ScaleOut.from_cli`
decides whether the command runs the classic single-file path or :func:`~calinfer.distributed.run_over_files`, and
:meth:`ScaleOut.run` runs, reports and turns failures into a non-zero exit. Only click is imported here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

__all__ = ["ScaleOut", "scale_out_options"]


def scale_out_options(command: Callable) -> Callable:
    """Add the many-files / cluster options (they arrive as keyword arguments, see :meth:`ScaleOut.from_cli`)."""
    options = [
        click.option(
            "--out-dir",
            type=click.Path(file_okay=False),
            default=None,
            help="Output directory for many input files: DIR/<input stem>.<tree>.root, one per input.",
        ),
        click.option(
            "--scheduler",
            metavar="ADDRESS",
            default=None,
            help="Run on a Dask cluster: scheduler address (tcp://host:8786) or scheduler file.",
        ),
        click.option(
            "--dask-workers",
            type=click.IntRange(min=1),
            default=None,
            help="Run on a local Dask cluster of N single-threaded worker processes.",
        ),
        click.option(
            "--jobs",
            "-j",
            type=click.IntRange(min=1),
            default=None,
            help="Local worker processes without Dask [default: all cores; 1: in this process].",
        ),
        click.option(
            "--retries",
            type=click.IntRange(min=0),
            default=2,
            show_default=True,
            help="Extra attempts for a chunk lost to a failed worker.",
        ),
        click.option(
            "--overwrite",
            is_flag=True,
            help="Replace output files that exist already (default: refuse, nothing is written).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@dataclass
class ScaleOut:
    """The inputs and outputs of a command run and where it runs (``distributed``: not the single-file path)."""

    files: list[Path]
    out: str | None
    out_dir: str | None
    scheduler: str | None
    dask_workers: int | None
    jobs: int | None
    retries: int
    overwrite: bool = False

    @property
    def distributed(self) -> bool:
        """Whether to run through :func:`run_over_files` (many files, an output directory, or workers asked for)."""
        return len(self.files) > 1 or any(
            v is not None for v in (self.out_dir, self.scheduler, self.dask_workers, self.jobs)
        )

    @classmethod
    def from_cli(
        cls,
        files: tuple[str, ...],
        out: str | None,
        *,
        out_dir: str | None = None,
        scheduler: str | None = None,
        dask_workers: int | None = None,
        jobs: int | None = None,
        retries: int = 2,
        overwrite: bool = False,
    ) -> ScaleOut:
        """Expand ``files`` (paths and quoted glob patterns) and check the output options."""
        from calinfer.distributed.runner import expand_inputs
        from calinfer.errors import CalinferError

        if scheduler is not None and dask_workers is not None:
            raise click.UsageError("give either --scheduler or --dask-workers, not both")
        if out is not None and out_dir is not None:
            raise click.UsageError("give either --out (one input file) or --out-dir (any number), not both")
        for item in files:
            if Path(item).is_dir():
                raise click.BadParameter(
                    f"{item} is a directory; give the shower files in it, e.g. '{Path(item) / '*.root'}' (quoted)",
                    param_hint="FILES",
                )
        try:
            paths = expand_inputs(files)
        except CalinferError as err:
            raise click.BadParameter(str(err), param_hint="FILES") from err
        if out is None and out_dir is None:
            raise click.UsageError("name the output: --out FILE for one input file, or --out-dir DIR")
        if out is not None and len(paths) > 1:
            raise click.UsageError(f"--out takes one input file but {len(paths)} were given; use --out-dir DIR")
        if out is not None and Path(out).suffix.lower() != ".root":
            raise click.BadParameter(
                f"{out}: the output is a ROOT file (one TTree); give it a .root name so that readers recognise it",
                param_hint="--out",
            )
        return cls(paths, out, out_dir, scheduler, dask_workers, jobs, retries, overwrite)

    def targets(self, tree: str) -> list[Path]:
        """The output file of every input (``OUT_DIR/<input stem>.<tree>.root`` with ``--out-dir``)."""
        if self.out is not None:
            return [Path(self.out)]
        return [Path(self.out_dir) / f"{f.stem}.{tree}.root" for f in self.files]  # type: ignore[arg-type]

    @contextlib.contextmanager
    def reserve(self, tree: str) -> Iterator[None]:
        """Check and lock every output before the work starts (see :func:`calinfer.io.atomic.reserve_outputs`).

        Existing outputs are an error without ``--overwrite``; a second run on the same outputs fails at once;
        an ``--out-dir`` created here is removed again if the run fails before writing into it.
        """
        from calinfer.errors import InputError
        from calinfer.io.atomic import reserve_outputs

        created = None
        if self.out_dir is not None:
            directory = Path(self.out_dir)
            if directory.exists() and not directory.is_dir():
                raise InputError(f"output directory {directory} is an existing file")
            if not directory.exists():
                try:
                    directory.mkdir(parents=True)
                except OSError as err:
                    raise InputError(f"cannot create output directory {directory} ({err.strerror or err})") from err
                created = directory
        try:
            with reserve_outputs(self.targets(tree), overwrite=self.overwrite, inputs=self.files):
                yield
        except BaseException:
            if created is not None:
                with contextlib.suppress(OSError):
                    created.rmdir()  # only if empty
            raise

    def where(self) -> str:
        """Where the work runs, for the log."""
        if self.scheduler is not None:
            return f"the Dask cluster at {self.scheduler}"
        if self.dask_workers is not None:
            return f"a local Dask cluster of {self.dask_workers} worker processes"
        n = self.jobs or os.cpu_count() or 1
        return "this process" if n == 1 else f"{n} local processes"

    def run(
        self,
        task: Any,
        *,
        chunk_size: int,
        progress: bool = True,
        on_file: Callable[[str, Path, dict], None] | None = None,
    ) -> Any:
        """Run ``task`` over the files, print a summary, raise :class:`click.ClickException` on failures.

        Returns the :class:`~calinfer.distributed.RunReport`.
        """
        from calinfer.distributed.executors import open_executor
        from calinfer.distributed.runner import run_over_files

        options: dict[str, Any] = {
            "out_dir": self.out_dir,
            "outputs": None if self.out_dir is not None else [self.out],
            "chunk_size": chunk_size,
            "retries": self.retries,
            "progress": progress,
            "on_file": on_file,
        }
        click.echo(f"{task.tree}: {len(self.files)} file(s) on {self.where()}", err=True)
        with self.reserve(task.tree):
            if self.scheduler is None and self.dask_workers is None:
                with _interrupt_stops_workers(self.jobs):
                    report = run_over_files(self.files, task, jobs=self.jobs, **options)
            else:
                with _quiet_dask_shutdown(), open_executor(
                    scheduler=self.scheduler, dask_workers=self.dask_workers
                ) as client:
                    report = run_over_files(self.files, task, executor=client, **options)
        rate = report.n_showers / max(report.seconds, 1e-9)
        target = self.out_dir if self.out_dir is not None else self.out
        retried = f", {report.n_retried} chunk(s) retried" if report.n_retried else ""
        click.echo(
            f"wrote {len(report.outputs)} file(s) (tree '{task.tree}', {report.n_showers} showers) to {target} "
            f"in {report.seconds:.1f} s ({rate:.0f} showers/s{retried})"
        )
        report.raise_for_failures()
        return report


class _ShutdownNoise:
    """Logging filter: drops the nanny's "killing" messages that every local Dask cluster logs when it closes."""

    def filter(self, record) -> bool:
        text = record.getMessage()
        return not ("killing" in text.lower() or "still alive after" in text)


@contextlib.contextmanager
def _quiet_dask_shutdown() -> Iterator[None]:
    import logging

    logger, noise = logging.getLogger("distributed.nanny"), _ShutdownNoise()
    logger.addFilter(noise)
    try:
        yield
    finally:
        logger.removeFilter(noise)


@contextlib.contextmanager
def _interrupt_stops_workers(jobs: int | None) -> Iterator[None]:
    """Ctrl-C in a run on local worker processes: the workers stop quietly, this process raises KeyboardInterrupt.

    The forkserver the workers fork from is started with SIGINT ignored, which its children inherit (a
    terminal sends SIGINT to every process of the foreground group, and each worker would print a
    traceback); this process terminates them on SIGINT instead (their unfinished chunks are lost, no output
    of an unfinished file is written).
    """
    import multiprocessing
    import multiprocessing.forkserver
    import signal
    import sys
    import threading

    if jobs == 1 or threading.current_thread() is not threading.main_thread():
        yield
        return
    # the resource tracker (started next) cleans up after terminated workers; its "leaked semaphore" note is noise
    quiet = "ignore:resource_tracker:UserWarning"
    if quiet not in sys.warnoptions:
        sys.warnoptions.append(quiet)
    if "forkserver" in multiprocessing.get_all_start_methods():
        from calinfer.distributed.executors import _PRELOAD

        multiprocessing.get_context("forkserver").set_forkserver_preload(_PRELOAD)
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            multiprocessing.forkserver.ensure_running()
        finally:
            signal.signal(signal.SIGINT, previous)

    def stop(signum, frame) -> None:
        for child in multiprocessing.active_children():
            child.terminate()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
