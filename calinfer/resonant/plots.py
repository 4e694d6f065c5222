"""Figures of the resonant search: m_jj spectra with the sideband fits and data / fit, generated vs data features
with data / generated."""

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
):
    """m_jj histograms (events per bin, log scale) with the dijet function fitted to their sidebands, and below
    them data / fit with the Poisson errors of the data and the fit's uncertainty band (linear propagation).

    The signal region is shaded; the dashed curves are the fits extrapolated into it. Returns ``(fig, (top,
    ratio))``.
    """
    import matplotlib.pyplot as plt
    import mplhep

    edges = np.asarray(edges, dtype=np.float64)
    lo, hi = edges[:-1], edges[1:]
    centres = 0.5 * (lo + hi)
    sideband = (hi <= window.low + 1e-12) | (lo >= window.high - 1e-12)
    fine = np.linspace(edges[0], edges[-1], 400)
    with hep_style():
        fig, (ax, rax) = plt.subplots(2, 1, figsize=(8, 8), sharex=True, gridspec_kw={"height_ratios": (3, 1)},
                                      layout="constrained")
        width = float(np.mean(np.diff(edges)))
        for i, (name, counts) in enumerate(spectra.items()):
            counts = np.asarray(counts, dtype=np.float64)
            mplhep.histplot(counts, edges, ax=ax, label=name, yerr=np.sqrt(counts), color=f"C{i}")
            try:
                fit = DijetFunction(n_params).fit(edges, counts, use=sideband)
            except InputError:  # too few events for a fit
                continue
            ax.plot(fine, fit.density(fine) * width, ls="--", color=f"C{i}", lw=1)
            mu, mu_err = fit.expected(edges), fit.expected_error(edges)
            ok = mu > 0
            rax.errorbar(centres[ok], counts[ok] / mu[ok], yerr=np.sqrt(counts[ok]) / mu[ok], fmt="o", ms=3,
                         color=f"C{i}", lw=1)
            band = np.where(ok, mu_err / np.where(ok, mu, 1.0), np.nan)
            rax.stairs(1 + band, edges, baseline=1 - band, fill=True, alpha=0.2, color=f"C{i}")
        ax.axvspan(window.low, window.high, color="grey", alpha=0.15, lw=0, label="signal region")
        rax.axvspan(window.low, window.high, color="grey", alpha=0.15, lw=0)
        rax.axhline(1.0, color="black", lw=0.8)
        ax.set_yscale("log")
        ax.set_ylabel("events / bin")
        ax.legend(fontsize="small")
        rax.set_xlabel(r"$m_{jj}$ [TeV]")
        rax.set_ylabel("data / fit")
    return fig, (ax, rax)


def plot_feature_closure(
    x_data: np.ndarray, x_generated: np.ndarray, names: Sequence[str], *, bins: int = 40, title: str | None = None
):
    """Normalised histograms of each feature, sideband data against the flow's samples at the same masses, and
    below them data / generated with the statistical errors of both samples."""
    import matplotlib.pyplot as plt

    x_data, x_generated = np.asarray(x_data), np.asarray(x_generated)
    n = x_data.shape[1]
    with hep_style():
        fig, axes = plt.subplots(2, n, figsize=(5 * n, 6), squeeze=False, sharex="col", layout="constrained",
                                 gridspec_kw={"height_ratios": (3, 1)})
        for i in range(n):
            ax, rax = axes[0][i], axes[1][i]
            lo, hi = np.quantile(x_data[:, i], [0.001, 0.999])
            b = np.linspace(lo, hi, bins + 1)
            n_d = np.histogram(np.clip(x_data[:, i], lo, hi), b)[0].astype(np.float64)
            n_g = np.histogram(np.clip(x_generated[:, i], lo, hi), b)[0].astype(np.float64)
            w = np.diff(b)
            d, g = n_d / (n_d.sum() * w), n_g / (n_g.sum() * w)
            ax.stairs(d, b, label="data", lw=1.5)
            ax.stairs(g, b, label="generated", lw=1.5)
            ok = (n_d > 0) & (n_g > 0)
            ratio = np.where(ok, d / np.where(ok, g, 1.0), np.nan)
            err = ratio * np.sqrt(1 / np.where(ok, n_d, 1.0) + 1 / np.where(ok, n_g, 1.0))
            rax.errorbar(0.5 * (b[1:] + b[:-1])[ok], ratio[ok], yerr=err[ok], fmt="o", ms=2.5, color="black", lw=1)
            rax.axhline(1.0, color="grey", lw=0.8)
            rax.set_ylim(0.5, 1.5)
            rax.set_xlabel(names[i])
        axes[0][0].set_ylabel("normalised density")
        axes[1][0].set_ylabel("data / gen.")
        axes[0][0].legend(fontsize="small")
        if title:
            fig.suptitle(title, fontsize="medium")
    return fig, axes
