"""The retry guard of the fine-tune step: a snapshot's windows must not be trained already. No Dagster imports.

A killed fine-tune is retried by Dagster's ``run_retries`` with every step (``orchestration.jobs.FINETUNE_RETRY``:
the retry snapshots the windows still pending), but a run re-executed from its failed step (the UI's "re-execute
from failure") trains the snapshot its parent chose, maybe after another run has trained the same windows.
``run_update`` calls ``check_untrained`` before anything is trained or registered: a window that ``train.ledger``
records for a non-retired version (so it is no longer pending), or that a version in the champion's lineage was
trained on (MLflow version tags), is refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from orchestration.pipeline.snapshot import SnapshotManifest

if TYPE_CHECKING:
    from training.tracking import ModelRegistry

WINDOWS_TAG = "streamtune.windows"
"""Version tag of an update: its windows, comma-separated (set by ``run_update``)."""
PARENT_TAG = "streamtune.parent_version"
"""Version tag of an update: the version it was fine-tuned from."""
RETIRED_TAG = "streamtune.retired"
"""Version tag set by ``streamtune forget`` on a retired version (its windows are retrained)."""


class AlreadyTrained(ValueError):
    """A snapshot window was trained already (``train.ledger`` or the champion's lineage): training it again
    would give two versions of one window. Nothing was trained or registered."""


class SnapshotGone(FileNotFoundError):
    """The snapshot folder a (retried) fine-tune was asked to train is missing or holds other content."""


def champion_lineage(registry: ModelRegistry, max_depth: int = 10_000) -> dict[str, str]:
    """``{window_key: version}`` of every window trained into the champion or one of its ancestors (walking the
    ``streamtune.parent_version`` tags up to the base); {} without a champion. Retired versions are skipped.

    Args:
        max_depth: at most this many versions are read (guards against a tag cycle).
    """
    out: dict[str, str] = {}
    version, seen = registry.version_for_alias("champion"), set()
    while version and version not in seen and len(seen) < max_depth:
        seen.add(version)
        tags = registry.version_tags(version)
        if tags.get(RETIRED_TAG) != "true":
            for window in filter(None, tags.get(WINDOWS_TAG, "").split(",")):
                out.setdefault(window, version)
        version = tags.get(PARENT_TAG) or None
    return out


def check_untrained(manifest: SnapshotManifest, *, ledger: Mapping[str, str], lineage: Mapping[str, str]) -> None:
    """Refuse a snapshot that would train a window a second time, or whose folder no longer holds it.

    Args:
        manifest: the snapshot the fine-tune is about to train (the asset value of its own run).
        ledger: ``{window_key: version}`` of the snapshot's windows already in ``train.ledger``
            (``Warehouse.trained_by``).
        lineage: ``{window_key: version}`` of the champion's lineage (``champion_lineage``).

    Raises:
        AlreadyTrained: a window is in ``ledger`` or ``lineage``; the message names the first one and its version.
            Not for a refresh snapshot (``manifest.refresh``: a drift refresh retrains trained windows on purpose).
        SnapshotGone: ``manifest.json`` is missing from the snapshot folder or has another content hash.
    """
    for window in () if manifest.refresh else manifest.window_keys:
        version = ledger.get(window) or lineage.get(window)
        if version is not None:
            where = "train.ledger" if window in ledger else "the champion's lineage"
            raise AlreadyTrained(
                f"window {window} was already trained into v{version} ({where}): refusing to train snapshot "
                f"{manifest.snapshot_id} again; a later fine-tune takes the windows still pending"
            )
    stored = Path(manifest.directory) / "manifest.json"
    sha = json.loads(stored.read_text()).get("content_sha256") if stored.is_file() else None
    if sha != manifest.content_sha256:
        raise SnapshotGone(
            f"snapshot {manifest.snapshot_id} is not at {manifest.directory} (deleted, or another content): "
            "start a new fine-tune, which snapshots the pending windows again"
        )
