"""Executors: in-process, a local process pool, or Dask (a ``distributed.Client``), behind one small interface.

Everything in :mod:`calinfer.distributed` needs only ``executor.submit(fn, *args) -> future`` with
``future.result()`` and ``future.add_done_callback(fn)``: :class:`concurrent.futures.Executor` objects and
``distributed.Client`` both qualify. :func:`open_executor` picks one from command-line style options and
:func:`process_pool` makes a local pool; :func:`map_ordered`, :func:`submit`, :class:`CompletionQueue` and
:class:`InlineExecutor` live in :mod:`calinfer.parallel` (below both this package and
:mod:`calinfer.resonant`) and are re-exported here.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
from collections.abc import Iterator
from typing import Any

from calinfer.errors import CalinferError, InputError
from calinfer.parallel import CompletionQueue, InlineExecutor, is_dask_client, map_ordered, submit

__all__ = [
    "CompletionQueue",
    "InlineExecutor",
    "check_workers",
    "dask_available",
    "is_dask_client",
    "map_ordered",
    "open_executor",
    "process_pool",
    "submit",
]

_INSTALL_HINT = "install it with: pip install 'calinfer[dask]'"

# Dask's nanny sets MALLOC_TRIM_THRESHOLD_ in its workers, which also fixes glibc's mmap threshold: every
# array above 128 KiB is then mmap'ed and unmapped again, and the likelihood fits take ~1.6x the CPU time.
# Local clusters started here keep glibc's adaptive defaults.
_LOCAL_WORKER_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


def dask_available() -> bool:
    """Whether ``dask.distributed`` can be imported."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        return False
    return True


_PRELOAD = ["torch", "calinfer.surrogate", "calinfer.calibration", "calinfer.anomaly", "calinfer.io"]


def process_pool(workers: int | None = None) -> concurrent.futures.ProcessPoolExecutor:
    """A pool of ``workers`` processes (default: all cores), safe to start after torch is loaded.

    Workers fork from a *forkserver* that has imported torch and calinfer once (a fresh pool starts in a
    fraction of a second); where there is no forkserver, they are spawned.
    """
    n = workers or os.cpu_count() or 1
    if n < 1:
        raise InputError(f"need at least one worker process, got {n}")
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(_PRELOAD)
    else:
        context = multiprocessing.get_context("spawn")
    return concurrent.futures.ProcessPoolExecutor(max_workers=n, mp_context=context)


@contextlib.contextmanager
def open_executor(
    *,
    scheduler: str | None = None,
    dask_workers: int | None = None,
    jobs: int | None = None,
) -> Iterator[Any]:
    """The executor named by command-line options, closed on exit.

    ``scheduler``: address of a running Dask scheduler (``tcp://host:8786``), or the path of its scheduler
    file; ``dask_workers``: start a local Dask cluster of that many single-threaded worker processes;
    otherwise a local process pool of ``jobs`` processes (default: all cores), or in-process for ``jobs=1``.
    """
    if scheduler is not None and dask_workers is not None:
        raise InputError("give either a Dask scheduler address or a number of local Dask workers, not both")
    if scheduler is None and dask_workers is None:
        if jobs == 1:
            yield InlineExecutor()
            return
        with process_pool(jobs) as pool:
            yield pool
        return
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError as err:
        raise CalinferError(f"running on Dask needs the 'distributed' package ({err}); {_INSTALL_HINT}") from err
    if dask_workers is not None:
        if dask_workers < 1:
            raise InputError(f"--dask-workers must be at least 1, got {dask_workers}")
        with (
            dask.config.set(_LOCAL_WORKER_CONFIG),
            LocalCluster(n_workers=dask_workers, threads_per_worker=1, processes=True, dashboard_address=None) as c,
            Client(c) as client,
        ):
            yield client
        return
    is_file = os.path.isfile(scheduler)
    try:
        client = Client(scheduler_file=scheduler) if is_file else Client(scheduler, timeout="30s")
    except (OSError, TimeoutError) as err:
        raise CalinferError(
            f"cannot connect to the Dask scheduler at {scheduler} ({err}); check the address (tcp://HOST:8786) "
            "and that 'dask scheduler' is running and reachable"
        ) from err
    with client:
        check_workers(client)
        yield client


def _worker_version() -> str:
    import calinfer

    return calinfer.__version__


def check_workers(client: Any) -> None:
    """Raise :class:`CalinferError` if a connected Dask worker lacks calinfer or runs another version of it."""
    import calinfer

    try:
        versions = client.run(_worker_version)
    except Exception as err:
        raise CalinferError(
            f"the Dask workers cannot run calinfer ({type(err).__name__}: {err}); install calinfer "
            f"{calinfer.__version__} in the workers' environment"
        ) from err
    wrong = {worker: v for worker, v in versions.items() if v != calinfer.__version__}
    if wrong:
        raise CalinferError(
            f"Dask workers run other calinfer versions than this client ({calinfer.__version__}): {wrong}; "
            "install the same version everywhere"
        )
