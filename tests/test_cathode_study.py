"""The comparison at equal reference size in ``analyses/cathode_study.py``: CATHODE matched against the idealized AD."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from calinfer.resonant import SignalRegion
from calinfer.resonant.methods import IdealizedAD

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analyses"))
cathode_study = pytest.importorskip("cathode_study")


class _CountingClassifier:
    """Records in ``counts`` how many reference events (label 0) it trains on; scores at random."""

    def __init__(self, counts: list[int], seed: int) -> None:
        self.counts, self.seed = counts, seed

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> _CountingClassifier:
        self.counts.append(int(np.sum(y == 0)))
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        p = np.random.default_rng(self.seed).random(len(X))
        return np.c_[1 - p, p]


class _NormalFlow:
    """A fitted stand-in density estimator: standard-normal features at every mass."""

    def __init__(self) -> None:
        self.models_ = ["fitted"]

    def sample(self, m: np.ndarray, *, seed: int = 0) -> np.ndarray:
        return np.random.default_rng(seed).normal(size=(len(m), 2))


@pytest.mark.parametrize("cross_fit", [True, False])
def test_matched_cathode_classifiers_train_on_as_many_generated_events_as_idealized_ones_on_reference(
    monkeypatch, cross_fit
):
    """Every fold classifier of CATHODE matched trains against as many generated events as every fold classifier
    of the idealized AD trains reference events, with and without cross fitting (counted by the classifiers
    themselves; the total generated sample equal to the reference left cross-fitted ones 0.625 of it)."""
    rng = np.random.default_rng(5)
    window = SignalRegion(3.3, 3.7, 2.8, 5.0)
    m = rng.uniform(2.8, 5.0, size=6000)
    x = rng.normal(size=(len(m), 2))
    x_reference = rng.normal(size=(1700, 2))
    cfg = cathode_study.StudyConfig(n_flows=4, n_folds=5, cross_fit=cross_fit)
    counts: dict[str, list[int]] = {"idealized": [], "matched": []}
    monkeypatch.setattr(
        cathode_study, "_classifier_factory", lambda cfg: lambda seed: _CountingClassifier(counts["matched"], seed)
    )
    IdealizedAD(window, classifier=lambda seed: _CountingClassifier(counts["idealized"], seed), n_folds=5).fit(
        m, x, x_reference
    )
    oversample = cathode_study.matched_oversample(cfg, len(x_reference), int(window.in_sr(m).sum()))
    cathode_study._cathode(cfg, window, 3, oversample=oversample).fit(m, x, flows=[_NormalFlow() for _ in range(4)])
    assert len(counts["idealized"]) == len(counts["matched"]) == 5
    assert np.allclose(counts["matched"], np.mean(counts["idealized"]), rtol=0.01), counts
