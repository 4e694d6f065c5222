"""``calinfer simulate``: fast parameterised showers, anomalous showers and the embedded data sets."""

from __future__ import annotations

from pathlib import Path

import click

from calinfer.cli.outputs import overwrite_option
from calinfer.geometry import GEOMETRIES

_PARTICLES = ("photon", "electron", "chi", "hadron", "pion")
_PRIORS = ("uniform", "log-uniform", "calochallenge")


@click.command()
@click.option(
    "--particle",
    type=click.Choice(_PARTICLES),
    default="photon",
    show_default=True,
    help="photon/electron showers, chi -> gamma gamma, late neutral-hadron-like showers, or charged pions "
    "(ECAL + HCAL, geometry calochallenge-ds1-pions).",
)
@click.option("--geometry", type=click.Choice(sorted(GEOMETRIES)), default="calogan", show_default=True)
@click.option("--n", "n", type=click.IntRange(min=1), default=1000, show_default=True, help="Number of showers.")
@click.option(
    "--energy",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Fixed incident energy (GeV); chi default 50.",
)
@click.option(
    "--energy-range",
    nargs=2,
    type=float,
    default=(1.0, 100.0),
    show_default=True,
    help="Energy range (GeV) for the prior when --energy is not given.",
)
@click.option("--prior", type=click.Choice(_PRIORS), default="uniform", show_default=True)
@click.option("--chi-mass", type=click.FloatRange(min=0, min_open=True), default=None, help="chi mass (GeV).")
@click.option(
    "--decay-distance",
    type=click.FloatRange(min=0),
    default=None,
    help="chi decay distance from its production point (m); the face is at 1.24 m.",
)
@click.option("--lifetime", type=click.FloatRange(min=0, min_open=True), default=None, help="chi lifetime (ns).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--dataset", default=None, help="Regenerate an embedded data set by name instead (see --list).")
@click.option("--list", "list_sets", is_flag=True, help="List the embedded data sets and exit.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Output file, .root (TTree 'showers') or .h5.",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
@overwrite_option
def simulate(
    particle: str,
    geometry: str,
    n: int,
    energy: float | None,
    energy_range: tuple[float, float],
    prior: str,
    chi_mass: float | None,
    decay_distance: float | None,
    lifetime: float | None,
    seed: int,
    dataset: str | None,
    list_sets: bool,
    out: Path | None,
    progress: bool,
    overwrite: bool,
) -> None:
    """Simulate showers with calinfer's built-in parameterised simulator and write them to --out.

    The file holds the branches incident_energy (GeV), voxels (GeV, calibrated energy scale) and the truth
    branches of the generator; the metadata records the generator, seed and parameters.

    \b
    Examples:
      calinfer simulate --particle photon --n 10000 --energy-range 1 100 --seed 1 --out photons.root
      calinfer simulate --particle chi --chi-mass 0.5 --decay-distance 0.66 --n 500 --out chi.root
      calinfer simulate --dataset photons-test-50 --out test50.h5
    """
    from calinfer import datasets
    from calinfer.io.atomic import reserve_outputs
    from calinfer.io.hdf5 import HDF5_SUFFIXES

    if list_sets:
        for name in datasets.names():
            click.echo(f"{name:20s} {datasets.spec(name).description}")
        return
    if out is None:
        raise click.UsageError("--out FILE is required")
    if out.suffix.lower() not in {".root", *HDF5_SUFFIXES}:
        raise click.BadParameter(f"{out}: name the output .root (TTree) or .h5 (HDF5)", param_hint="--out")
    with reserve_outputs([out], overwrite=overwrite):
        if dataset is not None:
            showers = datasets.regenerate(dataset, out=out, progress=progress)
        else:
            showers, meta = _simulate(
                particle,
                geometry,
                n,
                energy,
                tuple(energy_range),
                prior,
                chi_mass,
                decay_distance,
                lifetime,
                seed,
                progress,
            )
            from calinfer.io import write_showers

            write_showers(out, showers, metadata=meta)
    e_dep = showers.deposited_energy()
    click.echo(
        f"wrote {len(showers)} showers ({showers.geometry.name}) to {out}; "
        f"mean deposited energy {e_dep.mean():.3f} GeV, mean E_dep/E_inc "
        f"{(e_dep / showers.incident_energy).mean():.4f}"
    )


def _simulate(
    particle: str,
    geometry: str,
    n: int,
    energy: float | None,
    energy_range: tuple[float, float],
    prior: str,
    chi_mass: float | None,
    decay_distance: float | None,
    lifetime: float | None,
    seed: int,
    progress: bool,
):
    """Run the generator for ``particle``; returns the showers and the metadata to store."""
    from calinfer import simulation

    if particle != "chi" and (chi_mass is not None or decay_distance is not None or lifetime is not None):
        raise click.UsageError("--chi-mass, --decay-distance and --lifetime need --particle chi")
    model = simulation.PionModel() if particle == "pion" else simulation.EMShowerModel()
    if particle == "pion" and geometry == "calogan":  # the default geometry: pions have their own calorimeter
        geometry = "calochallenge-ds1-pions"
    params: dict = {"geometry": geometry}
    if particle == "chi":
        if chi_mass is None:
            raise click.UsageError("--particle chi needs --chi-mass")
        if (decay_distance is None) == (lifetime is None):
            raise click.UsageError("--particle chi needs exactly one of --decay-distance or --lifetime")
        params.update(mass=chi_mass, energy=50.0 if energy is None else energy)
        if decay_distance is not None:
            params["decay_distance"] = decay_distance
        else:
            params["lifetime"] = lifetime
        generate = simulation.simulate_chi
    else:
        if energy is not None:
            params["energy"] = energy
        else:
            params.update(energy_range=energy_range, prior=prior)
        if particle == "hadron":
            generate = simulation.simulate_hadron_like
        elif particle == "pion":
            generate = simulation.simulate_pions
        else:
            params["particle"] = particle
            generate = simulation.simulate_showers
    showers = generate(n, seed=seed, model=model, progress=progress, **params)
    meta = {
        "generator": f"calinfer.simulation:{generate.__name__}",
        "particle": particle,
        "n": n,
        "seed": seed,
        "params": {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()},
        "model": model.to_dict(),
    }
    return showers, meta
