"""Training snapshots: the hand-off from DuckDB to the training step.

No Dagster imports. A snapshot is a folder of Parquet files written inside the
``duckdb`` pool, so the long training step never opens the DuckDB file:

``train.parquet``           the new windows' training rows (held-out rows removed)
``new_eval.parquet``        the new windows' held-out rows (forward / plasticity)
``retention_eval.parquet``  held-out rows of earlier windows (retention / forgetting)
``manifest.json``           window keys, row counts per split, content hash

Columns of every file: window_key (str), row_number (int64), record_id (str), text (str).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from orchestration.warehouse import Warehouse

SPLITS = ("train", "new_eval", "retention_eval")


@dataclass(frozen=True)
class SnapshotManifest:
    """What a snapshot holds (JSON-serializable)."""

    snapshot_id: str
    directory: str
    window_keys: list[str]
    rows: dict[str, int]
    content_sha256: str
    created_at: str

    def path(self, split: str) -> Path:
        assert split in SPLITS, f"unknown split {split!r}"
        return Path(self.directory) / f"{split}.parquet"

    def texts(self, split: str) -> list[str]:
        return pl.read_parquet(self.path(split), columns=["text"])["text"].to_list()

    def frame(self, split: str) -> pl.DataFrame:
        return pl.read_parquet(self.path(split))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SnapshotManifest":
        return cls(**d)


def build_snapshot(
    warehouse: Warehouse,
    root: Path,
    *,
    eval_fraction: float,
    retention_rows: int,
    max_windows: int = 0,
    seed: int = 0,
) -> SnapshotManifest | None:
    """Export pending approved windows (and a retention slice) to Parquet.

    Args:
        root: the home's ``snapshots/`` folder; the snapshot gets a sub-folder.
        eval_fraction: share of each new window held out by record-id hash (0..0.5).
        retention_rows: at most this many held-out rows of already-trained windows.
        max_windows: at most this many pending windows (0 = all).

    Returns:
        The manifest, or None when no approved window is pending.
    """
    from training.data import heldout_mask

    if not 0.0 < eval_fraction < 0.5:
        raise ValueError(f"eval_fraction must be in (0, 0.5), got {eval_fraction}")
    keys = warehouse.pending_windows(limit=max_windows)
    if not keys:
        return None
    rows = warehouse.curated_rows(keys)
    held = pl.Series("held", heldout_mask(rows["record_id"].to_list(), eval_fraction), dtype=pl.Boolean)
    rows = rows.with_columns(held)
    # A window too small for the hash split to hold anything out still gets one held-out row
    # (its first), so the gate can always compare champion and challenger on every new window.
    first = pl.col("row_number") == pl.col("row_number").min().over("window_key")
    needs_one = (~pl.col("held").any().over("window_key")) & (pl.len().over("window_key") >= 2)
    rows = rows.with_columns(held=pl.col("held") | (needs_one & first))
    parts = {
        "train": rows.filter(~pl.col("held")).drop("held"),
        "new_eval": rows.filter(pl.col("held")).drop("held"),
        "retention_eval": warehouse.retention_rows(retention_rows, seed=seed),
    }
    digest = hashlib.sha256()
    for split in SPLITS:
        for window_key, row_number, record_id, text in parts[split].iter_rows():
            digest.update(f"{split}\x1f{window_key}\x1f{row_number}\x1f{record_id}\x1f{text}\x1e".encode())
    content = digest.hexdigest()
    snapshot_id = f"{keys[0]}--{keys[-1]}-{content[:10]}" if len(keys) > 1 else f"{keys[0]}-{content[:10]}"
    directory = root / snapshot_id
    directory.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        parts[split].write_parquet(directory / f"{split}.parquet")
    manifest = SnapshotManifest(
        snapshot_id=snapshot_id,
        directory=str(directory),
        window_keys=list(keys),
        rows={split: parts[split].height for split in SPLITS},
        content_sha256=content,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    (directory / "manifest.json").write_text(json.dumps(manifest.to_dict(), indent=2))
    return manifest


def ledger_frame(manifest: SnapshotManifest) -> pl.DataFrame:
    """Ledger rows of an update: every snapshot row with its role (window_key, row_number, record_id, role)."""
    frames = [
        manifest.frame(split).select("window_key", "row_number", "record_id").with_columns(role=pl.lit(split))
        for split in SPLITS
    ]
    return pl.concat(frames)
