"""Plausibility checks of the data against what a surrogate was trained on, with the likely cause (units).

A surrogate knows incident energies in its training range ``energy_range`` (GeV) and, through flow I, the
deposited energies that go with them. :class:`ModelKnowledge` samples the deposited energy at the two ends
of that range once (a few hundred layer-energy draws, milliseconds); :class:`DepositCheck` then collects
the deposited energies of the showers read, chunk by chunk, and warns about empty showers and showers far
outside that band, naming the factor 1000 of a GeV/MeV mix-up when the data sit three orders of magnitude
off. :func:`ratio_comment` judges a file's mean deposited/incident ratio without any model.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DataRangeWarning",
    "DepositCheck",
    "ModelKnowledge",
    "check_energy_range",
    "check_incident_energies",
    "ratio_comment",
]

_MARGIN = 1.1
"""Deposits within this factor of the sampled band count as known."""
_MAX_OUTSIDE = 0.01
"""Warn when more than this fraction of the showers lies outside the known band."""
_KEPT = 200_000
"""Deposited energies kept for the median (the first ones read)."""


class DataRangeWarning(UserWarning):
    """Data lie outside what the model was trained on (or outside what is physically plausible)."""


def _warn(text: str) -> None:
    warnings.warn(text, DataRangeWarning, stacklevel=3)


def _unit_cause(factor: float) -> str:
    """The likely cause of data ``factor`` times larger than expected, or ``""``."""
    if 200 <= factor <= 5000:
        return (
            "about 1000x too large: the voxel energies are probably in MeV where GeV is expected (ROOT files and "
            "the calinfer HDF5 layout hold GeV; only the CaloChallenge HDF5 layout holds MeV)"
        )
    if 1 / 5000 <= factor <= 1 / 200:
        return (
            "about 1000x too small: the energies are probably in GeV where MeV is expected (a CaloChallenge-layout "
            "HDF5 file, datasets showers/incident_energies, must hold MeV)"
        )
    return ""


@dataclass(frozen=True)
class ModelKnowledge:
    """The incident-energy range (GeV) a surrogate was trained on and its deposited-energy band there (GeV)."""

    energy_range: tuple[float, float]
    deposit_low: float
    deposit_high: float
    deposit_typical: float

    @classmethod
    def of(cls, model, energy_range: tuple[float, float] | None = None, *, n: int = 400) -> ModelKnowledge | None:
        """Sample ``model``'s flow I at the ends of ``energy_range`` (default: the model's training range).

        ``None`` for a model that cannot sample layer energies (then only empty showers are checked).
        """
        if not hasattr(model, "sample_layers"):
            return None
        lo, hi = energy_range or getattr(model, "energy_range", None) or (1.0, 100.0)
        low = model.sample_layers(np.full(n, float(lo)), seed=19).sum(axis=1)
        high = model.sample_layers(np.full(n, float(hi)), seed=20).sum(axis=1)
        typical = float(np.sqrt(np.median(low) * np.median(high)))
        return cls((float(lo), float(hi)), float(low.min()), float(high.max()), typical)

    def band(self) -> str:
        lo, hi = self.energy_range
        return (
            f"the model was trained on incident energies {lo:.4g}-{hi:.4g} GeV, where it deposits "
            f"{self.deposit_low:.3g}-{self.deposit_high:.3g} GeV"
        )


def check_energy_range(requested: tuple[float, float] | None, trained: tuple[float, float] | None) -> None:
    """Warn when an ``--energy-range`` reaches outside the range the model was trained on."""
    if requested is None or trained is None:
        return
    lo, hi = requested
    t_lo, t_hi = trained
    if lo < t_lo * (1 - 1e-3) or hi > t_hi * (1 + 1e-3):
        _warn(
            f"--energy-range {lo:g} {hi:g} GeV reaches outside the range the model was trained on "
            f"({t_lo:.4g}-{t_hi:.4g} GeV): the surrogate extrapolates there and the fitted energies are not "
            "trustworthy (they pile up at the range edges); train a model that covers the range"
        )


def check_incident_energies(energies: np.ndarray, trained: tuple[float, float] | None, source: str) -> None:
    """Warn when incident energies (GeV) of ``source`` lie outside the model's training range."""
    if trained is None or len(energies) == 0:
        return
    lo, hi = trained
    outside = (energies < lo * (1 - 1e-3)) | (energies > hi * (1 + 1e-3))
    if outside.mean() > _MAX_OUTSIDE:
        factor = float(np.median(energies)) / float(np.sqrt(lo * hi))
        cause = _unit_cause(factor)
        _warn(
            f"{source}: {int(outside.sum())} of {len(energies)} incident energies ({outside.mean():.1%}) lie outside "
            f"the model's training range {lo:.4g}-{hi:.4g} GeV (median {np.median(energies):.4g} GeV); "
            + (cause if cause else "the surrogate extrapolates there")
        )


class DepositCheck:
    """Collects the deposited energies (GeV) of the showers of one file and warns about implausible ones."""

    def __init__(self, knowledge: ModelKnowledge | None, source: str) -> None:
        self.knowledge = knowledge
        self.source = source
        self.n = self.n_empty = self.n_low = self.n_high = 0
        self._kept: list[np.ndarray] = []
        self._n_kept = 0

    def update(self, showers) -> np.ndarray:
        """Count the showers of one chunk; returns the mask of empty ones (no deposited energy)."""
        deposit = np.asarray(showers.layer_energies(), dtype=np.float64).sum(axis=1)
        empty = ~(deposit > 0)
        k = self.knowledge
        self.n += len(deposit)
        self.n_empty += int(empty.sum())
        if k is None:
            return empty
        self.n_low += int(np.sum(~empty & (deposit < k.deposit_low / _MARGIN)))
        self.n_high += int(np.sum(deposit > k.deposit_high * _MARGIN))
        if self._n_kept < _KEPT:
            part = deposit[~empty][: _KEPT - self._n_kept]
            self._kept.append(part)
            self._n_kept += len(part)
        return empty

    def report(self) -> None:
        """Warn (once per kind) about what :meth:`update` found."""
        if self.n == 0:
            return
        if self.n_empty:
            _warn(
                f"{self.source}: {self.n_empty} of {self.n} showers deposit no energy at all; they carry no "
                "information about the incident energy (status bit 32 'empty' in calibrate outputs; their "
                "results are meaningless)"
            )
        outside = self.n_low + self.n_high
        if self.knowledge is None or outside <= _MAX_OUTSIDE * self.n:
            return
        kept = np.concatenate(self._kept) if self._kept else np.zeros(0)
        median = float(np.median(kept)) if len(kept) else 0.0
        cause = _unit_cause(median / self.knowledge.deposit_typical) if median > 0 else ""
        side = []
        if self.n_low:
            side.append(f"{self.n_low} below {self.knowledge.deposit_low / _MARGIN:.3g} GeV")
        if self.n_high:
            side.append(f"{self.n_high} above {self.knowledge.deposit_high * _MARGIN:.3g} GeV")
        _warn(
            f"{self.source}: the deposited energy of {outside} of {self.n} showers ({outside / self.n:.1%}; "
            f"{', '.join(side)}; median {median:.4g} GeV) lies outside what the model knows ({self.knowledge.band()}); "
            + (cause if cause else "the results for these showers are extrapolations (expect E_mle at a range edge)")
        )


def ratio_comment(ratio: float) -> str:
    """A comment on a file's mean deposited/incident energy ratio, ``""`` when it is plausible."""
    if not np.isfinite(ratio):
        return ""
    if ratio > 1.5:
        cause = _unit_cause(ratio) or "check the units of the voxel and incident energies"
        return f"implausible: the showers deposit more than their incident energy; {cause}"
    if ratio < 0.02:
        cause = _unit_cause(ratio) or "check the units of the voxel and incident energies"
        return f"implausibly small for a calorimeter; {cause}"
    return ""
