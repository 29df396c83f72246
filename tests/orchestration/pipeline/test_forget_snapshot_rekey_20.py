"""``forget`` keeps training snapshots write-once (issue 20): a snapshot holding a deleted record is written
again without it into a new folder named by the new content hash, and the old folder is deleted, instead of
its Parquet files being rewritten under the old content-named folder.

Real files: a tiny home, real ingest and curation into a real DuckDB warehouse, the real snapshot export and
the real ``forget`` request.
"""

import json
from pathlib import Path

import polars as pl
import pytest
from st_helpers import tiny_home, window_records, write_window

from orchestration.pipeline.curate import curate
from orchestration.pipeline.forget import forget
from orchestration.pipeline.ingest import ingest_window
from orchestration.pipeline.lineage import SnapshotGone, check_untrained
from orchestration.pipeline.snapshot import ALL_SPLITS, SnapshotManifest, _content_sha256, build_snapshot
from orchestration.store.warehouse import Warehouse


def _snapshot(settings) -> SnapshotManifest:
    wh = Warehouse(settings.paths.warehouse)
    wh.init_schema()
    for i, key in enumerate(["s-01", "s-02"]):
        write_window(settings.paths.landing, f"{key}.jsonl", window_records(i, 30))
        ingest_window(settings, wh, key, file_hint=f"{key}.jsonl", dagster_run_id="r1")
        curate(settings, wh, key)
        wh.approve_window(key, dagster_run_id="r1")  # what approved_window does once the blocking checks pass
    return build_snapshot(wh, settings.paths.snapshots, eval_fraction=0.2, retention_rows=16)


def _files(directory: Path) -> dict[str, pl.DataFrame]:
    return {split: pl.read_parquet(directory / f"{split}.parquet") for split in ALL_SPLITS}


def test_forget_writes_a_scrubbed_snapshot_to_a_new_content_named_folder(tmp_path):
    settings = tiny_home(tmp_path / "home")
    old = _snapshot(settings)
    before = _files(Path(old.directory))
    train_ids = before["train"]["record_id"].to_list()
    gone = train_ids[0]

    report = forget(settings, ids=[gone], reason="test")

    assert not Path(old.directory).exists()  # the old content-named folder is never rewritten, it is gone
    (folder,) = [p for p in settings.paths.snapshots.iterdir() if p.is_dir()]
    manifest = SnapshotManifest.from_dict(json.loads((folder / "manifest.json").read_text()))
    after = _files(folder)
    assert manifest.snapshot_id == folder.name != old.snapshot_id
    assert folder.name == f"{old.snapshot_id[:-10]}{manifest.content_sha256[:10]}"
    assert manifest.content_sha256 == _content_sha256(after) != old.content_sha256  # name and manifest = content
    assert manifest.window_keys == old.window_keys and manifest.directory == str(folder)
    assert manifest.rows == {**old.rows, "train": old.rows["train"] - 1}
    assert after["train"]["record_id"].to_list() == [i for i in train_ids if i != gone]
    assert all(after[s].equals(before[s]) for s in ALL_SPLITS if s != "train")
    assert report.files["snapshots"] == [f"{old.snapshot_id}/train.parquet: -1 rows (now {folder.name})"]
    # a run (or re-execution) still holding the old manifest is refused, never trains other content
    with pytest.raises(SnapshotGone):
        check_untrained(old, ledger={}, lineage={})
    check_untrained(manifest, ledger={}, lineage={})
