"""Signal region and sidebands in m_jj, and sliding windows for a scan.

Masses are in TeV (the unit of :func:`calinfer.io.lhco.dijet_features`). A window is half open,
``low <= m_jj < high``; the sidebands are ``[sb_low, low)`` and ``[high, sb_high)`` and never
overlap the signal region.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calinfer.errors import InputError

__all__ = ["SignalRegion", "sliding_windows"]


@dataclass(frozen=True)
class SignalRegion:
    """A signal region ``[low, high)`` with sidebands ``[sb_low, low)`` and ``[high, sb_high)`` (TeV).

    ``sb_low``/``sb_high`` default to ``-inf``/``inf``: everything outside the signal region is sideband.
    """

    low: float
    high: float
    sb_low: float = -np.inf
    sb_high: float = np.inf

    def __post_init__(self) -> None:
        if not self.sb_low <= self.low < self.high <= self.sb_high:
            raise InputError(
                f"signal region needs sb_low <= low < high <= sb_high, got "
                f"{self.sb_low} <= {self.low} < {self.high} <= {self.sb_high} (TeV)"
            )

    @property
    def center(self) -> float:
        return 0.5 * (self.low + self.high)

    @property
    def width(self) -> float:
        return self.high - self.low

    def in_sr(self, mjj: np.ndarray) -> np.ndarray:
        """Boolean mask of events in the signal region."""
        mjj = np.asarray(mjj)
        return (mjj >= self.low) & (mjj < self.high)

    def in_sidebands(self, mjj: np.ndarray) -> np.ndarray:
        """Boolean mask of events in either sideband."""
        mjj = np.asarray(mjj)
        return ((mjj >= self.sb_low) & (mjj < self.low)) | ((mjj >= self.high) & (mjj < self.sb_high))

    def in_range(self, mjj: np.ndarray) -> np.ndarray:
        """Boolean mask of events in the signal region or the sidebands."""
        mjj = np.asarray(mjj)
        return (mjj >= self.sb_low) & (mjj < self.sb_high)

    def to_dict(self) -> dict:
        return {"low": self.low, "high": self.high, "sb_low": self.sb_low, "sb_high": self.sb_high}


def sliding_windows(
    start: float,
    stop: float,
    width: float,
    step: float | None = None,
    *,
    sideband_width: float | None = None,
) -> list[SignalRegion]:
    """Signal regions of ``width`` TeV every ``step`` (default ``width / 2``) with ``start <= low``, ``high <= stop``.

    Each window gets sidebands of ``sideband_width`` on both sides, cut at ``start``/``stop``
    (default: the whole range ``[start, stop)`` outside the window).
    """
    step = width / 2 if step is None else step
    if width <= 0 or step <= 0 or stop - start < width:
        raise InputError(f"need width > 0, step > 0 and stop - start >= width; got {start}, {stop}, {width}, {step}")
    n = int(np.floor((stop - start - width) / step + 1e-9)) + 1
    windows = []
    for i in range(n):
        low = round(start + i * step, 12)  # no 3.1999999... from accumulated float steps
        high = round(low + width, 12)
        if sideband_width is None:
            sb_low, sb_high = start, stop
        else:
            sb_low = max(start, round(low - sideband_width, 12))
            sb_high = min(stop, round(high + sideband_width, 12))
        windows.append(SignalRegion(low, high, sb_low, sb_high))
    return windows
