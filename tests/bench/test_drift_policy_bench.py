"""bench/drift.py policy machinery: retrain schedules and the retrain budget rules."""

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "bench_drift", Path(__file__).resolve().parents[2] / "bench" / "drift.py"
)
_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_bench)
policy_schedules, retrain_steps = _bench.policy_schedules, _bench.retrain_steps


def test_drift_policy_schedules_reset_staleness_on_every_retrain():
    alarms = [False, False, True, False, False, False, True, False, False]
    s = policy_schedules(9, alarms, cadences=[2], stalenesses=[2, 3])
    assert s["every_window"] == list(range(1, 9))
    assert s["cadence_2"] == [2, 4, 6, 8]
    assert s["drift"] == [2, 6]
    # K = 3: the alarm at 2 resets the count, 5 is the 3rd window after it, the alarm at 6 resets again
    assert s["drift+staleness_3"] == [2, 5, 6]
    assert s["drift+staleness_2"] == [2, 4, 6, 8]


def test_drift_policy_retrain_budgets():
    # per-retrain: same steps whatever is pending; per-window: per window covered;
    # per-new-data (catch-up): proportional to the rows not trained on yet
    assert retrain_steps("per-retrain", 40, 3, 1350, 450.0) == 40
    assert retrain_steps("per-window", 40, 3, 1350, 450.0) == 120
    assert retrain_steps("per-new-data", 40, 3, 1350, 450.0) == 120
    assert retrain_steps("per-new-data", 40, 1, 225, 450.0) == 20
    assert retrain_steps("per-new-data", 40, 1, 1, 450.0) == 1
    with pytest.raises(ValueError):
        retrain_steps("per-epoch", 40, 1, 1, 450.0)
    with pytest.raises(ValueError):
        retrain_steps("per-new-data", 40, 1, 1, 0.0)
