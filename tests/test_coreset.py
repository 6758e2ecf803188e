"""Greedy k-center coreset against hand-checked cases."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly_inspect.scorers.coreset import chunked_greedy_coreset, coreset_size, greedy_coreset

# Five 2-D points. Starting at (0, 0): the farthest point is (9, 9) (12.73);
# then (0, 11) (its distance to the nearest centre is min(11, 9.22) = 9.22,
# beating (10, 0)'s min(10, 9.06) = 9.06); then (10, 0); (1, 1) is last.
FIVE = np.array([[0, 0], [10, 0], [0, 11], [1, 1], [9, 9]], dtype=np.float32)


def test_greedy_five_points_by_hand():
    order = greedy_coreset(FIVE, 5, projection_dim=None, start=0)
    assert order.tolist() == [0, 4, 2, 1, 3]


def test_greedy_covering_radius_is_minimised_step_by_step():
    # after 3 picks {0, 4, 2} the farthest remaining point is (10, 0) at 9.06
    order = greedy_coreset(FIVE, 3, projection_dim=None, start=0)
    centres = FIVE[order]
    radius = np.linalg.norm(FIVE[:, None] - centres[None], axis=-1).min(1).max()
    assert radius == pytest.approx(np.hypot(1, 9), rel=1e-6)


def test_chunked_equals_exact_when_one_chunk():
    x = np.random.default_rng(1).standard_normal((300, 16)).astype(np.float32)
    chunked = chunked_greedy_coreset(x, ratio=0.1, chunk_size=None, projection_dim=None, seed=3)
    assert len(chunked) == 30 and len(np.unique(chunked)) == 30
    # one chunk = the exact greedy on a seeded permutation from a seeded start
    rng = np.random.default_rng(3)
    perm = rng.permutation(300)
    exact = perm[greedy_coreset(x[perm], 30, None, start=int(rng.integers(300)))]
    assert sorted(exact.tolist()) == chunked.tolist()


def test_chunked_size_cap_and_determinism():
    x = np.random.default_rng(0).standard_normal((5000, 32)).astype(np.float32)
    a = chunked_greedy_coreset(x, ratio=0.1, chunk_size=1000, seed=0)
    b = chunked_greedy_coreset(x, ratio=0.1, chunk_size=1000, seed=0)
    assert np.array_equal(a, b)
    assert len(a) == 500 and len(np.unique(a)) == 500
    capped = chunked_greedy_coreset(x, ratio=0.1, max_items=123, chunk_size=1000, seed=0)
    assert len(capped) == 123
    assert coreset_size(5000, 0.1, 123) == 123


def test_chunked_coreset_covers_far_clusters():
    # 4 tight, far-apart clusters: any greedy coreset of >= 4 points hits all of them
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [100, 0], [0, 100], [100, 100]], np.float32)
    x = np.concatenate([c + rng.normal(0, 0.1, (500, 2)) for c in centres]).astype(np.float32)
    sel = chunked_greedy_coreset(x, ratio=0.01, chunk_size=512, projection_dim=None, seed=0)
    hit = {int(i) // 500 for i in sel}
    assert hit == {0, 1, 2, 3}
