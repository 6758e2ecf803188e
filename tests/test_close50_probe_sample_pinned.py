"""The seeded patch sample behind ``bench-coreset --radius-sample`` (and the HNSW graph check)
is pinned: a change to how it draws moves every recorded sampled radius (docs/scaling.md),
so it must show up here first."""

from __future__ import annotations

import numpy as np

from anomaly_inspect.scorers.nn_index import ProbeSample


def test_probe_sample_draws_the_recorded_rows_however_they_arrive():
    rows = np.arange(40, dtype=np.float32).reshape(20, 2)
    whole, batched = ProbeSample(5, seed=0), ProbeSample(5, seed=0)
    whole.add(rows)
    batched.add(rows[:7])
    batched.add(rows[7:])
    assert (whole.rows[:, 0] // 2).tolist() == [5, 16, 0, 9, 1]
    np.testing.assert_array_equal(batched.rows, whole.rows)
