"""``calinfer calibrate``: per-shower maximum-likelihood incident energies with 68% likelihood intervals."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from calinfer.distributed.cli import ScaleOut, scale_out_options

if TYPE_CHECKING:
    from calinfer.calibration import CalibrationResult, Calibrator
    from calinfer.cli.checks import DepositCheck

__all__ = ["EMPTY", "calibrate", "calibrate_file", "summary_lines"]

EMPTY = 32
"""Status bit of a shower that deposits no energy: its fit carries no information (set by the CLI)."""


def summary_lines(summary: dict[str, float], seconds: float) -> list[str]:
    """The end-of-run table: counts per status flag, interval widths and the throughput."""
    n = int(summary["showers"])
    rows = [("showers", f"{n}")]
    for key in ("converged", "at_boundary", "open_low", "open_high", "multimodal", "empty"):
        if key not in summary:
            continue
        count = int(summary[key])
        rows.append((key.replace("_", " "), f"{count} ({100.0 * count / max(n, 1):.1f}%)"))
    for key, label in (
        ("median_rel_sigma_lo", "median (E_mle-E_lo)/E_mle"),
        ("median_rel_sigma_hi", "median (E_hi-E_mle)/E_mle"),
    ):
        if key in summary:
            rows.append((label, f"{summary[key]:.4f}"))
    rows.append(("time", f"{seconds:.1f} s ({n / max(seconds, 1e-9):.0f} showers/s)"))
    width = max(len(label) for label, _ in rows)
    return [f"  {label:<{width}}  {value}" for label, value in rows]


def calibrate_file(
    path: str | os.PathLike,
    out: str | os.PathLike,
    calibrator: Calibrator,
    *,
    model_label: str = "",
    tree: str = "showers",
    voxel_branch: str = "voxels",
    clip_negative: float = 0.0,
    step_size: int = 20_000,
    progress: bool = False,
    check: DepositCheck | None = None,
) -> CalibrationResult:
    """Read ``path`` chunk by chunk, fit every shower with ``calibrator`` (a :class:`Calibrator`) and stream
    the results to the tree ``calibration`` of ``out`` (one entry per input shower, in order).

    Showers without deposited energy get the status bit :data:`EMPTY`; ``check`` collects the deposited
    energies for the plausibility warnings. Returns the :class:`CalibrationResult` of the whole file. No
    truth is read.
    """
    import numpy as np
    from tqdm.auto import tqdm

    from calinfer import __version__
    from calinfer.calibration import CalibrationResult, Status
    from calinfer.errors import InputError
    from calinfer.io import RootTreeWriter, inspect_file, iterate_showers

    info = inspect_file(path, tree=tree, energy_branch=None, voxel_branch=voxel_branch)
    geometry = getattr(calibrator.surrogate, "geometry", None)
    metadata = {
        "input": str(Path(path).resolve()),
        "model": model_label,
        "likelihood": calibrator.likelihood,
        "energy_range_gev": list(calibrator.energy_range),
        "status_bits": {flag.name.lower(): int(flag) for flag in Status},  # the same as the many-files runs
        "interval": calibrator.interval_description,
        "calinfer_version": __version__,
    }
    chunks = iterate_showers(
        path,
        geometry if geometry is not None else "calogan",
        step_size=step_size,
        tree=tree,
        energy_branch=None,
        voxel_branch=voxel_branch,
        clip_negative=clip_negative,
    )
    parts = []
    with (
        RootTreeWriter(out, tree="calibration", metadata=metadata, inputs=[path]) as writer,
        tqdm(total=info.n_entries, unit="shower", desc="calibrate", disable=None if progress else True) as bar,
    ):
        for showers in chunks:
            empty = check.update(showers) if check is not None else ~(showers.layer_energies().sum(axis=1) > 0)
            result = calibrator.fit(showers, progress=bar.update)
            result.status = np.where(empty, result.status | EMPTY, result.status).astype(result.status.dtype)
            writer.extend(result.to_branches())
            parts.append(result)
        if not parts:
            raise InputError(f"{path}: no showers to calibrate")
    return CalibrationResult.concatenate(parts)


@click.command()
@click.argument("files", nargs=-1, required=True)
@click.option(
    "--out", "out", type=click.Path(dir_okay=False), help="Output ROOT file (tree 'calibration') for one input file."
)
@scale_out_options
@click.option(
    "--model",
    "model_path",
    type=str,
    default=None,
    help="Surrogate or ensemble directory, or a shipped model by name: default (photons), pions.",
)
@click.option(
    "--likelihood",
    type=click.Choice(["layers", "full"]),
    default="layers",
    show_default=True,
    help="'layers': layer energies only (flow I); 'full': the whole shower (flow I + flow II).",
)
@click.option(
    "--energy-range",
    nargs=2,
    type=float,
    default=None,
    metavar="LO HI",
    help="Allowed incident-energy range in GeV [default: the model's training range, else 1 100].",
)
@click.option(
    "--coverage-calibrated",
    is_flag=True,
    help="Intervals at the Delta(-ln L) level that covers 68.3% of the model's own showers (2000 draws at each of "
    "10 energies, fitted first) instead of 0.5: for broad, skewed likelihoods such as single hadrons.",
)
@click.option("--tree", default="showers", show_default=True, help="Input TTree name (ROOT).")
@click.option("--voxel-branch", default="voxels", show_default=True, help="Input voxel branch/dataset.")
@click.option(
    "--clip-negative",
    type=float,
    default=0.0,
    show_default=True,
    help="Set voxel energies in [-X, 0) GeV to zero (the surrogate needs voxels >= 0).",
)
@click.option("--step-size", type=int, default=20_000, show_default=True, help="Showers read per chunk.")
@click.option(
    "--workers",
    type=int,
    default=None,
    help="Batches fitted at once, one torch thread each [default: all cores; 1 per process of a many-file run].",
)
def calibrate(
    files: tuple[str, ...],
    out: str | None,
    model_path: str | None,
    likelihood: str,
    energy_range: tuple[float, float] | None,
    coverage_calibrated: bool,
    tree: str,
    voxel_branch: str,
    clip_negative: float,
    step_size: int,
    workers: int | None,
    **scale_out,
) -> None:
    """Fit the incident energy of every shower in FILES (ROOT or HDF5; paths or quoted glob patterns).

    Writes E_mle, the 68% interval [E_lo, E_hi] (Delta(-ln L) = 0.5, MINOS; with --coverage-calibrated the level
    whose intervals cover 68.3% of the model's own showers at their energy), the status flags
    (1 converged, 2 at a range edge, 4/8 interval open below/above, 16 multi-modal, 32 empty shower) and
    -ln L at the minimum, one entry per input shower in input order. No truth is read. Many files
    (--out-dir) run in local processes, or on Dask with --scheduler / --dask-workers. Existing outputs are
    not replaced without --overwrite; data outside what the model was trained on are warned about.
    """
    import time

    import numpy as np
    import torch

    from calinfer.calibration import Calibrator
    from calinfer.cli.checks import DepositCheck, ModelKnowledge, check_energy_range
    from calinfer.surrogate import default_model_path, load_default, load_model
    from calinfer.surrogate import model_path as resolve_model

    plan = ScaleOut.from_cli(files, out, **scale_out)
    load = lambda: load_model(model_path) if model_path else load_default()  # noqa: E731
    if plan.distributed:
        from calinfer.calibration import CalibrationResult
        from calinfer.distributed import CalibrateTask

        level = None
        if coverage_calibrated:
            level = _coverage_level(load(), likelihood, energy_range, workers or os.cpu_count() or 1)

        task = CalibrateTask(
            model=model_path,
            likelihood=likelihood,
            energy_range=energy_range,
            input_tree=tree,
            voxel_branch=voxel_branch,
            clip_negative=clip_negative,
            workers=workers or 1,
            interval_level=level,
        )
        parts: list = []

        def collect(_source: str, _out: Path, b: dict) -> None:
            parts.append(CalibrationResult(b["E_mle"], b["E_lo"], b["E_hi"], b["status"], b["nll"]))

        report = plan.run(task, chunk_size=step_size, on_file=collect)
        if parts:
            for line in summary_lines(CalibrationResult.concatenate(parts).summary(), report.seconds):
                click.echo(line)
        return
    file = str(plan.files[0])
    workers = workers or os.cpu_count() or 1
    torch.set_num_threads(1)
    with plan.reserve("calibration"):
        model = load()
        check_energy_range(energy_range, model.energy_range)
        level = _coverage_level(model, likelihood, energy_range, workers) if coverage_calibrated else None
        calibrator = Calibrator(model, likelihood=likelihood, energy_range=energy_range, workers=workers,
                                interval_level=level)
        check = DepositCheck(ModelKnowledge.of(model), file)
        start = time.perf_counter()
        result = calibrate_file(
            file,
            out,
            calibrator,
            model_label=str(resolve_model(model_path).resolve() if model_path else default_model_path()),
            tree=tree,
            voxel_branch=voxel_branch,
            clip_negative=clip_negative,
            step_size=step_size,
            progress=True,
            check=check,
        )
        seconds = time.perf_counter() - start
    check.report()
    click.echo(f"calibrated {file} -> {out} (tree 'calibration', likelihood {likelihood}, {workers} workers)")
    summary = result.summary()
    summary["empty"] = float(np.sum((result.status & EMPTY) != 0))
    for line in summary_lines(summary, seconds):
        click.echo(line)


def _coverage_level(model, likelihood: str, energy_range, workers: int):
    """The coverage-calibrated interval level of ``model`` (:class:`calinfer.calibration.IntervalLevel`), fitted
    with ``workers`` threads of one torch thread each."""
    import torch
    from tqdm.auto import tqdm

    from calinfer.calibration import IntervalLevel

    torch.set_num_threads(1)
    n, energies = 2000, 10
    with tqdm(total=n * energies, unit="shower", desc="interval level", disable=None) as bar:
        level = IntervalLevel.fit(model, n_per_energy=n, likelihood=likelihood, energy_range=energy_range,
                                  workers=workers, progress=bar.update)
    click.echo("interval level (Delta(-ln L) with 68.3% coverage on the model's own showers): "
               + ", ".join(f"{e:.3g} GeV {t:.3f}" for e, t in zip(level.energies, level.levels, strict=True)))
    return level
