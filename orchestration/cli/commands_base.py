"""``streamtune base pretrain``: build the pretrained stand-in base offline and register it as the home's base."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from orchestration.cli.common import BAD_INPUT, CliError, HomeOpt, console, home_settings
from orchestration.config.profiles import open_registry

base_app = typer.Typer(no_args_is_help=True, help="The base model of a home: build the pretrained stand-in.")

DEFAULT_CACHE = "~/.cache/streamtune/base"
"""Content-keyed cache of stand-in builds shared by every home (``STREAMTUNE_BASE_CACHE`` overrides it)."""


@base_app.command("pretrain")
def base_pretrain(
    home: HomeOpt = None,
    cache: Annotated[
        Path | None,
        typer.Option("--cache", help=f"build cache (default $STREAMTUNE_BASE_CACHE or {DEFAULT_CACHE})"),
    ] = None,
    steps: Annotated[int | None, typer.Option("--steps", min=1, help="training steps (default 240)")] = None,
    tiny: Annotated[bool, typer.Option("--tiny", help="the seconds-long test configuration")] = False,
) -> None:
    """Pretrain a small Llama (~5.3M parameters) on the Python standard library's docstrings and comments,
    cache it, and register it as the home's base version (aliases base and champion). Its held-out corpus
    slice becomes the promotion gate's default general-capability set. Run it before the first update."""
    # lazy: torch, transformers and mlflow
    from orchestration.pipeline.base import STANDIN_EVAL_FILE, register_pretrained_base

    settings = home_settings(home, create=True)
    settings.paths.ensure()
    cache_dir = (cache or Path(os.environ.get("STREAMTUNE_BASE_CACHE") or DEFAULT_CACHE)).expanduser()
    registry = open_registry(settings)
    existing = registry.version_for_alias("base")
    if existing is not None:
        raise CliError(
            f"{settings.home} already has base version v{existing}",
            "a lineage's base never changes: pretrain into a new home (--home)",
            code=BAD_INPUT,
        )
    console.print(f"building the stand-in base in {cache_dir} (reused when already built) ...")
    base = register_pretrained_base(settings, registry, cache_dir, tiny=tiny, steps=steps)
    f = base.facts
    console.print(
        f"base v{base.version}: {f['parameters']:,} parameters, {f['steps']} steps on {f['corpus_documents']:,} "
        f"documents ({f['corpus_bytes']:,} bytes) of the standard library's docstrings and comments; "
        f"train loss {f['first_loss']:.3f} -> {f['final_loss']:.3f} nats/token, held-out "
        f"{f['heldout_bpb_init']:.3f} -> {f['heldout_bpb']:.3f} bits/byte"
    )
    console.print(f"general-capability set: {settings.home / STANDIN_EVAL_FILE}")
