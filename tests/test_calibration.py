"""Conformal threshold calibration, checked against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly_inspect.screening.calibration import (
    Calibration,
    calibrate,
    conformal_p_values,
    holdout_split,
    min_calibration_size,
)


def test_p_values_by_hand():
    cal = np.array([3.0, 1.0, 2.0, 2.0])  # n = 4
    # s=0.5: all 4 >= s -> 5/5; s=2: 3 (2,2,3) -> 4/5; s=2.5: 1 -> 2/5; s=9: 0 -> 1/5
    p = conformal_p_values(cal, [0.5, 2.0, 2.5, 9.0])
    np.testing.assert_allclose(p, [1.0, 0.8, 0.4, 0.2])


def test_threshold_is_kth_largest_and_matches_p_values():
    scores = np.arange(1.0, 10.0)  # 1..9, n = 9
    cal = calibrate(scores, target_fpr=0.2)
    # k = floor(0.2 * 10) = 2 -> threshold = 2nd largest = 8, expected FPR = 2/10
    assert cal.rank == 2 and cal.threshold == 8.0
    assert cal.expected_fpr == pytest.approx(0.2) and cal.target_met
    assert cal.n_calibration == 9
    # 8.5 is flagged (p = 2/10 <= 0.2); 8.0 is not (p = 3/10)
    np.testing.assert_array_equal(cal.decide([8.5, 8.0, 100.0]), [True, False, True])
    np.testing.assert_allclose(cal.p_values([8.5, 8.0]), [0.2, 0.3])


def test_decision_equals_p_value_rule_on_random_scores():
    rng = np.random.default_rng(1)
    cal = calibrate(rng.normal(size=199), target_fpr=0.05)  # k = 10
    assert cal.rank == 10
    test = rng.normal(size=5000) * 1.5
    np.testing.assert_array_equal(cal.decide(test), cal.p_values(test) <= cal.expected_fpr + 1e-12)


def test_unreachable_target_falls_back_to_max_and_says_so():
    cal = calibrate([1.0, 5.0, 3.0], target_fpr=0.01)
    assert not cal.target_met
    assert cal.threshold == 5.0 and cal.rank == 1
    assert cal.expected_fpr == pytest.approx(0.25)
    assert "NOT REACHABLE" in cal.summary() and "99" in cal.summary()
    assert min_calibration_size(0.01) == 99 and min_calibration_size(0.05) == 19


def test_interval_for_one_of_one_is_uniform():
    # n = 1, k = 1 (target 0.5): FPR ~ Beta(1, 1) = uniform -> 90 % interval [0.05, 0.95]
    cal = calibrate([4.0], target_fpr=0.5)
    assert cal.fpr_interval == pytest.approx((0.05, 0.95))


def test_expected_fpr_holds_in_simulation():
    """Over many calibration draws the FPR on new normals averages k / (n + 1)."""
    rng = np.random.default_rng(0)
    fprs = []
    for _ in range(400):
        cal = calibrate(rng.normal(size=99), target_fpr=0.05)  # k = 5, expected 0.05
        fprs.append(cal.decide(rng.normal(size=500)).mean())
    assert np.mean(fprs) == pytest.approx(0.05, abs=0.006)


def test_round_trip_and_bad_input():
    cal = calibrate([1.0, 2.0, 3.0, 4.0], 0.25, source="x")
    assert Calibration.from_dict(cal.to_dict()) == cal
    with pytest.raises(ValueError, match="target_fpr must be a number in"):
        calibrate([1.0], 0.0)
    with pytest.raises(ValueError, match="at least one"):
        calibrate([], 0.1)
    with pytest.raises(ValueError, match="NaN"):
        calibrate([1.0, float("nan")], 0.1)


def test_holdout_split_is_seeded_and_disjoint():
    fit_a, cal_a = holdout_split(10, 0.3, seed=3)
    fit_b, cal_b = holdout_split(10, 0.3, seed=3)
    np.testing.assert_array_equal(cal_a, cal_b)
    assert len(cal_a) == 3 and len(fit_a) == 7
    assert sorted(np.r_[fit_a, cal_a].tolist()) == list(range(10))
    assert not np.array_equal(holdout_split(10, 0.3, seed=4)[1], cal_a)
    with pytest.raises(ValueError, match="cannot hold out"):
        holdout_split(1, 0.2)


def test_calibration_split_holds_out_or_takes_the_given_images(tmp_path, caplog):
    from anomaly_inspect.screening.model import calibration_split

    train = [tmp_path / f"t{i}.png" for i in range(10)]
    for i, t in enumerate(train):
        t.write_bytes(bytes([i]))  # distinct: byte-identical copies are warned of
    fit, cal, source = calibration_split(train, None, 0.3, seed=3)
    fit_idx, cal_idx = holdout_split(10, 0.3, seed=3)
    assert fit == [train[i] for i in fit_idx] and cal == [train[i] for i in cal_idx]
    assert source == "held-out 3 of 10 training images (calibration fraction 0.3, seed 3)"

    folder = tmp_path / "cal"
    folder.mkdir()
    for name in ("b.png", "a.png"):
        (folder / name).write_bytes(name.encode())
    fit, cal, source = calibration_split(train, [folder], 0.3, seed=3)
    assert fit == train and [p.name for p in cal] == ["a.png", "b.png"]
    assert source == f"calibration images from {folder}" and not caplog.records

    with caplog.at_level("WARNING"):
        calibration_split(train[:3], [train[1], folder], 0.3, seed=3)
    assert "1 calibration images are also training images" in caplog.text
    with pytest.raises(ValueError, match="no calibration images found in .*empty"):
        (tmp_path / "empty").mkdir()
        calibration_split(train, [tmp_path / "empty"], 0.3, seed=3)


def test_a_nan_score_has_no_p_value_and_an_edited_calibration_is_refused():
    cal = calibrate(np.arange(1.0, 21.0), target_fpr=0.1)  # k = 2: threshold 19
    p = cal.p_values([np.nan, 19.5])
    assert np.isnan(p[0]) and p[1] == pytest.approx(2 / 21)
    d = cal.to_dict()
    assert Calibration.from_dict(d).threshold == 19.0
    with pytest.raises(ValueError, match="threshold, rank, n_calibration and scores disagree"):
        Calibration.from_dict({**d, "threshold": 60.0})
    with pytest.raises(ValueError, match="disagree"):
        Calibration.from_dict({**d, "scores": d["scores"][:-1]})
    assert Calibration.from_dict({**d, "scores": []}).threshold == 19.0  # older records: no scores


def test_a_record_without_scores_has_no_p_values_not_one():
    """Older records keep the threshold but not the calibration scores: their decisions stand,
    their p-values are NaN (an empty p_value in results.csv), never 1.0 beside 'anomalous'."""
    from anomaly_inspect.screening.calibration import NO_P_VALUE

    cal = calibrate(np.arange(1.0, 21.0), target_fpr=0.1)
    old = Calibration.from_dict({**cal.to_dict(), "scores": []})
    assert cal.has_p_values and not old.has_p_values
    p = old.p_values([0.5, 19.5, 100.0])
    assert p.shape == (3,) and np.isnan(p).all() and np.isnan(NO_P_VALUE)
    np.testing.assert_array_equal(old.decide([0.5, 19.5, 100.0]), [False, True, True])
    assert old.p_values(np.array([[1.0, 2.0]])).shape == (1, 2)
    assert "no p-values" in old.summary() and "no p-values" not in cal.summary()
    with pytest.raises(ValueError, match="needs at least one calibration score"):
        conformal_p_values(np.array([]), [1.0])
