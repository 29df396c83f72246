"""UpdateResult: the typed value that flows challenger_model -> model_update -> gate check -> champion_model."""

from orchestration.pipeline.snapshot import SnapshotManifest
from orchestration.pipeline.update import UpdateResult
from orchestration.pipeline.update_record import eval_matrix_frame

MANIFEST = SnapshotManifest(
    snapshot_id="w-01-abc",
    directory="/nowhere/w-01-abc",
    window_keys=["w-01"],
    rows={"train": 9, "new_eval": 1, "retention_eval": 0, "replay": 0, "first_eval": 1},
    content_sha256="abc",
    created_at="2026-01-01T00:00:00+00:00",
)
LEGACY = {  # the 9-key dict a run stored before UpdateResult existed (a re-executed run reads it back)
    "version": "2",
    "mlflow_run_id": "r1",
    "parent_version": "1",
    "metrics": {"challenger_new_bpb": 1.5},
    "promote": True,
    "reason": "PASS",
    "gate_tags": {"gate.decision": "promoted"},
    "snapshot": MANIFEST.to_dict(),
    "matrix": {"after": {"w-01": {"loss": 1.0, "bpb": 1.5, "texts": 1, "bytes": 10}}},
}


def test_update_result_round_trips_through_its_json_able_dict():
    update = UpdateResult.from_dict(LEGACY)
    assert update.snapshot == MANIFEST and update.samples == [] and update.cl_summary == {}
    again = UpdateResult.from_dict(update.to_dict())
    assert again == update
    assert {k: again.to_dict()[k] for k in LEGACY} == LEGACY


def test_eval_matrix_rows_come_from_the_update_matrix():
    frame = eval_matrix_frame(LEGACY["matrix"], "1", "w-01")
    assert frame.rows() == [("1", "w-01", "w-01", "after", 1.0, 1.5, 1, 10)]
