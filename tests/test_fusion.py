"""Cross-fitted normal calibration (evaluation/fusion.py) on hand-checked cases."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly_inspect.evaluation.fusion import (
    NormalCalibration,
    crossfit_folds,
    crossfit_scores,
    fuse,
)


def test_crossfit_folds_are_balanced_and_seeded():
    f = crossfit_folds(10, 3, seed=0)
    assert sorted(np.bincount(f)) == [3, 3, 4]
    assert np.array_equal(f, crossfit_folds(10, 3, seed=0))
    assert not np.array_equal(f, crossfit_folds(10, 3, seed=1))
    with pytest.raises(ValueError, match="2 <= folds <= 4"):
        crossfit_folds(4, 5, seed=0)
    with pytest.raises(ValueError, match="2 <= folds <= 4 images, got 1$"):
        crossfit_folds(4, 1, seed=0)


def test_crossfit_scores_never_see_the_held_out_image():
    # "model" = the bank's mean; score = distance to it. Folds {0, 2} and {1, 3}.
    x = np.array([0.0, 10.0, 2.0, 14.0])
    fold = np.array([0, 1, 0, 1])
    seen = []

    def fit_score(bank, held):
        seen.append((set(bank.tolist()), set(held.tolist())))
        return np.abs(x[held] - x[bank].mean())

    out = crossfit_scores(fold, fit_score)
    # held {0, 2} against mean(10, 14) = 12: 12, 10; held {1, 3} against mean(0, 2) = 1: 9, 13
    assert out.tolist() == [12.0, 9.0, 10.0, 13.0]
    assert all(not (bank & held) for bank, held in seen) and len(seen) == 2


def test_fusion_of_crossfitted_members():
    # two members on different scales: after calibration their units agree
    a_cv, b_cv = np.array([1.0, 2.0, 3.0]), np.array([100.0, 200.0, 300.0])
    cals = [NormalCalibration.fit(a_cv), NormalCalibration.fit(b_cv)]
    assert cals[0].median == 2.0 and cals[0].mad == pytest.approx(1.4826)
    fused = fuse([np.array([2.0, 5.0]), np.array([200.0, 500.0])], cals)
    assert fused == pytest.approx([0.0, 3 / 1.4826])


def test_normal_calibration_refuses_empty_or_non_finite_scores():
    for bad in ([], [1.0, np.nan], [2.0, 2.0, np.inf]):
        with pytest.raises(ValueError, match="normal calibration needs finite scores"):
            NormalCalibration.fit(np.array(bad))
    cal = NormalCalibration.fit(np.array([1.0, 2.0, 3.0]))
    assert (cal.median, cal.mad) == (2.0, pytest.approx(1.4826))
