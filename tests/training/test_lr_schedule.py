import pytest

from training.schedule import get_lr

PEAK, MIN, TOTAL, WARMUP = 1e-3, 1e-4, 100, 10


def lr(step: int) -> float:
    return get_lr(step, TOTAL, PEAK, WARMUP, MIN)


def test_warmup_is_linear_from_first_step_to_peak():
    assert lr(0) == pytest.approx(PEAK / WARMUP)
    assert lr(4) == pytest.approx(PEAK * 5 / WARMUP)
    assert lr(WARMUP - 1) == pytest.approx(PEAK)


def test_cosine_decays_monotonically_to_min_lr_at_last_step():
    values = [lr(s) for s in range(WARMUP - 1, TOTAL)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert values[0] == pytest.approx(PEAK)
    assert lr(TOTAL - 1) == pytest.approx(MIN)
    mid = WARMUP - 1 + (TOTAL - WARMUP) // 2
    assert lr(mid) == pytest.approx((PEAK + MIN) / 2)


def test_past_the_end_stays_at_min_lr():
    assert lr(TOTAL) == pytest.approx(MIN)
    assert lr(10 * TOTAL) == pytest.approx(MIN)


def test_without_warmup_starts_at_peak():
    assert get_lr(0, 10, PEAK, 0, MIN) == pytest.approx(PEAK)
    assert get_lr(9, 10, PEAK, 0, MIN) == pytest.approx(MIN)


def test_single_step_update_runs_at_peak():
    assert get_lr(0, 1, PEAK, 1, MIN) == pytest.approx(PEAK)
    assert get_lr(0, 1, PEAK, 0, MIN) == pytest.approx(PEAK)


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ((-1, 10, PEAK, 1, MIN), "step"),
        ((0, 0, PEAK, 0, MIN), "total_steps"),
        ((0, 10, PEAK, 11, MIN), "warmup_steps"),
        ((0, 10, 0.0, 1, 0.0), "peak_lr"),
        ((0, 10, PEAK, 1, 2 * PEAK), "min_lr"),
    ],
)
def test_invalid_arguments_raise(args, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        get_lr(*args)
