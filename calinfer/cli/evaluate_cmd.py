"""``calinfer evaluate``: compare surrogate samples with reference showers (separation powers, classifier AUC)."""

from __future__ import annotations

import click

from calinfer.cli.outputs import overwrite_option

__all__ = ["evaluate", "run_evaluation"]


def _file_name(feature: str) -> str:
    return "hist_" + feature.replace("/", "_over_")


def _note(sep, labels: tuple[str, str]) -> str:
    """Text for a histogram: separation power and the share of each sample outside the bins or undefined."""
    lines = [f"separation power {sep.value:.4f} (floor {sep.noise_floor:.4f})"]
    for label, counts in zip(labels, (sep.reference, sep.generated), strict=True):
        total = counts.sum()
        outside, undefined = (counts[0] + counts[-2]) / total, counts[-1] / total
        if outside or undefined:
            lines.append(f"{label}: {outside:.1%} outside range, {undefined:.1%} undefined")
    return "\n".join(lines)


def run_evaluation(
    model,
    reference,
    out_dir: str,
    *,
    n_bins: int = 50,
    inputs: tuple[str, ...] = ("features", "voxels"),
    n_runs: int = 5,
    max_classifier_showers: int | None = None,
    threshold: float | None = None,
    n_threads: int | None = None,
    seed: int = 0,
    device: str | None = None,
    plots: bool = True,
    plot_format: str = "png",
    info: dict | None = None,
    echo=click.echo,
):
    """Sample ``model`` at the incident energies of ``reference`` and write the comparison into ``out_dir``.

    Writes ``evaluation.json``, ``evaluation.md``, ``separation.<fmt>`` and one ``hist_<feature>.<fmt>`` per
    feature (each file atomically); ``threshold`` (GeV, default: the larger of the model's dequantization
    width and read-out threshold) is the sparsity threshold; ``n_threads`` limits the classifiers' threads. Returns the
    :class:`~calinfer.evaluation.Evaluation`.
    """
    import json
    import time
    from pathlib import Path

    import numpy as np

    from calinfer.errors import InputError
    from calinfer.evaluation import evaluate_showers
    from calinfer.io import atomic_output

    if reference.incident_energy is None:
        raise InputError(f"{reference.source}: the reference showers need incident energies to sample the surrogate")
    model.geometry.check(reference.geometry, what=f"reference showers {reference.source}")
    if threshold is None:
        members = getattr(model, "members", [model])
        threshold = max(max(m.preprocessing.dequantization_width, m.preprocessing.readout_threshold)
                        for m in members)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    generated = model.sample(reference.incident_energy, seed=seed, device=device)
    sample_s = time.perf_counter() - start
    echo(f"sampled {len(generated)} showers in {sample_s:.1f} s ({len(generated) / sample_s:.0f} showers/s)")
    meta = {**(info or {}), "seed": seed, "sparsity_threshold_GeV": threshold, "sampling_seconds": round(sample_s, 3),
            "layers": [layer.name for layer in model.geometry.layers]}
    evaluation = evaluate_showers(
        reference,
        generated,
        n_bins=n_bins,
        classifier_inputs=inputs,
        n_runs=n_runs,
        max_showers=max_classifier_showers,
        threshold=threshold,
        n_threads=n_threads,
        seed=seed,
        info=meta,
    )

    with atomic_output(out / "evaluation.json") as tmp:
        tmp.write_text(json.dumps(evaluation.to_dict(), indent=1))
    with atomic_output(out / "evaluation.md") as tmp:
        tmp.write_text(evaluation.to_markdown())
    if plots:
        from calinfer.plotting import plot_histogram_ratio, plot_separation_summary, save_figure

        labels = ("reference", "surrogate")
        for sep in evaluation.separations:
            totals = (float(sep.reference.sum()), float(sep.generated.sum()))
            fig, _ = plot_histogram_ratio(
                sep.edges,
                sep.reference[1:-2],
                sep.generated[1:-2],
                totals=totals,
                labels=labels,
                xlabel=sep.feature.label,
                logx=sep.feature.log and sep.edges[0] > 0,
                note=_note(sep, labels),
            )
            save_figure(fig, out / f"{_file_name(sep.feature.name)}.{plot_format}")
        fig, _ = plot_separation_summary(
            [s.feature.name for s in evaluation.separations],
            np.array([s.value for s in evaluation.separations]),
            np.array([s.noise_floor for s in evaluation.separations]),
        )
        save_figure(fig, out / f"separation.{plot_format}")
    return evaluation


def _check_reference_options(reference: str | None, dataset: str | None, simulate: bool) -> None:
    from calinfer.errors import InputError

    given = [opt for opt, value in (("--reference", reference), ("--dataset", dataset)) if value is not None]
    if len(given) + simulate > 1:
        raise InputError(
            f"give only one of --reference, --dataset and --simulate (got {', '.join(given)}"
            f"{', --simulate' if simulate else ''})"
        )


def _load_reference(
    reference: str | None, dataset: str | None, simulate: bool, n: int | None, geometry, seed: int, reader: dict
):
    _check_reference_options(reference, dataset, simulate)
    if simulate:
        from calinfer.simulation import simulate_showers

        sim_seed = seed + 424_242
        return simulate_showers(n or 10_000, geometry=geometry, seed=sim_seed), f"simulated photons (seed {sim_seed})"
    if reference is not None:
        from calinfer.io import read_showers

        return read_showers(reference, geometry, entry_stop=n, **reader), reference
    from calinfer import datasets

    name = dataset or "photons-val"
    showers = datasets.load(name)
    return (showers[:n] if n else showers), f"dataset {name}"


@click.command()
@click.option(
    "--model",
    "model_path",
    type=str,
    default=None,
    help="Surrogate (or ensemble) directory, or a shipped model by name (default, pions).",
)
@click.option(
    "--reference",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Reference shower file (.root or .h5) with incident energies.",
)
@click.option("--dataset", default=None, help="Embedded reference data set (default: photons-val).")
@click.option(
    "--simulate",
    is_flag=True,
    help="Reference showers freshly made by the built-in simulator (photons, E uniform in 1-100 GeV).",
)
@click.option(
    "--n", "n", type=int, default=None, help="Use the first N reference showers (default: all; 10000 with --simulate)."
)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--tree", default="showers", show_default=True, help="TTree name (ROOT reference files).")
@click.option("--voxel-branch", default="voxels", show_default=True, help="Flat voxel branch (GeV).")
@click.option("--energy-branch", default="incident_energy", show_default=True, help="Incident energy branch (GeV).")
@click.option("--clip-negative", default=0.0, show_default=True, help="Set voxel energies in [-x, 0) GeV to zero.")
@click.option("--bins", "n_bins", default=50, show_default=True, help="Histogram bins per feature.")
@click.option(
    "--classifier",
    "classifier",
    type=click.Choice(["features", "voxels", "both", "none"]),
    default="both",
    show_default=True,
    help="Inputs of the classifier test.",
)
@click.option("--runs", default=5, show_default=True, help="Classifier trainings (AUC mean and spread).")
@click.option(
    "--classifier-showers", type=int, default=None, help="At most this many showers per class in each classifier run."
)
@click.option(
    "--threshold",
    type=float,
    default=None,
    help="Sparsity threshold in GeV (default: the model's dequantization width or read-out threshold).",
)
@click.option("--seed", default=0, show_default=True, help="Seed of sampling, simulation and classifiers.")
@click.option("--device", default=None, help="torch device for sampling (default: cuda when available).")
@click.option("--threads", type=int, default=None, help="CPU threads of torch and of the classifiers.")
@click.option("--format", "plot_format", type=click.Choice(["png", "pdf", "svg"]), default="png", show_default=True)
@click.option("--no-plots", is_flag=True, help="Only the tables and the JSON.")
@overwrite_option
def evaluate(
    model_path: str | None,
    reference: str | None,
    dataset: str | None,
    simulate: bool,
    n: int | None,
    out_dir: str,
    tree: str,
    voxel_branch: str,
    energy_branch: str,
    clip_negative: float,
    n_bins: int,
    classifier: str,
    runs: int,
    classifier_showers: int | None,
    threshold: float | None,
    seed: int,
    device: str | None,
    threads: int | None,
    plot_format: str,
    no_plots: bool,
    overwrite: bool,
) -> None:
    """Compare surrogate showers with reference showers, CaloChallenge style.

    Samples the surrogate at the incident energies of the reference showers, histograms high-level
    features (layer energies, E_dep/E_inc, centroids, widths, sparsity) and computes their separation
    powers, and trains classifiers to separate the two samples (AUC, mean and spread over --runs).
    Writes evaluation.json, evaluation.md and the histograms into OUT and prints the tables.
    """
    from pathlib import Path

    import torch

    from calinfer.cli.checks import DepositCheck, ModelKnowledge, check_incident_energies
    from calinfer.io.atomic import reserve_outputs
    from calinfer.surrogate import load_default, load_model

    if threads:
        torch.set_num_threads(threads)
    _check_reference_options(reference, dataset, simulate)
    with reserve_outputs(directories=[out_dir], overwrite=overwrite):
        model = load_model(model_path) if model_path else load_default()
        reader = {
            "tree": tree,
            "voxel_branch": voxel_branch,
            "energy_branch": energy_branch,
            "clip_negative": clip_negative,
        }
        ref, described = _load_reference(reference, dataset, simulate, n, model.geometry, seed, reader)
        if ref.incident_energy is not None:
            check_incident_energies(ref.incident_energy, model.energy_range, described)
        check = DepositCheck(ModelKnowledge.of(model), described)
        check.update(ref)
        check.report()
        inputs = {"both": ("features", "voxels"), "none": ()}.get(classifier, (classifier,))
        info = {"model": model_path or "pretrained default", "reference": described, "geometry": model.geometry.id}
        evaluation = run_evaluation(
            model,
            ref,
            out_dir,
            n_bins=n_bins,
            inputs=inputs,
            n_runs=runs,
            max_classifier_showers=classifier_showers,
            threshold=threshold,
            n_threads=threads,
            seed=seed,
            device=device,
            plots=not no_plots,
            plot_format=plot_format,
            info=info,
        )
    click.echo(evaluation.to_text())
    click.echo(
        f"wrote {Path(out_dir) / 'evaluation.json'}, {Path(out_dir) / 'evaluation.md'}"
        + ("" if no_plots else " and the histograms")
    )
