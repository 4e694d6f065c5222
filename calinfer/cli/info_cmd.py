"""``calinfer info``: summarise a shower file (entries, geometry match, energy ranges, per-layer energies)."""

from __future__ import annotations

import click

__all__ = ["info", "summarize_file"]


def summarize_file(path: str, geometry: str | None = None, *, step_size: int = 10_000, **options) -> dict:
    """Read ``path`` chunk by chunk and return the numbers ``calinfer info`` prints (energies in GeV).

    ``options`` are those of :func:`calinfer.io.iterate_showers` (tree, branches, clip_negative, progress).
    """
    import numpy as np

    from calinfer.io import inspect_file, iterate_showers, matching_geometries, resolve_geometry

    structure = ("tree", "energy_branch", "voxel_branch", "layer_branches")
    reader_options = {k: options[k] for k in structure if k in options}
    info = inspect_file(path, **reader_options)
    chosen = resolve_geometry(geometry, info)
    n = 0
    layer_sum = np.zeros(chosen.n_layers)
    layer_sq = np.zeros(chosen.n_layers)
    total_sum = total_sq = ratio_sum = 0.0
    e_min, e_max, e_sum = np.inf, -np.inf, 0.0
    for showers in iterate_showers(path, chosen, step_size=step_size, **options):
        layers = showers.layer_energies().astype(np.float64)
        total = layers.sum(axis=1)
        n += len(showers)
        layer_sum += layers.sum(axis=0)
        layer_sq += (layers**2).sum(axis=0)
        total_sum += total.sum()
        total_sq += (total**2).sum()
        if showers.incident_energy is not None:
            energy = showers.incident_energy
            e_min, e_max, e_sum = min(e_min, energy.min()), max(e_max, energy.max()), e_sum + energy.sum()
            ratio_sum += (total / energy).sum()

    def mean_std(s: float | np.ndarray, sq: float | np.ndarray) -> tuple:
        mean = s / n
        return mean, np.sqrt(np.maximum(sq / n - mean**2, 0.0))

    from calinfer.cli.checks import ratio_comment

    layer_mean, layer_std = mean_std(layer_sum, layer_sq)
    total_mean, total_std = mean_std(total_sum, total_sq)
    has_energy = info.energy_column is not None
    comment = ratio_comment(ratio_sum / n) if has_energy else ""
    return {
        "path": str(info.path),
        "format": info.format,
        "layout": info.layout,
        "container": info.container,
        "stored_unit": info.stored_unit,
        "entries": n,
        "voxels_per_shower": info.n_voxels,
        "matching_presets": [g.name for g in matching_geometries(info.n_voxels)],
        "recorded_geometry": info.metadata.get("geometry"),
        "geometry": chosen.name,
        "geometry_id": chosen.id,
        "incident_energy": (
            {
                "min": float(e_min),
                "max": float(e_max),
                "mean": e_sum / n,
                "deposited_over_incident": ratio_sum / n,
                "comment": comment or None,
            }
            if has_energy
            else None
        ),
        "total_energy": {"mean": float(total_mean), "std": float(total_std)},
        "layers": [
            {
                "name": layer.name,
                "voxels": layer.n_cells,
                "mean": float(m),
                "std": float(s),
                "fraction": float(m / total_mean) if total_mean > 0 else 0.0,
            }
            for layer, m, s in zip(chosen.layers, layer_mean, layer_std, strict=True)
        ],
        "metadata": info.metadata,
    }


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    return lines


def _render(summary: dict) -> str:
    layout = {"ttree": f"ROOT TTree {summary['container']!r}", "calinfer": "HDF5, calinfer layout (GeV)"}.get(
        summary["layout"], "HDF5, CaloChallenge layout (MeV, converted to GeV)"
    )
    recorded = summary["recorded_geometry"]
    if recorded is None:
        recorded_text = "none recorded"
    else:
        recorded_text = recorded + (" (matches)" if recorded == summary["geometry_id"] else " (DIFFERS)")
    head = [
        ["file", summary["path"]],
        ["format", layout],
        ["entries", str(summary["entries"])],
        ["voxels/shower", str(summary["voxels_per_shower"])],
        ["presets by voxel count", ", ".join(summary["matching_presets"]) or "none"],
        ["recorded geometry", recorded_text],
        ["geometry used", f"{summary['geometry']} ({summary['geometry_id']})"],
    ]
    energy = summary["incident_energy"]
    if energy is None:
        head.append(["incident energy", "not read"])
    else:
        head.append(["incident energy", f"{energy['min']:.6g} - {energy['max']:.6g} GeV (mean {energy['mean']:.6g})"])
        comment = f"; {energy['comment']}" if energy.get("comment") else ""
        head.append(["deposited/incident", f"{energy['deposited_over_incident']:.6g} (mean){comment}"])
    total = summary["total_energy"]
    head.append(["deposited energy", f"{total['mean']:.6g} +- {total['std']:.6g} GeV"])
    width = max(len(k) for k, _ in head)
    lines = [f"{k.ljust(width)}  {v}" for k, v in head]
    rows = [["layer", "voxels", "mean [GeV]", "std [GeV]", "fraction"]]
    for layer in summary["layers"]:
        mean, std, fraction = f"{layer['mean']:.6g}", f"{layer['std']:.6g}", f"{layer['fraction']:.4f}"
        rows.append([layer["name"], str(layer["voxels"]), mean, std, fraction])
    rows.append(["total", str(summary["voxels_per_shower"]), f"{total['mean']:.6g}", f"{total['std']:.6g}", "1.0000"])
    return "\n".join([*lines, "", *_table(rows)])


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--geometry", "-g", default=None, help="Geometry preset (default: as recorded, else by voxel count).")
@click.option("--tree", default="showers", show_default=True, help="TTree name (ROOT files).")
@click.option("--voxel-branch", default="voxels", show_default=True, help="Flat voxel branch/dataset (GeV).")
@click.option("--layer-branches", default=None, help="Comma-separated per-layer voxel branches, in layer order.")
@click.option("--energy-branch", default="incident_energy", show_default=True, help="Incident energy branch (GeV).")
@click.option("--no-energy", is_flag=True, help="The file has no incident energy (data).")
@click.option("--clip-negative", default=0.0, show_default=True, help="Set voxel energies in [-x, 0) GeV to zero.")
@click.option("--step-size", default=10_000, show_default=True, help="Entries read per chunk.")
@click.option("--progress/--no-progress", default=False, help="Show a progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def info(
    file: str,
    geometry: str | None,
    tree: str,
    voxel_branch: str,
    layer_branches: str | None,
    energy_branch: str,
    no_energy: bool,
    clip_negative: float,
    step_size: int,
    progress: bool,
    as_json: bool,
) -> None:
    """Summarise a shower FILE (ROOT TTree or HDF5, CaloChallenge or calinfer layout).

    Prints the number of entries, which geometry the file matches (by voxel count and by the geometry id
    recorded in it), the incident energy range and the mean total and per-layer energies in GeV.
    """
    import json

    summary = summarize_file(
        file,
        geometry,
        step_size=step_size,
        tree=tree,
        voxel_branch=voxel_branch,
        layer_branches=[b.strip() for b in layer_branches.split(",")] if layer_branches else None,
        energy_branch=None if no_energy else energy_branch,
        clip_negative=clip_negative,
        progress=progress,
    )
    click.echo(json.dumps(summary, indent=2) if as_json else _render(summary))
