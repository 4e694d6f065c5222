"""The ``--overwrite`` option of the commands that write files (see :func:`calinfer.io.atomic.reserve_outputs`)."""

from __future__ import annotations

from collections.abc import Callable

import click

__all__ = ["overwrite_option"]


def overwrite_option(command: Callable) -> Callable:
    """Add ``--overwrite`` (a flag, keyword ``overwrite``): replace existing outputs instead of refusing."""
    return click.option(
        "--overwrite",
        is_flag=True,
        help="Replace outputs that exist already (default: refuse before any work, nothing is written).",
    )(command)
