"""The ``modelport`` command line: argv and ``MODELPORT_*`` variables in, commands out.

Each command lives in its own module with a ``register(app)`` function; heavy imports happen
inside the commands, so ``modelport --help`` stays fast (``tests/test_cli.py`` guards it).

An option reads the environment only where it names its variable (``envvar=`` or, for
``serve``, :mod:`modelport.settings`): there is no automatic ``MODELPORT_<COMMAND>_<OPTION>``,
so a deployment's ``MODELPORT_VERSION`` or ``MODELPORT_HELP`` never turns into ``--version``
or ``--help``. Help is plain click help, not rich's: it shows every default and variable name
in full at 80 columns, and ``--help`` imports no rich.
"""

from __future__ import annotations

import importlib
import sys

import typer

from ..errors import ModelportError

__all__ = ["app", "main"]

COMMANDS = [
    "info", "serve", "predict", "perf", "tune", "report", "feedback", "export", "build", "versions",
]  # fmt: skip
"""Modules under ``modelport.cli`` that each register commands (in the help's order)."""

app = typer.Typer(
    name="modelport",
    help="Take a trained model from any framework and deploy it anywhere, fast.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from .._version import __version__

        print(f"modelport {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Take a trained model from any framework and deploy it anywhere, fast."""


for _name in COMMANDS:
    importlib.import_module(f"{__name__}.{_name}").register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI; a modelport error is one line on stderr and exit status 1."""
    try:
        app(args=argv, prog_name="modelport")
    except ModelportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
