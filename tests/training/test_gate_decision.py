import math

import pytest

from training.config import GateConfig
from training.gate import decide_promotion


def test_promotes_when_better_on_new_and_retention_within_tolerance():
    d = decide_promotion(3.91, 3.52, 3.40, 3.43, GateConfig(min_improvement=0.01, retention_tolerance=0.02))
    assert d.promote
    assert d.reason == (
        "new-window bits/byte 3.91 -> 3.52 (-10.0%, needs <= -1.0%): ok; "
        "retention 3.4 -> 3.43 (+0.9%, allowed <= +2.0%): ok"
    )
    assert d.numbers["new_rel_change"] == pytest.approx(3.52 / 3.91 - 1)


def test_rejects_when_new_window_improvement_is_too_small():
    d = decide_promotion(3.00, 2.98, None, None, GateConfig(min_improvement=0.01))
    assert not d.promote
    assert "needs <= -1.0%): FAIL" in d.reason
    assert "retention: no data" in d.reason


def test_rejects_equal_score_when_min_improvement_is_zero():
    assert not decide_promotion(3.0, 3.0, None, None, GateConfig()).promote
    assert decide_promotion(3.0, 2.999, None, None, GateConfig()).promote


def test_min_improvement_boundary_is_inclusive():
    assert decide_promotion(4.0, 4.0 * 0.9, None, None, GateConfig(min_improvement=0.1)).promote


def test_rejects_on_retention_regression_beyond_tolerance():
    d = decide_promotion(3.9, 3.5, 3.40, 3.50, GateConfig(retention_tolerance=0.02))
    assert not d.promote
    assert d.reason.endswith("retention 3.4 -> 3.5 (+2.9%, allowed <= +2.0%): FAIL")


def test_promotes_without_champion():
    d = decide_promotion(None, 5.0, None, None, GateConfig())
    assert d.promote and d.reason == "no champion yet"
    d = decide_promotion(None, 5.0, 4.0, 9.0, GateConfig())
    assert d.promote


def test_rejects_diverged_challenger():
    assert not decide_promotion(3.0, math.nan, None, None, GateConfig()).promote
    assert not decide_promotion(None, math.inf, None, None, GateConfig()).promote
    assert not decide_promotion(3.0, 2.0, 3.0, math.nan, GateConfig()).promote


def test_retention_numbers_must_come_in_pairs():
    with pytest.raises(ValueError, match="both be given or both be None"):
        decide_promotion(3.0, 2.0, 3.0, None, GateConfig())


def test_tags_carry_decision_reason_and_numbers():
    d = decide_promotion(3.91, 3.52, 3.40, 3.43, GateConfig())
    tags = d.tags()
    assert tags["gate.decision"] == "promoted"
    assert tags["gate.reason"] == d.reason
    assert tags["gate.champion_new_bpb"] == "3.91"
    assert tags["gate.challenger_retention_bpb"] == "3.43"
    assert all(isinstance(v, str) for v in tags.values())
    assert decide_promotion(3.0, 3.5, None, None, GateConfig()).tags()["gate.decision"] == "rejected"
