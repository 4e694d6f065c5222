"""``calinfer cathode``: resonant anomaly search (CATHODE) with background estimate, significance and bump hunt."""

from __future__ import annotations

import json
from pathlib import Path

import click

__all__ = ["cathode"]


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
@click.option("--classifier-epochs", type=int, default=30, show_default=True)
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
    classifier_epochs: int,
    oversample: float,
    folds: int,
    cross_fit: bool,
    efficiencies: tuple[float, ...],
    toys: int,
    seed: int,
    threads: int,
    out_dir: str,
) -> None:
    """Search for a localized excess in the m_jj signal region of DATA (LHCO-layout HDF5/ROOT files or directories,
    or an embedded dijet set such as dijets-qcd).

    Writes OUT/summary.json (background estimate with stat/ensemble/normalisation uncertainties, Cowan
    significance with and without the ensemble term, bump-hunt fits, maximum SIC when labels exist) and plots.
    """
    import time

    import torch

    from calinfer.io import atomic_output
    from calinfer.io.lhco import load_dijets
    from calinfer.io.metadata import json_default
    from calinfer.metrics import roc_curve
    from calinfer.plotting import plot_sic, save_figure
    from calinfer.resonant.injection import inject_signal, n_signal_for
    from calinfer.resonant.plots import plot_feature_closure, plot_mjj_spectra
    from calinfer.resonant.search import SearchConfig, run_search
    from calinfer.resonant.windows import SignalRegion

    torch.set_num_threads(threads)
    t0 = time.time()
    window = SignalRegion(signal_region[0], signal_region[1], sidebands[0], sidebands[1])
    events = load_dijets([_resolve(d) for d in data])
    if inject:
        signal = load_dijets(_resolve(inject))
        bkg = events[events["label"] == 0] if "label" in events.columns else events.assign(label=0)
        n_sig = n_signal_for(s_over_b, bkg["mjj"].to_numpy(), signal["mjj"].to_numpy(), window)
        events = inject_signal(bkg, signal, n_sig, seed=seed)
        click.echo(f"injected {n_sig} signal events (S/B = {s_over_b:g} in the signal region)")
    config = SearchConfig(
        n_flows=n_flows,
        oversample=oversample,
        n_folds=folds,
        cross_fit=cross_fit,
        flow={"epochs": flow_epochs, "bootstrap": True},
        classifier={"epochs": classifier_epochs},
        efficiencies=tuple(efficiencies),
        n_toys=toys,
        baselines=tuple(b.strip() for b in baselines.split(",") if b.strip()),
        seed=seed,
    )
    result = run_search(
        events, window, config, reference=load_dijets(_resolve(reference)) if reference else None, progress=True
    )
    result.summary["wall_time_s"] = time.time() - t0
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
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
    for cut in result.summary["cuts"]:
        click.echo(
            f"ε_B = {cut['background_efficiency']:.3g}: observed {cut['n_observed']}, direct estimate "
            f"B = {cut['background_b']:.1f} ± {cut['background_sigma']:.1f} "
            f"(stat {cut['background_sigma_stat']:.1f}, ensemble {cut['background_sigma_ensemble']:.1f}, "
            f"norm {cut['background_sigma_norm']:.1f}), Z = {cut['significance']:.2f} "
            f"(without ensemble {cut['significance_without_ensemble']:.2f})"
        )
        if "calibrated" in cut:
            cal = cut["calibrated"]
            click.echo(
                f"    calibrated on held-out sideband events (the estimate that closes in analyses/cathode_study.py): "
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
