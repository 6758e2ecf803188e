"""Scorer fixes: the HNSW check on probes the bank holds, re-weighting over a bank smaller than
b, Mahalanobis's score, a damaged saved projection, and the head's constant channels."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

from anomaly_inspect.core import Features
from anomaly_inspect.scorers.base import ScorerFormatError
from anomaly_inspect.scorers.classifier_head import HeadConfig, HeadWeights, train_head
from anomaly_inspect.scorers.distance import Mahalanobis
from anomaly_inspect.scorers.nn_index import (
    HNSW_MIN_SCALE,
    NearestNeighbours,
    ProbeSample,
    check_scale,
    graph_excess,
    nearest_distances,
)
from anomaly_inspect.scorers.nuisance import ProjectedScorer, nuisance_subspace
from anomaly_inspect.scorers.patchcore import PatchCore
from anomaly_inspect.scorers.tailedcore import SoftPatch
from anomaly_inspect.screening.deploy import _score_rules


def _clustered(n: int, seed: int = 0) -> np.ndarray:
    """``n`` rows of 32 dims in 40 tight clusters (an HNSW graph at M 16 misses some of them)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, 32)) * 5
    return (centres[rng.integers(40, size=n)] + 0.3 * rng.normal(size=(n, 32))).astype(np.float32)


def test_the_check_scale_is_the_mean_exact_distance_unless_the_bank_holds_the_probes():
    # probes off the bank: the mean exact distance, as before
    assert check_scale(np.array([1.0, 3.0]), np.array([4.0, 4.0])) == pytest.approx(2.0)
    # every probe in the bank (exact 0): a share of the distance to the nearest other item
    assert check_scale(np.zeros(2), np.array([2.0, 4.0])) == pytest.approx(3.0 * HNSW_MIN_SCALE)
    # one item 10 away from the probe held at 0: a graph answering it misses by 10, which is
    # 10 / (HNSW_MIN_SCALE * 10) above exact, not 10 / 1e-12
    only_far = faiss.IndexFlatL2(1)
    only_far.add(np.array([[10.0]], np.float32))
    probes = np.zeros((1, 1), np.float32)
    excess = graph_excess(only_far, probes, np.zeros(1), check_scale(np.zeros(1), np.array([10.0])))
    assert excess == pytest.approx(1 / HNSW_MIN_SCALE)


def test_a_graph_checked_on_probes_the_bank_holds_reports_a_finite_excess():
    bank = _clustered(10_000)
    probes = ProbeSample(seed=0).add(bank).rows  # every probe is a bank row: exact distance 0
    nn = NearestNeighbours("hnsw").fit(bank, probes)
    exact = nearest_distances(faiss.downcast_index(nn.index.storage), probes)
    assert exact.mean() == 0
    # measured 0.82 at M 16 (the graph misses held rows by 20 % of the gap to the next item:
    # a real miss), 0.02 at M 32; before, 3.4e11 at M 16 and rebuilt up to M 64
    assert all(np.isfinite(nn.graph_checks)) and nn.graph_checks[0] < 10
    assert nn.graph_m <= 32 and nn.graph_checks[-1] <= 0.05


def test_probes_off_the_bank_keep_the_old_excess():
    bank, probes = _clustered(5_000, seed=1), _clustered(1_024, seed=2)
    nn = NearestNeighbours("hnsw").fit(bank, probes)
    graph = nn._graph(bank, 16)
    exact = nearest_distances(faiss.downcast_index(graph.storage), probes)
    old = float((nearest_distances(graph, probes) - exact).mean() / exact.mean())
    assert nn.graph_checks[0] == round(old, 6)


@pytest.mark.parametrize("cls", [PatchCore, SoftPatch])
def test_reweighting_over_a_one_item_bank_keeps_the_largest_patch_score(cls):
    rng = np.random.default_rng(0)
    train = Features(patches=rng.normal(size=(1, 1, 1, 8)).astype(np.float32))  # a bank of 1
    test = Features(patches=rng.normal(size=(3, 2, 2, 8)).astype(np.float32))
    plain = cls(num_neighbors=1, progress=False).fit(train).score(test).image_scores
    wide = cls(num_neighbors=9, progress=False).fit(train).score(test).image_scores
    assert (plain > 0).all()
    np.testing.assert_array_equal(wide, plain)  # b = min(9, 1 item) = 1: s*


def test_the_manifest_says_b_is_capped_by_the_bank():
    rule = _score_rules("patchcore", {"num_neighbors": 9}, views=False)["image_score"]
    assert rule.startswith("num_neighbors = b = 9")
    assert "min(b, the number of rows of memory_bank)" in rule


@pytest.mark.parametrize("class_conditional", [False, True])
def test_mahalanobis_scores_are_the_quadratic_form(class_conditional):
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(60, 12)).astype(np.float32), rng.normal(size=(9, 12)).astype(np.float32)
    s = Mahalanobis(class_conditional=class_conditional).fit(Features(pooled=train),
                                                             rng.integers(0, 2, 60))
    want = np.min([[float((x - m) @ s.precision @ (x - m)) for m in s.means] for x in test.astype(np.float64)],
                  axis=1)
    np.testing.assert_allclose(s.score(Features(pooled=test)).image_scores, want, rtol=1e-6)


def _saved_projection(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8)).astype(np.float32)
    y = x + rng.normal(size=x.shape).astype(np.float32) * np.r_[np.ones(3), np.zeros(5)].astype(np.float32)
    ProjectedScorer(Mahalanobis(), nuisance_subspace(x, y, 2)).fit(Features(pooled=x)).save(tmp_path)
    return tmp_path


@pytest.mark.parametrize("damage, file, reason", [
    (lambda d: (d / "projection.json").write_text('{"format_version": 1, "nuis'), "projection.json",
     "unreadable"),
    (lambda d: (d / "projection.json").write_text("[1]"), "projection.json", "JSON object"),
    (lambda d: (d / "projection.json").write_text(json.dumps({"format_version": 1})), "projection.json",
     "nuisance"),
    (lambda d: (d / "projection.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage"),
     "projection.safetensors", "damaged"),
])
def test_a_damaged_projection_is_a_format_error_naming_the_file(tmp_path, damage, file, reason):
    directory = _saved_projection(tmp_path)
    damage(directory)
    with pytest.raises(ScorerFormatError, match=reason) as err:
        ProjectedScorer.load(directory)
    assert str(directory / file) in str(err.value)


def test_a_constant_training_channel_is_not_blown_up_by_the_head():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 80)
    x = rng.normal(size=(80, 6)).astype(np.float32) + y[:, None]
    x[:, 0] = 0  # dead on every training image
    head = train_head(x, y, HeadConfig(hidden=16, epochs=5))
    assert head.in_mean[0] == 0 and head.in_std[0] == 1  # StandardScaler's rule
    np.testing.assert_allclose(head.in_std[1:], x[:, 1:].std(0), rtol=1e-5)  # no + 1e-4
    probe = x[:4].copy()

    def change(channel: int) -> float:
        moved = probe.copy()
        moved[:, channel] += 5.0  # five training standard deviations of a live channel
        return float(np.abs(head.logits(moved) - head.logits(probe)).max())

    # the dead channel moves the logits no more than a live one does (before: by ~1e4 as much)
    assert change(0) <= 2 * max(change(c) for c in range(1, 6))


def test_a_head_saved_with_the_old_in_std_scores_as_before():
    # saved before the fix: a dead channel's in_std was 1e-4, and the loaded head keeps it
    rng = np.random.default_rng(1)
    old = HeadWeights(in_mean=np.zeros(3), in_std=np.array([1e-4, 1.0, 2.0]), w1=rng.normal(size=(4, 3)),
                      b1=np.zeros(4), w2=rng.normal(size=(2, 4)), b2=np.zeros(2), classes=np.arange(2))
    loaded = HeadWeights.from_state(old.to_state())
    x = rng.normal(size=(5, 3))
    np.testing.assert_array_equal(loaded.in_std, old.in_std)
    np.testing.assert_array_equal(loaded.logits(x), old.logits(x))
