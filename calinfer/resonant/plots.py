"""Figures of the resonant search: m_jj spectra with the sideband fits, and generated vs data features."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from calinfer.errors import InputError
from calinfer.plotting import hep_style
from calinfer.resonant.bumphunt import DijetFunction
from calinfer.resonant.windows import SignalRegion

__all__ = ["plot_feature_closure", "plot_mjj_spectra"]


def plot_mjj_spectra(
    edges: np.ndarray,
    spectra: Mapping[str, np.ndarray],
    window: SignalRegion,
    *,
    n_params: int = 4,
    ax=None,
):
    """m_jj histograms (events per bin, log scale) with the dijet function fitted to their sidebands.

    The signal region is shaded; the dashed curves are the fits extrapolated into it.
    """
    import matplotlib.pyplot as plt
    import mplhep

    edges = np.asarray(edges, dtype=np.float64)
    lo, hi = edges[:-1], edges[1:]
    sideband = (hi <= window.low + 1e-12) | (lo >= window.high - 1e-12)
    fine = np.linspace(edges[0], edges[-1], 400)
    with hep_style():
        if ax is None:
            fig, ax = plt.subplots(figsize=(8, 6))
        else:
            fig = ax.figure
        width = float(np.mean(np.diff(edges)))
        for i, (name, counts) in enumerate(spectra.items()):
            counts = np.asarray(counts, dtype=np.float64)
            mplhep.histplot(counts, edges, ax=ax, label=name, yerr=np.sqrt(counts), color=f"C{i}")
            try:
                fit = DijetFunction(n_params).fit(edges, counts, use=sideband)
            except InputError:  # too few events for a fit
                continue
            ax.plot(fine, fit.density(fine) * width, ls="--", color=f"C{i}", lw=1)
        ax.axvspan(window.low, window.high, color="grey", alpha=0.15, lw=0, label="signal region")
        ax.set_yscale("log")
        ax.set_xlabel(r"$m_{jj}$ [TeV]")
        ax.set_ylabel("events / bin")
        ax.legend(fontsize="small")
    return fig, ax


def plot_feature_closure(
    x_data: np.ndarray, x_generated: np.ndarray, names: Sequence[str], *, bins: int = 40, title: str | None = None
):
    """Normalised histograms of each feature: sideband data against the flow's samples at the same masses."""
    import matplotlib.pyplot as plt

    x_data, x_generated = np.asarray(x_data), np.asarray(x_generated)
    n = x_data.shape[1]
    with hep_style():
        fig, axes = plt.subplots(1, n, figsize=(5 * n, 4.5), squeeze=False, layout="constrained")
        for i, ax in enumerate(axes[0]):
            lo, hi = np.quantile(x_data[:, i], [0.001, 0.999])
            b = np.linspace(lo, hi, bins + 1)
            ax.hist(np.clip(x_data[:, i], lo, hi), b, density=True, histtype="step", label="data", lw=1.5)
            ax.hist(np.clip(x_generated[:, i], lo, hi), b, density=True, histtype="step", label="generated", lw=1.5)
            ax.set_xlabel(names[i])
        axes[0][0].set_ylabel("normalised density")
        axes[0][0].legend(fontsize="small")
        if title:
            fig.suptitle(title, fontsize="medium")
    return fig, axes
