"""How the ``calinfer`` command reports problems: one ``Error:`` line per failure, ``Warning:`` lines, CLI wording.

The library's messages name Python keyword arguments (``clip_negative=``, ``geometry=``, ``tree=``);
:func:`cli_wording` rewrites those hints into the options of the command that ran, or drops a hint that
the command cannot act on. :func:`describe` turns any exception into the text of the one ``Error:`` line.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable

import click

__all__ = ["cli_wording", "describe", "install_warning_format", "show_warning"]

_DEBUG_HINT = "rerun with --debug (or CALINFER_DEBUG=1) for the traceback"


def _options(command: click.Command | None) -> set[str]:
    if command is None:
        return set()
    return {opt for param in command.params for opt in getattr(param, "opts", ())}


def _geometry_hint(match: re.Match, options: set[str]) -> str:
    requested, name = match.group(1), match.group(2)
    if "--geometry" in options:
        return f"but geometry {requested!r} was requested; read it with --geometry {name}"
    return f"but the surrogate (--model) is made for geometry {requested!r}; use a --model trained for {name}"


def _branch_hint(match: re.Match, options: set[str]) -> str:
    names = [o for o in ("--voxel-branch", "--layer-branches", "--energy-branch") if o in options]
    hint = f"name them with {'/'.join(names)}" if names else "this command reads only these default names"
    if "--no-energy" in options:
        hint += " (--no-energy for data without incident energy)"
    return hint


def _energy_hint(match: re.Match, options: set[str]) -> str:
    return "pass --no-energy if the file has no truth energy" if "--no-energy" in options else ""


def _clip_hint(match: re.Match, options: set[str]) -> str:
    if "--clip-negative" in options:
        return f"pass --clip-negative {match.group(1)} to set them to zero"
    return "this command cannot clip them; clean the file first"


_NO_ENERGY = "; read with energy_branch=None if the file has no truth energy"
_BRANCHES = (
    r"Name them with voxel_branch=/layer_branches=/energy_branch= "
    r"\(energy_branch=None for data without incident energy\)"
)
_REWRITES: list[tuple[re.Pattern, Callable[[re.Match, set[str]], str]]] = [
    (re.compile(r"pass clip_negative >= (\S+) to set them to zero"), _clip_hint),
    (re.compile(r"clip_negative must be"), lambda m, o: "--clip-negative must be"),
    (re.compile(r"but geometry '([^']*)' was requested; read it with geometry='([^']*)'"), _geometry_hint),
    (re.compile(_BRANCHES), _branch_hint),
    (re.compile(r"name datasets with voxel_branch=/energy_branch="), _branch_hint),
    (re.compile(re.escape(_NO_ENERGY)), lambda m, o: f"; {h}" if (h := _energy_hint(m, o)) else ""),
    (re.compile(r"\. Choose one with tree=/--tree"), lambda m, o: ". Choose one with --tree" if "--tree" in o else ""),
    (re.compile(r"; pass tree=\.\.\."), lambda m, o: ""),
    (
        re.compile(r"pass the geometry explicitly"),
        lambda m, o: "pass --geometry" if "--geometry" in o else "use a --model made for this file's geometry",
    ),
]


def cli_wording(text: str, command: click.Command | None) -> str:
    """``text`` with the library's keyword-argument hints replaced by ``command``'s options."""
    options = _options(command)
    for pattern, rewrite in _REWRITES:
        text = pattern.sub(lambda m, rewrite=rewrite: rewrite(m, options), text)
    return text


def describe(err: BaseException, command: click.Command | None = None) -> str:
    """The one-line text of the ``Error:`` message for ``err``, in the words of ``command``."""
    from calinfer.errors import CalinferError

    if isinstance(err, CalinferError):
        return cli_wording(str(err), command)
    if isinstance(err, OSError):
        reason = err.strerror or str(err) or type(err).__name__
        if err.filename is None:
            return f"{reason} ({type(err).__name__})"
        names = f"{err.filename}" + (f" -> {err.filename2}" if err.filename2 is not None else "")
        action = {PermissionError: "no permission", IsADirectoryError: "is a directory, not a file"}.get(type(err))
        return f"{names}: {reason}" + (f" ({action})" if action and action.lower() not in reason.lower() else "")
    if isinstance(err, MemoryError):
        return "out of memory; use a smaller --step-size or fewer workers"
    first = str(err).splitlines()[0] if str(err) else ""
    return f"unexpected {type(err).__name__}: {first} (a bug in calinfer; {_DEBUG_HINT} and report it)"


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """:func:`warnings.showwarning` for the command line: ``Warning: <text>`` on stderr, no source line."""
    text = str(message)
    context = click.get_current_context(silent=True)
    command = None if context is None else context.command
    click.echo(f"Warning: {cli_wording(text, command)}", err=True)


def install_warning_format() -> None:
    """Print warnings as ``Warning:`` lines (call inside :func:`warnings.catch_warnings`)."""
    warnings.showwarning = show_warning
