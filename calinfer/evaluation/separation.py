"""Separation power between reference and generated feature histograms (CaloChallenge, arXiv:2410.21611).

``S = 1/2 * sum_i (h1_i - h2_i)^2 / (h1_i + h2_i)`` over histograms ``h1``, ``h2`` normalised to unit sum
on shared bins: 0 for identical and 1 for disjoint distributions. Bins are chosen from the reference
(:func:`bin_edges`); values outside them land in the under- and overflow bins and showers where the
feature is undefined (NaN, e.g. the centroid of an empty layer) in one more bin, and all of these enter
``S``, so a generator cannot hide mass outside the plotted range. Finite samples give ``S > 0`` even for
identical distributions; :func:`separation_noise_floor` estimates that statistical floor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import boost_histogram as bh
import numpy as np

from calinfer.errors import InputError
from calinfer.evaluation.features import Feature

__all__ = ["Separation", "bin_edges", "compare_feature", "separation_noise_floor", "separation_power"]


def _counts(counts: np.ndarray, what: str) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or not np.all(np.isfinite(c) & (c >= 0)) or c.sum() <= 0:
        raise InputError(f"{what} must be a 1-d histogram with finite, non-negative counts and a positive sum")
    return c


def separation_power(counts1: np.ndarray, counts2: np.ndarray) -> float:
    """Separation power of two histograms on the same bins (any normalisation; each is scaled to unit sum)."""
    c1, c2 = _counts(counts1, "first histogram"), _counts(counts2, "second histogram")
    if c1.shape != c2.shape:
        raise InputError(f"histograms have different numbers of bins: {len(c1)} and {len(c2)}")
    p, q = c1 / c1.sum(), c2 / c2.sum()
    total = p + q
    used = total > 0
    return float(0.5 * np.sum((p[used] - q[used]) ** 2 / total[used]))


def separation_noise_floor(counts1: np.ndarray, counts2: np.ndarray) -> float:
    """Approximate expected separation power of two samples of sizes ``N1``, ``N2`` from one distribution.

    With multinomial fluctuations and ``K`` occupied bins, ``E[S] ~ (K - 1) / 4 * (1/N1 + 1/N2)``;
    ``K`` is taken as the number of bins filled in either histogram. Values of ``S`` near this floor
    are consistent with statistical noise.
    """
    c1, c2 = _counts(counts1, "first histogram"), _counts(counts2, "second histogram")
    k = int(np.count_nonzero((c1 + c2) > 0))
    return 0.25 * max(k - 1, 0) * (1.0 / c1.sum() + 1.0 / c2.sum())


def bin_edges(reference: np.ndarray, feature: Feature, n_bins: int = 50) -> np.ndarray:
    """Bin edges for ``feature`` spanning the finite ``reference`` values.

    Logarithmic spacing between the smallest positive and the largest value for ``feature.log``
    (zeros fall into the underflow), bins aligned on the value grid for discrete features
    (``feature.step``), otherwise uniform between the minimum and the maximum.
    """
    if n_bins < 1:
        raise InputError(f"n_bins must be >= 1, got {n_bins}")
    values = np.asarray(reference, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        raise InputError(f"feature {feature.name}: no finite reference values to choose bins from")
    positive = values[values > 0]
    if feature.log and len(positive) > 0 and positive.max() > positive.min():
        return np.geomspace(positive.min(), positive.max() * (1 + 1e-9), n_bins + 1)
    lo, hi = float(values.min()), float(values.max())
    if feature.step > 0:
        k_lo, k_hi = round(lo / feature.step), round(hi / feature.step)
        group = math.ceil((k_hi - k_lo + 1) / n_bins)
        ks = np.arange(k_lo, k_hi + group + 1, group)
        return (ks - 0.5) * feature.step
    if hi <= lo:
        half = 0.5 * abs(lo) if lo != 0 else 0.5
        lo, hi = lo - half, hi + half
    return np.linspace(lo, hi + 1e-9 * (hi - lo), n_bins + 1)


@dataclass
class Separation:
    """Binned comparison of one feature.

    Attributes
    ----------
    feature: the feature compared.
    edges: the ``n_bins + 1`` bin edges (reference-based).
    reference, generated: counts in ``[underflow, bins..., overflow, undefined]`` (length ``n_bins + 3``).
    value: separation power over all ``n_bins + 3`` entries.
    noise_floor: its expected value for two samples from one distribution (see :func:`separation_noise_floor`).
    """

    feature: Feature
    edges: np.ndarray
    reference: np.ndarray
    generated: np.ndarray
    value: float
    noise_floor: float

    def to_dict(self) -> dict:
        """JSON-ready summary (counts as lists)."""
        return {
            "feature": self.feature.name,
            "label": self.feature.label,
            "separation_power": self.value,
            "noise_floor": self.noise_floor,
            "edges": self.edges.tolist(),
            "reference_counts": self.reference.tolist(),
            "generated_counts": self.generated.tolist(),
        }


def _histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    hist = bh.Histogram(bh.axis.Variable(edges, underflow=True, overflow=True))
    hist.fill(values[finite])
    inf = values[~finite & ~np.isnan(values)]
    counts = hist.values(flow=True).copy()
    counts[0] += np.count_nonzero(inf < 0)
    counts[-1] += np.count_nonzero(inf > 0)
    return np.append(counts, np.count_nonzero(np.isnan(values)))


def compare_feature(reference: np.ndarray, generated: np.ndarray, feature: Feature, n_bins: int = 50) -> Separation:
    """Histogram both samples of ``feature`` on reference-based bins and compute their separation power."""
    edges = bin_edges(reference, feature, n_bins)
    ref, gen = _histogram(reference, edges), _histogram(generated, edges)
    if ref.sum() == 0 or gen.sum() == 0:
        raise InputError(f"feature {feature.name}: empty reference or generated sample")
    return Separation(feature, edges, ref, gen, separation_power(ref, gen), separation_noise_floor(ref, gen))
