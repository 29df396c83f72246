"""The ``streamtune`` command line (typer + rich): registers the commands of the ``commands_*`` modules.

Commands: ``replay``, ``run``, ``status``, ``demo``, ``ui``, ``rollback``, ``promote``, ``reject``, ``approvals``,
``forget``, ``quarantine``, ``export``, ``base pretrain``.
Errors print one line and a hint, not a traceback (set ``STREAMTUNE_DEBUG=1`` for tracebacks); input refused
before anything changed (settings that do not validate, a missing home, ...) exits with status 2, other errors 1.
``streamtune --help`` imports neither dagster nor torch: the commands import them when they run.
"""

from __future__ import annotations

import os
import sys

import click
import typer

from orchestration.cli.commands_approval import approvals, promote, reject
from orchestration.cli.commands_base import base_app
from orchestration.cli.commands_export import export
from orchestration.cli.commands_forget import forget
from orchestration.cli.commands_loop import demo, replay, run, ui
from orchestration.cli.commands_quarantine import quarantine_app
from orchestration.cli.commands_status import rollback, status
from orchestration.cli.common import BAD_INPUT, COMMAND, CliError, err_console
from orchestration.config.tables import SettingsError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Keep a language model current on a live text stream."
)
for command in (replay, run, status, demo, ui, rollback, promote, reject, approvals, forget, export):
    app.command()(command)
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(base_app, name="base")
# newer typer versions vendor click (typer._click), whose usage errors are not click's classes; BadParameter's
# grandparent is ClickException under either
USAGE_ERRORS = (click.ClickException, typer.BadParameter.__mro__[2])


@app.callback()
def _command(ctx: typer.Context) -> None:
    # which command runs: common.home_settings lets only CREATING_COMMANDS start on a missing home
    COMMAND.set(ctx.invoked_subcommand)


def main() -> None:
    """Console-script entry point: runs the app; a ``CliError``, a ``SettingsError`` or another expected
    error prints one line and a hint and exits with the error's status (``SettingsError``: 2, others 1)."""
    try:
        app(standalone_mode=False)
    except CliError as exc:
        err_console.print(f"error: {exc}", markup=False)
        if exc.hint:
            err_console.print(f"hint: {exc.hint}")
        sys.exit(exc.code)
    except SettingsError as exc:  # names the file (or variable), table and key
        if os.environ.get("STREAMTUNE_DEBUG"):
            raise
        err_console.print(f"error: {exc}", markup=False)
        err_console.print("hint: fix that setting (README: Settings) or unset the STREAMTUNE_* variable")
        sys.exit(BAD_INPUT)
    except typer.Exit as exc:  # a RuntimeError: before the catch-all below
        sys.exit(exc.exit_code)
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        if os.environ.get("STREAMTUNE_DEBUG"):
            raise
        err_console.print(f"error: {exc}", markup=False)
        err_console.print("hint: run with STREAMTUNE_DEBUG=1 for the traceback; `streamtune --help` lists commands")
        sys.exit(1)
    except USAGE_ERRORS as exc:  # usage errors (exit status 2)
        exc.show()
        sys.exit(exc.exit_code)
    finally:
        COMMAND.set(None)  # main() may run again in this process (tests)


if __name__ == "__main__":
    main()
