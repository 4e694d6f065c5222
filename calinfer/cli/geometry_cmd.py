"""``calinfer geometry``: describe the preset calorimeter geometries."""

from __future__ import annotations

import click

from calinfer.geometry import GEOMETRIES, get_geometry


@click.command()
@click.argument("name", required=False, type=click.Choice(sorted(GEOMETRIES)))
def geometry(name: str | None) -> None:
    """Print the layers, cell grids and voxel ranges of a geometry (all presets by default)."""
    for g in [get_geometry(name)] if name else GEOMETRIES.values():
        click.echo(g.summary())
