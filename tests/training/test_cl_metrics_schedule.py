"""ACC/BWT/FWT/forgetting on hand-computed matrices, and the TiC-LM AR meta-schedule peaks."""

import math

import pytest

from training.cl_metrics import cl_summary
from training.schedule import ar_meta_peak_lr


def test_cl_summary_matches_hand_computation():
    # scores = -bits/byte; row i = after training through window i
    R = {
        (0, 0): -2.0,
        (0, 1): -3.0,
        (0, 2): -3.5,
        (1, 0): -2.2,
        (1, 1): -2.1,
        (1, 2): -3.2,
        (2, 0): -2.5,
        (2, 1): -2.3,
        (2, 2): -2.0,
    }
    m = cl_summary(R, 3, base=[-4.0, -4.0, -4.0])
    assert m["acc"] == pytest.approx((-2.5 - 2.3 - 2.0) / 3)
    assert m["bwt"] == pytest.approx(((-2.5 + 2.0) + (-2.3 + 2.1)) / 2)
    assert m["fwt"] == pytest.approx(((-3.0 + 4.0) + (-3.2 + 4.0)) / 2)
    assert m["forgetting"] == pytest.approx(((-2.0 + 2.5) + (-2.1 + 2.3)) / 2)
    assert m["forgetting_avalanche"] == pytest.approx(-m["bwt"])


def test_cl_summary_single_window_and_missing_base():
    m = cl_summary({(0, 0): -1.0}, 1)
    assert m["acc"] == -1.0 and math.isnan(m["bwt"]) and math.isnan(m["fwt"])
    with pytest.raises(ValueError):
        cl_summary({}, 0)


def test_ar_meta_schedule_peaks_decrease_along_one_global_cosine():
    assert ar_meta_peak_lr(0, 100, 1e-3, 1e-4) == pytest.approx(1e-3)
    assert ar_meta_peak_lr(100, 100, 1e-3, 1e-4) == pytest.approx(1e-4 + 0.5 * 9e-4)  # cos(pi/2)
    peaks = [ar_meta_peak_lr(100 * t, 100, 1e-3, 1e-4) for t in range(10)]
    assert all(a > b for a, b in zip(peaks, peaks[1:])) and peaks[-1] > 1e-4
    with pytest.raises(ValueError):
        ar_meta_peak_lr(0, 0, 1e-3, 1e-4)
