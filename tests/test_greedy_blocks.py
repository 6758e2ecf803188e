"""The pruned greedy's step (coreset._Greedy._update_pruned) gathers the reachable rows with
take() and keeps each row's nearest centre as intp: its picks, values, distances and nearest
centres are those of the step it replaced (fancy indexing, int32), to the last bit, because the
gathered matrix is the same. (A coarse test on static groups of rows, tried on 2026-12-05, let
95-99 % of the rows through on real features where the per-row test lets 1-12 % through, so it
was not adopted: docs/coreset.md.)"""

import numpy as np
import pytest

import anomaly_inspect.scorers.coreset as cs


class FancyIndexGreedy(cs._Greedy):
    """The pruned step before 2026-12-05: x[rows] and int32 nearest centres."""

    def __init__(self, x, start, picks=0):
        super().__init__(x, start, picks)
        self.assign = self.assign.astype(np.int32)
        self.gathered = 0  # steps that gathered rows rather than running the full GEMV

    def _update_pruned(self, c):
        t = len(self._picks) - 1
        if t == len(self.centres):
            self.centres = np.concatenate([self.centres, np.empty_like(self.centres)])
            self.csq = np.concatenate([self.csq, np.empty_like(self.csq)])
        cc = c @ c
        dc = cs._sq_distances(self.centres[:t], self.csq[:t], c, cc)
        rows = np.flatnonzero(dc.take(self.assign) <= self.lim)
        if len(rows) * cs.PRUNE_GATHER_COST > len(self.x):
            d = cs._sq_distances(self.x, self.sq, c, cc)
            moved = np.flatnonzero(d < self.min_d)
            d = d[moved]
        else:
            self.gathered += 1
            d = cs._sq_distances(self.x[rows], self.sq.take(rows), c, cc)
            better = d < self.min_d.take(rows)
            moved, d = rows[better], d[better]
        self.min_d[moved] = d
        self.lim[moved] = self._bound(d)
        self.assign[moved] = t
        self.centres[t] = c
        self.csq[t] = cc


def clustered(n, d, seed):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, d)) * 5
    x = (centres[rng.integers(20, size=n)] + rng.standard_normal((n, d))).astype(np.float32)
    x[n // 2:n // 2 + 50] = x[:50]  # exact duplicates
    return x


def test_reference_is_the_greedy_on_the_line_by_hand(monkeypatch):
    # seven points on a line, start 0 (as in test_coreset.py): 30, 12, then 2 and 10 tie at 2
    monkeypatch.setattr(cs, "PRUNE_MIN_BYTES", 0)
    line = np.array([[0, 0], [1, 0], [2, 0], [10, 0], [11, 0], [12, 0], [30, 0]], np.float32)
    new, old = cs._Greedy(line, 0).extend(5), FancyIndexGreedy(line, 0).extend(5)
    assert new.picks.tolist() == old.picks.tolist() == [0, 6, 5, 2, 3]
    assert new.values[1:].tolist() == old.values[1:].tolist() == [900, 144, 4, 4]
    assert new.assign.tolist() == old.assign.tolist() == [0, 0, 3, 4, 2, 2, 1]


@pytest.mark.parametrize("n, d, k", [(6000, 128, 900), (8000, 24, 2400)])
def test_take_gather_is_bit_identical_to_the_fancy_index_gather(monkeypatch, n, d, k):
    monkeypatch.setattr(cs, "PRUNE_MIN_BYTES", 0)
    x = clustered(n, d, n)
    new = cs._Greedy(x, 7)
    new.extend(k // 3).extend(k)  # extended in two steps, as cells_greedy does
    old = FancyIndexGreedy(x, 7).extend(k)
    assert new.pruned and old.gathered > k // 2  # most steps gather the rows they reach
    assert new.assign.dtype == np.intp
    assert np.array_equal(new.picks, old.picks)
    assert np.array_equal(new.values, old.values)
    assert np.array_equal(new.min_d, old.min_d)
    assert np.array_equal(new.lim, old.lim)
    assert np.array_equal(new.assign, old.assign)
