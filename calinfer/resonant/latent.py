"""Classifiers on the latent space of a sideband flow (LaCATHODE, arXiv:2210.14924).

A conditional flow trained on the sidebands maps background events to standard-normal coordinates
``z = f(x; m_jj)`` at every mass it describes. A classifier that sees ``z`` instead of ``x`` can only
select regions of ``z``, which background populates alike at every m_jj, so it cannot select m_jj through
features that grow with it (jet masses), as a classifier on ``x`` that picks a signal does. It can still
select m_jj where the flow is wrong by different amounts at different masses: on background-only dijets
the sculpting stays (README, CATHODE section, stop 19).
"""

from __future__ import annotations

import numpy as np

from calinfer.errors import InputError

__all__ = ["LatentClassifier"]


class LatentClassifier:
    """``classifier`` trained and evaluated on ``flow.latent(x, m)``, scikit-learn style.

    Inputs ``X`` are ``(N, D + 1)``: the ``D`` features and m_jj (TeV) as the last column. ``flow`` is any
    fitted object with ``latent(x, m) -> z`` (:meth:`calinfer.resonant.DensityEstimator.latent`).
    """

    def __init__(self, classifier: object, flow: object) -> None:
        self.classifier = classifier
        self.flow = flow

    def _latent(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] < 2:
            raise InputError(f"need (N, D + 1) inputs with m_jj as the last column, got shape {X.shape}")
        return self.flow.latent(X[:, :-1], X[:, -1])

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> LatentClassifier:
        """Train the classifier on the latent coordinates of ``X`` with labels ``y``."""
        options = {} if sample_weight is None else {"sample_weight": sample_weight}
        self.classifier.fit(self._latent(X), y, **options)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """``(N, 2)`` class probabilities of the wrapped classifier on the latent coordinates."""
        return self.classifier.predict_proba(self._latent(X))
