"""One scorer builder, one block rule, one feature source and one fold draw.

Building a scorer from its settings (seed, runtime switches) was written at five sites; the
fold assignment and the fold loop at three. Each site now calls the shared helper with the
arguments it had, so the scores, banks and folds are the ones recorded before.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from anomaly_inspect.config import ConfigError, model_blocks
from anomaly_inspect.evaluation import fusion
from anomaly_inspect.evaluation import ood_benchmark as ob
from anomaly_inspect.pipeline.builders import scorer_for
from anomaly_inspect.scorers import build_scorer
from anomaly_inspect.tuning.tune import TuneSettings, fold_plan

PKG = Path(ob.__file__).resolve().parents[1]
SITES = ["pipeline/builders.py", "tuning/tune.py", "tuning/judge.py", "evaluation/longtail.py",
         "evaluation/ood_benchmark.py"]


def _calls(rel: str, name: str) -> list[str]:
    """The enclosing function of each call of ``name`` in ``rel``."""
    tree = ast.parse((PKG / rel).read_text())
    out = []
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef):
            for node in ast.walk(fn):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == name:
                    out.append(fn.name)
    return out


def test_scorer_for_seeds_switches_and_refuses_as_the_config_does():
    s = scorer_for("patchcore", {"coreset_ratio": 0.5}, 7, progress=False, patch_maps=False)
    assert s.get_params() == build_scorer("patchcore", coreset_ratio=0.5, seed=7).get_params()
    assert (s.progress, s.patch_maps) == (False, False)
    knn = scorer_for("knn", {"k": 2}, 7)  # takes no seed: none given
    assert knn.get_params()["k"] == 2 and "seed" not in knn.get_params()
    with pytest.raises(ValueError, match="seed"):
        scorer_for("patchcore", {"seed": 1}, 7)
    with pytest.raises(ValueError, match=r"scorer: unknown key 'bogus' for method 'knn'"):
        scorer_for("knn", {"bogus": 1}, 7)


def test_every_site_builds_its_scorer_through_scorer_for():
    """``build_scorer`` is called by ``scorer_for`` alone among the five sites (ood-benchmark's
    TailedCore rows for the view kind included), and judge no longer borrows tune's private
    ``_scorer``."""
    for rel in SITES:
        assert set(_calls(rel, "build_scorer")) <= ({"scorer_for"} if rel == SITES[0] else set()), rel
    assert _calls(SITES[0], "build_scorer") == ["scorer_for"]
    for rel in SITES[1:]:
        assert _calls(rel, "scorer_for"), rel
    judge = ast.parse((PKG / "tuning/judge.py").read_text())
    names = {a.name for n in ast.walk(judge) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert "_scorer" not in names


def test_longtail_scorers_take_only_their_settings_seeded_for_image_scores():
    from anomaly_inspect.evaluation.longtail import build_scorers

    got = build_scorers(["patchcore", "knn"], {"coreset_ratio": 0.5, "k": 2, "chunk_size": None}, 3,
                        progress=False)
    assert got["patchcore"].get_params() == build_scorer(
        "patchcore", coreset_ratio=0.5, chunk_size=None, seed=3).get_params()
    assert got["patchcore"].patch_maps is False and got["knn"].get_params()["k"] == 2


def test_check_blocks_reads_the_one_block_rule(monkeypatch):
    spec = ob.ScorerSpec(name="block_feature_norm", input="block:5")
    with pytest.raises(ConfigError, match=r"s\.yaml: scorer 'block_feature_norm': no block 'block:5'; "
                                          r"available: block:final, block:2"):
        ob.check_blocks("s.yaml", [spec], [2])
    monkeypatch.setattr(ob, "model_blocks", lambda layers: [*model_blocks(layers), "5"])
    ob.check_blocks("s.yaml", [spec], [2])  # the rule of config.model_blocks decides


def test_the_benchmark_extracts_through_build_extractor():
    """ood-benchmark's feature sources (two, and the views' extractor of rows with views) are
    :func:`build_extractor`'s (the one feature source); built that way they equal the
    extractor it constructed by hand."""
    from anomaly_inspect.features.backbone import Backbone
    from anomaly_inspect.features.extractor import FeatureExtractor
    from anomaly_inspect.pipeline import build_extractor

    assert not _calls("evaluation/ood_benchmark.py", "FeatureExtractor")
    assert _calls("evaluation/ood_benchmark.py", "build_extractor") == ["view_arrays", "run_ood_benchmark"]
    cfg = ob.OODBenchmarkConfig.from_dict({
        "benchmark": "mvtec_heldout", "splits": ["d"], "scorers": ["nan"],
        "data": {"root": "r", "category": "c", "id_groups": ["good"], "ood_groups": {"d": ["x"]}},
        "features": {"image_size": 64, "batch_size": 5, "resize": "pad"}}, "e.yaml")
    backbone = Backbone(cfg.backbone.name, cfg.backbone.layers, "random")
    f = cfg.features
    for want in (False, True):
        by_hand = FeatureExtractor(backbone, f.image_size, f.crop_size, f.batch_size, f.embedding(),
                                   patches=want, pooled=True, resize=f.resize, blocks=True)
        built = build_extractor(cfg, backbone, outputs=("pooled", "blocks", *["patches"] * want))
        assert vars(built).keys() == vars(by_hand).keys()
        assert {k: v for k, v in vars(built).items() if k != "backbone"} == \
            {k: v for k, v in vars(by_hand).items() if k != "backbone"}


def test_tune_and_the_benchmark_draw_folds_the_one_way():
    """``crossfit_folds`` and tune's ``fold_plan`` (folds and anomaly families, drawn one after
    the other from one generator) are :func:`fusion.balanced_folds`; the draws are those of
    before (hand-written here)."""
    for n, s in [(80, TuneSettings(n_folds=3, max_images=50, seed=0)), (7, TuneSettings(n_folds=2, seed=5))]:
        rng = np.random.default_rng((s.seed, 1))
        keep = min(n, s.max_images)
        chosen = np.sort(rng.permutation(n)[:keep])
        folds = np.empty(keep, np.int64)
        folds[rng.permutation(keep)] = np.arange(keep) % s.n_folds
        fams = np.empty(keep, np.int64)
        fams[rng.permutation(keep)] = np.arange(keep) % len(s.recipe.families)
        got = fold_plan(n, s)
        assert all(np.array_equal(a, b) for a, b in zip(got, (chosen, folds, fams), strict=True))
        again = np.random.default_rng((s.seed, 1))
        again.permutation(n)
        assert np.array_equal(fusion.balanced_folds(keep, s.n_folds, again), folds)
    out = np.empty(10, np.int64)
    out[np.random.default_rng(4).permutation(10)] = np.arange(10) % 3
    assert np.array_equal(fusion.crossfit_folds(10, 3, 4), out)
    assert np.array_equal(fusion.balanced_folds(10, 3, np.random.default_rng(4)), out)


def test_fold_splits_is_the_loop_of_crossfit_scores_and_tune():
    fold = np.array([1, 0, 2, 1, 0, 1])
    got = [(k, b.tolist(), h.tolist()) for k, b, h in fusion.fold_splits(fold)]
    assert got == [(0, [0, 2, 3, 5], [1, 4]), (1, [1, 2, 4], [0, 3, 5]), (2, [0, 1, 3, 4, 5], [2])]
    assert all(type(k) is int for k, _, _ in got)
    for rel, fn in [("evaluation/fusion.py", "crossfit_scores"), ("tuning/tune.py", "score_candidate"),
                    ("tuning/tune.py", "normal_calibrations")]:
        assert fn in _calls(rel, "fold_splits"), (rel, fn)


def test_tune_and_evaluate_lt_seed_the_scorer_as_fit_does():
    """The seeding rule through their public paths (what test_config_keys checked through the
    private ``_params_for``, now gone): the model's seed; a seed under ``scorer`` refused."""
    from anomaly_inspect.config import ModelConfig
    from anomaly_inspect.evaluation.longtail import build_scorers
    from anomaly_inspect.pipeline.builders import seeded_params
    from anomaly_inspect.tuning.judge import test_scores
    from anomaly_inspect.tuning.tune import _scorer

    assert _scorer(ModelConfig.from_dict({"seed": 5}, "test")).seed == 5
    assert build_scorers(["patchcore"], {}, 5, False)["patchcore"].seed == 5
    assert seeded_params("patchcore", {"coreset_ratio": 0.2}, 7) == {"coreset_ratio": 0.2, "seed": 7}
    seeded = ModelConfig.from_dict({"seed": 5, "scorer": {"seed": 3}}, "model.json")
    for call in (lambda: _scorer(seeded), lambda: build_scorers(["patchcore"], {"seed": 3}, 5, False),
                 lambda: scorer_for("patchcore", seeded.scorer, 5)):
        with pytest.raises(ConfigError, match="scorer: seed: set the top-level 'seed'"):
            call()
    tailed = ModelConfig.from_dict({"method": "tailedcore"}, "t")  # reads pooled: tune refuses it
    with pytest.raises(ValueError, match="tune: method 'tailedcore' reads"):
        test_scores(None, None, [], tailed)  # before any work, as tune's own scorer
