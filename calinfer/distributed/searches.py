"""Resonant searches in many signal regions at once: one :func:`~calinfer.resonant.search.run_search` per job."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

__all__ = ["run_windows"]


def run_windows(
    data: Any,
    windows: Sequence[Any],
    config: Any | None = None,
    *,
    reference: Any | None = None,
    executor: Any | None = None,
    progress: bool = False,
) -> list[Any]:
    """:func:`~calinfer.resonant.search.run_search` in every signal region of ``windows``, one job per window.

    ``data`` / ``reference``: dijet frames as for ``run_search``; ``executor``: a ``concurrent.futures``
    executor or ``distributed.Client`` (``None``: one after the other here). Every search draws from the
    seeds of ``config``, so the results (in the order of ``windows``) are the same wherever they ran.
    Inside a job the trainings run one after the other; to parallelise a single search instead, pass the
    executor to ``run_search`` itself.
    """
    from calinfer.parallel import map_ordered
    from calinfer.resonant.search import run_search

    job = partial(run_search, data, config=config, reference=reference)
    return map_ordered(job, list(windows), executor=executor, progress=progress, desc="windows")
