"""``calinfer anomaly`` (score showers under a surrogate) and ``calinfer sic`` (labelled ROC/SIC evaluation)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import click

from calinfer.anomaly.scores import SCORE_NAMES
from calinfer.cli.outputs import overwrite_option
from calinfer.distributed.cli import ScaleOut, scale_out_options

if TYPE_CHECKING:
    from calinfer.cli.checks import DepositCheck

__all__ = ["anomaly", "load_surrogate", "score_file", "sic", "sic_report"]

_SCORES = SCORE_NAMES  # the score registry of calinfer.anomaly.make_score, "-tail" scores included
_CALIBRATION_DATASET = "photons-val"


def load_surrogate(model: str | None):
    """The surrogate at ``model`` (a surrogate or ensemble directory), or the shipped default one."""
    from calinfer.surrogate import load_default, load_model

    return load_default() if model is None else load_model(model)


def _energy_scale(score_name: str, scale: float | None, calibration: str | None, geometry):
    """lambda for the scores evaluated at E_rec: given, fitted on ``calibration``, or on the embedded photons."""
    from calinfer.anomaly import EnergyScale

    if score_name.startswith("profile"):
        return None
    if scale is not None:
        if not scale > 0:
            raise click.BadParameter(f"the energy scale must be positive, got {scale}", param_hint="--scale")
        return EnergyScale(value=scale, uncertainty=0.0, method="fixed", n_showers=0)
    if calibration is not None:
        from calinfer.io import read_showers

        background = read_showers(calibration, geometry)
    else:
        from calinfer import datasets

        background = datasets.load(_CALIBRATION_DATASET)
        geometry.check(background.geometry, what=f"embedded data set {_CALIBRATION_DATASET}")
    return EnergyScale.fit(background)


def score_file(
    path: str,
    out: str,
    surrogate,
    *,
    score_name: str = "nll",
    scale: float | None = None,
    calibration: str | None = None,
    tree: str = "showers",
    step_size: int = 10_000,
    device: str | None = None,
    n_grid: int = 32,
    clip_negative: float = 0.0,
    progress: bool = False,
    check: DepositCheck | None = None,
) -> dict:
    """Score every shower of ``path`` chunk by chunk and stream the results to tree ``anomaly`` of ``out``.

    One entry per input shower, in order: ``score`` (higher = more anomalous), ``entry`` (input entry number)
    and the score's auxiliary quantities (GeV). ``check`` collects the deposited energies for the
    plausibility warnings. Returns the metadata stored in ``out``.
    """
    import numpy as np
    from tqdm.auto import tqdm

    from calinfer.anomaly import make_score
    from calinfer.io import RootTreeWriter, inspect_file, iterate_showers

    if score_name not in _SCORES:
        raise click.BadParameter(f"unknown score {score_name!r}; use one of {_SCORES}", param_hint="--score")
    geometry = surrogate.geometry
    energy_scale = _energy_scale(score_name, scale, calibration, geometry)
    options: dict = {"device": device}
    if score_name.startswith("profile"):
        options["n_grid"] = n_grid
    else:
        options["scale"] = energy_scale
    score = make_score(score_name, surrogate, **options)
    info = inspect_file(path, tree=tree, energy_branch=None)
    metadata = {
        "input": str(path),
        "input_tree": tree,
        "score": score.name,
        "surrogate_part": score.part,
        "energy_range_gev": list(score.energy_range),
        "energy_scale": None if energy_scale is None else energy_scale.to_dict(),
        "energy_scale_source": (
            None if energy_scale is None else "--scale" if scale is not None else calibration or _CALIBRATION_DATASET
        ),
        "geometry": geometry.id,
        "convention": "higher score = more anomalous; one entry per input shower, in order",
    }
    chunks = iterate_showers(
        path, geometry, step_size=step_size, tree=tree, energy_branch=None, clip_negative=clip_negative
    )
    with (
        RootTreeWriter(out, tree="anomaly", metadata=metadata, inputs=[path]) as writer,
        tqdm(total=info.n_entries, unit="shower", disable=not progress, desc=f"score {score.name}") as bar,
    ):
        for showers in chunks:
            if check is not None:
                check.update(showers)
            result = score.evaluate(showers)
            result["entry"] = np.arange(showers.entry_start, showers.entry_start + len(showers), dtype=np.int64)
            writer.extend(result)
            bar.update(len(showers))
    metadata["entries"] = info.n_entries
    return metadata


@click.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--out", "-o", type=click.Path(dir_okay=False), help="Output ROOT file (tree 'anomaly'), one input.")
@scale_out_options
@click.option("--model", type=str, help="Surrogate directory, or a shipped model by name (default: default).")
@click.option(
    "--score",
    "score_name",
    type=click.Choice(_SCORES),
    default="nll",
    show_default=True,
    help="nll: -log p(x|E_rec); profile: -max_E log p(x|E); layers/voxels: flow I/II only at E_rec; "
    "*-mixed: empty voxels counted with their probability instead of the dequantized density.",
)
@click.option("--scale", type=float, help="Energy scale lambda (E_rec = E_dep/lambda) instead of fitting it.")
@click.option(
    "--calibration",
    type=click.Path(exists=True, dir_okay=False),
    help="Labelled background showers to fit lambda on (default: embedded photons-val).",
)
@click.option("--tree", default="showers", show_default=True, help="Input tree (ROOT).")
@click.option("--step-size", default=10_000, show_default=True, help="Showers read and scored per chunk.")
@click.option("--n-grid", default=32, show_default=True, help="Coarse energy grid points of --score profile.")
@click.option("--clip-negative", default=0.0, show_default=True, help="Set voxels above -this GeV and below 0 to 0.")
@click.option("--device", help="torch device (default: GPU when present).")
@click.option("--progress/--no-progress", default=True, show_default=True)
def anomaly(
    files, out, model, score_name, scale, calibration, tree, step_size, n_grid, clip_negative, device, progress,
    **scale_out,
) -> None:  # fmt: skip
    """Score every shower of FILES by how unlikely it is under the surrogate (higher = more anomalous).

    FILES are paths or quoted glob patterns; many files (--out-dir) run in local processes, or on Dask with
    --scheduler / --dask-workers.
    """
    plan = ScaleOut.from_cli(files, out, **scale_out)
    if plan.distributed:
        from calinfer.distributed import AnomalyTask, cached_model

        with plan.reserve("anomaly"):  # before fitting lambda; plan.run holds the same reservation
            energy_scale = _energy_scale(score_name, scale, calibration, cached_model(model).geometry)
            source = "--scale" if scale is not None else calibration or _CALIBRATION_DATASET
            task = AnomalyTask(
                model=model, score=score_name, energy_scale=energy_scale, scale_source=source, input_tree=tree,
                n_grid=n_grid, clip_negative=clip_negative, device=device,
            )  # fmt: skip
            plan.run(task, chunk_size=step_size, progress=progress)
        return
    from calinfer.cli.checks import DepositCheck, ModelKnowledge

    file = str(plan.files[0])
    with plan.reserve("anomaly"):
        surrogate = load_surrogate(model)
        check = DepositCheck(ModelKnowledge.of(surrogate), file)
        meta = score_file(
            file,
            out,
            surrogate,
            score_name=score_name,
            scale=scale,
            calibration=calibration,
            tree=tree,
            step_size=step_size,
            device=device,
            n_grid=n_grid,
            clip_negative=clip_negative,
            progress=progress,
            check=check,
        )
    check.report()
    lam = meta["energy_scale"]
    extra = f", lambda = {lam['value']:.4f} ({meta['energy_scale_source']})" if lam else ""
    click.echo(f"wrote {meta['entries']} scores ({meta['score']}{extra}) to {out}:anomaly")


def _read_branch(path: str, tree: str, branch: str):
    import numpy as np

    from calinfer.errors import InputError
    from calinfer.io.root import open_root_file

    with open_root_file(path) as handle:
        if tree not in handle:
            raise InputError(f"{path}: no tree {tree!r} (it has {', '.join(handle.keys()) or 'nothing'})")
        t = handle[tree]
        if branch not in t.keys():
            raise InputError(f"{path}:{tree} has no branch {branch!r}; branches: {', '.join(t.keys())}")
        return np.asarray(t[branch].array(library="np"), dtype=np.float64)


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def sic_report(
    signal: str,
    background: str,
    out_dir: str,
    *,
    branches: tuple[str, ...] = ("score",),
    tree: str = "anomaly",
    min_background: float = 50.0,
    tpr: float = 0.3,
    n_bootstrap: int = 100,
    seed: int = 0,
) -> dict:
    """ROC/SIC evaluation of score branches of labelled signal and background files: plots and ``metrics.json``."""
    import json
    from pathlib import Path

    from calinfer import metrics, plotting
    from calinfer.io import atomic_output

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rocs, sic_bands, rej_bands, hists, summary = {}, {}, {}, {}, {}
    for branch in branches:
        s, b = _read_branch(signal, tree, branch), _read_branch(background, tree, branch)
        summary[branch] = metrics.summarize(
            s, b, min_background=min_background, tpr=tpr, n_bootstrap=n_bootstrap, seed=seed
        )
        rocs[branch] = metrics.roc_curve(s, b)
        if n_bootstrap:
            sic_bands[branch] = metrics.curve_band(
                s, b, kind="sic", n_bootstrap=n_bootstrap, min_background=min_background, seed=seed
            )
            rej_bands[branch] = metrics.curve_band(s, b, kind="rejection", n_bootstrap=n_bootstrap, seed=seed)
        hists[f"{branch} signal"], hists[f"{branch} background"] = s, b
    fig, _ = plotting.plot_roc(rocs, bands=rej_bands)
    plotting.save_figure(fig, out / "roc.pdf")
    fig, _ = plotting.plot_sic(rocs, min_background=min_background, bands=sic_bands)
    plotting.save_figure(fig, out / "sic.pdf")
    fig, _ = plotting.plot_score_distributions(hists)
    plotting.save_figure(fig, out / "scores.pdf")
    report = {"signal": str(signal), "background": str(background), "tree": tree, "metrics": summary}
    with atomic_output(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(_json_safe(report), indent=2) + "\n")
    return report


@click.command()
@click.option("--signal", required=True, type=click.Path(exists=True, dir_okay=False), help="Scores of signal.")
@click.option("--background", required=True, type=click.Path(exists=True, dir_okay=False), help="Scores of background.")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option(
    "--branch",
    "branches",
    multiple=True,
    default=("score",),
    show_default=True,
    help="Score branch(es) to evaluate (repeat the option for several).",
)
@click.option("--tree", default="anomaly", show_default=True)
@click.option(
    "--min-background",
    default=50.0,
    show_default=True,
    help="SIC maximum only over cuts keeping at least this many background events.",
)
@click.option("--tpr", default=0.3, show_default=True, help="Signal efficiency of the quoted rejection 1/FPR.")
@click.option("--bootstrap", "n_bootstrap", default=100, show_default=True, help="Bootstrap replicas (0: none).")
@click.option("--seed", default=0, show_default=True)
@overwrite_option
def sic(signal, background, out, branches, tree, min_background, tpr, n_bootstrap, seed, overwrite) -> None:
    """ROC, SIC and score plots plus metrics.json for labelled SIGNAL and BACKGROUND score files."""
    from calinfer.io.atomic import reserve_outputs

    with reserve_outputs(directories=[out], overwrite=overwrite):
        report = sic_report(
            signal,
            background,
            out,
            branches=tuple(branches),
            tree=tree,
            min_background=min_background,
            tpr=tpr,
            n_bootstrap=n_bootstrap,
            seed=seed,
        )
    for branch, m in report["metrics"].items():
        click.echo(
            f"{branch}: AUC {m['auc']:.3f}, max SIC {m['max_sic']:.2f} (cap {m['sic_cap']:.1f} at "
            f">= {min_background:g} background), 1/FPR at TPR {tpr:g}: {m['rejection']:.3g}"
        )
    click.echo(f"wrote roc.pdf, sic.pdf, scores.pdf and metrics.json to {out}")
