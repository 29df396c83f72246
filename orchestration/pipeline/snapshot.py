"""Training snapshots: the hand-off from DuckDB to the training step.

No Dagster imports. A snapshot is a folder of Parquet files written inside the
``duckdb`` pool, so the long training step never opens the DuckDB file:

``train.parquet``           the new windows' training rows (held-out rows removed)
``new_eval.parquet``        the new windows' held-out rows (forward / plasticity)
``retention_eval.parquet``  held-out rows of earlier windows (retention / forgetting)
``replay.parquet``          rows drawn from the replay buffer for this update (may repeat rows)
``first_eval.parquet``      held-out rows of the first window ever trained (a fixed reference set)
``manifest.json``           window keys, row counts per split, content hash

Columns of every file: window_key (str), row_number (int64), record_id (str), text (str).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from orchestration.store.warehouse import Warehouse

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

    def path(self, split: str) -> Path:
        assert split in ALL_SPLITS, f"unknown split {split!r}"
        return Path(self.directory) / f"{split}.parquet"

    def texts(self, split: str) -> list[str]:
        """Texts of a split, in file order; [] for an extra split the snapshot does not have."""
        if split in EXTRA_SPLITS and not self.path(split).exists():
            return []
        return pl.read_parquet(self.path(split), columns=["text"])["text"].to_list()

    def frame(self, split: str) -> pl.DataFrame:
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
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SnapshotManifest:
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
) -> SnapshotManifest | None:
    """Export pending approved windows (and a retention slice) to Parquet.

    Args:
        root: the home's ``snapshots/`` folder; the snapshot gets a sub-folder.
        eval_fraction: share of each new window held out by record-id hash (0..0.5).
        retention_rows: at most this many held-out rows of already-trained windows.
        max_windows: at most this many pending windows (0 = all).
        replay_fraction: share of the update's training rows drawn from ``train.replay_buffer``
            (``training.replay.replay_count``), written to ``replay.parquet``; 0 = no replay.

    Returns:
        The manifest, or None when no approved window is pending.
    """
    from training.data import heldout_mask
    from training.replay import replay_count, sample_replay

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
    buffer = warehouse.replay_buffer().drop("reservoir_key")
    n_replay = replay_count(parts["train"].height, replay_fraction)
    idx = sample_replay(list(range(buffer.height)), n_replay, seed=seed)
    parts["replay"] = buffer[idx] if idx else buffer.head(0)
    first = warehouse.first_window_heldout()
    parts["first_eval"] = first if first.height else parts["new_eval"].filter(pl.col("window_key") == keys[0])
    digest = hashlib.sha256()
    for split in ALL_SPLITS:
        for window_key, row_number, record_id, text in parts[split].iter_rows():
            digest.update(f"{split}\x1f{window_key}\x1f{row_number}\x1f{record_id}\x1f{text}\x1e".encode())
    content = digest.hexdigest()
    snapshot_id = f"{keys[0]}--{keys[-1]}-{content[:10]}" if len(keys) > 1 else f"{keys[0]}-{content[:10]}"
    directory = root / snapshot_id
    directory.mkdir(parents=True, exist_ok=True)
    for split in ALL_SPLITS:
        parts[split].cast(_ROW_SCHEMA).write_parquet(directory / f"{split}.parquet")
    manifest = SnapshotManifest(
        snapshot_id=snapshot_id,
        directory=str(directory),
        window_keys=list(keys),
        rows={split: parts[split].height for split in ALL_SPLITS},
        content_sha256=content,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    (directory / "manifest.json").write_text(json.dumps(manifest.to_dict(), indent=2))
    return manifest


def ledger_frame(manifest: SnapshotManifest) -> pl.DataFrame:
    """Ledger rows of an update: every snapshot row with its role (window_key, row_number, record_id, role);
    replayed rows appear once each with role ``replay``."""
    frames = [
        manifest.frame(split).select("window_key", "row_number", "record_id").with_columns(role=pl.lit(split))
        for split in SPLITS
    ]
    replay = manifest.frame("replay").select("window_key", "row_number", "record_id").unique(maintain_order=True)
    frames.append(replay.with_columns(role=pl.lit("replay")))
    return pl.concat(frames)


def next_replay_buffer(warehouse: Warehouse, manifest: SnapshotManifest, capacity: int, seed: int) -> pl.DataFrame:
    """The replay buffer after this update: the current one plus the new windows' training rows, shrunk to
    ``capacity`` by the window-balanced reservoir (``training.replay.update_buffer``). Held-out rows (this
    snapshot's evaluation splits and every evaluation row in the ledger) never enter."""
    from training.replay import update_buffer

    held = set(warehouse.heldout_record_ids())
    for split in ("new_eval", "retention_eval", "first_eval"):
        held.update(manifest.frame(split)["record_id"].to_list())
    order = warehouse.trained_windows()
    order += [k for k in manifest.window_keys if k not in order]
    return update_buffer(
        warehouse.replay_buffer(),
        manifest.frame("train"),
        capacity,
        seed=seed,
        window_order=order,
        exclude_record_ids=sorted(held),
    )


def eval_matrix_frame(matrix: dict, parent_version: str | None, trained_through: str) -> pl.DataFrame:
    """``monitor.eval_matrix`` rows from ``{"before": {window: scores}, "after": {window: scores}}`` where
    scores = ``{"loss", "bpb", "texts", "bytes"}`` (as put in the challenger asset's value)."""
    rows = [
        {
            "parent_version": parent_version,
            "trained_through": trained_through,
            "eval_window": window,
            "phase": phase,
            "loss": float(sc["loss"]),
            "bpb": float(sc["bpb"]),
            "texts": int(sc["texts"]),
            "bytes": int(sc["bytes"]),
        }
        for phase in ("before", "after")
        for window, sc in matrix.get(phase, {}).items()
    ]
    schema = {
        "parent_version": pl.String,
        "trained_through": pl.String,
        "eval_window": pl.String,
        "phase": pl.String,
        "loss": pl.Float64,
        "bpb": pl.Float64,
        "texts": pl.Int64,
        "bytes": pl.Int64,
    }
    return pl.DataFrame(rows, schema=schema)


def lineage_summary(matrix: pl.DataFrame, window_order: list[str], versions: list[str]) -> dict[str, float]:
    """ACC, BWT and forgetting (``training.cl_metrics.cl_summary``, scores = -bits/byte) of a run of updates.

    Row i of R is the model of the update that trained through ``window_order[i]`` (its "after" rows); FWT
    needs the initial model on every window and is left NaN here (``bench/continual.py`` reports it).

    Args:
        matrix: ``monitor.eval_matrix`` rows.
        window_order: trained windows in stream order (the matrix's T).
        versions: the model versions to use as rows (e.g. every update's version, oldest first); a later
            version for the same ``trained_through`` window replaces an earlier one.
    """
    from training.cl_metrics import cl_summary

    pos = {w: i for i, w in enumerate(window_order)}
    R: dict[tuple[int, int], float] = {}
    for version in versions:
        rows = matrix.filter((pl.col("model_version") == version) & (pl.col("phase") == "after"))
        for through, w, bpb in rows.select("trained_through", "eval_window", "bpb").iter_rows():
            if through in pos and w in pos:
                R[(pos[through], pos[w])] = -bpb
    if not window_order:
        return {}
    return cl_summary(R, len(window_order))


def record_update(
    warehouse: Warehouse,
    registry,
    challenger: dict,
    *,
    replay_size: int,
    replay_seed: int,
    trigger: str | None,
    dagster_run_id: str | None,
) -> dict[str, float]:
    """Record one finished update, promoted or not, before any promotion happens.

    Writes the gate decision and numbers as version tags (MLflow), then in one DuckDB transaction the
    ledger rows, the ``train.updates`` row, the version's ``monitor.eval_matrix`` rows and the new replay
    buffer; finally computes ACC/BWT/forgetting over all updates so far (``lineage_summary``) and logs them
    to the update's MLflow run as ``cl_acc``, ``cl_bwt``, ``cl_forgetting`` (bits/byte; NaNs skipped).
    Idempotent per model version (a retried run rewrites the same rows).

    Args:
        challenger: the ``challenger_model`` asset value (version, mlflow_run_id, parent_version, metrics,
            promote, reason, gate_tags, snapshot, matrix).
        registry: a ``training.tracking.ModelRegistry``.

    Returns:
        the continual-learning summary ``{"cl_acc", "cl_bwt", "cl_forgetting"}`` (finite values only).
    """
    version = challenger["version"]
    registry.tag_version(version, challenger["gate_tags"])
    manifest = SnapshotManifest.from_dict(challenger["snapshot"])
    buffer = next_replay_buffer(warehouse, manifest, replay_size, replay_seed)
    matrix = eval_matrix_frame(challenger.get("matrix", {}), challenger["parent_version"], manifest.window_keys[-1])
    warehouse.record_update(
        model_version=version,
        mlflow_run_id=challenger["mlflow_run_id"],
        parent_version=challenger["parent_version"],
        snapshot_id=manifest.snapshot_id,
        window_keys=manifest.window_keys,
        ledger=ledger_frame(manifest),
        metrics=challenger["metrics"],
        promoted=challenger["promote"],
        reason=challenger["reason"],
        trigger=trigger,
        dagster_run_id=dagster_run_id,
        replay_buffer=buffer,
        eval_matrix=matrix,
    )
    updates = warehouse.updates()
    summary = lineage_summary(warehouse.eval_matrix(), warehouse.trained_windows(), updates["model_version"].to_list())
    out = {f"cl_{k}": v for k, v in summary.items() if v == v and k != "fwt"}
    if out:
        registry.log_metrics(challenger["mlflow_run_id"], out)
    return out
