"""What every ``streamtune`` command shares: the consoles, the ``--home`` option, user-facing errors."""

from __future__ import annotations

import os
import sys
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


class CliError(Exception):
    """A user-facing error: message plus a hint."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


def home_settings(home: Path | None) -> Settings:
    """The settings of ``home`` (``--home``); also exported as ``STREAMTUNE_HOME`` for the processes the
    command starts.

    Raises:
        SettingsError: the home's ``streamtune.toml`` cannot be read.
    """
    if home is not None:
        os.environ["STREAMTUNE_HOME"] = str(resolve_home(home))
    return load_settings(home)
