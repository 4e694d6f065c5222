"""Chunk tasks for :func:`calinfer.distributed.run_over_files`: calibration and anomaly scores of file chunks.

A task is a small picklable object; calling it on ``(path, entry_start, entry_stop)`` returns the output
branches of those entries. The surrogate itself never travels with the task: every worker process loads
it once from its directory and keeps it in a per-process cache (:func:`cached_model`), so the model
directory and the input files must be readable at the same paths on every worker.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from calinfer.calibration import IntervalLevel

__all__ = ["AnomalyTask", "CalibrateTask", "ChunkTask", "cached", "cached_model", "model_loads"]

_CACHE_SIZE = 4
_cache: collections.OrderedDict[tuple, Any] = collections.OrderedDict()
_loads = [0]


class ChunkTask(Protocol):
    """What :func:`~calinfer.distributed.run_over_files` needs from a task."""

    tree: str  # name of the output (friend) tree

    def __call__(self, path: str, entry_start: int, entry_stop: int) -> dict[str, np.ndarray]: ...

    def entries(self, path: str) -> int: ...

    def metadata(self, path: str) -> dict: ...


def cached(key: tuple, factory: Callable[[], Any]) -> Any:
    """``factory()`` once per process and ``key`` (the few most recent keys are kept)."""
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    value = factory()
    _cache[key] = value
    while len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return value


def _model_dir(model: str | None) -> Path:
    from calinfer.surrogate import default_model_path

    return Path(model).resolve() if model else default_model_path()


def _absolute_model(model: str | None) -> str | None:
    """``model`` as an absolute directory (workers may run in another directory); the name of a shipped model
    (e.g. ``"pions"``) that is not a directory here becomes that model's directory."""
    from calinfer.surrogate import model_path

    return None if model is None else os.path.abspath(model_path(model))


def _model_key(model: str | None) -> tuple:
    where = _model_dir(model)
    stat = where.stat() if where.exists() else None
    return str(where), stat and stat.st_ino, stat and stat.st_mtime_ns


def cached_model(model: str | None) -> Any:
    """The surrogate (or ensemble) in directory ``model`` (``None``: the shipped default), loaded once per process.

    The cache key includes the directory's inode and modification time, so a model retrained in place is
    reloaded by long-lived workers.
    """
    from calinfer.surrogate import load_default, load_model

    def load() -> Any:
        _loads[0] += 1
        return load_model(_model_dir(model)) if model else load_default()

    return cached(("model", *_model_key(model)), load)


def model_loads() -> int:
    """How many times this process has loaded a surrogate through :func:`cached_model`."""
    return _loads[0]


def _threads(n: int | None) -> None:
    if n:
        import torch

        if torch.get_num_threads() != n:
            torch.set_num_threads(n)


@dataclass(frozen=True)
class CalibrateTask:
    """Maximum-likelihood incident energies (tree ``calibration``, the branches of ``calinfer calibrate``).

    ``model``: surrogate or ensemble directory (``None``: the shipped default); ``workers``: batches the
    :class:`~calinfer.calibration.Calibrator` fits at once in threads; ``threads``: torch threads per task
    process (``None``: leave the process setting alone).
    """

    model: str | None = None
    likelihood: str = "layers"
    energy_range: tuple[float, float] | None = None
    input_tree: str = "showers"
    voxel_branch: str = "voxels"
    clip_negative: float = 0.0
    workers: int = 1
    threads: int | None = 1
    tree: str = "calibration"
    interval_level: IntervalLevel | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", _absolute_model(self.model))

    def calibrator(self) -> Any:
        """The cached :class:`~calinfer.calibration.Calibrator` of this process."""
        from calinfer.calibration import Calibrator

        model = cached_model(self.model)
        key = ("calibrator", *_model_key(self.model), self.likelihood, self.energy_range, self.workers,
               self.interval_level)
        return cached(
            key,
            lambda: Calibrator(model, likelihood=self.likelihood, energy_range=self.energy_range, workers=self.workers,
                               interval_level=self.interval_level),
        )

    def __call__(self, path: str, entry_start: int, entry_stop: int) -> dict[str, np.ndarray]:
        from calinfer.io import read_showers

        _threads(self.threads)
        calibrator = self.calibrator()
        showers = read_showers(
            path,
            calibrator.surrogate.geometry,
            tree=self.input_tree,
            energy_branch=None,
            voxel_branch=self.voxel_branch,
            clip_negative=self.clip_negative,
            entry_start=entry_start,
            entry_stop=entry_stop,
            step_size=entry_stop - entry_start,
        )
        return calibrator.fit(showers).to_branches()

    def entries(self, path: str) -> int:
        from calinfer.io import inspect_file

        return inspect_file(path, tree=self.input_tree, energy_branch=None, voxel_branch=self.voxel_branch).n_entries

    def metadata(self, path: str) -> dict:
        """The metadata ``calinfer calibrate`` records (``tests/test_distributed.py`` checks they agree)."""
        from calinfer import __version__
        from calinfer.calibration import Status

        calibrator = self.calibrator()
        return {
            "input": str(Path(path).resolve()),
            "model": str(_model_dir(self.model)),
            "likelihood": calibrator.likelihood,
            "energy_range_gev": list(calibrator.energy_range),
            "status_bits": {flag.name.lower(): int(flag) for flag in Status},
            "interval": calibrator.interval_description,
            "calinfer_version": __version__,
        }


@dataclass(frozen=True)
class AnomalyTask:
    """Anomaly scores (tree ``anomaly``, the branches of ``calinfer anomaly`` including ``entry``).

    ``energy_scale``: the fitted :class:`~calinfer.anomaly.EnergyScale` for the scores at E_rec (``None`` for
    ``score="profile"``), fitted once by the caller so every chunk uses the same value; ``scale_source``
    says where it came from (recorded in the output metadata).
    """

    model: str | None = None
    score: str = "nll"
    energy_scale: Any = None
    scale_source: str | None = None
    input_tree: str = "showers"
    n_grid: int = 32
    clip_negative: float = 0.0
    device: str | None = None
    threads: int | None = 1
    tree: str = "anomaly"

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", _absolute_model(self.model))

    def scorer(self) -> Any:
        """The cached score object of this process."""
        from calinfer.anomaly import make_score

        model = cached_model(self.model)
        options: dict = {"device": self.device}
        if self.score.startswith("profile"):
            options["n_grid"] = self.n_grid
        else:
            options["scale"] = self.energy_scale
        key = ("score", *_model_key(self.model), self.score, self.n_grid, self.device, repr(self.energy_scale))
        return cached(key, lambda: make_score(self.score, model, **options))

    def __call__(self, path: str, entry_start: int, entry_stop: int) -> dict[str, np.ndarray]:
        from calinfer.io import read_showers

        _threads(self.threads)
        score = self.scorer()
        showers = read_showers(
            path,
            cached_model(self.model).geometry,
            tree=self.input_tree,
            energy_branch=None,
            clip_negative=self.clip_negative,
            entry_start=entry_start,
            entry_stop=entry_stop,
            step_size=entry_stop - entry_start,
        )
        result = score.evaluate(showers)
        result["entry"] = np.arange(entry_start, entry_stop, dtype=np.int64)
        return result

    def entries(self, path: str) -> int:
        from calinfer.io import inspect_file

        return inspect_file(path, tree=self.input_tree, energy_branch=None).n_entries

    def metadata(self, path: str) -> dict:
        """The metadata ``calinfer anomaly`` records (``tests/test_distributed.py`` checks they agree)."""
        score = self.scorer()
        scale = self.energy_scale
        return {
            "input": str(path),
            "input_tree": self.input_tree,
            "score": score.name,
            "surrogate_part": score.part,
            "energy_range_gev": list(score.energy_range),
            "energy_scale": None if scale is None else scale.to_dict(),
            "energy_scale_source": None if scale is None else self.scale_source,
            "geometry": cached_model(self.model).geometry.id,
            "convention": "higher score = more anomalous; one entry per input shower, in order",
        }
