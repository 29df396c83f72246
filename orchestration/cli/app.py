"""The ``streamtune`` command line (typer + rich): registers the commands of the ``commands_*`` modules.

Commands: ``replay``, ``run``, ``status``, ``demo``, ``ui``, ``rollback``, ``forget``, ``quarantine``.
Errors print one line and a hint, not a traceback (set ``STREAMTUNE_DEBUG=1`` for tracebacks).
``streamtune --help`` imports neither dagster nor torch: the commands import them when they run.
"""

from __future__ import annotations

import os
import sys

import click
import typer

from orchestration.cli.commands_forget import forget
from orchestration.cli.commands_loop import demo, replay, run, ui
from orchestration.cli.commands_quarantine import quarantine_app
from orchestration.cli.commands_status import rollback, status
from orchestration.cli.common import CliError, err_console

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Keep a language model current on a live text stream."
)
for command in (replay, run, status, demo, ui, rollback, forget):
    app.command()(command)
app.add_typer(quarantine_app, name="quarantine")


def main() -> None:
    """Console-script entry point: runs the app; a ``CliError``, a ``SettingsError`` or another expected
    error prints one line and a hint and exits with status 1."""
    try:
        app(standalone_mode=False)
    except CliError as exc:
        err_console.print(f"error: {exc}", markup=False)
        if exc.hint:
            err_console.print(f"hint: {exc.hint}")
        sys.exit(1)
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        if os.environ.get("STREAMTUNE_DEBUG"):
            raise
        err_console.print(f"error: {exc}", markup=False)
        err_console.print("hint: run with STREAMTUNE_DEBUG=1 for the traceback; `streamtune --help` lists commands")
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:  # usage errors
        exc.show()
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
