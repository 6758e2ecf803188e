"""PatchCore kNN scoring, re-weighting, index kinds and persistence on hand-checked cases."""

from __future__ import annotations

import math

import faiss
import numpy as np
import pytest

from anomaly_inspect.core import ScoreResult
from anomaly_inspect.features.extractor import Features
from anomaly_inspect.scorers import NotFittedError, Scorer, build_scorer
from anomaly_inspect.scorers.nn_index import NearestNeighbours, ProbeSample, graph_excess
from anomaly_inspect.scorers.patchcore import PatchCore


def grid(values):
    """(N, h, w, D) patches from a nested list."""
    return Features(patches=np.asarray(values, dtype=np.float32))


def test_patch_and_image_scores_are_nn_distances():
    # training patches: (0,0), (1,0), (0,1), (5,5) in one 2x2 image
    train = grid([[[[0, 0], [1, 0]], [[0, 1], [5, 5]]]])
    pc = PatchCore(coreset_ratio=1.0, progress=False).fit(train)
    assert pc.bank_size == 4
    # test patches (3,0) -> 2 from (1,0); (0,0) -> 0; (5,8) -> 3; (0,4) -> 3 from (0,1)
    test = grid([[[[3, 0], [0, 0]], [[5, 8], [0, 4]]]])
    res = pc.score(test)
    assert res.patch_scores.shape == (1, 2, 2)
    np.testing.assert_allclose(res.patch_scores[0], [[2, 0], [3, 3]], atol=1e-5)
    assert res.image_scores[0] == pytest.approx(3.0, abs=1e-5)


def test_reweighting_matches_paper_formula_by_hand():
    # bank: m* = (0,0) and its neighbour (2,0); test worst patch (0,3), s* = 3
    train = grid([[[[0, 0], [2, 0]]]])
    pc = PatchCore(coreset_ratio=1.0, num_neighbors=2, progress=False).fit(train)
    res = pc.score(grid([[[[0, 3], [0, 0]]]]))
    d1, d2 = 3.0, math.hypot(2, 3)
    expected = (1 - math.exp(d1) / (math.exp(d1) + math.exp(d2))) * 3.0
    assert res.image_scores[0] == pytest.approx(expected, rel=1e-5)
    # b = 1 is the plain maximum
    pc1 = PatchCore(coreset_ratio=1.0, num_neighbors=1, progress=False).fit(train)
    assert pc1.score(grid([[[[0, 3], [0, 0]]]])).image_scores[0] == pytest.approx(3.0)


def test_score_before_fit_raises():
    with pytest.raises(NotFittedError, match=r"^PatchCore\.score\(\) called before fit\(\)$"):
        PatchCore().score(grid(np.zeros((1, 1, 1, 2))))


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_agree_with_exact_search(kind):
    rng = np.random.default_rng(0)
    bank = rng.standard_normal((4000, 32)).astype(np.float32)
    queries = rng.standard_normal((500, 32)).astype(np.float32)
    exact, _ = NearestNeighbours("flat").fit(bank).search(queries)
    approx, _ = NearestNeighbours(kind, nprobe=32, ef_search=128).fit(bank).search(queries)
    assert np.all(approx >= exact - 1e-4)  # never closer than the true nearest neighbour
    assert np.mean(np.isclose(approx, exact, atol=1e-4)) > 0.9


def test_unknown_index_kind():
    with pytest.raises(ValueError, match="unknown index kind"):
        NearestNeighbours("kdtree")


def test_save_load_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    train = Features(patches=rng.standard_normal((3, 4, 4, 8)).astype(np.float32))
    test = Features(patches=rng.standard_normal((2, 4, 4, 8)).astype(np.float32))
    pc = build_scorer("patchcore", coreset_ratio=0.5, num_neighbors=3, progress=False).fit(train)
    pc.save(tmp_path / "m")
    loaded = Scorer.load(tmp_path / "m")
    assert isinstance(loaded, PatchCore) and loaded.num_neighbors == 3
    np.testing.assert_allclose(loaded.score(test).image_scores, pc.score(test).image_scores)


def test_unknown_method_names_the_options():
    with pytest.raises(ValueError, match="patchcore"):
        build_scorer("nope")


def test_auto_index_is_exact_for_small_banks_and_hnsw_for_large():
    rng = np.random.default_rng(0)
    small = NearestNeighbours("auto", auto_min_items=2048).fit(rng.standard_normal((1500, 8)).astype(np.float32))
    large = NearestNeighbours("auto", auto_min_items=2048).fit(rng.standard_normal((3000, 8)).astype(np.float32))
    assert small.resolved_kind == "flat" and large.resolved_kind == "hnsw"


def _approximate_search_case() -> tuple[Features, Features, ScoreResult]:
    """Training and test patches on which HNSW misses nearest neighbours, and the exact scores."""
    rng = np.random.default_rng(0)
    train = Features(patches=rng.standard_normal((40, 16, 16, 32)).astype(np.float32))
    test = Features(patches=(1.2 * rng.standard_normal((20, 16, 16, 32))).astype(np.float32))
    return train, test, PatchCore(coreset_ratio=1.0, index="flat", progress=False).fit(train).score(test)


def test_image_scores_are_exact_even_with_a_poor_approximate_index():
    # a deliberately bad HNSW search (efSearch = 4) misses many nearest neighbours, but the
    # image score (max patch distance) is refined to the exact value
    train, test, exact = _approximate_search_case()
    approx = PatchCore(coreset_ratio=1.0, index="hnsw", progress=False).fit(train)
    approx._nn.index.hnsw.efSearch = 4
    res = approx.score(test)
    assert not np.allclose(res.patch_scores, exact.patch_scores)  # the search really is approximate
    np.testing.assert_allclose(res.image_scores, exact.image_scores, rtol=1e-5)
    assert np.all(res.patch_scores >= exact.patch_scores - 1e-4)


def test_image_scores_only_switch_searches_looser_bounds_with_the_same_image_scores():
    # patch_maps=False (tune's validation) searches at efSearch 4 for this call only: patch
    # scores become looser upper bounds, image scores stay those of the full search
    train, test, exact = _approximate_search_case()
    maps = PatchCore(coreset_ratio=1.0, index="hnsw", progress=False).fit(train)
    bounds = PatchCore(coreset_ratio=1.0, index="hnsw", progress=False, patch_maps=False).fit(train)
    full, fast = maps.score(test), bounds.score(test)
    np.testing.assert_array_equal(fast.image_scores, full.image_scores)
    np.testing.assert_allclose(fast.image_scores, exact.image_scores, rtol=1e-5)
    assert fast.patch_scores.mean() > full.patch_scores.mean()  # a looser search than efSearch 16
    assert np.all(fast.patch_scores >= exact.patch_scores - 1e-4)
    assert bounds._nn.index.hnsw.efSearch == 16  # the graph itself is left as it was
    assert "patch_maps" not in bounds.get_params()  # a runtime switch, not saved with the model


def test_exact_search_under_hnsw_reads_its_storage_without_a_second_copy():
    rng = np.random.default_rng(1)
    bank = rng.standard_normal((3000, 16)).astype(np.float32)
    queries = rng.standard_normal((50, 16)).astype(np.float32)
    hnsw, flat = NearestNeighbours("hnsw").fit(bank), NearestNeighbours("flat").fit(bank)
    for nn in (hnsw, flat):
        d, i = nn.search_exact(queries, 3)
        want_d, want_i = flat.search(queries, 3)
        np.testing.assert_array_equal(i, want_i)
        np.testing.assert_allclose(d, want_d, rtol=1e-6)
    assert hnsw._exact.ntotal == 3000 and hnsw._exact.this == faiss.downcast_index(hnsw.index.storage).this


def test_exact_search_of_a_few_hundred_queries_is_one_gemm_with_the_brute_force_answer():
    from anomaly_inspect.scorers import nn_index

    before = faiss.cvar.distance_compute_blas_threshold
    with nn_index.gemm_distances():
        assert faiss.cvar.distance_compute_blas_threshold == min(before, nn_index.BLAS_MIN_QUERIES)
    assert faiss.cvar.distance_compute_blas_threshold == before
    rng = np.random.default_rng(2)
    bank = rng.standard_normal((2000, 24)).astype(np.float32)
    queries = rng.standard_normal((256, 24)).astype(np.float32)
    d, i = NearestNeighbours("hnsw").fit(bank).search_exact(queries, 1)
    brute = np.linalg.norm(queries[:, None].astype(np.float64) - bank[None], axis=-1)
    np.testing.assert_array_equal(i[:, 0], brute.argmin(1))
    np.testing.assert_allclose(d[:, 0], brute.min(1), rtol=1e-5)


def test_graph_excess_by_hand():
    # items 0 and 10 on a line; the probe at 1 is 1 from its nearest item. An "index" that
    # holds only 10 answers 9: (9 - 1) / 1 = 8 above exact; one that holds both: 0
    only_far, both = faiss.IndexFlatL2(1), faiss.IndexFlatL2(1)
    only_far.add(np.array([[10.0]], np.float32))
    both.add(np.array([[0.0], [10.0]], np.float32))
    probes = np.array([[1.0]], np.float32)
    assert graph_excess(only_far, probes, np.array([1.0])) == pytest.approx(8.0)
    assert graph_excess(both, probes, np.array([1.0])) == pytest.approx(0.0)


def test_probe_sample_is_seeded_uniform_and_blind_to_how_rows_arrive():
    x = np.arange(5000, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    whole = ProbeSample(64, seed=3).add(x).rows
    parts = ProbeSample(64, seed=3)
    for s in range(0, 5000, 700):
        parts.add(x[s:s + 700])
    np.testing.assert_array_equal(whole, parts.rows)
    assert len(whole) == 64 and len(np.unique(whole[:, 0])) == 64
    assert not np.array_equal(whole, ProbeSample(64, seed=4).add(x).rows)
    assert len(ProbeSample(64).add(x[:10]).rows) == 10  # fewer rows than the sample: all of them
    # uniform: the sample's mean position is near the middle (sd of the mean of 64 ~ 180)
    assert abs(ProbeSample(1000, seed=0).add(x).rows[:, 0].mean() - 2500) < 200


def test_a_graph_that_misses_is_rebuilt_with_more_links_and_saved_with_them(monkeypatch, tmp_path):
    import anomaly_inspect.scorers.nn_index as nn_index

    rng = np.random.default_rng(2)
    train = Features(patches=rng.standard_normal((24, 8, 8, 8)).astype(np.float32))  # 1536 items
    ok = PatchCore(coreset_ratio=1.0, index="hnsw", progress=False).fit(train)
    assert ok._nn.graph_m == 16 and len(ok._nn.graph_checks) == 1  # checked once, kept
    assert ok.fit_summary()["search_graph_m"] == 16
    monkeypatch.setattr(nn_index, "HNSW_MAX_EXCESS", -np.inf)  # every graph "misses"
    rebuilt = PatchCore(coreset_ratio=1.0, index="hnsw", progress=False).fit(train)
    assert rebuilt._nn.graph_m == nn_index.HNSW_MAX_M == 64
    assert len(rebuilt._nn.graph_checks) == 3  # M 16, 32, 64
    state = rebuilt.get_state()
    assert state["search_graph_m"].tolist() == [64]
    loaded = PatchCore(coreset_ratio=1.0, index="hnsw", progress=False)
    loaded.set_state(state)  # no probes at load: the saved M, unchecked
    assert loaded._nn.graph_m == 64 and loaded._nn.graph_checks == []
    assert faiss.downcast_index(loaded._nn.index).hnsw.nb_neighbors(1) == 64
    rebuilt.save(tmp_path / "model")  # and through a saved model directory
    assert PatchCore.load(tmp_path / "model", progress=False)._nn.graph_m == 64


@pytest.mark.parametrize("method", ["patchcore", "softpatch", "tailedcore"])
def test_a_saved_bank_is_searched_on_the_graph_it_was_fitted_with(monkeypatch, tmp_path, method):
    """The HNSW links are saved with the bank: loading builds no graph, the loaded graph is
    the fitted one byte for byte, and it gives the fitted scorer's patch distances exactly
    (also at the efSearch of image-scores-only calls)."""
    import anomaly_inspect.scorers.nn_index as nn_index

    rng = np.random.default_rng(3)
    train = Features(patches=rng.standard_normal((24, 8, 8, 8)).astype(np.float32))
    test = Features(patches=rng.standard_normal((6, 8, 8, 8)).astype(np.float32))
    params = {"coreset_ratio": 1.0, "index": "hnsw"}
    if method == "tailedcore":
        params = {"coreset_ratio": 1.0, "index": "hnsw", "embedding": "patch_mean"}
    fitted = build_scorer(method, **params, progress=False).fit(train)
    assert not fitted._nn.is_exact
    fitted.save(tmp_path / "model")

    def no_build(*args, **kwargs):
        raise AssertionError("the graph was built again")

    monkeypatch.setattr(nn_index.NearestNeighbours, "_graph", no_build)
    for patch_maps in (True, False):
        loaded = Scorer.load(tmp_path / "model", progress=False, patch_maps=patch_maps)
        assert bytes(faiss.serialize_index(loaded._nn.index)) == bytes(faiss.serialize_index(fitted._nn.index))
        fitted.patch_maps = patch_maps  # the runtime switch, set as a caller would
        a, b = fitted.score(test), loaded.score(test)
        np.testing.assert_array_equal(a.patch_scores, b.patch_scores)
        np.testing.assert_array_equal(a.image_scores, b.image_scores)
        assert loaded._nn.graph_m == fitted._nn.graph_m


def test_saved_links_that_do_not_fit_the_bank_are_built_again(caplog):
    """Every inconsistency faiss's search would trust (some of these crashed it when only the
    lengths were checked) is refused with a warning, and the graph is built again."""
    rng = np.random.default_rng(4)
    train = Features(patches=rng.standard_normal((40, 8, 8, 8)).astype(np.float32))
    test = Features(patches=rng.standard_normal((3, 8, 8, 8)).astype(np.float32))
    fitted = PatchCore(coreset_ratio=1.0, index="hnsw", progress=False).fit(train)
    state = fitted.get_state()
    n = len(state["memory_bank"])
    levels, header = state["search_links_levels"], state["search_links_header"]
    assert levels.max() >= 3  # upper levels to break
    low = int(np.flatnonzero(levels == 1)[-1])
    high = np.flatnonzero(levels > 1)
    neighbors = state["search_links_neighbors"].copy()
    cum, offsets = state["search_links_cum_nneighbor_per_level"], state["search_links_offsets"]
    neighbors[offsets[high[0]] + cum[1]] = low  # a level-1 link to a node on level 0 only
    tall = levels.copy()
    tall[low] = 1000
    broken = {
        "neighbour id": {"search_links_neighbors": np.full_like(neighbors, n)},
        "levels": {"search_links_levels": levels[:-1]},
        "entry id": {"search_links_header": np.array([n, *header[1:]])},
        "entry level": {"search_links_header": np.array([low, *header[1:]])},
        "offsets": {"search_links_offsets": offsets[::-1].copy()},
        "links per level": {"search_links_cum_nneighbor_per_level": cum * 1000},
        "a level without links": {"search_links_levels": tall},
        "upper link": {"search_links_neighbors": neighbors},
        "2-D": {"search_links_neighbors": state["search_links_neighbors"].reshape(-1, 1)},
        "floats": {"search_links_neighbors": state["search_links_neighbors"].astype(np.float32)},
        "missing": {"search_links_header": None},
    }
    for name, change in broken.items():
        caplog.clear()
        loaded = PatchCore(coreset_ratio=1.0, index="hnsw", progress=False)
        changed = {k: v for k, v in {**state, **change}.items() if v is not None}
        loaded.set_state(changed)
        assert "building it again" in caplog.text, name
        np.testing.assert_allclose(loaded.score(test).patch_scores, fitted.score(test).patch_scores,
                                   rtol=0.5)  # a working graph (built anew: maps may differ a little)
    old = {k: v for k, v in state.items() if not k.startswith("search_links_")}  # saved before
    caplog.clear()
    loaded = PatchCore(coreset_ratio=1.0, index="hnsw", progress=False)
    loaded.set_state(old)
    assert loaded._nn.graph_m == fitted._nn.graph_m and "building it again" not in caplog.text


def test_streamed_fit_gives_the_same_bank_as_fitting_all_features():
    rng = np.random.default_rng(0)
    feats = Features(rng.standard_normal((40, 12, 12, 16)).astype(np.float32))
    whole = PatchCore(coreset_ratio=0.02, chunk_size=256, progress=False).fit(feats)
    batches = (feats.subset(np.arange(s, min(s + 7, 40))) for s in range(0, 40, 7))
    streamed = PatchCore(coreset_ratio=0.02, chunk_size=256, progress=False).fit_batches(batches, 40)
    assert whole.bank_size == round(0.02 * 40 * 144)
    np.testing.assert_array_equal(streamed.memory_bank, whole.memory_bank)


@pytest.mark.parametrize("has_masks", [False, True])
def test_evaluate_searches_for_patch_maps_only_where_masks_read_them(monkeypatch, has_masks):
    from anomaly_inspect.config import ModelConfig
    from anomaly_inspect.data.mvtec import AnomalyDataset
    from anomaly_inspect.data.samples import Sample
    from anomaly_inspect.evaluation import evaluate as ev
    from anomaly_inspect.pipeline.builders import build

    seen = {}

    def stop(cfg, progress=True, patch_maps=True, max_pixels=None):
        seen["patch_maps"] = patch_maps
        raise RuntimeError("stop")

    monkeypatch.setattr(ev, "build", stop)
    monkeypatch.setattr(ev, "check_dataset", lambda *a: None)  # no files behind these
    with pytest.raises(RuntimeError, match="stop"):
        test = [Sample("good.png", 0), Sample("bad.png", 1)]
        ev.evaluate(AnomalyDataset("fake", [], test, has_masks), ModelConfig(), progress=False)
    assert seen == {"patch_maps": has_masks}
    assert build(ModelConfig(), progress=False, patch_maps=has_masks)[2].patch_maps is has_masks


@pytest.mark.parametrize("name", ["softpatch", "tailedcore"])
def test_memory_bank_subclasses_take_the_image_scores_only_switch(name):
    from anomaly_inspect.scorers import get_scorer_class

    rng = np.random.default_rng(2)
    train = Features(patches=rng.standard_normal((40, 16, 16, 32)).astype(np.float32),
                     pooled=rng.standard_normal((40, 8)).astype(np.float32))
    test = Features(patches=(1.2 * rng.standard_normal((12, 16, 16, 32))).astype(np.float32),
                    pooled=rng.standard_normal((12, 8)).astype(np.float32))
    cls = get_scorer_class(name)
    extra = {"soft_weight": True} if name == "softpatch" else {}
    full, fast = (cls(coreset_ratio=0.5, index="hnsw", progress=False, patch_maps=m, **extra).fit(train)
                  for m in (True, False))
    a, b = full.score(test), fast.score(test)
    assert fast.patch_maps is False and "patch_maps" not in fast.get_params()
    # item weights (LOF) scale each patch by its match's weight, so weighted patch scores of
    # the looser search need not bound the full search's; the image scores are exact in both
    np.testing.assert_array_equal(b.image_scores, a.image_scores)
    assert not np.array_equal(b.patch_scores, a.patch_scores)  # the looser search really ran


def test_image_reweighting_uses_the_exact_neighbourhood_on_an_approximate_index():
    """N_b(m*) of the paper's re-weighting comes from an exact search (the HNSW search at its
    small efSearch gave another neighbourhood, and -1 labels beyond the bank)."""
    from anomaly_inspect.scorers.patchcore import reweight_image_scores

    rng = np.random.default_rng(0)
    bank = rng.normal(size=(3000, 16)).astype(np.float32)
    patches = rng.normal(size=(20, 30, 16)).astype(np.float32)
    exact = NearestNeighbours("flat").fit(bank)
    graph = NearestNeighbours("hnsw", hnsw_m=4, ef_search=1).fit(bank)
    d, i = exact.search(patches.reshape(-1, 16), 1)
    d, i = d[:, 0].reshape(20, 30), i[:, 0].reshape(20, 30)
    want = reweight_image_scores(patches, d, i, bank, exact, 9)
    np.testing.assert_allclose(reweight_image_scores(patches, d, i, bank, graph, 9), want, rtol=1e-6)
    small = bank[:5]  # fewer items than b: the missing neighbours weigh nothing
    ds, is_ = NearestNeighbours("flat").fit(small).search(patches.reshape(-1, 16), 1)
    got = reweight_image_scores(patches, ds[:, 0].reshape(20, 30), is_[:, 0].reshape(20, 30), small,
                                NearestNeighbours("flat").fit(small), 9)
    assert np.isfinite(got).all()


def test_an_empty_or_flat_bank_is_refused_naming_the_file_where_loading(tmp_path):
    """An empty bank ended in faiss's bare AssertionError at the first search."""
    from safetensors.numpy import save_file

    from anomaly_inspect.scorers.base import ScorerFormatError

    for bank in (np.zeros((0, 8), np.float32), np.zeros(8, np.float32)):
        with pytest.raises(ValueError, match=r"non-empty \(items, width\) array, got shape"):
            PatchCore(progress=False).set_state({"memory_bank": bank})
    fitted = PatchCore(progress=False).fit(grid(np.ones((1, 2, 2, 8))))
    fitted.save(tmp_path)
    save_file({"memory_bank": np.zeros((0, 8), np.float32)}, str(tmp_path / "scorer_state.safetensors"))
    with pytest.raises(ScorerFormatError, match="scorer_state.safetensors: .*non-empty"):
        Scorer.load(tmp_path, progress=False)


def test_patches_of_another_width_than_the_bank_are_refused_by_name():
    """A bank set from a state (no fit: no recorded widths) met 4-d patches with faiss's bare
    AssertionError."""
    pc = PatchCore(progress=False)
    pc.set_state({"memory_bank": np.zeros((5, 8), np.float32)})
    with pytest.raises(ValueError, match="width 4, the memory bank holds items of width 8"):
        pc.score(grid(np.zeros((1, 2, 2, 4))))


def test_padding_cells_take_the_nearest_image_cells_score_as_overlays_show_them():
    """Padding (pad mode) took the image's lowest score in evaluate's maps, but the nearest
    image cell's in the screening overlays; both edge-pad now (scorers.maps.pad_cells)."""
    from anomaly_inspect.scorers.maps import pad_cells

    bank = np.zeros((1, 1), np.float32)
    values = np.array([[1, 5, 0], [2, 3, 0]], np.float32)[None, :, :, None]  # column 2: padding
    valid = np.array([[[True, True, False], [True, True, False]]])
    pc = PatchCore(progress=False)
    pc.set_state({"memory_bank": bank})
    result = pc.score(Features(patches=values, valid=valid))
    assert result.image_scores.tolist() == [5.0]
    assert result.patch_scores[0].tolist() == [[1, 5, 5], [2, 3, 3]]  # by hand: edge padding
    np.testing.assert_array_equal(result.patch_scores[0],
                                  pad_cells(values[0, :, :2, 0], 0, 0, (2, 3)))
    # padding above and to the left (centred images): the first image row and column
    valid = np.zeros((1, 3, 3), bool)
    valid[0, 1:, 1:] = True
    values = np.arange(9, dtype=np.float32).reshape(1, 3, 3, 1)
    got = pc.score(Features(patches=values, valid=valid)).patch_scores[0]
    assert got.tolist() == [[4, 4, 5], [4, 4, 5], [7, 7, 8]]


def test_an_approximate_index_on_a_small_bank_is_exact_and_says_so(caplog):
    """hnsw / ivf on a bank under APPROX_MIN_ITEMS (1024) items became flat silently."""
    import logging

    from anomaly_inspect.scorers.nn_index import APPROX_MIN_ITEMS

    bank = np.random.default_rng(0).standard_normal((APPROX_MIN_ITEMS - 1, 4)).astype(np.float32)
    for kind in ("hnsw", "ivf"):
        with caplog.at_level(logging.INFO, logger="anomaly_inspect.scorers.nn_index"):
            caplog.clear()
            nn = NearestNeighbours(kind).fit(bank)
        assert nn.resolved_kind == "flat"
        assert f"index {kind}: a bank of 1023 items (fewer than 1024)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="anomaly_inspect.scorers.nn_index"):
        assert NearestNeighbours("hnsw").fit(np.concatenate([bank, bank[:1]])).resolved_kind == "hnsw"
    assert "searched exactly" not in caplog.text
