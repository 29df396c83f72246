"""``streamtune export --version V --merged DIR``: a plain model directory for serving.

An adapter version (``train.adapter = "lora"``) is merged into its base (``training.adapters.export_merged``);
a full version is copied as its ``save_pretrained`` files. The registry is read only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from orchestration.cli.common import CliError, HomeOpt, console, home_settings

if TYPE_CHECKING:
    from training.tracking import ModelRegistry


def export_version(registry: ModelRegistry, version: str, out_dir: Path, *, cache: Path) -> Path:
    """Write ``version`` of ``registry`` as a merged ``save_pretrained`` directory ``out_dir``.

    Args:
        cache: where verified local copies live (``<home>/models/registry``); the version (and an adapter's
            base) is copied there first (``ModelRegistry.local_copy``).

    Returns:
        ``out_dir``.

    Raises:
        MlflowException: the version does not exist.
        ModelFileError: the registry's copy does not verify.
    """
    from training.adapters import export_merged  # lazy: torch, transformers, peft

    local = registry.local_copy(str(version), Path(cache) / f"v{version}")
    return export_merged(local, out_dir)


def export(
    home: HomeOpt = None,
    version: Annotated[str | None, typer.Option("--version", help="model version (default: the champion)")] = None,
    merged: Annotated[Path, typer.Option("--merged", help="directory to write the merged model to")] = Path(
        "merged-model"
    ),
) -> None:
    """Write a model version as one plain model directory (an adapter merged into its base) for serving."""
    from orchestration.config.profiles import open_registry

    settings = home_settings(home)
    registry = open_registry(settings)
    version = version or registry.version_for_alias("champion")
    if version is None:
        raise CliError("no champion yet", hint="pass --version, or run an update first")
    if merged.exists() and any(merged.iterdir()):
        raise CliError(f"{merged} is not empty", hint="pass an empty or new directory to --merged", code=2)
    out = export_version(registry, version, merged, cache=settings.paths.models / "registry")
    console.print(f"exported version {version} to {out}")
