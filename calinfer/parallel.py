"""Independent jobs on any executor, results in submission order: the layer every parallel part of calinfer uses.

An executor is anything with ``submit(fn, *args) -> future`` whose futures have ``result()`` and
``add_done_callback(fn)``: :class:`concurrent.futures.Executor` objects and ``distributed.Client`` both
qualify (Dask is never imported here). :func:`map_ordered` runs jobs on one and returns their results in
submission order, so seeded jobs reproduce exactly; :class:`InlineExecutor` runs them in this process.
Both :mod:`calinfer.distributed` (process pools, Dask clusters, file runners) and :mod:`calinfer.resonant`
build on this module, which needs only the standard library.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import queue
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = ["CompletionQueue", "InlineExecutor", "is_dask_client", "map_ordered", "submit"]


def is_dask_client(executor: object) -> bool:
    """Whether ``executor`` is a ``distributed.Client`` (checked without importing Dask)."""
    return any(cls.__name__ == "Client" and cls.__module__.startswith("distributed") for cls in type(executor).__mro__)


class InlineExecutor(concurrent.futures.Executor):
    """Runs every job at once in the calling process (``jobs=1``, and the reference for reproducibility tests)."""

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as err:
            future.set_exception(err)
        return future


def submit(executor: Any, fn: Callable, *args: Any, key: str | None = None, priority: int = 0):
    """``executor.submit(fn, *args)``; on Dask never deduplicated (``pure=False``), named ``key`` and prioritised."""
    if is_dask_client(executor):
        name = f"{key or getattr(fn, '__name__', type(fn).__name__)}-{uuid.uuid4().hex[:8]}"
        return executor.submit(fn, *args, key=name, pure=False, priority=priority)
    return executor.submit(fn, *args)


class CompletionQueue:
    """Futures of any executor in the order they finish; more can be added while iterating.

    ``add(future, tag)`` registers a future; iterating yields ``(future, tag)`` pairs as they finish, until
    every registered future has been yielded (the callbacks of both executor kinds feed one queue).
    """

    def __init__(self) -> None:
        self._done: queue.Queue = queue.Queue()
        self._outstanding = 0

    def add(self, future: Any, tag: Any = None) -> None:
        self._outstanding += 1
        future.add_done_callback(lambda f: self._done.put((f, tag)))

    def __len__(self) -> int:
        return self._outstanding

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        while self._outstanding:
            item = self._done.get()
            self._outstanding -= 1
            yield item


def map_ordered(
    fn: Callable,
    items: Sequence,
    *,
    executor: Any | None = None,
    progress: bool = False,
    desc: str = "jobs",
) -> list:
    """``[fn(item) for item in items]`` with every call submitted to ``executor`` (``None``: run inline).

    Results come back in the order of ``items`` whatever order the jobs finish in, so a job that draws
    its randomness from its own seed gives the same result locally and on a cluster. The first failed
    job (in item order) raises its exception after all jobs have finished.
    """
    items = list(items)
    executor = executor if executor is not None else InlineExecutor()
    futures = [submit(executor, fn, item, key=desc.replace(" ", "-"), priority=-i) for i, item in enumerate(items)]
    finished = CompletionQueue()
    for i, future in enumerate(futures):
        finished.add(future, i)
    with contextlib.ExitStack() as stack:
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = stack.enter_context(tqdm(total=len(items), desc=desc, unit="job"))
        for _ in finished:
            if bar is not None:
                bar.update(1)
    return [future.result() for future in futures]
