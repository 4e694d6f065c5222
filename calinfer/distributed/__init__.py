"""Scale-out: calibration, anomaly scores and independent trainings over many files, cores and machines.

* :func:`run_over_files` splits shower files into chunks, runs a chunk task (:class:`CalibrateTask`,
  :class:`AnomalyTask`) on a local process pool or a Dask cluster, retries lost chunks and writes one
  friend file per input with the entries in input order;
* :func:`map_ordered` runs independent jobs (CATHODE folds, ensemble members, seeds) on any executor and
  returns their results in submission order, so seeded jobs reproduce exactly; the resonant methods take it
  as ``executor=`` and :func:`run_windows` runs whole searches in many signal regions;
* :func:`open_executor` gives the executor named by command-line options (``--scheduler``,
  ``--dask-workers``, ``--jobs``); Dask is optional (``pip install 'calinfer[dask]'``).
"""

from __future__ import annotations

from calinfer.distributed.executors import (
    CompletionQueue,
    InlineExecutor,
    check_workers,
    dask_available,
    is_dask_client,
    map_ordered,
    open_executor,
    process_pool,
    submit,
)
from calinfer.distributed.runner import (
    Failure,
    FileChunk,
    RunReport,
    expand_inputs,
    output_paths,
    plan_chunks,
    run_over_files,
)
from calinfer.distributed.searches import run_windows
from calinfer.distributed.tasks import AnomalyTask, CalibrateTask, ChunkTask, cached, cached_model, model_loads

__all__ = [
    "AnomalyTask",
    "CalibrateTask",
    "ChunkTask",
    "CompletionQueue",
    "Failure",
    "FileChunk",
    "InlineExecutor",
    "RunReport",
    "cached",
    "cached_model",
    "check_workers",
    "dask_available",
    "expand_inputs",
    "is_dask_client",
    "map_ordered",
    "model_loads",
    "open_executor",
    "output_paths",
    "plan_chunks",
    "process_pool",
    "run_over_files",
    "run_windows",
    "submit",
]
