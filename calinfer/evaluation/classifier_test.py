"""Classifier two-sample test: how well can a classifier tell generated from reference showers?

A gradient-boosted tree classifier (scikit-learn ``HistGradientBoostingClassifier``, which is invariant
under monotone rescaling of each input and handles the NaN centroids of empty layers natively) is trained
on equal numbers of reference and generated showers and its ROC AUC is measured on held-out showers:
0.5 means indistinguishable, 1 perfectly separable (CaloChallenge, arXiv:2410.21611). The training is
repeated with independent subsamples, splits and seeds; the spread of the AUC over these runs is the
quoted uncertainty (it covers the classifier training and the split, not the finite reference sample).

Inputs (``inputs=``): ``"features"``, the high-level features of :mod:`calinfer.evaluation.features`,
or ``"voxels"``, all voxel energies divided by the incident energy; both add ``log10 E_inc`` when
both samples have incident energies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calinfer.errors import InputError
from calinfer.evaluation.features import shower_features
from calinfer.metrics import auc
from calinfer.showers import Showers

__all__ = ["INPUTS", "MIN_SHOWERS", "ClassifierResult", "classifier_inputs", "classifier_test"]

INPUTS = ("features", "voxels")
MIN_SHOWERS = 100
"""Fewest showers per class the classifier test accepts."""


@dataclass
class ClassifierResult:
    """AUCs of the repeated classifier test.

    Attributes
    ----------
    inputs: ``"features"`` or ``"voxels"``.
    aucs: ``(n_runs,)`` test AUC of every run (generated showers as the positive class).
    n_train, n_test: showers per class used for training and for the AUC in each run.
    """

    inputs: str
    aucs: np.ndarray
    n_train: int
    n_test: int

    @property
    def mean(self) -> float:
        """Mean AUC over the runs."""
        return float(np.mean(self.aucs))

    @property
    def std(self) -> float:
        """Standard deviation of the AUC over the runs (0 for a single run)."""
        return float(np.std(self.aucs, ddof=1)) if len(self.aucs) > 1 else 0.0

    def to_dict(self) -> dict:
        return {
            "inputs": self.inputs,
            "auc_mean": self.mean,
            "auc_std": self.std,
            "aucs": self.aucs.tolist(),
            "n_train_per_class": self.n_train,
            "n_test_per_class": self.n_test,
        }


def classifier_inputs(
    showers: Showers, inputs: str = "features", *, with_incident: bool = True, threshold: float = 0.0
) -> np.ndarray:
    """The ``(N, d)`` float64 matrix the classifier sees (see the module docstring).

    ``with_incident`` adds ``log10 E_inc`` (and, for features, ``E_dep/E_inc``); ``threshold`` (GeV)
    is the sparsity threshold of the features.
    """
    if inputs not in INPUTS:
        raise InputError(f"classifier inputs must be one of {', '.join(INPUTS)}, not {inputs!r}")
    incident = showers.incident_energy if with_incident else None
    if with_incident and incident is None:
        raise InputError(f"{showers.source}: the classifier inputs need incident energies, which are missing")
    if inputs == "features":
        plain = Showers(showers.voxels, showers.geometry, incident_energy=incident, source=showers.source)
        columns = list(shower_features(plain, threshold=threshold).values())
    else:
        voxels = np.asarray(showers.voxels, dtype=np.float64)
        columns = list((voxels / incident[:, None]).T) if incident is not None else list(voxels.T)
    if incident is not None:
        columns.append(np.log10(incident))
    return np.stack(columns, axis=1)


def classifier_test(
    reference: Showers,
    generated: Showers,
    *,
    inputs: str = "features",
    n_runs: int = 5,
    test_fraction: float = 0.3,
    max_showers: int | None = None,
    threshold: float = 0.0,
    max_iter: int = 200,
    n_threads: int | None = None,
    seed: int = 0,
) -> ClassifierResult:
    """Train ``n_runs`` classifiers separating ``generated`` from ``reference`` showers and return their test AUCs.

    Each run draws ``n = min(len(reference), len(generated), max_showers)`` showers of each sample,
    trains on ``1 - test_fraction`` of them (with 20% of those for early stopping) and evaluates the
    AUC on the rest. Runs differ in subsample, split and classifier seed; everything derives from ``seed``.
    ``n_threads`` limits the classifier's OpenMP threads (default: scikit-learn's choice, all cores).
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    reference.geometry.check(generated.geometry, what=f"generated showers {generated.source}")
    if n_runs < 1:
        raise InputError(f"n_runs must be >= 1, got {n_runs}")
    if not 0 < test_fraction < 1:
        raise InputError(f"test_fraction must be in (0, 1), got {test_fraction}")
    with_incident = reference.incident_energy is not None and generated.incident_energy is not None
    x_ref = classifier_inputs(reference, inputs, with_incident=with_incident, threshold=threshold)
    x_gen = classifier_inputs(generated, inputs, with_incident=with_incident, threshold=threshold)
    n = min(len(x_ref), len(x_gen), max_showers or len(x_ref))
    if n < MIN_SHOWERS:
        raise InputError(f"too few showers for the classifier test ({n} per class); use at least {MIN_SHOWERS} of each")
    n_test = round(test_fraction * n)
    n_train = n - n_test
    aucs = np.empty(n_runs)
    for run, rng in enumerate(np.random.default_rng(seed).spawn(n_runs)):
        ref = x_ref[rng.permutation(len(x_ref))[:n]]
        gen = x_gen[rng.permutation(len(x_gen))[:n]]
        x_train = np.concatenate([ref[:n_train], gen[:n_train]])
        y_train = np.repeat([0, 1], n_train)
        clf = HistGradientBoostingClassifier(
            max_iter=max_iter,
            early_stopping=True,
            validation_fraction=0.2,
            n_iter_no_change=10,
            random_state=int(rng.integers(2**31)),
        )
        with threadpool_limits(limits=n_threads, user_api="openmp"):
            clf.fit(x_train, y_train)
            score_ref = clf.predict_proba(ref[n_train:])[:, 1]
            score_gen = clf.predict_proba(gen[n_train:])[:, 1]
        aucs[run] = auc(score_gen, score_ref)
    return ClassifierResult(inputs=inputs, aucs=aucs, n_train=n_train, n_test=n_test)
