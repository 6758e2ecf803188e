"""Greedy k-center coreset: hand-checked cases, the two-round bound, the small-ratio regression."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from anomaly_inspect.evaluation.metrics import auroc
from anomaly_inspect.scorers.coreset import (
    TwoRoundCoreset,
    cells_greedy,
    coreset_size,
    covering_radius,
    greedy_coreset,
    two_round_coreset,
)
from anomaly_inspect.scorers.patchcore import PatchCore

# Five 2-D points. Starting at (0, 0): the farthest point is (9, 9) (12.73);
# then (0, 11) (its distance to the nearest centre is min(11, 9.22) = 9.22,
# beating (10, 0)'s min(10, 9.06) = 9.06); then (10, 0); (1, 1) is last.
FIVE = np.array([[0, 0], [10, 0], [0, 11], [1, 1], [9, 9]], dtype=np.float32)


def radius(x, idx):
    return covering_radius(x, x[idx])


def optimal_radius(x, k):
    """Brute-force discrete k-center optimum (centres among the points)."""
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    return min(d[:, list(c)].min(1).max() for c in combinations(range(len(x)), k))


def test_greedy_five_points_by_hand():
    order = greedy_coreset(FIVE, 5, projection_dim=None, start=0)
    assert order.tolist() == [0, 4, 2, 1, 3]


def test_greedy_covering_radius_is_minimised_step_by_step():
    # after 3 picks {0, 4, 2} the farthest remaining point is (10, 0) at 9.06
    order = greedy_coreset(FIVE, 3, projection_dim=None, start=0)
    assert radius(FIVE, order) == pytest.approx(np.hypot(1, 9), rel=1e-6)


# Seven points on a line, start 0: 30 is farthest (30), then 12 (12), then 2 and 10 tie at 2
# (argmax takes the first, 2), then 10 (2), then 1 and 11 at 1.
SEVEN = np.array([[0, 0], [1, 0], [2, 0], [10, 0], [11, 0], [12, 0], [30, 0]], np.float32)


def test_pruned_greedy_on_the_line_by_hand(monkeypatch):
    import anomaly_inspect.scorers.coreset as cs

    monkeypatch.setattr(cs, "PRUNE_MIN_BYTES", 0)
    g = cs._Greedy(SEVEN, 0)
    assert g.pruned
    g.extend(5)
    assert g.picks.tolist() == [0, 6, 5, 2, 3]
    assert g.values[1:].tolist() == [900, 144, 4, 4]
    # each row's nearest centre (by pick number): row 1 is as near to 2 as to 0 and stays
    # with 0; 11 goes to 12 (pick 2), which took it from 30 (pick 1)
    assert g.assign[[0, 1, 2]].tolist() == [0, 0, 3]
    assert g.assign[[4, 6]].tolist() == [2, 1]


@pytest.mark.parametrize("n, d, k", [(3000, 16, 600), (2000, 128, 200)])
def test_pruned_greedy_picks_what_the_full_update_picks(monkeypatch, n, d, k):
    import anomaly_inspect.scorers.coreset as cs

    rng = np.random.default_rng(n)
    centres = rng.standard_normal((20, d)) * 5
    x = (centres[rng.integers(20, size=n)] + rng.standard_normal((n, d))).astype(np.float32)
    x[n // 2:n // 2 + 50] = x[:50]  # exact duplicates
    monkeypatch.setattr(cs, "PRUNE_MIN_BYTES", 2**62)
    full = cs._Greedy(x, 7).extend(k)
    monkeypatch.setattr(cs, "PRUNE_MIN_BYTES", 0)
    pruned = cs._Greedy(x, 7)
    pruned.extend(k // 3).extend(k)  # extended in two steps, as cells_greedy does
    assert pruned.pruned and not full.pruned
    assert pruned.picks.tolist() == full.picks.tolist()
    np.testing.assert_allclose(pruned.values[1:], full.values[1:], rtol=1e-5)
    np.testing.assert_allclose(pruned.min_d, full.min_d, rtol=1e-4, atol=1e-3)


def test_chunks_prune_when_a_large_share_is_picked(monkeypatch):
    """A round-1 chunk (below PRUNE_MIN_BYTES) prunes when at least PRUNE_SHARE's share of it
    is picked (the 1 % bank keeps 0.3 of each chunk), not at the default's 0.1, and a small
    block never does; the coreset is the same either way."""
    import anomaly_inspect.scorers.coreset as cs

    rng = np.random.default_rng(5)
    centres = rng.standard_normal((30, 24)) * 4
    x = (centres[rng.integers(30, size=9000)] + rng.standard_normal((9000, 24))).astype(np.float32)
    monkeypatch.setattr(cs, "PRUNE_SHARE", (0.15, 3000 * 24 * 4))  # x's chunks: 3000 x 24
    chunk = x[:3000]
    assert chunk.nbytes < cs.PRUNE_MIN_BYTES
    assert not cs._Greedy(chunk, 0, 300).pruned  # 10 %
    assert cs._Greedy(chunk, 0, 900).pruned  # 30 %
    assert not cs._Greedy(chunk[:2000], 0, 900).pruned  # too small
    pruned = two_round_coreset(x, ratio=0.01, projection_dim=None, seed=2)
    monkeypatch.setattr(cs, "PRUNE_SHARE", (2.0, 0))  # never by share
    assert not cs._Greedy(chunk, 0, 1229).pruned
    assert pruned.tolist() == two_round_coreset(x, ratio=0.01, projection_dim=None, seed=2).tolist()


def test_chunk_size_none_is_the_exact_greedy():
    x = np.random.default_rng(1).standard_normal((300, 16)).astype(np.float32)
    sel = two_round_coreset(x, ratio=0.1, chunk_size=None, seed=3)
    exact = greedy_coreset(x, 30, projection_dim=128, seed=3)  # same start: default_rng(3)
    assert sel.tolist() == sorted(exact.tolist())


def test_one_chunk_is_the_exact_greedy_prefix():
    x = np.random.default_rng(2).standard_normal((500, 8)).astype(np.float32)
    sel = two_round_coreset(x, ratio=0.02, chunk_size=4096, projection_dim=None, seed=0)
    rng = np.random.default_rng(0)
    perm = rng.permutation(500)
    exact = perm[greedy_coreset(x[perm], 10, None, start=int(rng.integers(500)))]
    assert sel.tolist() == sorted(exact.tolist())


# Three planted clusters, each the four points at distance 1 around its centre.
# Any one point of a cluster is within 2 of the other three (opposite corner),
# and no better discrete centre exists, so the optimal 3-center radius is 2.
DIAMOND = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]], np.float32)
PLANTED = np.concatenate([c + DIAMOND for c in ([0, 0], [10, 0], [0, 10])]).astype(np.float32)


def test_two_round_radius_on_the_planted_case_by_hand():
    assert optimal_radius(PLANTED, 3) == pytest.approx(2.0)
    for seed in range(10):
        # 2 chunks of 6; round 1 keeps 3 (= k) per chunk, round 2 greedy over the 6
        sel = two_round_coreset(PLANTED, ratio=0.25, chunk_size=6, first_round_ratio=0.5,
                                projection_dim=None, seed=seed)
        assert len(sel) == 3
        assert {int(i) // 4 for i in sel} == {0, 1, 2}  # one centre in every cluster
        assert radius(PLANTED, sel) == pytest.approx(2.0)


def test_two_round_radius_is_within_four_times_the_optimum():
    # Malkomes et al.: with k picks per chunk, radius <= r1 + r2 <= 2 OPT + 2 OPT.
    for seed in range(15):
        x = np.random.default_rng(seed).uniform(0, 10, (12, 2)).astype(np.float32)
        opt = optimal_radius(x, 3)
        sel = two_round_coreset(x, ratio=0.25, chunk_size=4, first_round_ratio=0.75,
                                projection_dim=None, seed=seed)
        assert len(sel) == 3
        assert radius(x, sel) <= 4 * opt + 1e-5
        exact = greedy_coreset(x, 3, projection_dim=None, seed=seed)
        assert radius(x, exact) <= 2 * opt + 1e-5


def many_clusters(n_clusters=200, per=100, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-50, 50, (n_clusters, dim))
    return (centres.repeat(per, 0) + rng.normal(0, 1, (n_clusters * per, dim))).astype(np.float32)


def test_small_ratio_two_round_covers_like_the_exact_greedy():
    # 1 % of 100 clusters x 200 points: a plain chunked greedy gets ~10 picks per 1024-row
    # chunk, every chunk's picks land on the same few outlying clusters, and most clusters get
    # no centre. Round 1 keeps ~103 per chunk (more than the 100 clusters), so the union holds
    # every cluster and round 2 covers each, as the exact greedy does.
    x = many_clusters(100, 200)
    exact_sel = two_round_coreset(x, 0.01, chunk_size=None, seed=0)
    two = two_round_coreset(x, 0.01, chunk_size=1024, seed=0)
    plain = two_round_coreset(x, 0.01, chunk_size=1024, first_round_ratio=None, seed=0)
    assert len(two) == len(plain) == len(exact_sel) == 200
    hit = [len({int(i) // 200 for i in s}) for s in (exact_sel, two, plain)]
    assert hit[0] == hit[1] == 100 and hit[2] < 75
    exact = radius(x, exact_sel)
    assert radius(x, two) <= 1.25 * exact
    assert radius(x, plain) > 2 * exact


def test_large_ratio_without_oversampling_keeps_each_chunks_first_picks():
    x = np.random.default_rng(0).standard_normal((5000, 32)).astype(np.float32)
    a = two_round_coreset(x, ratio=0.1, chunk_size=1000, first_round_ratio=None, seed=0)
    b = two_round_coreset(x, ratio=0.1, chunk_size=1000, first_round_ratio=None, seed=0)
    assert np.array_equal(a, b)
    assert len(a) == 500 and len(np.unique(a)) == 500
    capped = two_round_coreset(x, ratio=0.1, max_items=123, chunk_size=1000, seed=0)
    assert len(capped) == 123
    assert coreset_size(5000, 0.1, 123) == 123


def test_streamed_blocks_match_one_block_in_size_and_rows():
    x = many_clusters(50, 80, dim=8, seed=1)
    stream = TwoRoundCoreset(0.02, chunk_size=512, seed=0, keep_rows=True)
    for block in np.array_split(x, 7):
        stream.add(block)
    stream.flush()
    assert stream.n_seen == len(x) and stream.target == 80 and stream.greedy_round_two
    pos = stream.finish()
    rows = stream.finish_rows()
    assert len(pos) == 80 and len(np.unique(pos)) == 80
    assert np.array_equal(rows, x[pos])  # rows come back in position order
    whole = two_round_coreset(x, 0.02, chunk_size=512, seed=0)
    assert radius(x, pos) <= 1.5 * radius(x, whole)


def test_bad_coreset_arguments():
    with pytest.raises(ValueError, match=r"^coreset ratio must be > 0, got 0\.0$"):
        TwoRoundCoreset(0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        TwoRoundCoreset(0.1, chunk_size=0)
    with pytest.raises(ValueError, match="no rows"):
        TwoRoundCoreset(0.1).finish()
    with pytest.raises(ValueError, match="keep_rows"):
        c = TwoRoundCoreset(0.1)
        c.add(FIVE)
        c.finish_rows()


def test_bench_coreset_command_prints_and_writes_rows(tmp_path, capsys):
    import json

    from anomaly_inspect.cli import main
    from anomaly_inspect.data.synthetic import generate_dataset

    root = generate_dataset(tmp_path / "data", "tiny", n_train=4, n_test_good=2,
                            n_test_per_defect=1, image_size=64).parent
    out = tmp_path / "bench.json"
    assert main(["bench-coreset", "--root", str(root), "--category", "tiny", "--image-size", "64",
                 "--ratios", "0.05,0.5", "--variants", "two_round,one_round,exact,cells",
                 "--output-json", str(out), "--quiet"]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["ratio"], r["variant"]) for r in rows] == [
        (0.05, "two_round"), (0.05, "one_round"), (0.05, "exact"), (0.05, "cells"),
        (0.5, "two_round"), (0.5, "one_round"), (0.5, "exact"), (0.5, "cells")]
    patches = rows[0]["patches"]
    assert patches == 4 * 8 * 8  # 64 px, stride-8 grid
    for r in rows:
        assert r["bank"] == round(r["ratio"] * patches)
        assert 0.0 <= r["image_auroc"] <= 1.0 and r["radius"] > 0
    # a bigger bank covers at least as tightly (exact greedy is monotone in k)
    assert rows[6]["radius"] <= rows[2]["radius"]
    assert "image AUROC" in capsys.readouterr().out


def test_round_one_does_not_depend_on_how_rows_arrive():
    x = np.random.default_rng(4).standard_normal((3000, 8)).astype(np.float32)
    whole = two_round_coreset(x, 0.02, chunk_size=100, seed=1)  # windows of 1600 rows
    parts = TwoRoundCoreset(0.02, chunk_size=100, seed=1, keep_rows=True)
    for block in np.array_split(x, [7, 500, 1601, 1602, 2999]):
        parts.add(block)
    assert np.array_equal(parts.finish(), whole)
    assert np.array_equal(parts.finish_rows(), x[whole])
    with pytest.raises(ValueError, match="^rows of dim 5 added to a coreset of dim 8$"):
        parts.add(np.zeros((3, 5), np.float32))


def test_result_does_not_depend_on_the_thread_count():
    import torch

    x = np.random.default_rng(5).standard_normal((5000, 16)).astype(np.float32)
    before = torch.get_num_threads()
    try:
        picks = []
        for threads in (1, 3):
            torch.set_num_threads(threads)  # round 1's chunk threads and round 2's BLAS threads
            picks.append(two_round_coreset(x, 0.01, chunk_size=250, seed=2))
            picks.append(two_round_coreset(x, 0.1, chunk_size=250, first_round_ratio=0.2,
                                           seed=2))  # round 2 in cells
    finally:
        torch.set_num_threads(before)
    assert len(picks[0]) == 50 and np.array_equal(picks[0], picks[2])
    assert len(picks[1]) == 500 and np.array_equal(picks[1], picks[3])


def test_projection_does_not_depend_on_the_blas_thread_count():
    # OpenBLAS's sgemm rounds differently on two threads once the width passes a few hundred
    # (472-d, the `full` embedding: up to 5e-5), which moved the picks on real data
    x = np.random.default_rng(6).standard_normal((4096, 472)).astype(np.float32)
    coreset = TwoRoundCoreset(0.1, seed=0)
    projected = []
    for threads in (1, 2):
        with threadpool_limits(threads):
            projected.append(coreset._project(x))
    assert projected[0].shape == (4096, 128) and np.array_equal(projected[0], projected[1])


def test_max_items_keeps_round_one_memory_bounded():
    x = many_clusters(40, 500, dim=8, seed=2)  # 20,000 rows
    capped = TwoRoundCoreset(0.5, max_items=100, chunk_size=100, seed=0)
    for block in np.array_split(x, 40):
        capped.add(block)
        assert capped._union_size <= 2 * 100 + capped.keep_ratio * 100 * 16  # compacted per window
    sel = capped.finish()
    assert len(sel) == 100 and len(np.unique(sel)) == 100
    assert len({int(i) // 500 for i in sel}) == 40  # every cluster still covered


def test_compaction_keeps_rows_with_their_positions():
    x = many_clusters(20, 300, dim=8, seed=3)
    capped = TwoRoundCoreset(0.5, max_items=50, chunk_size=64, seed=0, keep_rows=True)
    for block in np.array_split(x, 30):
        capped.add(block)
    positions, rows = capped.finish_positions_rows()
    assert len(positions) == 50 and np.array_equal(rows, x[positions])
    assert len({int(i) // 300 for i in positions}) == 20


@pytest.mark.parametrize("ratio, keep", [(0.001, 0.3), (0.01, 0.3), (0.02, 0.15), (0.05, 0.06),
                                         (0.1, 0.1), (0.25, 0.25)])
def test_round_one_keeps_first_round_ratio_while_round_two_is_cheap(ratio, keep):
    # auto: 0.3 while keep x ratio <= ROUND_TWO_BUDGET (0.003), never below the ratio itself
    assert TwoRoundCoreset(ratio).keep_ratio == pytest.approx(keep)  # "auto"
    assert TwoRoundCoreset(ratio, first_round_ratio=0.5).keep_ratio == min(1.0, max(ratio, 0.5))
    assert TwoRoundCoreset(ratio, first_round_ratio=None).keep_ratio == ratio
    with pytest.raises(ValueError, match="first_round_ratio"):
        TwoRoundCoreset(ratio, first_round_ratio="half")


# Nine points 0..8 on a line (cell A) and two at 100 and 100.5 (cell B). Every distance in A is
# at least 1, so A's greedy removes a squared radius >= 1 with each of its first nine picks,
# while B's second pick removes only 0.25: with k = 4 the merge takes B's first pick and A's
# first three. Three centres on 0..8 cover it at best within 1 (at 1, 4, 7), so the optimum
# for k = 4 is 1, and A's greedy is within 2x of it.
LINE = np.array([[v] for v in [*range(9), 100.0, 100.5]], np.float32)


def test_cells_greedy_allocates_picks_by_radius_on_the_line_by_hand():
    for seed in range(10):
        sel = cells_greedy(LINE, 4, 2, np.random.default_rng(seed))
        assert len(sel) == 4 and len(set(sel.tolist())) == 4
        assert sum(int(i) >= 9 for i in sel) == 1
        assert radius(LINE, sel) <= 2.0
    assert optimal_radius(LINE, 4) == pytest.approx(1.0)


def test_cells_greedy_lazy_extension_is_the_top_k_of_the_full_sequences():
    x = many_clusters(30, 60, dim=8, seed=4)
    lazy = cells_greedy(x, 180, 12, np.random.default_rng(0), grow=1.2)
    full = cells_greedy(x, 180, 12, np.random.default_rng(0), grow=1e9)  # one pass to the end
    assert np.array_equal(np.sort(lazy), np.sort(full))
    assert len({int(i) // 60 for i in lazy}) == 30


def test_round_two_runs_in_cells_only_when_one_greedy_would_pass_the_budget():
    x = np.random.default_rng(7).standard_normal((20000, 8)).astype(np.float32)
    small = TwoRoundCoreset(0.01, chunk_size=1000)
    small.add(x)
    # 1 % keeping 0.3 is exactly the budget; round 1's rounding up must not tip it into cells
    assert small.round_two_cells(6000) == small.round_two_cells(6040) == 1
    large = TwoRoundCoreset(0.1, chunk_size=1000, first_round_ratio=0.2)
    large.add(x)
    # 2000 x 4000 > 0.003 x 20000^2: cells of 200 picks, as long as a round-1 chunk's greedy
    assert large.keep_ratio == 0.2 and large.round_two_cells(4000) == 10
    exact = TwoRoundCoreset(0.1, chunk_size=None)
    exact.add(x)
    assert exact.round_two_cells(20000) == 1
    sel = large.finish()
    assert len(sel) == 2000 and len(np.unique(sel)) == 2000
    assert radius(x, sel) <= 1.25 * radius(x, two_round_coreset(x, 0.1, chunk_size=None))
    auto = TwoRoundCoreset(0.1, chunk_size=1000)  # auto keeps the ratio at 10 %: no cells
    auto.add(x)
    auto.flush()
    assert auto.keep_ratio == 0.1 and not auto.greedy_round_two


def test_bench_coreset_calibrates_int8_on_its_own_training_images(tmp_path, monkeypatch):
    """int8 is calibrated on this dataset's training images, never on a graph another run left
    in the user cache; a distributed engine refuses int8 before any work."""
    from types import SimpleNamespace

    from anomaly_inspect.config import ModelConfig
    from anomaly_inspect.data.mvtec import load_mvtec
    from anomaly_inspect.data.synthetic import generate_dataset
    from anomaly_inspect.evaluation.coreset_bench import bench_coreset, bench_engine_fit
    from anomaly_inspect.features.extractor import FeatureExtractor

    root = generate_dataset(tmp_path / "data", "tiny", n_train=4, n_test_good=2,
                            n_test_per_defect=1, image_size=64).parent
    monkeypatch.setenv("ANOMALY_INSPECT_CACHE", str(tmp_path / "user_cache"))  # empty
    given = []
    real = FeatureExtractor.calibrate
    monkeypatch.setattr(FeatureExtractor, "calibrate",
                        lambda self, paths: given.append(list(paths)) or real(self, paths))
    cfg = ModelConfig()
    cfg.backbone.precision, cfg.features.image_size = "int8", 64
    dataset = load_mvtec(root, "tiny")
    rows = bench_coreset(dataset, cfg, [0.5], ["two_round"], progress=False)
    assert given == [[s.path for s in dataset.train]] and 0 <= rows[0]["image_auroc"] <= 1
    int8 = list((tmp_path / "user_cache").rglob("*-int8-*.onnx"))
    assert len(int8) == 1  # made here, from these images
    distributed = SimpleNamespace(in_process=False, name="ray")
    for call in (lambda: bench_coreset(dataset, cfg, [0.5], ["two_round"], engine=distributed),
                 lambda: bench_engine_fit(dataset, cfg, distributed)):
        with pytest.raises(ValueError, match="precision int8 cannot run on a distributed engine"):
            call()
    assert len(given) == 1


def test_the_greedy_never_picks_a_row_twice_when_rows_repeat():
    """Once every row is covered (identical rows), argmax kept returning the first tied row:
    10 identical rows gave picks [5, 0, 0, 0]. Picks are distinct rows now."""
    same = np.ones((10, 4), np.float32)
    picks = greedy_coreset(same, 4, projection_dim=None, start=5)
    assert picks[0] == 5 and len(set(picks.tolist())) == 4
    for chunk in (None, 16):
        sel = two_round_coreset(np.ones((50, 8), np.float32), 0.2, chunk_size=chunk)
        assert len(sel) == 10 and len(set(sel.tolist())) == 10
    # two copies of FIVE: five distinct places, then the copies
    picks = greedy_coreset(np.concatenate([FIVE, FIVE]), 10, projection_dim=None, start=0)
    assert sorted(picks.tolist()) == list(range(10))
    assert {int(i) % 5 for i in picks[:5]} == set(range(5))


def test_a_chunk_kept_whole_is_in_greedy_order_so_round_two_keeps_the_outlier():
    """Round 1 returned a chunk kept whole in its random order, and round 2 took a prefix of
    it: four points within 0.01 and one at (100, 100), 90 % kept, dropped the outlier on some
    seeds (radius 141 instead of 0.01)."""
    pts = np.array([[0, 0], [0.01, 0], [0, 0.01], [0.01, 0.01], [100, 100]], np.float32)
    for seed in range(20):
        sel = two_round_coreset(pts, 0.9, chunk_size=4096, projection_dim=None, seed=seed)
        assert 4 in sel.tolist(), seed


def test_rows_holding_nan_or_inf_are_refused_before_the_greedy():
    """A NaN distance overwrote the -inf that marks picked rows: picks repeated and the bank
    held NaN rows that could not be loaded."""
    x = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    for bad in (np.nan, np.inf):
        y = x.copy()
        y[7, 1] = bad
        for chunk in (4096, None):
            with pytest.raises(ValueError, match="TwoRoundCoreset.add: 1 of 50 rows hold NaN or Inf"):
                TwoRoundCoreset(0.2, chunk_size=chunk).add(y)
    big = np.full((4, 2), 3e38, np.float32)  # finite rows whose sum overflows: accepted
    TwoRoundCoreset(0.5, projection_dim=None).add(big)


def test_reading_greedy_round_two_mid_stream_does_not_end_the_window():
    """Reading the property ran round 1 on the pending rows (flush), so the rows after it
    were chunked apart from them: the result then depended on when it was read."""
    x = np.random.default_rng(4).standard_normal((3000, 8)).astype(np.float32)
    whole = two_round_coreset(x, 0.02, chunk_size=100, seed=1)  # windows of 1600 rows
    parts = TwoRoundCoreset(0.02, chunk_size=100, seed=1)
    parts.add(x[:700])
    with pytest.raises(ValueError, match="call flush"):
        _ = parts.greedy_round_two
    assert parts.n_seen == 700 and parts._buffered == 700  # still waiting for the window
    parts.add(x[700:])
    assert np.array_equal(parts.finish(), whole)


def test_greedy_coreset_selects_on_the_coreset_projection_whatever_the_threads():
    """greedy_coreset projected with torch on every thread, the coreset with numpy on one:
    on near-duplicate rows (ties to the last bit) the picks parted after a few dozen."""
    import torch

    rng = np.random.default_rng(1)
    x = rng.standard_normal((3000, 472)).astype(np.float32)
    x[1500:] = x[:1500] + 1e-4 * rng.standard_normal((1500, 472)).astype(np.float32)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        picks = greedy_coreset(x, 300, projection_dim=128, seed=0)
    finally:
        torch.set_num_threads(before)
    exact = two_round_coreset(x, 0.1, chunk_size=None, seed=0)  # same start: default_rng(0)
    assert np.array_equal(np.sort(picks), exact)


def _tiny(tmp_path):
    from anomaly_inspect.data.synthetic import generate_dataset

    return generate_dataset(tmp_path / "data", "tiny", n_train=4, n_test_good=2,
                            n_test_per_defect=1, image_size=64).parent


@pytest.mark.parametrize("ratios, error", [
    ("2", "error: --ratios must be shares in (0, 1], got 2.0"),
    ("0.1,0", "error: --ratios must be shares in (0, 1], got 0.0"),
    ("abc", "argument --ratios: --ratios must be comma-separated shares in (0, 1] (e.g. 0.01,0.1), "
            "got 'abc'"),
])
def test_bench_coreset_ratios_outside_zero_one_are_refused_by_name(ratios, error, capsys):
    """--ratios 2 ran (rows labelled 2.0), 0 failed after every feature was extracted, abc
    gave an unnamed float error; all are refused before the dataset is read."""
    from anomaly_inspect.cli import main

    try:
        assert main(["bench-coreset", "--root", "nowhere", "--category", "tiny",
                     "--ratios", ratios]) == 1
    except SystemExit as exc:
        assert exc.code == 2
    assert error in capsys.readouterr().err


@pytest.mark.parametrize("method", ["softpatch", "tailedcore", "knn"])
def test_bench_coreset_refuses_other_methods_before_extracting(method, tmp_path, monkeypatch):
    """--method softpatch / tailedcore ran plain PatchCore and labelled it so; knn failed
    after extraction."""
    from anomaly_inspect.config import ModelConfig
    from anomaly_inspect.data.mvtec import load_mvtec
    from anomaly_inspect.evaluation import coreset_bench
    from anomaly_inspect.pipeline import LocalEngine

    monkeypatch.setattr(coreset_bench, "build", lambda *a, **k: pytest.fail("extracted"))
    cfg = ModelConfig.from_dict({"method": method}, "test")
    dataset = load_mvtec(_tiny(tmp_path), "tiny")
    for call in (lambda: coreset_bench.bench_coreset(dataset, cfg, [0.5], ["two_round"]),
                 lambda: coreset_bench.bench_engine_fit(dataset, cfg, LocalEngine())):
        with pytest.raises(ValueError, match=f"PatchCore's coreset; the config's method is '{method}'"):
            call()


def test_bench_coreset_local_rows_keep_the_configs_cap_and_reweighting(tmp_path):
    """Local rows dropped max_bank_items and num_neighbors (engine rows kept them): every row
    is now the config's PatchCore at the row's ratio."""
    from anomaly_inspect.config import ModelConfig
    from anomaly_inspect.data.mvtec import load_mvtec
    from anomaly_inspect.evaluation.coreset_bench import bench_coreset_features
    from anomaly_inspect.pipeline import Runner, build

    cfg = ModelConfig.from_dict({"features": {"image_size": 64},
                                 "scorer": {"max_bank_items": 20, "num_neighbors": 3}}, "test")
    dataset = load_mvtec(_tiny(tmp_path), "tiny")
    runner = Runner(build(cfg, progress=False)[1], progress=False)
    train = runner.extract([s.path for s in dataset.train], "train").features
    test = runner.extract([s.path for s in dataset.test], "test").features
    labels = np.array([s.label for s in dataset.test])
    rows = bench_coreset_features("tiny", train, test, labels, cfg.scorer, [0.5],
                                  ["two_round", "exact"], cfg.seed, progress=False)
    assert [r["bank"] for r in rows] == [20, 20]  # 128 patches at 0.5: capped
    # the exact row's AUROC is the config's PatchCore (re-weighting on) fitted at 0.5
    scorer = PatchCore(coreset_ratio=0.5, max_bank_items=20, chunk_size=None, num_neighbors=3,
                       index="flat", seed=cfg.seed, progress=False).fit(train)
    assert rows[1]["image_auroc"] == round(float(auroc(labels, scorer.score(test).image_scores)), 4)


def test_bench_engine_fit_holds_only_the_radius_sample(tmp_path, monkeypatch):
    """--radius-sample N kept every training patch's projection and sampled at the end; it
    now keeps a seeded uniform sample (ProbeSample) as the batches pass."""
    from anomaly_inspect.config import ModelConfig
    from anomaly_inspect.data.mvtec import load_mvtec
    from anomaly_inspect.evaluation import coreset_bench
    from anomaly_inspect.pipeline import LocalEngine
    from anomaly_inspect.scorers.nn_index import ProbeSample

    sizes = []
    real_add = ProbeSample.add
    monkeypatch.setattr(ProbeSample, "add",
                        lambda self, rows: sizes.append(self.size) or real_add(self, rows))
    cfg = ModelConfig.from_dict({"features": {"image_size": 64, "batch_size": 2}}, "test")
    rows = coreset_bench.bench_engine_fit(load_mvtec(_tiny(tmp_path), "tiny"), cfg, LocalEngine(),
                                          radius_sample=10, progress=False)
    assert [r["radius_points"] for r in rows] == [10, 10] and rows[0]["patches"] == 4 * 64
    assert 10 in sizes  # the projections went through a sample of 10, batch by batch
    assert all(r["radius"] > 0 for r in rows)
    assert {r["radius_sampler"] for r in rows} == {f"probe_sample seed {cfg.seed}"}
