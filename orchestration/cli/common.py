"""What every ``streamtune`` command shares: the consoles, the ``--home`` option, user-facing errors.

Exit statuses: 0 success; ``BAD_INPUT`` (2) for input the command refuses before changing anything (a
settings file that does not validate, a home that does not exist, an empty value, an unknown window);
1 for other errors. Only ``CREATING_COMMANDS`` may start on a home that does not exist yet.
"""

from __future__ import annotations

import os
import sys
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from orchestration.config.settings import Settings, load_settings, resolve_home

console = Console(width=None if sys.stdout.isatty() else 240)  # never squash tables in logs/pipes
err_console = Console(stderr=True, soft_wrap=True, highlight=False)

HomeOpt = Annotated[
    Path | None, typer.Option("--home", help="streamtune home (default $STREAMTUNE_HOME or ./.streamtune)")
]

BAD_INPUT = 2
"""Exit status of an error for input refused before anything changed."""
CREATING_COMMANDS = frozenset({"demo", "replay", "run"})
"""Commands that create the home when it does not exist; every other command requires an existing home."""
COMMAND: ContextVar[str | None] = ContextVar("streamtune_command", default=None)
"""The top-level command running (set by ``orchestration.cli.app``); None outside a command line."""


class CliError(Exception):
    """A user-facing error: message plus a hint, and the exit status (1, or ``BAD_INPUT``)."""

    def __init__(self, message: str, hint: str = "", code: int = 1) -> None:
        super().__init__(message)
        self.hint = hint
        self.code = code


def home_settings(home: Path | None, create: bool | None = None) -> Settings:
    """The settings of ``home`` (``--home``); also exported as ``STREAMTUNE_HOME`` for the processes the
    command starts.

    Args:
        create: whether the home may be missing (the command creates it). ``None``: only when the running
            ``COMMAND`` is one of ``CREATING_COMMANDS``, or when called outside a command line.

    Raises:
        CliError: (``BAD_INPUT``) the home does not exist, or is not a directory, and may not be created.
        SettingsError: the home's ``streamtune.toml`` cannot be read.
    """
    root = resolve_home(home)
    if create is None:
        command = COMMAND.get()
        create = command is None or command in CREATING_COMMANDS
    if not create or root.exists():
        require_home(root)
    if home is not None:
        os.environ["STREAMTUNE_HOME"] = str(root)
    return load_settings(root)


def require_home(root: Path) -> None:
    """Nothing if ``root`` is an existing directory.

    Raises:
        CliError: (``BAD_INPUT``) it does not exist or is not a directory; nothing is created.
    """
    if root.is_dir():
        return
    what = "is not a directory" if root.exists() else "does not exist"
    raise CliError(
        f"streamtune home {root} {what}",
        "pass --home DIR (or set STREAMTUNE_HOME) for an existing home; `streamtune run`, `replay` or `demo` "
        "creates one",
        code=BAD_INPUT,
    )


def require_warehouse(settings: Settings) -> None:
    """Nothing if the home has a warehouse.

    Raises:
        CliError: (``BAD_INPUT``) no ``warehouse.duckdb`` in the home; nothing is created.
    """
    if not settings.paths.warehouse.exists():
        raise CliError(
            f"no warehouse at {settings.paths.warehouse}",
            "ingest a window first (streamtune run / demo)",
            code=BAD_INPUT,
        )
