"""Signal injection: mix a chosen amount of signal into a background sample."""

from __future__ import annotations

import numpy as np
import pandas as pd

from calinfer.errors import InputError
from calinfer.resonant.windows import SignalRegion

__all__ = ["inject_signal", "n_signal_for"]


def n_signal_for(s_over_b: float, background_mjj: np.ndarray, signal_mjj: np.ndarray, window: SignalRegion) -> int:
    """Total signal events to inject so that S/B in the signal region of ``window`` is ``s_over_b``.

    Uses the fraction of the signal sample that falls into the signal region.
    """
    if s_over_b < 0:
        raise InputError(f"s_over_b must be >= 0, got {s_over_b}")
    b_sr = int(window.in_sr(background_mjj).sum())
    sig_frac = float(window.in_sr(signal_mjj).mean()) if len(signal_mjj) else 0.0
    if s_over_b > 0 and (b_sr == 0 or sig_frac == 0):
        raise InputError("no background or no signal in the signal region: cannot set S/B")
    return 0 if s_over_b == 0 else round(s_over_b * b_sr / sig_frac)


def inject_signal(
    background: pd.DataFrame, signal: pd.DataFrame, n_signal: int, *, seed: int | np.random.Generator = 0
) -> pd.DataFrame:
    """``background`` plus ``n_signal`` events drawn without replacement from ``signal``, shuffled.

    Both frames need the same columns; a ``label`` column (0 background, 1 signal) is set.
    """
    if n_signal > len(signal):
        raise InputError(f"asked for {n_signal} signal events, the signal sample has {len(signal)}")
    if list(background.columns.drop("label", errors="ignore")) != list(signal.columns.drop("label", errors="ignore")):
        raise InputError("background and signal have different columns")
    rng = np.random.default_rng(seed)
    picked = signal.iloc[rng.choice(len(signal), size=n_signal, replace=False)].assign(label=1)
    mixed = pd.concat([background.assign(label=0), picked], ignore_index=True)
    return mixed.iloc[rng.permutation(len(mixed))].reset_index(drop=True)
