"""Classifiers for weakly supervised searches and k-fold scoring.

:class:`EnsembleMLP` is a torch MLP trained with binary cross entropy (classes reweighted to equal
total weight). As in CATHODE, each of ``n_runs`` independently initialised runs keeps the
``n_best_epochs`` epochs with the lowest validation loss, and the prediction is the mean over all
kept (run, epoch) models. It follows the scikit-learn protocol (``fit(X, y, sample_weight)``,
``predict_proba(X) -> (N, 2)``), so any scikit-learn classifier can be used in its place.
:class:`BoostedTreeEnsemble` is one: the mean of ``n_models`` scikit-learn
``HistGradientBoostingClassifier`` models with early stopping on their own random validation splits
(as the tree-based weak supervision of arXiv:2309.13111), which ignores features that carry nothing.

:func:`kfold_scores` trains one classifier per fold on the other folds and scores only the
held-out fold, so no event is ever scored by a classifier that saw it in training.
:func:`crossfit_scores` does the same for the data, but splits the reference (generated) events into two
groups made by independently trained generators: the fold classifiers train on one group and score the
other, so a background estimate from the scored group is free of the selection bias that arises when a
classifier learns the errors of the very generator whose events then estimate the background.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from calinfer.errors import InputError, ModelError

__all__ = ["BoostedTreeEnsemble", "CrossFitScores", "EnsembleMLP", "KFoldScores", "crossfit_scores", "kfold_scores"]


def _mlp(n_in: int, hidden: tuple[int, ...]) -> torch.nn.Module:
    layers: list[torch.nn.Module] = []
    for h in hidden:
        layers += [torch.nn.Linear(n_in, h), torch.nn.ReLU()]
        n_in = h
    layers.append(torch.nn.Linear(n_in, 1))
    return torch.nn.Sequential(*layers)


class EnsembleMLP:
    """MLP classifier averaged over the best epochs of several runs (see module docstring)."""

    def __init__(
        self,
        *,
        hidden: tuple[int, ...] = (64, 64, 64),
        epochs: int = 30,
        batch_size: int = 256,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        n_runs: int = 1,
        n_best_epochs: int = 5,
        val_fraction: float = 0.2,
        seed: int = 0,
    ) -> None:
        self.hidden = tuple(hidden)
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.n_runs = n_runs
        self.n_best_epochs = n_best_epochs
        self.val_fraction = val_fraction
        self.seed = seed
        self.models_: list[torch.nn.Module] | None = None

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> EnsembleMLP:
        """Train on features ``X`` (N, D) and labels ``y`` in {0, 1}."""
        X, y = _checked_xy(X, y)
        w = _balanced_weights(y, sample_weight)
        self.mean_, self.std_ = X.mean(axis=0), np.maximum(X.std(axis=0), 1e-12)
        Xt = torch.as_tensor((X - self.mean_) / self.std_, dtype=torch.float32)
        yt = torch.as_tensor(y, dtype=torch.float32)
        wt = torch.as_tensor(w, dtype=torch.float32)
        rng = np.random.default_rng(self.seed)
        self.models_, self.history_ = [], []
        for _ in range(self.n_runs):
            # stratified validation split
            val = np.concatenate(
                [
                    rng.permutation(np.flatnonzero(y == c))[: max(1, round(self.val_fraction * np.sum(y == c)))]
                    for c in (0, 1)
                ]
            )
            train = np.setdiff1d(np.arange(len(y)), val)
            self._fit_run(Xt, yt, wt, train, val, int(rng.integers(2**31)))
        return self

    def _fit_run(self, X, y, w, train: np.ndarray, val: np.ndarray, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _mlp(X.shape[1], self.hidden)
        opt = torch.optim.Adam(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none")
        train_t, val_t = torch.as_tensor(train), torch.as_tensor(val)
        best: list[tuple[float, dict]] = []
        history = []
        for _ in range(self.epochs):
            model.train()
            order = train_t[torch.randperm(len(train_t), generator=gen)]
            for i in range(0, len(order), self.batch_size):
                idx = order[i : i + self.batch_size]
                loss = (loss_fn(model(X[idx]).squeeze(-1), y[idx]) * w[idx]).sum() / w[idx].sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                lv = loss_fn(model(X[val_t]).squeeze(-1), y[val_t])
                val_loss = float((lv * w[val_t]).sum() / w[val_t].sum())
            history.append(val_loss)
            best.append((val_loss, copy.deepcopy(model.state_dict())))
            best = sorted(best, key=lambda t: t[0])[: self.n_best_epochs]
        self.history_.append(history)
        for _, state in best:
            mdl = _mlp(X.shape[1], self.hidden)
            mdl.load_state_dict(state)
            mdl.eval()
            self.models_.append(mdl)  # type: ignore[union-attr]

    def predict_proba(self, X: np.ndarray, *, batch_size: int = 65536) -> np.ndarray:
        """``(N, 2)`` class probabilities, averaged over all kept models."""
        if self.models_ is None:
            raise ModelError("EnsembleMLP is not fitted; call fit() first")
        X = np.asarray(X, dtype=np.float64)
        Xt = torch.as_tensor((X - self.mean_) / self.std_, dtype=torch.float32)
        p = np.zeros(len(X))
        with torch.no_grad():
            for mdl in self.models_:
                for i in range(0, len(X), batch_size):
                    p[i : i + batch_size] += torch.sigmoid(mdl(Xt[i : i + batch_size]).squeeze(-1)).double().numpy()
        p /= len(self.models_)
        return np.stack([1 - p, p], axis=1)


def _checked_xy(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(N, D)`` as float64 and labels ``(N,)`` with both classes 0 and 1, or an :class:`InputError`."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y).reshape(-1)
    if X.ndim != 2 or len(X) != len(y):
        raise InputError(f"need X of shape (N, D) and y of shape (N,), got {X.shape} and {y.shape}")
    if not set(np.unique(y)) <= {0, 1} or len(np.unique(y)) != 2:
        raise InputError("y must contain both classes 0 and 1 and nothing else")
    return X, y


def _balanced_weights(y: np.ndarray, sample_weight: np.ndarray | None) -> np.ndarray:
    """Sample weights scaled so that both classes have equal total weight and the mean weight is 1."""
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64).reshape(-1).copy()
    for cls in (0, 1):
        w[y == cls] *= 0.5 * len(y) / w[y == cls].sum()
    return w


class BoostedTreeEnsemble:
    """Mean of ``n_models`` histogram gradient-boosted tree classifiers (scikit-learn), classes balanced.

    Each model (``max_iter`` boosting rounds of trees with ``max_leaf_nodes`` leaves of at least
    ``min_samples_leaf`` events, learning rate ``lr``) stops early when its loss on its own random
    ``val_fraction`` of the events has not improved for ``n_iter_no_change`` rounds; the models differ by
    that split and their seeds.
    """

    def __init__(
        self,
        *,
        n_models: int = 10,
        max_iter: int = 200,
        lr: float = 0.1,
        max_leaf_nodes: int = 31,
        min_samples_leaf: int = 20,
        l2_regularization: float = 0.0,
        val_fraction: float = 0.2,
        n_iter_no_change: int = 10,
        seed: int = 0,
    ) -> None:
        self.n_models = n_models
        self.max_iter = max_iter
        self.lr = lr
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.val_fraction = val_fraction
        self.n_iter_no_change = n_iter_no_change
        self.seed = seed
        self.models_: list | None = None

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> BoostedTreeEnsemble:
        """Train on features ``X`` (N, D) and labels ``y`` in {0, 1}."""
        from sklearn.ensemble import HistGradientBoostingClassifier

        X, y = _checked_xy(X, y)
        w = _balanced_weights(y, sample_weight)
        seeds = np.random.default_rng(self.seed).integers(2**31, size=self.n_models)
        self.models_ = []
        for seed in seeds:
            model = HistGradientBoostingClassifier(
                learning_rate=self.lr,
                max_iter=self.max_iter,
                max_leaf_nodes=self.max_leaf_nodes,
                min_samples_leaf=self.min_samples_leaf,
                l2_regularization=self.l2_regularization,
                early_stopping=True,
                validation_fraction=self.val_fraction,
                n_iter_no_change=self.n_iter_no_change,
                random_state=int(seed),
            )
            self.models_.append(model.fit(X, y, sample_weight=w))
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """``(N, 2)`` class probabilities, averaged over the models."""
        if self.models_ is None:
            raise ModelError("BoostedTreeEnsemble is not fitted; call fit() first")
        X = np.asarray(X, dtype=np.float64)
        p = np.mean([m.predict_proba(X)[:, 1] for m in self.models_], axis=0)
        return np.stack([1 - p, p], axis=1)


@dataclass
class KFoldScores:
    """Out-of-fold scores: ``scores_*`` from the classifier of the fold each event was held out in.

    ``models`` are the fold classifiers; :meth:`score_unseen` scores events that none of them was trained
    on (e.g. sideband events when the classifiers were trained in the signal region).
    """

    scores_data: np.ndarray
    scores_reference: np.ndarray
    fold_data: np.ndarray
    fold_reference: np.ndarray
    models: list

    def score_unseen(self, x: np.ndarray, *, seed: int = 0) -> np.ndarray:
        """Probability of class 1 for events outside every training set, each from one fold classifier.

        The events are spread over the fold classifiers in equal random shares (``seed``), so that their
        scores follow the same distribution as the out-of-fold scores that cut thresholds are taken from.
        The mean over the folds would not: it is narrower, a threshold from single-classifier scores
        passes fewer of such averaged events, and an m_jj spectrum cut on both would be sculpted.
        """
        return _score_spread(self.models, x, seed)


def _score_spread(models: list, x: np.ndarray, seed: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    fold = _fold_ids(len(x), len(models), np.random.default_rng(seed))
    scores = np.empty(len(x))
    for k, model in enumerate(models):
        if np.any(fold == k):
            scores[fold == k] = model.predict_proba(x[fold == k])[:, 1]
    return scores


@dataclass
class CrossFitScores:
    """Out-of-fold data scores and cross-fitted reference scores (see :func:`crossfit_scores`).

    ``scores_reference[k, j]``: fold classifier ``k``'s probability of class 1 for reference event ``j``,
    NaN where ``k`` trained on ``j``'s group (``fold_group[k] == reference_group[j]``).
    """

    scores_data: np.ndarray
    fold_data: np.ndarray
    fold_group: np.ndarray
    scores_reference: np.ndarray
    reference_group: np.ndarray
    models: list

    def score_unseen(self, x: np.ndarray, *, seed: int = 0, group: int | None = None) -> np.ndarray:
        """As :meth:`KFoldScores.score_unseen`: each event scored by one fold classifier, in equal random shares;
        with ``group``, only by the classifiers trained against that reference group."""
        models = [m for m, g in zip(self.models, self.fold_group, strict=True) if group is None or g == group]
        return _score_spread(models, x, seed)


def _fold_ids(n: int, n_folds: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.arange(n) % n_folds)


def _fit_crossfit_fold(job: tuple) -> tuple[object, np.ndarray, np.ndarray]:
    """Train fold ``k``'s classifier on the other data folds against reference group ``g``; score data fold
    ``k`` and the reference events of the other group."""
    clf, k, g, x_data, x_reference, fd, gr = job
    td, tr = fd != k, gr == g
    X = np.concatenate([x_data[td], x_reference[tr]])
    y = np.concatenate([np.ones(td.sum()), np.zeros(tr.sum())])
    clf.fit(X, y)
    return clf, clf.predict_proba(x_data[~td])[:, 1], clf.predict_proba(x_reference[~tr])[:, 1]


def _fit_fold(job: tuple) -> tuple[object, np.ndarray, np.ndarray]:
    """Train fold ``k``'s classifier on the other folds; its class-1 probabilities on fold ``k`` of both samples."""
    clf, k, x_data, x_reference, fd, fr, wr = job
    td, tr = fd != k, fr != k
    X = np.concatenate([x_data[td], x_reference[tr]])
    y = np.concatenate([np.ones(td.sum()), np.zeros(tr.sum())])
    w = np.concatenate([np.ones(td.sum()), wr[tr]])
    clf.fit(X, y, sample_weight=w)
    return clf, clf.predict_proba(x_data[~td])[:, 1], clf.predict_proba(x_reference[~tr])[:, 1]


def kfold_scores(
    make_classifier: Callable[[int], object],
    x_data: np.ndarray,
    x_reference: np.ndarray,
    *,
    n_folds: int = 5,
    weights_reference: np.ndarray | None = None,
    seed: int = 0,
    progress: bool = False,
    executor: Any | None = None,
) -> KFoldScores:
    """Train "data (label 1) vs reference (label 0)" classifiers with k-fold cross scoring.

    Both samples are split into ``n_folds`` random folds; classifier ``k`` (from
    ``make_classifier(k)``) is trained on all folds but ``k`` of both samples and scores fold
    ``k`` of both. Returns the out-of-fold probability of class 1 for every event.
    ``executor``: a ``concurrent.futures`` executor or ``distributed.Client`` that trains the folds in
    parallel (the classifiers must be picklable); the result does not depend on it.
    """
    from calinfer.parallel import map_ordered

    x_data = np.asarray(x_data, dtype=np.float64)
    x_reference = np.asarray(x_reference, dtype=np.float64)
    if n_folds < 2:
        raise InputError(f"n_folds must be at least 2, got {n_folds}")
    if min(len(x_data), len(x_reference)) < n_folds:
        raise InputError(f"need at least n_folds = {n_folds} events in each sample")
    rng = np.random.default_rng(seed)
    fd, fr = _fold_ids(len(x_data), n_folds, rng), _fold_ids(len(x_reference), n_folds, rng)
    wr = np.ones(len(x_reference)) if weights_reference is None else np.asarray(weights_reference, dtype=np.float64)
    jobs = [(make_classifier(k), k, x_data, x_reference, fd, fr, wr) for k in range(n_folds)]
    fitted = map_ordered(_fit_fold, jobs, executor=executor, progress=progress, desc="k-fold")
    sd, sr = np.full(len(x_data), np.nan), np.full(len(x_reference), np.nan)
    for k, (_, scores_data, scores_reference) in enumerate(fitted):
        sd[fd == k], sr[fr == k] = scores_data, scores_reference
    return KFoldScores(sd, sr, fd, fr, [clf for clf, _, _ in fitted])


def crossfit_scores(
    make_classifier: Callable[[int], object],
    x_data: np.ndarray,
    x_reference: np.ndarray,
    reference_group: np.ndarray,
    *,
    n_folds: int = 4,
    seed: int = 0,
    progress: bool = False,
    executor: Any | None = None,
) -> CrossFitScores:
    """k-fold data scores with cross-fitted reference groups.

    The data are split into ``n_folds`` random folds; fold ``k`` belongs to group ``k % 2``. Classifier ``k``
    trains on the other data folds (label 1) against all reference events of its group (label 0;
    ``reference_group`` in {0, 1}), then scores data fold ``k`` and every reference event of the other
    group. Each data event is scored by a classifier that never saw it, and each reference event by the
    classifiers of the other group, none of which saw it or any event of its generator.
    """
    from calinfer.parallel import map_ordered

    x_data = np.asarray(x_data, dtype=np.float64)
    x_reference = np.asarray(x_reference, dtype=np.float64)
    group = np.asarray(reference_group).reshape(-1)
    if n_folds < 2:
        raise InputError(f"n_folds must be at least 2, got {n_folds}")
    if len(group) != len(x_reference) or not set(np.unique(group)) == {0, 1}:
        raise InputError("reference_group must give 0 or 1 for every reference event, with both groups present")
    if len(x_data) < n_folds:
        raise InputError(f"need at least n_folds = {n_folds} data events")
    fd = _fold_ids(len(x_data), n_folds, np.random.default_rng(seed))
    fold_group = np.arange(n_folds) % 2
    jobs = [(make_classifier(k), k, fold_group[k], x_data, x_reference, fd, group) for k in range(n_folds)]
    fitted = map_ordered(_fit_crossfit_fold, jobs, executor=executor, progress=progress, desc="cross-fit")
    sd = np.full(len(x_data), np.nan)
    sr = np.full((n_folds, len(x_reference)), np.nan)
    for k, (_, scores_data, scores_reference) in enumerate(fitted):
        sd[fd == k] = scores_data
        sr[k, group != fold_group[k]] = scores_reference
    return CrossFitScores(sd, fd, fold_group, sr, group, [clf for clf, _, _ in fitted])
