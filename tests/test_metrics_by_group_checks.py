"""auroc_by_group refuses what auroc refuses (labels other than 0 / 1, NaN scores) and group
names that do not pair with the labels, instead of a number or a bare IndexError."""

import numpy as np
import pytest

from anomaly_inspect.evaluation.metrics import auroc_by_group


def test_labels_other_than_0_1_are_refused():
    with pytest.raises(ValueError, match="labels must be 0 / 1"):
        auroc_by_group(np.array([0, 0, 2, 2]), np.arange(4.0), list("nnaa"))


def test_nan_scores_are_refused():
    with pytest.raises(ValueError, match="NaN or infinite"):
        auroc_by_group(np.array([0, 1]), np.array([0.0, np.nan]), ["n", "a"])


@pytest.mark.parametrize("groups, scores", [(list("nna"), np.arange(4.0)), (list("nnaa"), np.arange(3.0))])
def test_lengths_that_do_not_pair_are_refused(groups, scores):
    with pytest.raises(ValueError, match="must match"):
        auroc_by_group(np.array([0, 0, 1, 1]), scores, groups)


def test_bool_labels_still_give_the_groups_figures():
    got = auroc_by_group(np.array([False, True, True]), np.array([0.2, 0.1, 0.9]), ["n", "a", "b"])
    assert got == {"a": 0.0, "b": 1.0}
