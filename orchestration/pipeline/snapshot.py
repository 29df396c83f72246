"""Training snapshots: the hand-off from DuckDB to the training step.

No Dagster imports. A snapshot is a folder of Parquet files written inside the
``duckdb`` pool, so the long training step never opens the DuckDB file:

``train.parquet``           the new windows' training rows (held-out rows removed)
``new_eval.parquet``        the new windows' held-out rows (forward / plasticity)
``retention_eval.parquet``  held-out rows of earlier windows (retention / forgetting)
``replay.parquet``          rows drawn from the replay buffer for this update (may repeat rows)
``first_eval.parquet``      held-out rows of the first window ever trained (a fixed reference set)
``manifest.json``           window keys, row counts per split, content hash; the update's recipe (``recipe``,
                            ``[train] recipe`` other than ``fixed``) and ``refresh`` (a drift refresh update)

Columns of every file: window_key (str), row_number (int64), record_id (str), text (str).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from orchestration.store.warehouse import Warehouse
from training.replay import replay_count, sample_replay

_ROW_SCHEMA = {"window_key": pl.String, "row_number": pl.Int64, "record_id": pl.String, "text": pl.String}

SPLITS = ("train", "new_eval", "retention_eval")
"""Splits recorded in ``train.ledger`` under their own name as role."""
EXTRA_SPLITS = ("replay", "first_eval")
"""Further files of a snapshot (absent in snapshots written before replay existed)."""
ALL_SPLITS = SPLITS + EXTRA_SPLITS


@dataclass(frozen=True)
class SnapshotManifest:
    """What a snapshot holds (JSON-serializable)."""

    snapshot_id: str
    directory: str
    window_keys: list[str]
    rows: dict[str, int]
    content_sha256: str
    created_at: str
    recipe: dict = field(default_factory=dict)
    """The update's ``recipe.*`` params (``training.recipe.Recipe.params()``) chosen when the snapshot was built
    (``recipe_step.snapshot_for_update``); {} = the fixed ``[train]`` recipe (and manifests older than recipes)."""
    refresh: bool = False
    """True: a refresh update (drift alarm, nothing pending): ``window_keys`` were trained already and are trained
    again (same held-out rows); ``lineage.check_untrained`` lets it through."""

    def path(self, split: str) -> Path:
        """The Parquet file of ``split`` (one of ``ALL_SPLITS``; it may not exist for an extra split)."""
        assert split in ALL_SPLITS, f"unknown split {split!r}"
        return Path(self.directory) / f"{split}.parquet"

    def texts(self, split: str) -> list[str]:
        """Texts of a split, in file order; [] for an extra split the snapshot does not have."""
        if split in EXTRA_SPLITS and not self.path(split).exists():
            return []
        return pl.read_parquet(self.path(split), columns=["text"])["text"].to_list()

    def frame(self, split: str) -> pl.DataFrame:
        """Rows of a split (window_key, row_number, record_id, text); empty for a missing extra split."""
        if split in EXTRA_SPLITS and not self.path(split).exists():
            return pl.DataFrame(schema=_ROW_SCHEMA)
        return pl.read_parquet(self.path(split))

    def texts_by_window(self, split: str) -> dict[str, list[str]]:
        """``{window_key: texts}`` of a split, windows in first-appearance order."""
        out: dict[str, list[str]] = {}
        for key, text in self.frame(split).select("window_key", "text").iter_rows():
            out.setdefault(key, []).append(text)
        return out

    def to_dict(self) -> dict:
        """JSON-able dict (the ``training_snapshot`` asset's value and ``manifest.json``); ``recipe`` and
        ``refresh`` only when set, so a fixed-recipe manifest is the same as before they existed."""
        out = asdict(self)
        for key, default in (("recipe", {}), ("refresh", False)):
            if out[key] == default:
                del out[key]
        return out

    @classmethod
    def from_dict(cls, d: dict) -> SnapshotManifest:
        """Inverse of ``to_dict`` (missing ``recipe`` / ``refresh`` default to {} / False)."""
        return cls(**d)


def build_snapshot(
    warehouse: Warehouse,
    root: Path,
    *,
    eval_fraction: float,
    retention_rows: int,
    max_windows: int = 0,
    seed: int = 0,
    replay_fraction: float = 0.0,
    window_keys: Sequence[str] | None = None,
    refresh: bool = False,
    recipe: dict | None = None,
) -> SnapshotManifest | None:
    """Export pending approved windows (and a retention slice) to Parquet.

    The sub-folder is named by the windows and the content hash and written once: to a temporary folder renamed
    into place, and left as it is when a snapshot of the same content exists. So a later run never changes the
    snapshot an earlier run (or its retry) trains on.

    Args:
        root: the home's ``snapshots/`` folder; the snapshot gets a sub-folder.
        eval_fraction: share of each new window held out by record-id hash (0..0.5).
        retention_rows: at most this many held-out rows of already-trained windows.
        max_windows: at most this many pending windows (0 = all).
        replay_fraction: share of the update's training rows drawn from ``train.replay_buffer``
            (``training.replay.replay_count``), written to ``replay.parquet``; 0 = no replay.
        window_keys: the windows to export (None: ``warehouse.pending_windows(limit=max_windows)``).
        refresh: a refresh update of already trained ``window_keys``: the same record-id hash split (so
            ``new_eval`` is the same held-out rows, never trained on), their rows left out of ``retention_eval``;
            the snapshot id starts with ``refresh-``.
        recipe: ``recipe.*`` params stored in the manifest (``SnapshotManifest.recipe``).

    Returns:
        The manifest, or None when no approved window is pending.

    Raises:
        ValueError: ``eval_fraction`` is outside (0, 0.5).
    """
    if not 0.0 < eval_fraction < 0.5:
        raise ValueError(f"eval_fraction must be in (0, 0.5), got {eval_fraction}")
    keys = list(window_keys) if window_keys is not None else warehouse.pending_windows(limit=max_windows)
    if not keys:
        return None
    parts = _split_new_rows(warehouse.curated_rows(keys), eval_fraction)
    parts["retention_eval"] = warehouse.retention_rows(retention_rows, seed=seed)
    if refresh:  # the refreshed windows are this update's new windows, not retention
        parts["retention_eval"] = parts["retention_eval"].filter(~pl.col("window_key").is_in(keys))
    buffer = warehouse.replay_buffer().drop("reservoir_key")
    n_replay = replay_count(parts["train"].height, replay_fraction)
    idx = sample_replay(list(range(buffer.height)), n_replay, seed=seed)
    parts["replay"] = buffer[idx] if idx else buffer.head(0)
    first = warehouse.first_window_heldout()
    parts["first_eval"] = first if first.height else parts["new_eval"].filter(pl.col("window_key") == keys[0])
    content = _content_sha256(parts)
    snapshot_id = _snapshot_id(keys, content, refresh)
    directory = root / snapshot_id
    manifest = SnapshotManifest(
        snapshot_id=snapshot_id,
        directory=str(directory),
        window_keys=list(keys),
        rows={split: parts[split].height for split in ALL_SPLITS},
        content_sha256=content,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        recipe=dict(recipe or {}),
        refresh=refresh,
    )
    if not (directory / "manifest.json").is_file():
        _write_once(directory, parts, manifest)
    return manifest


def _snapshot_id(keys: list[str], content_sha256: str, refresh: bool = False) -> str:
    """Folder name of a snapshot: its first (and last) window key and 10 hex digits of its content hash
    (prefixed ``refresh-`` for a refresh snapshot)."""
    head = f"{keys[0]}--{keys[-1]}" if len(keys) > 1 else keys[0]
    return f"{'refresh-' if refresh else ''}{head}-{content_sha256[:10]}"


def scrub_snapshots(root: Path, rows: pl.DataFrame) -> list[str]:
    """Remove the rows ``rows`` from every snapshot under ``root`` (``streamtune forget``), write-once kept.

    A snapshot folder is named by its content and never changed in place: one holding any of the rows is
    written again without them, with a new content hash, into a new folder (``_write_once``: new name, own
    ``manifest.json``), and the old folder is deleted. So a run that still refers to the old folder (a
    re-execution from failure) finds it gone (``lineage.SnapshotGone``) instead of training other content under
    the old hash. A folder without ``manifest.json`` (a crashed write, never trained on) is rewritten in place.

    Args:
        root: the home's ``snapshots/`` folder.
        rows: the deleted rows; columns ``window_key`` (str) and ``row_number`` (int) identify them.

    Returns:
        One line per scrubbed file: ``<old snapshot id>/<split>.parquet: -N rows (now <new snapshot id>)``
        (the old id first: ``forget_artifacts.remove_local_models`` removes its fine-tune work folders).
    """
    if rows.is_empty() or not root.is_dir():
        return []
    keys = rows.select("window_key", "row_number").cast({"row_number": pl.Int64})
    done = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        manifest = folder / "manifest.json"
        splits = ALL_SPLITS if manifest.is_file() else tuple(p.stem for p in sorted(folder.glob("*.parquet")))
        parts, removed = {}, {}
        for split in splits:
            path = folder / f"{split}.parquet"
            frame = pl.read_parquet(path) if path.is_file() else pl.DataFrame(schema=_ROW_SCHEMA)
            if not {"window_key", "row_number"} <= set(frame.columns):
                parts[split] = frame
                continue
            parts[split] = frame.join(keys, on=["window_key", "row_number"], how="anti")
            if parts[split].height != frame.height:
                removed[split] = frame.height - parts[split].height
        if not removed:
            continue
        if manifest.is_file():
            new_id = _rekey(root, folder, parts)
        else:
            new_id = folder.name
            for split in removed:
                tmp = folder / f"{split}.parquet.tmp"
                parts[split].write_parquet(tmp)
                tmp.replace(folder / f"{split}.parquet")
        done += [f"{folder.name}/{split}.parquet: -{n} rows (now {new_id})" for split, n in removed.items()]
    return done


def _rekey(root: Path, folder: Path, parts: dict[str, pl.DataFrame]) -> str:
    """Write ``parts`` as a new snapshot of the windows of ``folder``'s manifest, named by the new content
    hash; delete ``folder``. Returns the new snapshot id."""
    old = SnapshotManifest.from_dict(json.loads((folder / "manifest.json").read_text()))
    content = _content_sha256(parts)
    snapshot_id = _snapshot_id(old.window_keys, content, old.refresh)
    directory = root / snapshot_id
    manifest = SnapshotManifest(
        snapshot_id=snapshot_id,
        directory=str(directory),
        window_keys=list(old.window_keys),
        rows={split: parts[split].height for split in ALL_SPLITS},
        content_sha256=content,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        recipe=old.recipe,
        refresh=old.refresh,
    )
    if not (directory / "manifest.json").is_file():
        _write_once(directory, parts, manifest)
    if directory != folder:
        shutil.rmtree(folder)
    return snapshot_id


def _write_once(directory: Path, parts: dict[str, pl.DataFrame], manifest: SnapshotManifest) -> None:
    """Write the splits and ``manifest.json`` to a temporary sibling folder, then rename it to ``directory``
    (a folder there without ``manifest.json`` is a crashed write and is replaced; a complete one is kept)."""
    tmp = directory.with_name(f".{directory.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir(parents=True)
    try:
        for split in ALL_SPLITS:
            parts[split].cast(_ROW_SCHEMA).write_parquet(tmp / f"{split}.parquet")
        (tmp / "manifest.json").write_text(json.dumps(manifest.to_dict(), indent=2))
        if directory.exists() and not (directory / "manifest.json").is_file():
            shutil.rmtree(directory)
        if not directory.exists():
            tmp.rename(directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _split_new_rows(rows: pl.DataFrame, eval_fraction: float) -> dict[str, pl.DataFrame]:
    """``{"train", "new_eval"}`` of the new windows' curated rows, held out by record-id hash
    (``training.data.heldout_mask``, share ``eval_fraction``)."""
    # lazy: training.data imports torch and transformers; this module loads with the Dagster code location
    from training.data import heldout_mask

    held = pl.Series("held", heldout_mask(rows["record_id"].to_list(), eval_fraction), dtype=pl.Boolean)
    rows = rows.with_columns(held)
    # A window too small for the hash split to hold anything out still gets one held-out row
    # (its first), so the gate can always compare champion and challenger on every new window.
    first = pl.col("row_number") == pl.col("row_number").min().over("window_key")
    needs_one = (~pl.col("held").any().over("window_key")) & (pl.len().over("window_key") >= 2)
    rows = rows.with_columns(held=pl.col("held") | (needs_one & first))
    return {"train": rows.filter(~pl.col("held")).drop("held"), "new_eval": rows.filter(pl.col("held")).drop("held")}


def _content_sha256(parts: dict[str, pl.DataFrame]) -> str:
    """sha256 over every split's rows in ``ALL_SPLITS`` order (fields separated by 0x1f, rows by 0x1e)."""
    digest = hashlib.sha256()
    for split in ALL_SPLITS:
        for window_key, row_number, record_id, text in parts[split].iter_rows():
            digest.update(f"{split}\x1f{window_key}\x1f{row_number}\x1f{record_id}\x1f{text}\x1e".encode())
    return digest.hexdigest()
