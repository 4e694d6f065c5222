"""``calinfer cathode``: resonant anomaly search (CATHODE) with background estimate, significance and bump hunt."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import click

from calinfer.cli.outputs import overwrite_option

__all__ = ["cathode", "check_setup"]

_MIN_SIDEBAND = 200
"""Fewest sideband events the flows may be trained on (the density of 4 features and m_jj)."""
_MIN_SR_PER_FOLD = 20
"""Fewest signal-region events per classifier fold."""
_MIN_PASSING = 20
"""Fewest background events a cut should keep for its significance to mean something."""
_MAX_S_OVER_B = 0.5
"""Above this injected S/B the signal dominates the signal region: not the weak-signal search CATHODE is for."""


class SetupWarning(UserWarning):
    """A CATHODE set-up runs, but some of its numbers will not mean much."""


def _resolve(item: str) -> str:
    """A path as given, or the file of an embedded dijet set (``calinfer.datasets.dijet_names()``)."""
    from calinfer import datasets
    from calinfer.errors import InputError

    if Path(item).exists():
        return item
    if item in datasets.dijet_names():
        return str(datasets.dijet_path(item))
    raise InputError(
        f"{item}: no such file or directory, nor an embedded dijet set ({', '.join(datasets.dijet_names())})"
    )


@click.command()
@click.argument("data", nargs=-1, required=True)
@click.option(
    "--signal-region",
    nargs=2,
    type=float,
    default=(3.3, 3.7),
    show_default=True,
    metavar="LO HI",
    help="Signal region in m_jj [TeV].",
)
@click.option(
    "--sidebands",
    nargs=2,
    type=float,
    default=(2.8, 5.0),
    show_default=True,
    metavar="LO HI",
    help="Outer edges of the sidebands [TeV] (the analysed m_jj range).",
)
@click.option("--inject", default=None, help="Signal file (LHCO layout) or embedded set to inject, e.g. dijets-signal.")
@click.option("--s-over-b", type=float, default=0.006, show_default=True, help="Injected S/B in the signal region.")
@click.option(
    "--reference",
    default=None,
    help="Independent background sample (LHCO layout file or embedded set, e.g. dijets-qcd-reference) for the "
    "idealized-AD baseline.",
)
@click.option("--baselines", default="", help="Comma-separated subset of idealized,cwola,anode,supervised.")
@click.option(
    "--n-flows",
    type=int,
    default=4,
    show_default=True,
    help="Density estimators in the ensemble (an even number with cross fitting).",
)
@click.option("--flow-epochs", type=int, default=50, show_default=True)
@click.option(
    "--flow-kind",
    type=click.Choice(["autoregressive", "coupling"]),
    default="autoregressive",
    show_default=True,
    help="Spline blocks of the density estimators: masked autoregressive, or coupling (with many weak or "
    "uninformative features it learns less spurious structure from them, but on a few features and small samples "
    "its background estimate closes worse; see README, CATHODE stop 24).",
)
@click.option(
    "--classifier",
    "classifier_kind",
    type=click.Choice(["mlp", "hgb"]),
    default="mlp",
    show_default=True,
    help="Classifier ensemble: neural networks (mlp) or gradient-boosted trees (hgb: insensitive to features "
    "without information, no epochs to tune).",
)
@click.option("--classifier-epochs", type=int, default=30, show_default=True, help="Epochs of the mlp classifiers.")
@click.option(
    "--oversample",
    type=float,
    default=4.0,
    show_default=True,
    help="Generated background events per signal-region data event and flow.",
)
@click.option("--folds", type=int, default=5, show_default=True, help="k of the k-fold scoring.")
@click.option(
    "--cross-fit/--no-cross-fit",
    default=True,
    show_default=True,
    help="Train the flows in two groups on disjoint sideband halves; each classifier trains against one group "
    "and the background after a cut is estimated from the other (needs an even --n-flows).",
)
@click.option(
    "--latent/--no-latent",
    default=False,
    show_default=True,
    help="LaCATHODE: the classifiers see the events in the latent space of the sideband flows, where background "
    "looks alike at every m_jj, so a cut cannot select m_jj through mass-correlated features; it finds less "
    "signal and the flows' own errors can still sculpt (see README) (needs --cross-fit).",
)
@click.option(
    "--calibration",
    type=click.Choice(["interpolated", "pooled"]),
    default="interpolated",
    show_default=True,
    help="How the data / generated pass ratio on held-out sideband events calibrates the headline estimate: "
    "per sideband, interpolated linearly in m_jj to the signal region, or pooled over both sidebands.",
)
@click.option(
    "--efficiency",
    "efficiencies",
    type=float,
    multiple=True,
    default=(0.2, 0.05, 0.01),
    show_default=True,
    help="Background efficiencies of the cuts (repeatable).",
)
@click.option("--toys", type=int, default=0, show_default=True, help="Look-elsewhere toys per cut (0: skip).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, default=1, show_default=True, help="Torch threads.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@overwrite_option
def cathode(
    data: tuple[str, ...],
    signal_region: tuple[float, float],
    sidebands: tuple[float, float],
    inject: str | None,
    s_over_b: float,
    reference: str | None,
    baselines: str,
    n_flows: int,
    flow_epochs: int,
    flow_kind: str,
    classifier_kind: str,
    classifier_epochs: int,
    oversample: float,
    folds: int,
    cross_fit: bool,
    latent: bool,
    calibration: str,
    efficiencies: tuple[float, ...],
    toys: int,
    seed: int,
    threads: int,
    out_dir: str,
    overwrite: bool,
) -> None:
    """Search for a localized excess in the m_jj signal region of DATA (LHCO-layout HDF5/ROOT files or directories,
    or an embedded dijet set such as dijets-qcd).

    Writes OUT/summary.json (background estimate with stat/ensemble/normalisation uncertainties, Cowan
    significance with and without the ensemble term, bump-hunt fits, maximum SIC when labels exist) and plots.
    """
    import time

    import torch

    from calinfer.io.atomic import reserve_outputs
    from calinfer.io.lhco import load_dijets
    from calinfer.resonant.injection import inject_signal, n_signal_for
    from calinfer.resonant.search import SearchConfig, run_search
    from calinfer.resonant.windows import SignalRegion

    context = click.get_current_context()
    chosen_baselines = tuple(b.strip() for b in baselines.split(",") if b.strip())
    _check_options(
        context, n_flows, cross_fit, latent, folds, oversample, efficiencies, s_over_b, inject, chosen_baselines,
        reference,
    )  # fmt: skip
    torch.set_num_threads(threads)
    t0 = time.time()
    window = SignalRegion(signal_region[0], signal_region[1], sidebands[0], sidebands[1])
    with reserve_outputs(directories=[out_dir], overwrite=overwrite):
        names = [_resolve(d) for d in data]
        events = load_dijets(names)
        check_setup(events["mjj"].to_numpy(), window, folds, efficiencies, what=", ".join(names))
        reference_events = load_dijets(_resolve(reference)) if reference else None
        if inject:
            signal = load_dijets(_resolve(inject))
            bkg = events[events["label"] == 0] if "label" in events.columns else events.assign(label=0)
            n_sig = n_signal_for(s_over_b, bkg["mjj"].to_numpy(), signal["mjj"].to_numpy(), window)
            events = inject_signal(bkg, signal, n_sig, seed=seed)
            n_outside = int(n_sig - window.in_sr(events["mjj"].to_numpy()[events["label"].to_numpy() == 1]).sum())
            click.echo(
                f"injected {n_sig} signal events (S/B = {s_over_b:g} in the signal region; {n_outside} of them "
                "fall outside it)"
            )
        config = SearchConfig(
            n_flows=n_flows,
            oversample=oversample,
            n_folds=folds,
            cross_fit=cross_fit,
            latent=latent,
            flow={"epochs": flow_epochs, "kind": flow_kind, "bootstrap": True},
            classifier={"epochs": classifier_epochs} if classifier_kind == "mlp" else {},
            classifier_kind=classifier_kind,
            efficiencies=tuple(efficiencies),
            n_toys=toys,
            baselines=chosen_baselines,
            calibration=calibration,
            seed=seed,
        )
        result = run_search(events, window, config, reference=reference_events, progress=True)
        _write_outputs(result, events, window, config, Path(out_dir), seed, t0)
    _report(result, Path(out_dir))


def _check_options(
    context: click.Context,
    n_flows: int,
    cross_fit: bool,
    latent: bool,
    folds: int,
    oversample: float,
    efficiencies: tuple[float, ...],
    s_over_b: float,
    inject: str | None,
    baselines: tuple[str, ...],
    reference: str | None,
) -> None:
    """Refuse options that cannot work, and warn about ones without effect, before anything is read or trained."""
    from calinfer.resonant.search import BASELINES

    if n_flows < 1:
        raise click.BadParameter(f"need at least one density estimator, got {n_flows}", param_hint="--n-flows")
    if cross_fit and n_flows % 2:
        raise click.BadParameter(
            f"cross fitting trains the flows in two equal groups, so it needs an even number, got {n_flows}; "
            "use an even --n-flows or --no-cross-fit",
            param_hint="--n-flows",
        )
    if latent and not cross_fit:
        raise click.UsageError("--latent needs --cross-fit: the flow that maps a sideband event must not have seen it")
    if folds < 2:
        raise click.BadParameter(f"k-fold scoring needs k >= 2, got {folds}", param_hint="--folds")
    if not oversample > 0:
        raise click.BadParameter(f"must be > 0, got {oversample:g}", param_hint="--oversample")
    bad = [e for e in efficiencies if not 0 < e <= 1]
    if bad:
        raise click.BadParameter(f"background efficiencies lie in (0, 1], got {bad}", param_hint="--efficiency")
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise click.BadParameter(f"unknown {unknown}; choose from {', '.join(BASELINES)}", param_hint="--baselines")
    if "idealized" in baselines and reference is None:
        raise click.UsageError(
            "--baselines idealized needs --reference (an independent background sample, e.g. dijets-qcd-reference)"
        )
    if not s_over_b >= 0:
        raise click.BadParameter(
            f"a signal-to-background ratio cannot be negative, got {s_over_b:g}", param_hint="--s-over-b"
        )
    given = context.get_parameter_source("s_over_b") not in (None, click.core.ParameterSource.DEFAULT)
    if inject is None and given:
        warnings.warn("--s-over-b has no effect without --inject (no signal is injected)", SetupWarning, stacklevel=2)
    if inject is not None and s_over_b > _MAX_S_OVER_B:
        warnings.warn(
            f"--s-over-b {s_over_b:g} is unphysical for this search: the injected signal dominates the signal region "
            "and part of it lands in the sidebands the background model is trained on; CATHODE looks for a small "
            "excess (S/B of a few per cent), so its background estimate and significance are not meaningful here",
            SetupWarning,
            stacklevel=2,
        )


def check_setup(mjj, window, folds: int, efficiencies: tuple[float, ...], *, what: str = "the data") -> None:
    """Refuse (:class:`InputError`) or warn about event counts too small for the flows, folds and cuts.

    ``mjj`` in TeV; ``window`` the :class:`~calinfer.resonant.windows.SignalRegion` with its sidebands.
    """
    import numpy as np

    from calinfer.errors import InputError

    mjj = np.asarray(mjj, dtype=np.float64)
    region = f"[{window.sb_low:g}, {window.sb_high:g}) TeV"
    n_range = int(window.in_range(mjj).sum())
    spans = f"m_jj spans {mjj.min():.3g}-{mjj.max():.3g} TeV" if len(mjj) else "there are no events"
    if n_range == 0:
        raise InputError(
            f"{what}: none of the {len(mjj)} events lies in the analysed m_jj range {region} ({spans}); "
            "check --sidebands and --signal-region (TeV)"
        )
    n_sr, n_sb = int(window.in_sr(mjj).sum()), int(window.in_sidebands(mjj).sum())
    counts = f"{n_sr} events in the signal region [{window.low:g}, {window.high:g}) TeV and {n_sb} in the sidebands"
    if n_sb < _MIN_SIDEBAND:
        raise InputError(
            f"{what}: {counts}; the flows need at least {_MIN_SIDEBAND} sideband events to learn the background "
            "density; widen --sidebands or give more data"
        )
    if n_sr < _MIN_SR_PER_FOLD * folds:
        raise InputError(
            f"{what}: {counts}; {folds}-fold scoring needs at least {_MIN_SR_PER_FOLD * folds} signal-region events "
            f"({_MIN_SR_PER_FOLD} per fold); widen --signal-region, lower --folds or give more data"
        )
    tightest = min(efficiencies)
    if n_sr * tightest < _MIN_PASSING:
        warnings.warn(
            f"{what}: {counts}; the ε_B = {tightest:g} cut keeps only about {n_sr * tightest:.1f} background events, "
            f"too few for its estimate and significance to mean much (about {int(np.ceil(_MIN_PASSING / tightest))} "
            "signal-region events are needed)",
            SetupWarning,
            stacklevel=2,
        )


def _write_outputs(result, events, window, config, out: Path, seed: int, t0: float) -> None:
    """summary.json and the plots, each file atomically."""
    import time

    from calinfer.io import atomic_output
    from calinfer.io.metadata import json_default
    from calinfer.metrics import roc_curve
    from calinfer.plotting import plot_sic, save_figure
    from calinfer.resonant.plots import plot_feature_closure, plot_mjj_spectra

    result.summary["wall_time_s"] = time.time() - t0
    with atomic_output(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(result.summary, indent=2, default=json_default))
    spectra = {"all events": result.counts, **{f"cut ε_B = {e:g}": c for e, c in result.counts_after.items()}}
    save_figure(plot_mjj_spectra(result.edges, spectra, window)[0], out / "mjj_fit.png")
    sb_mjj = events["mjj"].to_numpy()
    sb = window.in_sidebands(sb_mjj)
    x_sb = events[list(config.features)].to_numpy()[sb]
    gen = result.cathode.flows_[0].sample(sb_mjj[sb], seed=seed)
    save_figure(
        plot_feature_closure(x_sb, gen, config.features, title="sidebands: data vs flow")[0], out / "sidebands.png"
    )
    if result.scores:
        curves = {name: roc_curve(s, b) for name, (s, b) in result.scores.items()}
        save_figure(plot_sic(curves, min_background=config.min_background)[0], out / "sic.png")


def _report(result, out: Path) -> None:
    """The per-cut lines on stdout (sculpting warnings on stderr)."""
    for cut in result.summary["cuts"]:
        head = cut["headline"]  # the estimate that closes on background-only data (README, CATHODE section)
        click.echo(
            f"ε_B = {cut['background_efficiency']:.3g}: observed {cut['n_observed']}, B = {head['b']:.1f} ± "
            f"{head['sigma']:.1f} ({head['estimate']} estimate), Z = {head['significance']:.2f}"
        )
        click.echo(
            f"    direct estimate (cross-check; biased low on background-only data): "
            f"B = {cut['background_b']:.1f} ± {cut['background_sigma']:.1f} "
            f"(ensemble {cut['background_sigma_ensemble']:.1f}, norm {cut['background_sigma_norm']:.1f}), "
            f"Z = {cut['significance']:.2f}"
        )
        if "calibrated" in cut:
            cal = cut["calibrated"]
            click.echo(
                f"    calibrated on held-out sideband events ({cal['method']}): "
                f"B = {cal['b']:.1f} ± {cal['sigma']:.1f} "
                f"(factor {cal['calibration']:.3f}, calibration {cal['sigma_calibration']:.1f}), "
                f"Z = {cal['significance']:.2f}"
            )
        fit, bands = cut.get("bump_hunt", {}), cut["sideband_pass_fractions"]
        if "error" in fit or not fit:
            continue
        click.echo(
            f"    bump hunt after the cut: sideband fit B = {fit['b']:.1f} ± {fit['sigma_b']:.1f}, "
            f"Z_local = {fit['z_local']:.2f}, sideband fit p = {fit['sideband_p']:.2g}; pass fraction "
            f"{bands['low']['fraction']:.3f} (lower sideband) vs {bands['high']['fraction']:.3f} (upper)"
        )
        if fit["sculpted"] or bands["sculpting"]:
            click.echo(
                f"    warning: the ε_B = {cut['background_efficiency']:.3g} cut sculpts m_jj (the sidebands pass at "
                f"different rates, {bands['z_difference']:.1f} sigma apart, or the dijet function does not fit "
                "them): this bump-hunt significance is not meaningful",
                err=True,
            )
    for name, value in result.summary.get("max_sic", {}).items():
        click.echo(f"max SIC {name}: {value if value is None else round(value, 2)}")
    click.echo(f"wrote {out}/summary.json and plots in {result.summary['wall_time_s']:.0f} s")
