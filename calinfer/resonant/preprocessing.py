"""Invertible logit + standard-scaling preprocessing with its log-Jacobian.

Each feature ``x`` is mapped to the unit interval with bounds fitted on training data (widened by
``margin`` of the range on both sides), shrunk to ``[eps, 1 - eps]``, sent through the logit and
standardised:

    u = eps + (1 - 2 eps) (x - lo) / (hi - lo),   z = (logit(u) - mu) / sigma.

``log|dz/dx| = log(1 - 2 eps) - log(hi - lo) - log u - log(1 - u) - log sigma`` per feature, summed
over features, so a density ``q(z)`` becomes ``p(x) = q(z) |dz/dx|``. Values outside the fitted
bounds are clipped to them (``u`` stays inside ``[eps, 1 - eps]``), which keeps the map finite on
signal-region events slightly outside the sideband range.

Features listed in ``unbounded`` (no natural bound, e.g. roughly Gaussian ones) skip the logit: they are
only standardised, ``z = (x - mu) / sigma`` with ``log|dz/dx| = -log sigma``, and have no support limit.
Squeezing such a feature into its sample range and through the logit gives the density model tails
shaped by the two most extreme training values instead of by the feature.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from calinfer.errors import InputError, ModelError

__all__ = ["LogitScaler"]


class LogitScaler:
    """Per-feature logit + standardisation, fitted with :meth:`fit`, usable in numpy and torch."""

    def __init__(self, eps: float = 1e-3, margin: float = 0.01, unbounded: Sequence[int] = ()) -> None:
        if not 0 < eps < 0.5:
            raise InputError(f"eps must be in (0, 0.5), got {eps}")
        self.eps = float(eps)
        self.margin = float(margin)
        self.unbounded = tuple(int(i) for i in unbounded)
        self.lo_: np.ndarray | None = None

    def fit(self, x: np.ndarray) -> LogitScaler:
        """Fit bounds, mean and width on ``x`` of shape ``(N, D)``."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or len(x) < 2 or not np.isfinite(x).all():
            raise InputError(f"need finite training data of shape (N >= 2, D), got {x.shape}")
        if any(not -x.shape[1] <= i < x.shape[1] for i in self.unbounded):
            raise InputError(f"unbounded feature indices {self.unbounded} outside the {x.shape[1]} features")
        lo, hi = x.min(axis=0), x.max(axis=0)
        span = np.where(hi > lo, hi - lo, 1.0)
        self.lo_, self.hi_ = lo - self.margin * span, hi + self.margin * span
        self.mu_ = np.zeros(x.shape[1])
        self.sigma_ = np.ones(x.shape[1])
        z, _ = self.transform(x)
        self.mu_, self.sigma_ = z.mean(axis=0), np.maximum(z.std(axis=0), 1e-12)
        return self

    @property
    def logit_(self) -> np.ndarray:
        """``(D,)`` mask of the features sent through the logit (all but ``unbounded``)."""
        mask = np.ones(len(self.lo_), dtype=bool)
        mask[list(self.unbounded)] = False
        return mask

    def _check(self, d: int) -> None:
        if self.lo_ is None:
            raise ModelError("LogitScaler is not fitted; call fit() first")
        if d != len(self.lo_):
            raise InputError(f"LogitScaler was fitted on {len(self.lo_)} features, got {d}")

    def in_bounds(self, x: np.ndarray) -> np.ndarray:
        """``(N,)`` mask of events inside the fitted bounds (the support of the mapped density)."""
        x = np.asarray(x, dtype=np.float64)
        self._check(x.shape[-1])
        return ((x >= self.lo_) & (x <= self.hi_) | ~self.logit_).all(axis=-1)

    def transform_torch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x (N, D) -> (z (N, D), log|det dz/dx| (N,))`` in the dtype of ``x``."""
        self._check(x.shape[-1])
        lo, hi, mu, sigma = (torch.as_tensor(a, dtype=x.dtype, device=x.device) for a in self._params())
        logit = torch.as_tensor(self.logit_, device=x.device)
        u = self.eps + (1 - 2 * self.eps) * (x.clamp(lo, hi) - lo) / (hi - lo)
        y = torch.where(logit, torch.log(u) - torch.log1p(-u), x)
        log_dy = torch.where(logit, np.log(1 - 2 * self.eps) - torch.log(hi - lo) - torch.log(u) - torch.log1p(-u), 0.0)
        z = (y - mu) / sigma
        return z, (log_dy - torch.log(sigma)).sum(-1)

    def inverse_torch(self, z: torch.Tensor) -> torch.Tensor:
        """Map ``z`` back to the feature space."""
        self._check(z.shape[-1])
        lo, hi, mu, sigma = (torch.as_tensor(a, dtype=z.dtype, device=z.device) for a in self._params())
        y = z * sigma + mu
        x = lo + (hi - lo) * (torch.sigmoid(y) - self.eps) / (1 - 2 * self.eps)
        return torch.where(torch.as_tensor(self.logit_, device=z.device), x, y)

    def transform(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """numpy version of :meth:`transform_torch` (float64)."""
        z, logdet = self.transform_torch(torch.tensor(np.asarray(x, dtype=np.float64)))
        return z.numpy(), logdet.numpy()

    def inverse(self, z: np.ndarray) -> np.ndarray:
        """numpy version of :meth:`inverse_torch` (float64)."""
        return self.inverse_torch(torch.tensor(np.asarray(z, dtype=np.float64))).numpy()

    def _params(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return self.lo_, self.hi_, self.mu_, self.sigma_  # type: ignore[return-value]

    def state_dict(self) -> dict:
        """JSON-serialisable parameters."""
        if self.lo_ is None:
            raise ModelError("LogitScaler is not fitted; call fit() first")
        names = ("lo", "hi", "mu", "sigma")
        return {
            "eps": self.eps,
            "margin": self.margin,
            "unbounded": list(self.unbounded),
            **{k: v.tolist() for k, v in zip(names, self._params(), strict=True)},
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> LogitScaler:
        """Rebuild a fitted scaler from :meth:`state_dict`."""
        obj = cls(eps=state["eps"], margin=state["margin"], unbounded=state.get("unbounded", ()))
        obj.lo_, obj.hi_, obj.mu_, obj.sigma_ = (
            np.asarray(state[k], dtype=np.float64) for k in ("lo", "hi", "mu", "sigma")
        )
        return obj
