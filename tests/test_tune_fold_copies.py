"""Tune's folds keep byte-identical copies together (no held-out image validated against its own
copy in its fold's bank); without copies the folds are the plain seeded ones."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly_inspect.tuning.tune import TooFewImagesError, TuneSettings, fold_plan


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_copies_share_a_fold_and_the_rest_is_unchanged(seed):
    settings = TuneSettings(seed=seed)
    plain = fold_plan(100, settings)
    copies = [list(range(40, 100))]  # one frame 60 times (a review's case: it was in every fold)
    chosen, folds, families = fold_plan(100, settings, copies)
    np.testing.assert_array_equal(chosen, plain[0])
    np.testing.assert_array_equal(families, plain[2])
    assert len(set(folds[40:100])) == 1 and folds[40] == plain[1][40]
    np.testing.assert_array_equal(folds[:40], plain[1][:40])


def test_too_few_distinct_images_for_the_folds_are_refused():
    settings = TuneSettings()
    with pytest.raises(TooFewImagesError, match="too few distinct ones"):
        fold_plan(12, settings, [list(range(12))])
