"""The ``calinfer`` command. Each subcommand lives in its own module; heavy imports stay inside them.

Every failure ends as one ``Error: ...`` line on stderr and exit status 1 (see :mod:`calinfer.cli.messages`);
``--debug`` or ``CALINFER_DEBUG=1`` shows the Python traceback instead.
"""

from __future__ import annotations

import os
import warnings

import click

from calinfer import __version__

__all__ = ["main"]


def _debug_requested(ctx: click.Context) -> bool:
    flag = ctx.params.get("debug", False)
    return bool(flag) or os.environ.get("CALINFER_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


class CalinferGroup(click.Group):
    """A click group whose subcommands report every error as one ``Error:`` line (traceback with ``--debug``)."""

    def invoke(self, ctx: click.Context):
        from calinfer.cli.messages import describe, install_warning_format

        with warnings.catch_warnings():
            install_warning_format()
            try:
                return super().invoke(ctx)
            except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
                raise
            except KeyboardInterrupt:
                if _debug_requested(ctx):
                    raise
                click.echo("Error: interrupted; no output was written for unfinished files", err=True)
                ctx.exit(130)
            except Exception as err:
                if _debug_requested(ctx):
                    raise
                name = ctx.invoked_subcommand
                command = self.get_command(ctx, name) if name else None
                raise click.ClickException(describe(err, command)) from err


@click.group(cls=CalinferGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="calinfer")
@click.option("--debug", is_flag=True, help="Show Python tracebacks on errors (also: CALINFER_DEBUG=1).")
def main(debug: bool) -> None:
    """calinfer: likelihood-based inference for calorimeter showers.

    Run ``calinfer COMMAND --help`` for the options of each command. Outputs are never overwritten
    unless a command is given --overwrite.
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
