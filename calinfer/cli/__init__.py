"""The ``calinfer`` command. Each subcommand lives in its own module; heavy imports stay inside them."""

from __future__ import annotations

import click

from calinfer import __version__

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="calinfer")
def main() -> None:
    """calinfer: likelihood-based inference for calorimeter showers.

    Run ``calinfer COMMAND --help`` for the options of each command.
    """


def _register() -> None:
    from calinfer.cli import (
        anomaly_cmd,
        calibrate_cmd,
        cathode_cmd,
        evaluate_cmd,
        geometry_cmd,
        info_cmd,
        simulate_cmd,
        train_cmd,
    )

    main.add_command(anomaly_cmd.anomaly)
    main.add_command(anomaly_cmd.sic)
    main.add_command(calibrate_cmd.calibrate)
    main.add_command(cathode_cmd.cathode)
    main.add_command(evaluate_cmd.evaluate)
    main.add_command(geometry_cmd.geometry)
    main.add_command(info_cmd.info)
    main.add_command(simulate_cmd.simulate)
    main.add_command(train_cmd.train)


_register()
