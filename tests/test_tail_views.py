"""TailedCore's tail views on every fit path (fit / evaluate / screen through Runner.fit, and
evaluate-lt): the ``tail_views`` parameter, its checks, what evaluate-lt records, and
--tail-views without TailedCore refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from anomaly_inspect.cli import main
from anomaly_inspect.config import ModelConfig
from anomaly_inspect.core import Features, FitContext
from anomaly_inspect.features.views import ViewFeatures, view_params
from anomaly_inspect.pipeline import Runner, build_backbone, build_extractor
from anomaly_inspect.scorers import build_scorer
from anomaly_inspect.scorers.tailedcore import TailedCore
from layout_writer import noise_layout, rgb_image, write_image


def _tailed_train(folder: Path) -> list[Path]:
    """Eight copies of one image (a head class) and two distinct ones (the tail), 32 px."""
    paths = [write_image(folder / f"a{i}.png", rgb_image(32, 1)) for i in range(8)]
    return paths + [write_image(folder / f"t{i}.png", rgb_image(32, 10 + i)) for i in range(2)]


@pytest.fixture(scope="module")
def runner():
    cfg = ModelConfig()
    cfg.backbone.weights, cfg.backbone.runtime = "random", "torch"
    cfg.features.image_size, cfg.features.batch_size = 64, 4
    return Runner(build_extractor(cfg, build_backbone(cfg), TailedCore), progress=False)


def _view_ids(scorer: TailedCore) -> set[tuple[int, bool]]:
    """The (angle, flip) of the memory items' views."""
    p = scorer.provenance
    return {tuple(int(v) for v in p.views[i]) for i in np.unique(p.cell[:, 2])}


# -- the tail memory's views on every fit path ------------------------------------
def test_runner_fit_gives_tailedcore_the_views_its_tail_views_names(runner, tmp_path):
    """fit / evaluate / screen fit through Runner.fit without a context: the tail memory held
    the tail images' own patches only (view (0, 0))."""
    paths = _tailed_train(tmp_path)
    tc = build_scorer("tailedcore", coreset_ratio=1.0, progress=False)
    info = runner.fit({"tc": tc}, paths).info["tc"]
    assert sorted(tc.tail_result.tail_indices) == [8, 9]
    assert info["tail_views"] == "rotflip" and tc.get_params()["tail_views"] == "rotflip"
    # ratio 1 keeps every tail row: each of the 7 views of rotflip is in the memory
    assert _view_ids(tc) == {(0, 0), *((a, int(f)) for a, f in view_params("rotflip"))}
    tail_images = set(tc.provenance.image[tc.provenance.cell[:, 2] > 0].tolist())
    assert tail_images == {8, 9}
    none = build_scorer("tailedcore", coreset_ratio=1.0, tail_views="none", progress=False)
    assert runner.fit({"tc": none}, paths).info["tc"]["tail_views"] == "none"
    assert _view_ids(none) == {(0, 0)}


def test_runner_fit_views_follow_the_readable_images(runner, tmp_path):
    """With unreadable images skipped, the views' image indices are positions among the
    readable ones: the memory equals the fit without the broken file."""
    paths = _tailed_train(tmp_path)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    clean = build_scorer("tailedcore", coreset_ratio=0.5, progress=False)
    runner.fit({"tc": clean}, paths)
    skipping = build_scorer("tailedcore", coreset_ratio=0.5, progress=False)
    fitted = runner.fit({"tc": skipping}, [bad, *paths], skip_errors=True)
    assert fitted.indices == list(range(1, len(paths) + 1))
    np.testing.assert_array_equal(skipping.memory_bank, clean.memory_bank)
    assert len(_view_ids(skipping)) > 1


def test_fit_command_saves_a_tail_memory_with_views_and_its_tail_views(tmp_path):
    """``anomaly-inspect fit --method tailedcore`` (Runner.fit through screening.fit_model)."""
    _tailed_train(tmp_path / "train")
    out = tmp_path / "model"
    assert main(["fit", "--train", str(tmp_path / "train"), "--out", str(out), "--method",
                 "tailedcore", "--weights", "random", "--runtime", "torch", "--image-size", "64",
                 "--quiet"]) == 0
    meta = json.loads((out / "scorer" / "scorer.json").read_text())
    assert meta["params"]["tail_views"] == "rotflip"
    state = load_file(str(out / "scorer" / "scorer_state.safetensors"))
    assert len(state["tail_indices"]) > 0
    assert len(state["provenance_views"]) == 1 + len(view_params("rotflip"))
    assert (state["provenance_cell"][:, 2] > 0).any()  # items taken from rotated views


def test_tail_views_is_a_checked_parameter_and_views_of_another_kind_are_refused():
    with pytest.raises(ValueError, match="tail_views must be one of"):
        build_scorer("tailedcore", tail_views="rot7")
    assert build_scorer("tailedcore", tail_views="none").fit_views is None
    assert build_scorer("tailedcore").fit_views == "rotflip"
    feats = Features(np.random.default_rng(0).random((4, 2, 2, 8), np.float32),
                     np.random.default_rng(1).random((4, 8), np.float32))
    views = ViewFeatures(None, [Path(f"{i}.png") for i in range(4)], "rot30flip")
    with pytest.raises(ValueError, match=r"tail_views='rotflip'\) was given views of kind 'rot30flip'"):
        build_scorer("tailedcore", progress=False).fit(feats, context=FitContext(views=views))
    with pytest.raises(ValueError, match="tail_views='none'\\) was given a view source"):
        build_scorer("tailedcore", tail_views="none", progress=False).fit(
            feats, context=FitContext(views=type("Src", (), {"views_per_image": 1})()))
    # a plain fit(features) still works and says it used no views
    plain = build_scorer("tailedcore", coreset_ratio=1.0, progress=False).fit(feats)
    assert plain.fit_summary()["tail_views"] == "none"


def test_tail_views_is_set_in_a_configs_scorer_section(tmp_path):
    cfg = tmp_path / "tc.yaml"
    cfg.write_text("method: tailedcore\nscorer: {tail_views: rot30flip}\n")
    from anomaly_inspect.config import load_config

    assert load_config(cfg).check_scorer().tail_views == "rot30flip"
    cfg.write_text("method: tailedcore\nscorer: {tail_views: rot7}\n")
    with pytest.raises(ValueError, match="tail_views must be one of"):
        load_config(cfg).check_scorer()


def test_scorers_fitted_together_must_share_one_view_kind(runner, tmp_path):
    from anomaly_inspect.pipeline.runner import view_kind

    a, b = build_scorer("tailedcore"), build_scorer("tailedcore", tail_views="rot45flip")
    assert view_kind([build_scorer("patchcore"), a]) == "rotflip"
    assert view_kind([build_scorer("patchcore")]) is None
    with pytest.raises(ValueError, match="different tail views: rotflip .*rot45flip"):
        runner.fit({"a": a, "b": b}, _tailed_train(tmp_path))


def test_ood_benchmarks_tail_views_is_tailedcores_default():
    from anomaly_inspect.evaluation.ood_benchmark import TAIL_VIEWS

    assert TailedCore().tail_views == TAIL_VIEWS


# -- evaluate-lt --------------------------------------------------------------------------
def _lt_args(root: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["evaluate-lt", "--root", str(root), "--categories", "x,y,z", "--tail", "step",
            "--k", "2", "--image-size", "64", "--weights", "random", "--runtime", "torch",
            "--coreset-ratio", "0.5", "--manifest-dir", str(tmp_path / "m"), "--quiet", *extra]


def test_evaluate_lt_tail_views_is_tailedcores_parameter(tmp_path):
    """What the report records is what TailedCore ran with; the JSON names the methods that
    ran (not the config's single default method) and the manifest."""
    root = noise_layout(tmp_path / "r")
    out = tmp_path / "lt.json"
    assert main(_lt_args(root, tmp_path, "--methods", "patchcore,tailedcore", "--tail-views",
                         "rotflip", "--output-json", str(out))) == 0
    report = json.loads(out.read_text())
    assert report["tail_views"] == "rotflip"
    assert report["methods"]["tailedcore"]["params"]["tail_views"] == "rotflip"
    assert "tail_views" not in report["methods"]["patchcore"]["params"]
    assert report["config"]["methods"] == ["patchcore", "tailedcore"]
    assert "method" not in report["config"]
    manifests = list((tmp_path / "m").glob("*.json"))
    assert report["split"]["manifest"] == str(manifests[0])


def test_evaluate_longtail_default_tail_views_follow_the_split_then_the_config():
    from anomaly_inspect.data.longtail import LongTailSet
    from anomaly_inspect.evaluation.longtail import tail_views_of

    split = LongTailSet.__new__(LongTailSet)
    split.tail = "pareto"
    assert tail_views_of(split, ["tailedcore"], {}) == "rot30flip"
    assert tail_views_of(split, ["tailedcore"], {"tail_views": "none"}) == "none"
    assert tail_views_of(split, ["tailedcore"], {"tail_views": "none"}, "rotflip") == "rotflip"
    assert tail_views_of(split, ["patchcore"], {}) is None


def test_evaluate_lt_refuses_tail_views_without_tailedcore(tmp_path, capsys):
    root = noise_layout(tmp_path / "r")
    assert main(_lt_args(root, tmp_path, "--methods", "patchcore", "--tail-views",
                         "rot15flip")) == 1
    assert "--tail-views rot15flip: only tailedcore reads tail views, and --methods patchcore " \
           "leaves it out" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()  # before any work


def test_a_tailedcore_saved_before_tail_views_loads_as_fitted_without_views(tmp_path):
    """Models saved before ``tail_views`` existed were fitted without views: loading one must
    say so, not take the new default."""
    import json

    import numpy as np

    from anomaly_inspect.core import Features
    from anomaly_inspect.scorers import Scorer
    from anomaly_inspect.scorers.tailedcore import TailedCore

    rng = np.random.default_rng(0)
    feats = Features(patches=rng.normal(size=(6, 4, 4, 8)).astype(np.float32),
                     pooled=rng.normal(size=(6, 8)).astype(np.float32))
    scorer = TailedCore(seed=0).fit(feats)
    scorer.save(tmp_path / "s")
    meta_path = next(p for p in (tmp_path / "s").iterdir() if p.suffix == ".json")
    meta = json.loads(meta_path.read_text())
    meta["params"].pop("tail_views")
    meta_path.write_text(json.dumps(meta))
    assert Scorer.load(tmp_path / "s").tail_views == "none"
    assert TailedCore().tail_views == "rotflip"  # the default for new fits is unchanged
