"""A held-out calibration split that cannot be drawn names the fraction that can, in the
Python API's terms and, through the command line, in its flags."""

from __future__ import annotations

import pytest

from anomaly_inspect.cli import with_flag_hints
from anomaly_inspect.screening.calibration import holdout_split


def _refusal(n: int, fraction: float) -> str:
    with pytest.raises(ValueError, match="cannot hold out") as err:
        holdout_split(n, fraction)
    return str(err.value)


@pytest.mark.parametrize("n, fraction", [(2, 0.2), (4, 0.1), (30, 0.01)])
def test_too_few_held_out_images_name_a_larger_calibration_fraction_that_works(n, fraction):
    text = _refusal(n, fraction)
    assert "larger" in text and "calibration_fraction" in text and "--calibration-fraction" in text
    suggested = float(text.split("e.g. ")[1].split(")")[0])
    fit_idx, cal_idx = holdout_split(n, suggested)
    assert len(fit_idx) >= 1 and len(cal_idx) >= 1
    assert "--calibration DIR" in with_flag_hints(text)  # the other way out, as a flag


def test_no_image_left_to_fit_names_a_smaller_calibration_fraction_that_works():
    text = _refusal(2, 0.8)
    assert "smaller" in text and "--calibration-fraction" in text
    suggested = float(text.split("e.g. ")[1].split(")")[0])
    assert all(len(side) >= 1 for side in holdout_split(2, suggested))


def test_one_training_image_names_no_fraction():
    text = _refusal(1, 0.5)
    assert "fraction" not in text and "add images" in text and "calibration=DIR" in text
