"""Figures in HEP style (mplhep ROOT style): ROC and SIC curves, score distributions, atomic saving.

Conventions (shared/README section 6 of the project notes): ROC curves show TPR on x and the background
rejection 1/FPR on a log y axis; SIC curves show TPR/sqrt(FPR) and stop where fewer than ``min_background``
background events pass a cut. Every function takes an optional ``ax`` and returns ``(fig, ax)``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from calinfer.metrics import DEFAULT_MIN_BACKGROUND, Band, RocCurve

__all__ = [
    "hep_style",
    "plot_histogram_ratio",
    "plot_roc",
    "plot_score_distributions",
    "plot_separation_summary",
    "plot_sic",
    "save_figure",
]


@contextlib.contextmanager
def hep_style() -> Iterator[None]:
    """Temporarily apply the mplhep ROOT style (global matplotlib settings are restored afterwards).

    Where the style's font (TeX Gyre Heros) is not installed, DejaVu Sans is used for text and mathtext.
    """
    import matplotlib.pyplot as plt
    import mplhep
    from matplotlib import font_manager

    style = dict(mplhep.style.ROOT)
    try:
        font_manager.findfont("TeX Gyre Heros", fallback_to_default=False)
    except ValueError:
        style.update({"mathtext.fontset": "dejavusans", "font.sans-serif": ["DejaVu Sans"]})
    with plt.style.context(style):
        yield


_COLORS = (
    "tab:blue",
    "tab:orange",
    "tab:green",
    "tab:red",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:olive",
    "tab:cyan",
    "black",
)
_LINESTYLES = ("-", "--", "-.", ":")


def _line_style(i: int) -> dict:
    """Distinct colour (and, past ten curves, line style) of the ``i``-th curve of a figure."""
    return {"color": _COLORS[i % len(_COLORS)], "ls": _LINESTYLES[(i // len(_COLORS)) % len(_LINESTYLES)]}


def _axes(ax, figsize=(8, 6)):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def plot_roc(
    curves: Mapping[str, RocCurve],
    *,
    bands: Mapping[str, Band] | None = None,
    ax=None,
    title: str | None = None,
):
    """Background rejection 1/FPR (log) against signal efficiency TPR, with the random-guess line 1/TPR."""
    with hep_style():
        fig, ax = _axes(ax)
        t = np.linspace(0.01, 1, 200)
        ax.plot(t, 1 / t, color="grey", ls=":", label="random")
        for i, (name, roc) in enumerate(curves.items()):
            ok = roc.fpr > 0
            (line,) = ax.plot(roc.tpr[ok], 1 / roc.fpr[ok], label=f"{name} (AUC {roc.auc:.3f})", **_line_style(i))
            band = (bands or {}).get(name)
            if band is not None:
                ax.fill_between(band.tpr, band.low, band.high, color=line.get_color(), alpha=0.25, lw=0)
        ax.set_yscale("log")
        ax.set_xlim(0, 1)
        ax.set_xlabel("Signal efficiency (TPR)")
        ax.set_ylabel("Background rejection 1/FPR")
        ax.legend(fontsize="x-small" if len(curves) > 4 else "small", ncol=2 if len(curves) > 5 else 1)
        if title:
            ax.set_title(title, fontsize="medium")
    return fig, ax


def plot_sic(
    curves: Mapping[str, RocCurve],
    *,
    min_background: float = DEFAULT_MIN_BACKGROUND,
    bands: Mapping[str, Band] | None = None,
    ax=None,
    title: str | None = None,
):
    """SIC = TPR/sqrt(FPR) against TPR, each curve stopping at ``min_background`` passing background events."""
    with hep_style():
        fig, ax = _axes(ax)
        t = np.linspace(0.0, 1, 200)
        ax.plot(t, np.sqrt(t), color="grey", ls=":", label="random")
        for i, (name, roc) in enumerate(curves.items()):
            tpr, sic = roc.sic(min_background)
            if not tpr.size:
                continue
            (line,) = ax.plot(tpr, sic, label=f"{name} (max {sic.max():.1f})", **_line_style(i))
            band = (bands or {}).get(name)
            if band is not None:
                ax.fill_between(band.tpr, band.low, band.high, color=line.get_color(), alpha=0.25, lw=0)
        ax.set_xlim(0, 1)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("Signal efficiency (TPR)")
        ax.set_ylabel("SIC = TPR/√FPR")
        ax.set_ylim(top=ax.get_ylim()[1] * (1.6 if len(curves) > 4 else 1.2))  # room for the legend
        ax.legend(
            fontsize="x-small" if len(curves) > 4 else "small",
            ncol=2 if len(curves) > 4 else 1,
            loc="upper left",
            title=f"cuts keeping ≥ {min_background:g} background",
            title_fontsize="x-small",
        )
        if title:
            ax.set_title(title, fontsize="medium")
    return fig, ax


def plot_score_distributions(
    samples: Mapping[str, np.ndarray],
    *,
    bins: int = 60,
    xlabel: str = "anomaly score",
    ax=None,
    log: bool = True,
    quantiles: tuple[float, float] = (0.001, 0.995),
    title: str | None = None,
):
    """Normalized histograms of several score samples on a common binning.

    The range spans from the lowest lower ``quantile`` to the highest upper one among the samples (finite
    scores only), so that a small sample is not cut away by a large one; entries outside go to the edge bins.
    """
    import mplhep

    finite = [np.asarray(v, dtype=np.float64)[np.isfinite(v)] for v in samples.values()]
    ranges = np.array([np.quantile(v, quantiles) for v in finite if v.size])
    lo, hi = (ranges[:, 0].min(), ranges[:, 1].max()) if ranges.size else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    with hep_style():
        fig, ax = _axes(ax)
        for i, ((name, _), vals) in enumerate(zip(samples.items(), finite, strict=True)):
            if not vals.size:
                continue
            counts, _ = np.histogram(np.clip(vals, lo, hi), bins=edges)
            mplhep.histplot(counts / counts.sum() / np.diff(edges), edges, ax=ax, label=name, **_line_style(i))
        if log:
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("normalized density")
        ax.legend(fontsize="small")
        if title:
            ax.set_title(title, fontsize="medium")
    return fig, ax


def plot_histogram_ratio(
    edges: np.ndarray,
    reference: np.ndarray,
    generated: np.ndarray,
    *,
    totals: tuple[float, float] | None = None,
    labels: tuple[str, str] = ("reference", "generated"),
    xlabel: str = "",
    logx: bool = False,
    note: str | None = None,
    title: str | None = None,
    ratio_range: tuple[float, float] = (0.5, 1.5),
):
    """Two histograms on shared bins as normalized densities, with the ratio generated/reference below.

    ``reference`` and ``generated`` are the in-range counts of the ``len(edges) - 1`` bins; ``totals``
    (default: their sums) are the sample sizes the densities are normalized to, so entries outside the
    range lower the curves. Error bars are Poisson (sqrt of the counts); ratios outside ``ratio_range``
    are drawn as arrows at the panel's edge; ``note`` is printed in the upper panel.
    Returns ``(fig, (ax_main, ax_ratio))``.
    """
    import matplotlib.pyplot as plt
    import mplhep

    edges = np.asarray(edges, dtype=np.float64)
    ref, gen = np.asarray(reference, dtype=np.float64), np.asarray(generated, dtype=np.float64)
    n_ref, n_gen = totals if totals is not None else (ref.sum(), gen.sum())
    width = np.diff(edges)
    d_ref, d_gen = ref / max(n_ref, 1) / width, gen / max(n_gen, 1) / width
    with hep_style():
        fig, (ax, rax) = plt.subplots(
            2, 1, figsize=(8, 7.5), sharex=True, gridspec_kw={"height_ratios": (3, 1), "hspace": 0.06}
        )
        mplhep.histplot(d_ref, edges, ax=ax, histtype="fill", alpha=0.35, color="grey", label=labels[0])
        mplhep.histplot(d_ref, edges, ax=ax, color="black", lw=1, yerr=np.sqrt(ref) / max(n_ref, 1) / width)
        mplhep.histplot(
            d_gen, edges, ax=ax, color="tab:red", label=labels[1], yerr=np.sqrt(gen) / max(n_gen, 1) / width
        )
        ax.set_ylabel("normalized density")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize="small")
        if note:
            ax.text(0.03, 0.95, note, transform=ax.transAxes, va="top", fontsize="x-small")
        if title:
            ax.set_title(title, fontsize="medium")
        both = (ref > 0) & (gen > 0)
        ratio = np.full(len(ref), np.nan)
        ratio[both] = d_gen[both] / d_ref[both]
        err = np.full(len(ref), np.nan)
        err[both] = ratio[both] * np.sqrt(1 / ref[both] + 1 / gen[both])
        centers = np.sqrt(edges[:-1] * edges[1:]) if logx else 0.5 * (edges[:-1] + edges[1:])
        lo, hi = ratio_range
        inside = (ratio >= lo) & (ratio <= hi)
        rax.axhline(1.0, color="grey", lw=1, ls="--")
        rax.errorbar(centers[inside], ratio[inside], yerr=err[inside], fmt="o", ms=3, color="tab:red", lw=1)
        # ratios off the panel as arrows at its edges
        rax.plot(centers[ratio > hi], np.full(np.count_nonzero(ratio > hi), hi), "^", color="tab:red", ms=5)
        rax.plot(centers[ratio < lo], np.full(np.count_nonzero(ratio < lo), lo), "v", color="tab:red", ms=5)
        rax.set_ylim(lo - 0.02 * (hi - lo), hi + 0.02 * (hi - lo))
        rax.set_ylabel("ratio", fontsize="small")
        rax.set_xlabel(xlabel)
        if logx:
            ax.set_xscale("log")
        rax.set_xlim(edges[0], edges[-1])
    return fig, (ax, rax)


def plot_separation_summary(
    names: list[str], values: np.ndarray, noise_floors: np.ndarray | None = None, *, ax=None, title: str | None = None
):
    """Separation power per feature as horizontal bars (log scale), with the statistical floor as markers."""
    with hep_style():
        fig, ax = _axes(ax, figsize=(8, max(4.0, 0.32 * len(names) + 1.5)))
        y = np.arange(len(names))[::-1]
        values = np.asarray(values, dtype=np.float64)
        ax.barh(y, np.maximum(values, 1e-6), color="tab:blue", alpha=0.7, label="separation power")
        if noise_floors is not None:
            ax.plot(noise_floors, y, "k|", ms=14, mew=2, label="statistical floor")
        ax.set_yticks(y, names, fontsize="x-small")
        ax.set_xscale("log")
        ax.set_xlabel("separation power")
        ax.legend(fontsize="x-small", loc="lower right")
        if title:
            ax.set_title(title, fontsize="medium")
    return fig, ax


def save_figure(fig, path: str | os.PathLike, *, close: bool = True) -> Path:
    """Save ``fig`` atomically; the format follows the suffix of ``path`` (``.pdf``, ``.png``, ``.svg``)."""
    import matplotlib.pyplot as plt

    from calinfer.io import atomic_output

    target = Path(path)
    with atomic_output(target) as tmp, hep_style():  # drawing reads the style's rc settings too
        fig.savefig(tmp, format=target.suffix.lstrip(".") or "png", bbox_inches="tight")
    if close:
        plt.close(fig)
    return target
