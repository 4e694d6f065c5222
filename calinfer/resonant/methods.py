"""Anomaly scores for the signal region: CATHODE and the baselines it is compared with.

Every method scores the signal-region events out of fold (:func:`~calinfer.resonant.classifier.kfold_scores`,
or k-fold density estimation for ANODE), so no event is scored by a model trained on it.

* :class:`Cathode`: conditional flows trained on the sidebands, interpolated into the signal region with
  masses from a KDE (:class:`~calinfer.resonant.sampler.MassSampler`), oversampled; a classifier separates
  signal-region data from the generated background. An ensemble of ``n_flows`` independently trained flows
  yields the spread used in the background uncertainty. With ``cross_fit=True`` the flows form two groups
  trained on disjoint halves of the sidebands; each fold classifier trains against one group, and the
  background after a cut is estimated from the other group, which shares no training event with it.
  Every score is then the fold classifier's tail probability on that other group's generated events, and
  events outside the signal region (sidebands) are scored only by classifiers whose generated reference
  came from flows that never saw them.
  With ``latent=True`` (LaCATHODE) the classifiers see the events in the base space of the sideband flows,
  where background is alike at every m_jj wherever the flows are right.
* :class:`IdealizedAD`: the same classifier against a sample of true background in the signal region.
* :class:`CWoLa`: signal-region data against sideband data (classification without labels).
* :class:`Anode`: the density ratio ``log p_data(x|m) - log p_bkg(x|m)`` with a second flow on signal-region data.
* :class:`Supervised`: signal against background with truth labels (upper bound).

Masses ``mjj`` in TeV, features ``x`` of shape ``(N, D)``; higher scores are more anomalous.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from calinfer.errors import InputError, ModelError
from calinfer.resonant.classifier import EnsembleMLP, crossfit_scores, kfold_scores
from calinfer.resonant.density import DensityEstimator
from calinfer.resonant.latent import LatentClassifier
from calinfer.resonant.sampler import MassSampler
from calinfer.resonant.significance import BackgroundEstimate, background_after_cut
from calinfer.resonant.windows import SignalRegion

__all__ = ["CALIBRATIONS", "Anode", "CWoLa", "Cathode", "CutResult", "IdealizedAD", "Supervised"]

ClassifierFactory = Callable[[int], object]
CALIBRATIONS = ("interpolated", "pooled")  # how the sideband data / generated ratios reach the signal region


def default_classifier(seed: int) -> EnsembleMLP:
    """The default weakly supervised classifier (:class:`EnsembleMLP` with its defaults)."""
    return EnsembleMLP(seed=seed)


def default_flow(seed: int) -> DensityEstimator:
    """The default density estimator (:class:`DensityEstimator` with its defaults)."""
    return DensityEstimator(seed=seed)


def _fit_flow(job: tuple) -> DensityEstimator:
    flow, x, m, progress = job
    return flow.fit(x, m, progress=progress)


def _train_flows(jobs: list[tuple], executor: Any | None, progress: bool) -> list[DensityEstimator]:
    """Fit ``(flow, x, m)`` jobs (independently seeded flows), in parallel on ``executor``; results in order."""
    from calinfer.parallel import map_ordered

    inline = executor is None
    payload = [(flow, x, m, progress and inline) for flow, x, m in jobs]
    return map_ordered(_fit_flow, payload, executor=executor, progress=progress and not inline, desc="flows")


def _event_keys(mjj: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each event's (m_jj, x) values: which events a flow trained on, without keeping them."""
    return pd.util.hash_pandas_object(pd.DataFrame(np.c_[mjj, x]), index=False).to_numpy()


def _check(mjj: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mjj = np.asarray(mjj, dtype=np.float64).reshape(-1)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(mjj):
        raise InputError(f"need mjj (N,) and x (N, D), got {mjj.shape} and {x.shape}")
    return mjj, x


def _seeds(seed: int, n: int) -> list[int]:
    return [int(s) for s in np.random.default_rng(seed).integers(0, 2**31, size=n)]


def _crossfit_pick(scores_reference: np.ndarray, seed: int) -> np.ndarray:
    """For each generated event, one random fold classifier among those that scored it (finite score)."""
    ok = np.isfinite(scores_reference)
    u = np.random.default_rng(seed).random(scores_reference.shape) * ok
    return np.argmax(u, axis=0)


def _weighted_ratio(
    parts: list[tuple[float, np.ndarray, np.ndarray]], threshold: float
) -> tuple[float, float, float] | None:
    """``sum_j w_j d_j / g_j`` over parts ``(w_j, data scores, generated scores)`` (``d``, ``g``: fractions
    passing ``threshold``) and its binomial errors from the data and from the generated events; ``None``
    when nothing passes in a part. Each ``1 / g`` is corrected to first order for its bias,
    ``E[1 / g] = (1 + (1 - g) / (n g)) / E[g]`` for ``n`` generated events: with a few tens of them passing a
    tight cut the plain ratio would be several per cent high."""
    ratio, var_data, var_gen = 0.0, 0.0, 0.0
    for weight, d_scores, g_scores in parts:
        d, g = np.mean(d_scores >= threshold), np.mean(g_scores >= threshold)
        if d == 0 or g == 0:
            return None
        ratio += weight * d / g * (1 - (1 - g) / (g * len(g_scores)))
        var_data += (weight * d / g) ** 2 * (1 - d) / (d * len(d_scores))
        var_gen += (weight * d / g) ** 2 * (1 - g) / (g * len(g_scores))
    return float(ratio), float(np.sqrt(var_data)), float(np.sqrt(var_gen))


@dataclass(frozen=True)
class CutResult:
    """A cut on the CATHODE score and its background estimate (``calibration``: how ``calibrated`` was made)."""

    threshold: float
    background_efficiency: float
    n_observed: int
    estimate: BackgroundEstimate
    calibrated: BackgroundEstimate | None = None
    calibration: str = "interpolated"

    @property
    def significance(self) -> float:
        return self.estimate.significance(self.n_observed)

    def to_dict(self) -> dict:
        out = {
            "threshold": self.threshold,
            "background_efficiency": self.background_efficiency,
            "n_observed": self.n_observed,
            "significance": self.significance,
            "significance_without_ensemble": self.estimate.significance(self.n_observed, include_ensemble=False),
            **{f"background_{k}": v for k, v in self.estimate.to_dict().items()},
        }
        if self.calibrated is not None:
            out["calibrated"] = {
                **self.calibrated.to_dict(),
                "method": self.calibration,
                "significance": self.calibrated.significance(self.n_observed),
            }
        return out


class _ClassifierMethod:
    def __init__(
        self,
        window: SignalRegion,
        *,
        classifier: ClassifierFactory = default_classifier,
        n_folds: int = 5,
        seed: int = 0,
        executor: Any | None = None,
    ) -> None:
        self.window = window
        self.classifier = classifier
        self.n_folds = n_folds
        self.seed = seed
        self.executor = executor
        self.scores_: np.ndarray | None = None

    def _scored(self) -> np.ndarray:
        if self.scores_ is None:
            raise ModelError(f"{type(self).__name__} is not fitted; call fit() first")
        return self.scores_


class Cathode(_ClassifierMethod):
    """CATHODE (arXiv:2109.00546); after :meth:`fit`: ``scores_`` of the signal-region events (``sr_mask_``),
    ``reference_scores_`` of the generated background, ``reference_member_`` (which flow made each) and
    ``sideband_checks_`` (per flow, scores of its held-out sideband events and of events it generated there).

    ``executor`` (a ``concurrent.futures`` executor or ``distributed.Client``) trains the ensemble flows and
    the fold classifiers in parallel; every training has its own seed, so the result does not depend on it.

    ``cross_fit``: flow ``i`` trains on half ``i % 2`` of the sideband events (random disjoint halves) and
    fold classifier ``k`` against the events generated by the flows of group ``k % 2`` (see
    :func:`~calinfer.resonant.classifier.crossfit_scores`). A classifier trained against generated events
    learns where their generator is wrong, including the statistical fluctuations of the sideband events
    it memorised; estimating the background from the same generator then underestimates it. The other
    group's flows learned other fluctuations, so their pass fraction is unbiased by that selection.
    ``n_flows`` must be even: replica ``r`` pairs flows ``2r`` and ``2r + 1``, and the ensemble spread is
    taken over the ``n_flows / 2`` replicas (at least 3 replicas, ``n_flows >= 6``, for a spread worth the
    name; fewer are covered by Student's t, see :mod:`~calinfer.resonant.significance`). Each classifier's
    raw output ``s`` is turned into its tail probability on the events it scores from the other group,
    ``u = P_gen(s' < s)``, so that one threshold cuts every fold classifier at the same generated background
    efficiency, whichever of them scores an event. ``scores_`` and ``reference_scores_`` (one per generated
    event, from a random classifier of the other group) are these ``u``. :meth:`score_outside` and the
    sideband checks score each event only with classifiers trained against flows that never saw it.

    Every flow the ``Cathode`` trains records ``trained_on_`` (hashes of its training events); a flow passed
    to :meth:`fit` without that record is taken to have seen every sideband event.

    ``latent`` (LaCATHODE, arXiv:2210.14924; needs ``cross_fit``): every classifier sees the events in the base
    space of a flow of the group it trains against (flow ``g`` for group ``g``, see
    :class:`~calinfer.resonant.latent.LatentClassifier`) instead of ``x``: signal-region data, generated events
    and sideband events alike. Background maps to the same standard normal at every m_jj where the flow is
    right, so a cut cannot select m_jj through features that grow with it (the flow's own m_jj-dependent errors
    it can still select); the flow of a classifier's group never saw the sideband events it scores.
    """

    def __init__(
        self,
        window: SignalRegion,
        *,
        n_flows: int = 1,
        oversample: float = 4.0,
        flow: Callable[[int], DensityEstimator] | None = None,
        classifier: ClassifierFactory = default_classifier,
        n_folds: int = 5,
        cross_fit: bool = False,
        latent: bool = False,
        seed: int = 0,
        progress: bool = False,
        executor: Any | None = None,
    ) -> None:
        super().__init__(window, classifier=classifier, n_folds=n_folds, seed=seed, executor=executor)
        if cross_fit and (n_flows < 2 or n_flows % 2):
            raise InputError(f"cross_fit needs an even number of flows (>= 2), got n_flows = {n_flows}")
        if latent and not cross_fit:
            raise InputError("latent needs cross_fit: the flow that maps a sideband event must never have seen it")
        self.latent = latent
        self.n_flows = n_flows
        self.oversample = oversample
        self.flow = flow if flow is not None else default_flow
        self.cross_fit = cross_fit
        self.progress = progress

    def fit_flows(self, mjj: np.ndarray, x: np.ndarray) -> list[DensityEstimator]:
        """Train the ``n_flows`` sideband flows as :meth:`fit` would (to share them, e.g. across injections)."""
        mjj, x = _check(mjj, x)
        sb = np.flatnonzero(self.window.in_sidebands(mjj))
        if len(sb) < 100:
            raise InputError(f"too few events in the sidebands: {len(sb)}")
        seeds = _seeds(self.seed, 2 * self.n_flows + 2)
        if self.cross_fit:
            half = np.random.default_rng([self.seed, 1]).permutation(len(sb)) % 2
            train = [sb[half == i % 2] for i in range(self.n_flows)]
        else:
            train = [sb] * self.n_flows
        jobs = [(self.flow(seeds[i]), x[t], mjj[t]) for i, t in enumerate(train)]
        self.flows_ = _train_flows(jobs, self.executor, self.progress)
        for f, t in zip(self.flows_, train, strict=True):
            f.trained_on_ = _event_keys(mjj[t], x[t])
        return self.flows_

    def fit(self, mjj: np.ndarray, x: np.ndarray, flows: Sequence[DensityEstimator] | None = None) -> Cathode:
        """Train the flows on the sideband events, generate background and score the signal region.

        ``flows``: an already trained ensemble of ``n_flows`` density estimators of these sidebands (e.g. shared
        by several classifier seeds or signal injections); they are used as they are. With cross fitting, flow
        ``i`` must have been trained on half ``i % 2`` of the sidebands, as :meth:`fit_flows` of a cross-fitted
        ``Cathode`` does.
        """
        mjj, x = _check(mjj, x)
        sb, sr = self.window.in_sidebands(mjj), self.window.in_sr(mjj)
        if sb.sum() < 100 or sr.sum() < 2 * self.n_folds:
            raise InputError(f"too few events: {int(sb.sum())} in the sidebands, {int(sr.sum())} in the signal region")
        seeds = _seeds(self.seed, 2 * self.n_flows + 2)
        if flows is not None:
            if len(flows) != self.n_flows or any(f.models_ is None for f in flows):
                raise InputError(f"need {self.n_flows} fitted flows, got {len(flows)} (fitted or not)")
            self.flows_ = list(flows)
        else:
            self.fit_flows(mjj, x)
        self.masses_ = MassSampler(self.window.low, self.window.high).fit(mjj[sr])
        self.sr_mean_mass_ = float(mjj[sr].mean())
        n_gen = round(self.oversample * sr.sum())
        gen_x, gen_m, member = [], [], []
        for i, f in enumerate(self.flows_):
            m = self.masses_.sample(n_gen, seed=seeds[self.n_flows + i])
            gen_x.append(f.sample(m, seed=seeds[self.n_flows + i] + 1))
            gen_m.append(m)
            member.append(np.full(n_gen, i))
        self.reference_x_ = np.concatenate(gen_x)
        self.reference_m_ = np.concatenate(gen_m)
        self.reference_member_ = np.concatenate(member)
        self.sr_mask_ = sr
        fold_seeds = _seeds(seeds[-1], self.n_folds)
        options = {"n_folds": self.n_folds, "seed": seeds[-2], "progress": self.progress, "executor": self.executor}
        if self.cross_fit:
            res = crossfit_scores(
                self._fold_classifier(fold_seeds),
                self._inputs(x[sr], mjj[sr]),
                self._inputs(self.reference_x_, self.reference_m_),
                self.reference_member_ % 2,
                **options,
            )
            self.kfold_ = res
            self._tail_reference_ = [np.sort(r[np.isfinite(r)]) for r in res.scores_reference]
            self.reference_tail_ = np.full_like(res.scores_reference, np.nan)
            for k, r in enumerate(res.scores_reference):
                ok = np.isfinite(r)
                self.reference_tail_[k, ok] = self._tail(k, r[ok])
            pick = _crossfit_pick(res.scores_reference, seeds[-1])
            self.reference_scores_ = self.reference_tail_[pick, np.arange(len(pick))]
            self.scores_ = np.empty(len(res.scores_data))
            for k in range(self.n_folds):
                here = res.fold_data == k
                self.scores_[here] = self._tail(k, res.scores_data[here])
        else:
            res = kfold_scores(lambda k: self.classifier(fold_seeds[k]), x[sr], self.reference_x_, **options)
            self.kfold_ = res
            self.reference_scores_ = res.scores_reference
            self.scores_ = res.scores_data
        self.sideband_checks_ = self._sideband_checks(seeds[-1])
        return self

    def _fold_classifier(self, fold_seeds: list[int]) -> Callable[[int], object]:
        """Fold classifier ``k`` (group ``k % 2``); with ``latent`` on the base space of flow ``k % 2``."""
        if self.latent:
            return lambda k: LatentClassifier(self.classifier(fold_seeds[k]), self.flows_[k % 2])
        return lambda k: self.classifier(fold_seeds[k])

    def _inputs(self, x: np.ndarray, mjj: np.ndarray) -> np.ndarray:
        """What the classifiers see of events ``(mjj, x)``: ``x``, with ``latent`` ``x`` and m_jj as last column."""
        return np.c_[np.asarray(x, dtype=np.float64), mjj] if self.latent else np.asarray(x, dtype=np.float64)

    def _tail(self, k: int, raw: np.ndarray) -> np.ndarray:
        """Fold classifier ``k``'s tail probability: the fraction of the generated events it scored (the other
        group's) with a lower raw score."""
        ref = self._tail_reference_[k]
        return np.searchsorted(ref, raw, side="left") / len(ref)

    def _score_by(self, x: np.ndarray, allowed: np.ndarray, seed: int) -> np.ndarray:
        """Each event scored by one fold classifier drawn at random among those ``allowed`` for it (N, n_folds);
        tail probabilities with cross fitting, raw scores otherwise."""
        x = np.asarray(x, dtype=np.float64)
        which = np.argmax(np.random.default_rng(seed).random(allowed.shape) * allowed, axis=1)
        out = np.empty(len(x))
        for k, model in enumerate(self.kfold_.models):
            here = which == k
            if here.any():
                raw = model.predict_proba(x[here])[:, 1]
                out[here] = self._tail(k, raw) if self.cross_fit else raw
        return out

    def _by_group(self, n: int, group: int) -> np.ndarray:
        return np.broadcast_to(self.kfold_.fold_group == group, (n, self.n_folds))

    def _sideband_checks(self, seed: int) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """Per flow: scores of the sideband events it never trained on, of events it generated at their
        masses (``oversample`` per event), and both sets' masses. ``None`` when a flow does not record its
        held-out events.

        With cross fitting both are scored by the classifiers whose background estimate uses the flow (those
        trained against the other group): neither they nor the flows they trained against saw these events."""
        checks = []
        for i, f in enumerate(self.flows_):
            x_held, m_held = getattr(f, "held_out_x_", None), getattr(f, "held_out_m_", None)
            if x_held is None or len(x_held) == 0:
                return None
            m_gen = np.repeat(m_held, max(1, round(self.oversample)))
            gen = f.sample(m_gen, seed=seed + i)
            if self.cross_fit:
                pairs = (self._inputs(x_held, m_held), self._inputs(gen, m_gen))
                scored = [self._score_by(v, self._by_group(len(v), 1 - i % 2), seed + i) for v in pairs]
            else:
                scored = [self.kfold_.score_unseen(v, seed=seed + i) for v in (x_held, gen)]
            checks.append((scored[0], scored[1], np.asarray(m_held, dtype=np.float64), m_gen))
        keys = [_event_keys(f.held_out_m_, f.held_out_x_) for f in self.flows_]
        self.held_out_overlap_ = np.array(
            [[np.isin(ki, kj).sum() / np.sqrt(len(ki) * len(kj)) for kj in keys] for ki in keys]
        )  # correlation of two flows' held-out pass fractions: the share of events they hold out in common
        return checks

    def score_outside(self, x: np.ndarray, mjj: np.ndarray | None = None, *, blind: bool = True) -> np.ndarray:
        """Scores of events outside the signal region (e.g. the sidebands, for the m_jj spectrum after a cut).

        With cross fitting (``mjj`` required) each event is scored by one fold classifier among those whose
        generated reference came from flows that never trained on it: a sideband event of half ``h`` only by
        the classifiers trained against group ``1 - h``. A classifier trained against flows that memorised an
        event passes it too rarely, which would bend the after-cut spectrum in both sidebands alike.
        ``outside_seen_fraction_`` records the share of events every group's flows had seen (scored by any
        classifier: 0 with cross-fitted flows; all sideband events without cross fitting, where no
        classifier is free of them and the bump hunt after the cut is biased). ``blind=False`` spreads the
        events over all fold classifiers instead (the biased scoring, for comparison).
        """
        self._scored()
        x = np.asarray(x, dtype=np.float64)
        if mjj is None:
            if self.cross_fit:
                raise InputError("with cross fitting, score_outside needs the events' mjj (to find who saw them)")
            self.outside_seen_fraction_ = float("nan")
            return self.kfold_.score_unseen(x, seed=self.seed)
        mjj, x = _check(mjj, x)
        keys = _event_keys(mjj, x)
        n_groups = 2 if self.cross_fit else 1
        seen = np.zeros((len(x), n_groups), dtype=bool)
        for i, f in enumerate(self.flows_):
            trained = getattr(f, "trained_on_", None)
            seen[:, i % n_groups] |= True if trained is None else np.isin(keys, trained)
        everywhere = seen.all(axis=1)
        self.outside_seen_fraction_ = float(everywhere.mean()) if len(x) else 0.0
        if not self.cross_fit:
            return self.kfold_.score_unseen(x, seed=self.seed)
        free = ~seen
        free[everywhere | (not blind)] = True
        return self._score_by(self._inputs(x, mjj), free[:, self.kfold_.fold_group], self.seed)

    def cut(
        self,
        background_efficiency: float,
        n_sr: float,
        n_sr_sigma: float = 0.0,
        *,
        calibration: str = "interpolated",
    ) -> CutResult:
        """Cut keeping ``background_efficiency`` of the generated background; estimate B and count the data.

        ``n_sr +- n_sr_sigma``: expected background in the signal region before the cut (e.g. from
        :func:`~calinfer.resonant.bumphunt.bump_hunt` on the uncut spectrum). ``CutResult.estimate`` takes
        the generated pass fractions as they are; ``CutResult.calibrated`` scales each flow's by the ratio
        of data to generated pass fractions on the sideband events that flow never trained on, taken at the
        signal region (``calibration="interpolated"``: linear in m_jj between the two sidebands) or over
        both sidebands together (``"pooled"``).
        """
        scores = self._scored()
        if not 0 < background_efficiency <= 1:
            raise InputError(f"background_efficiency must be in (0, 1], got {background_efficiency}")
        if calibration not in CALIBRATIONS:
            raise InputError(f"unknown calibration {calibration!r}; known: {list(CALIBRATIONS)}")
        if self.cross_fit:
            return self._crossfit_cut(background_efficiency, n_sr, n_sr_sigma, calibration)
        threshold = float(np.quantile(self.reference_scores_, 1 - background_efficiency))
        passing = self.reference_scores_ >= threshold
        fractions = [passing[self.reference_member_ == i].mean() for i in range(self.n_flows)]
        sizes = [np.sum(self.reference_member_ == i) for i in range(self.n_flows)]
        estimate = background_after_cut(fractions, sizes, n_sr, n_sr_sigma)
        return CutResult(
            threshold,
            background_efficiency,
            int(np.sum(scores >= threshold)),
            estimate,
            self._calibrated(threshold, fractions, sizes, n_sr, n_sr_sigma, calibration),
            calibration,
        )

    def _crossfit_cut(
        self, background_efficiency: float, n_sr: float, n_sr_sigma: float, calibration: str
    ) -> CutResult:
        """The cut with cross-fitted scores.

        Fold classifier ``k`` scores the share ``w_k`` of the signal-region data; the threshold (on the tail
        probabilities) passes a fraction ``background_efficiency`` of the other group's generated events,
        averaged over the folds with weights ``w_k``. Replica ``r``'s pass fraction is ``sum_k w_k P_k(i)``
        with ``i = 2r + 1 - k % 2`` the replica's flow that classifier ``k`` did not train against; calibrated,
        each ``P_k(i)`` is scaled by flow ``i``'s data / generated pass ratio ``c_i`` on its held-out sideband
        events. The data parts of the errors of ``c_i`` of two flows of one group are correlated by the share
        of held-out events they have in common (``held_out_overlap_``, about 1/e for bootstrap flows), their
        generated parts not at all; the groups' held-out events are disjoint.
        """
        res = self.kfold_
        w = np.bincount(res.fold_data, minlength=self.n_folds) / len(res.fold_data)
        flat_s, flat_w = [], []
        for k in range(self.n_folds):
            s = self.reference_tail_[k]
            s = s[np.isfinite(s)]
            flat_s.append(s)
            flat_w.append(np.full(len(s), w[k] / len(s)))
        s_all, w_all = np.concatenate(flat_s), np.concatenate(flat_w)
        order = np.argsort(-s_all)
        reached = np.searchsorted(np.cumsum(w_all[order]), background_efficiency * w_all.sum())
        threshold = float(s_all[order[min(reached, len(order) - 1)]])
        member = self.reference_member_
        ratios = self._sideband_ratios(threshold, calibration)
        fractions, sizes, k_rep, k_sigma = [], [], [], []
        for r in range(self.n_flows // 2):
            f, f_cal, share = 0.0, 0.0, np.zeros(self.n_flows)
            for k in range(self.n_folds):
                i = 2 * r + 1 - res.fold_group[k]
                p_k = w[k] * np.mean(self.reference_tail_[k, member == i] >= threshold)
                f += p_k
                share[i] += p_k  # flow i's part of the replica's pass fraction (its ratio scales all of it)
                if ratios is not None:
                    f_cal += p_k * ratios[0][i]
            fractions.append(float(f))
            sizes.append(int(np.sum(member // 2 == r)))
            if ratios is not None and f > 0:
                k_rep.append(f_cal / f)
                # per group: the data part, then the generated part of flow 2r + g's ratio error
                k_sigma.append([share[2 * r + g] * ratios[1][2 * r + g, j] / f for g in (0, 1) for j in (0, 1)])
        estimate = background_after_cut(fractions, sizes, n_sr, n_sr_sigma)
        calibrated = None
        if len(k_rep) == len(fractions):
            rho, own = self.held_out_overlap_, np.eye(self.n_flows // 2)
            correlation = np.array([c for g in (0, 1) for c in (rho[g::2, g::2], own)])  # flows 2r + g by replica
            calibrated = background_after_cut(
                fractions,
                sizes,
                n_sr,
                n_sr_sigma,
                calibration=k_rep,
                calibration_sigma=k_sigma,
                calibration_correlation=correlation,
            )
        n_observed = int(np.sum(self._scored() >= threshold))
        return CutResult(threshold, background_efficiency, n_observed, estimate, calibrated, calibration)

    def _sideband_ratios(self, threshold: float, calibration: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Per flow: data / generated pass fraction on its held-out sideband events at the signal region, and
        its binomial errors ``(n_flows, 2)`` from the held-out data (shared by flows whose held-out events
        overlap) and from the flow's generated events (its own); ``None`` without held-out events or when
        none of them pass (in a sideband).

        ``"pooled"``: the ratio on both sidebands together, dominated by the populous lower one of a falling
        spectrum. ``"interpolated"``: the ratio in each sideband, ``c_lo`` and ``c_hi``, interpolated linearly
        in m_jj from the sidebands' mean masses to the signal region's, ``(1 - t) c_lo + t c_hi`` with
        ``t = (m_SR - m_lo) / (m_hi - m_lo)``: a flow whose error changes with m_jj is corrected for the
        error it makes in the signal region, not for its average error. A flow with held-out events in one
        sideband only, or none of them passing in one, gets the pooled ratio."""
        if not self.sideband_checks_:
            return None
        k, k_sigma = [], []
        for data, gen, m_data, m_gen in self.sideband_checks_:
            pooled = [(1.0, data, gen)]
            low_data, low_gen = m_data < self.window.low, m_gen < self.window.low
            value = None
            if calibration == "interpolated" and low_data.any() and not low_data.all():
                m_lo, m_hi = m_data[low_data].mean(), m_data[~low_data].mean()
                t_sr = (self.sr_mean_mass_ - m_lo) / (m_hi - m_lo)
                value = _weighted_ratio(
                    [(1 - t_sr, data[low_data], gen[low_gen]), (t_sr, data[~low_data], gen[~low_gen])], threshold
                )
            value = value or _weighted_ratio(pooled, threshold)
            if value is None:
                return None
            k.append(value[0])
            k_sigma.append(value[1:])
        return np.asarray(k), np.asarray(k_sigma)

    def _calibrated(self, threshold, fractions, sizes, n_sr, n_sr_sigma, calibration) -> BackgroundEstimate | None:
        """The estimate with each flow's pass fraction scaled by data / generated pass fractions on the
        sideband events that flow never trained on (its generalization error, measured where there is no
        signal); ``None`` without held-out events or when none of them pass."""
        ratios = self._sideband_ratios(threshold, calibration)
        if ratios is None:
            return None
        return background_after_cut(
            fractions,
            sizes,
            n_sr,
            n_sr_sigma,
            calibration=ratios[0],
            calibration_sigma=ratios[1],
            calibration_correlation=np.array([self.held_out_overlap_, np.eye(self.n_flows)]),
        )


class IdealizedAD(_ClassifierMethod):
    """Signal-region data against a sample of true signal-region background (the reference ``x_background``)."""

    def fit(self, mjj: np.ndarray, x: np.ndarray, x_background: np.ndarray) -> IdealizedAD:
        mjj, x = _check(mjj, x)
        self.sr_mask_ = self.window.in_sr(mjj)
        fold_seeds = _seeds(self.seed, self.n_folds + 1)
        res = kfold_scores(
            lambda k: self.classifier(fold_seeds[k]),
            x[self.sr_mask_],
            x_background,
            n_folds=self.n_folds,
            seed=fold_seeds[-1],
            executor=self.executor,
        )
        self.scores_, self.reference_scores_ = res.scores_data, res.scores_reference
        return self


class CWoLa(_ClassifierMethod):
    """Signal-region data (label 1) against sideband data (label 0)."""

    def fit(self, mjj: np.ndarray, x: np.ndarray) -> CWoLa:
        mjj, x = _check(mjj, x)
        self.sr_mask_ = self.window.in_sr(mjj)
        sb = self.window.in_sidebands(mjj)
        fold_seeds = _seeds(self.seed, self.n_folds + 1)
        res = kfold_scores(
            lambda k: self.classifier(fold_seeds[k]),
            x[self.sr_mask_],
            x[sb],
            n_folds=self.n_folds,
            seed=fold_seeds[-1],
            executor=self.executor,
        )
        self.scores_ = res.scores_data
        return self


class Supervised(_ClassifierMethod):
    """Signal (label 1) against background (label 0) with truth labels; scores both out of fold."""

    def fit(self, x_signal: np.ndarray, x_background: np.ndarray) -> Supervised:
        fold_seeds = _seeds(self.seed, self.n_folds + 1)
        res = kfold_scores(
            lambda k: self.classifier(fold_seeds[k]),
            x_signal,
            x_background,
            n_folds=self.n_folds,
            seed=fold_seeds[-1],
            executor=self.executor,
        )
        self.scores_, self.reference_scores_ = res.scores_data, res.scores_reference
        return self


class Anode:
    """ANODE (arXiv:2001.04990): ``log p_data(x|m) - log p_bkg(x|m)`` in the signal region.

    ``p_bkg`` is a flow trained on the sidebands (or the first flow of a fitted :class:`Cathode`);
    ``p_data`` is estimated with ``n_folds`` flows on the signal-region data, each scoring only the fold
    it did not see. Infinite ratios (events outside a flow's support) are clipped to +-50. ``executor``
    trains the flows in parallel, as for :class:`Cathode`.
    """

    def __init__(
        self,
        window: SignalRegion,
        *,
        flow: Callable[[int], DensityEstimator] | None = None,
        n_folds: int = 5,
        seed: int = 0,
        progress: bool = False,
        executor: Any | None = None,
    ) -> None:
        self.window = window
        self.flow = flow if flow is not None else default_flow
        self.n_folds = n_folds
        self.seed = seed
        self.progress = progress
        self.executor = executor
        self.scores_: np.ndarray | None = None

    def fit(self, mjj: np.ndarray, x: np.ndarray, background_flow: DensityEstimator | None = None) -> Anode:
        mjj, x = _check(mjj, x)
        sr, sb = self.window.in_sr(mjj), self.window.in_sidebands(mjj)
        seeds = _seeds(self.seed, self.n_folds + 2)
        xs, ms = x[sr], mjj[sr]
        folds = np.random.default_rng(seeds[-2]).permutation(np.arange(len(xs)) % self.n_folds)
        jobs = [(self.flow(seeds[k]), xs[folds != k], ms[folds != k]) for k in range(self.n_folds)]
        if background_flow is None:
            jobs.append((self.flow(seeds[-1]), x[sb], mjj[sb]))
        fitted = _train_flows(jobs, self.executor, self.progress)
        self.background_flow_ = background_flow or fitted[-1]
        log_data = np.empty(len(xs))
        for k in range(self.n_folds):
            log_data[folds == k] = fitted[k].log_prob(xs[folds == k], ms[folds == k])
        with np.errstate(invalid="ignore"):  # -inf - -inf for events outside both supports -> nan -> 0
            ratio = log_data - self.background_flow_.log_prob(xs, ms)
        self.sr_mask_ = sr
        self.scores_ = np.clip(np.nan_to_num(ratio, nan=0.0, posinf=50.0, neginf=-50.0), -50.0, 50.0)
        return self
