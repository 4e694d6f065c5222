"""Signal-region mass sampler (KDE) and the oversampled generated background of CATHODE."""

from __future__ import annotations

import numpy as np

from calinfer.errors import InputError, ModelError
from calinfer.resonant.density import DensityEstimator

__all__ = ["MassSampler", "generate_background"]


class MassSampler:
    """Gaussian kernel density estimate of m_jj in the signal region, truncated to ``[low, high)``.

    ``bandwidth`` in TeV; default Scott's rule ``std * N^(-1/5)``. Draws outside the window are
    redrawn, so the samples follow the KDE restricted (and renormalised) to the window.
    """

    def __init__(self, low: float, high: float, bandwidth: float | None = None) -> None:
        if not low < high:
            raise InputError(f"need low < high, got {low}, {high}")
        self.low, self.high, self.bandwidth = float(low), float(high), bandwidth
        self.data_: np.ndarray | None = None

    def fit(self, mjj: np.ndarray) -> MassSampler:
        """Fit on the m_jj values (TeV) of the signal-region events; values outside the window are ignored."""
        mjj = np.asarray(mjj, dtype=np.float64).reshape(-1)
        data = mjj[(mjj >= self.low) & (mjj < self.high)]
        if len(data) < 2:
            raise InputError(
                f"need at least 2 events in [{self.low}, {self.high}) TeV to fit the mass KDE, got {len(data)}"
            )
        self.data_ = data
        self.bandwidth_ = float(self.bandwidth) if self.bandwidth is not None else float(data.std() * len(data) ** -0.2)
        return self

    def sample(self, n: int, *, seed: int | np.random.Generator = 0) -> np.ndarray:
        """``n`` masses (TeV) from the truncated KDE."""
        if self.data_ is None:
            raise ModelError("MassSampler is not fitted; call fit() first")
        rng = np.random.default_rng(seed)
        out = np.empty(0)
        while len(out) < n:
            k = int(1.2 * (n - len(out))) + 10
            draw = rng.choice(self.data_, size=k) + self.bandwidth_ * rng.normal(size=k)
            out = np.concatenate([out, draw[(draw >= self.low) & (draw < self.high)]])
        return out[:n]


def generate_background(
    flow: DensityEstimator, masses: MassSampler, n: int, *, seed: int | np.random.Generator = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` generated signal-region background events: ``(x (n, D), m_jj (n,))``.

    CATHODE oversamples: ``n`` is typically several times the number of signal-region data events.
    """
    rng = np.random.default_rng(seed)
    m = masses.sample(n, seed=rng)
    return flow.sample(m, seed=rng), m
