"""block_feature_norm reads a backbone block everywhere (fit, evaluate, screen and ood-benchmark
compute the same quantity); a model saved when it read patches is refused; a block scorer with
padded inputs is refused; ood rows choose a block by their input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from anomaly_inspect.cli import main
from anomaly_inspect.config import ConfigError, ModelConfig
from anomaly_inspect.core import Features
from anomaly_inspect.evaluation import ood_benchmark
from anomaly_inspect.evaluation.ood_benchmark import (
    build_data,
    run_ood_benchmark,
)
from anomaly_inspect.scorers import Scorer, build_scorer
from anomaly_inspect.scorers.base import ScorerFormatError
from ood_helpers import heldout_config as _heldout


# --- block_feature_norm reads a backbone block ------------------------------------------
def test_block_feature_norm_scores_the_chosen_blocks_norms_not_patches():
    norms = {"final": np.array([[3.0, 5.0], [1.0, 1.0]]), "3": np.array([[10.0], [20.0]])}
    patches = np.full((2, 2, 2, 4), 100.0)  # ignored: the patch embedding is not a block
    final = build_scorer("block_feature_norm").fit(Features(patches=patches, blocks=norms))
    np.testing.assert_allclose(final.score(Features(blocks=norms)).image_scores, [-4.0, -1.0])
    three = build_scorer("block_feature_norm", block="3").fit(Features(blocks=norms))
    np.testing.assert_allclose(three.score(Features(blocks=norms)).image_scores, [-10.0, -20.0])
    with pytest.raises(ValueError, match=r"block_feature_norm needs the norms of block 'final', but no "
                                         r"block norms were extracted"):
        build_scorer("block_feature_norm").fit(Features(patches=patches))
    with pytest.raises(ValueError, match=r"block '2', but only blocks \['3', 'final'\] were extracted"):
        build_scorer("block_feature_norm", block="2").fit(Features(blocks=norms))
    with pytest.raises(ValueError, match=r"block must be 'final' or a stage index"):
        build_scorer("block_feature_norm", block=3)
    with pytest.raises(ValueError, match=r"block 'final' features have width 1, the scorer was fitted "
                                         r"on width 2"):
        final.score(Features(blocks={"final": np.ones((1, 1))}))
    with pytest.raises(ValueError, match=r"block 'final' features of 1 of 2 images hold NaN"):
        final.score(Features(blocks={"final": np.array([[1.0, np.nan], [1.0, 1.0]])}))


def test_a_block_feature_norm_saved_when_it_read_patches_is_refused_on_load(tmp_path):
    fitted = build_scorer("block_feature_norm").fit(Features(blocks={"final": np.ones((2, 3))}))
    fitted.save(tmp_path / "new")
    back = Scorer.load(tmp_path / "new")
    assert json.loads((tmp_path / "new" / "scorer.json").read_text())["input_widths"] == {"blocks": 3}
    np.testing.assert_array_equal(back.score(Features(blocks={"final": np.full((1, 3), 2.0)})).image_scores,
                                  [-2.0])
    # as the earlier version wrote it: no parameters, the patch width, state {"fitted"} only
    from safetensors.numpy import save_file

    old = tmp_path / "old"
    old.mkdir()
    (old / "scorer.json").write_text(json.dumps({"format_version": 1, "name": "block_feature_norm",
                                                 "params": {}, "input_widths": {"patches": 8}}))
    save_file({"fitted": np.ones(1, np.uint8)}, str(old / "scorer_state.safetensors"))
    with pytest.raises(ScorerFormatError, match=r"scored the PatchCore patch embedding, not a backbone "
                                                r"block; re-fit the model"):
        Scorer.load(old)


def test_the_shared_builder_and_ood_benchmark_give_the_same_block_feature_norm(ood_tiny, tmp_path,
                                                                                monkeypatch):
    """fit / evaluate / screen build the extractor from the scorer's ``requires``; ood-benchmark
    caches the block norms. The same images score the same both ways (the builder path scored
    the PatchCore patch embedding)."""
    from anomaly_inspect.pipeline.builders import build

    seen = []
    real = ood_benchmark._image_scores
    monkeypatch.setattr(ood_benchmark, "_image_scores",
                        lambda runner, spec, scorer, arrays: seen.append(real(runner, spec, scorer, arrays))
                        or seen[-1])
    cfg = _heldout(ood_tiny, tmp_path, ["block_feature_norm"])
    report = run_ood_benchmark(cfg, progress=False)
    assert report["results"][0]["params"] == {"block": "final"}
    data = build_data(cfg)[0]
    model = ModelConfig.from_dict({"method": "block_feature_norm",
                                   "features": {"image_size": 64, "batch_size": 8}})
    _, extractor, scorer = build(model, progress=False)
    assert (extractor.want_blocks, extractor.want_patches) == (True, False)

    def features(samples):
        return Features.concat([b.features for b in extractor.iter_extract([s.path for s in samples])])

    scorer.fit(features(data.id_train))
    ours = scorer.score(features(data.id_test)).image_scores
    np.testing.assert_allclose(ours, seen[0], rtol=1e-5)  # the first scored set: ID test
    assert len(ours) == len(data.id_test) == 6 and np.ptp(ours) > 0


def test_fit_and_screen_a_block_feature_norm_model(ood_tiny, tmp_path, capsys):
    """A fitted model records the block; one saved when the scorer read patches is refused by
    screen, saying to re-fit."""
    from safetensors.numpy import save_file

    from anomaly_inspect.screening.model_dir import write_checksums

    model = tmp_path / "m"
    assert main(["fit", "--train", str(ood_tiny / "tiny" / "train" / "good"), "--out", str(model),
                 "--method", "block_feature_norm", "--image-size", "64", "--quiet"]) == 0
    meta = json.loads((model / "scorer" / "scorer.json").read_text())
    assert meta["params"] == {"block": "final"} and meta["input_widths"] == {"blocks": 1280}
    out = tmp_path / "screen.json"
    args = ["screen", str(model), str(ood_tiny / "tiny" / "test"), "--out", str(tmp_path / "r"),
            "--output-json", str(out), "--quiet"]
    assert main(args) == 0
    assert json.loads(out.read_text())["n_inputs"] == 8
    # the earlier version's scorer: no block, the patch width, state {"fitted"} only
    (model / "scorer" / "scorer.json").write_text(json.dumps(
        {"format_version": 1, "name": "block_feature_norm", "params": {}, "input_widths": {"patches": 96}}))
    save_file({"fitted": np.ones(1, np.uint8)}, str(model / "scorer" / "scorer_state.safetensors"))
    write_checksums(model)  # as that version saved it
    capsys.readouterr()
    assert main([*args[:4], str(tmp_path / "r2"), *args[5:]]) != 0
    assert "re-fit the model" in capsys.readouterr().err


def test_a_block_scorer_with_padded_inputs_is_refused_when_the_extractor_is_built():
    from anomaly_inspect.pipeline.builders import build_extractor
    from anomaly_inspect.scorers import get_scorer_class

    cfg = ModelConfig.from_dict({"method": "block_feature_norm", "features": {"resize": "pad"}})
    with pytest.raises(ConfigError, match=r"features: resize: block_feature_norm reads block norms, "
                                          r"which would count the padding of resize 'pad'"):
        build_extractor(cfg, None, get_scorer_class("block_feature_norm"))


@pytest.mark.parametrize("row, message", [
    ("{name: block_feature_norm, params: {block: '3'}}", r"params: block: set the row's input"),
    ("{name: patchcore, input: 'block:final'}", r"'patchcore' scores patch features, not input 'block:final'"),
    ("{name: block_feature_norm, input: pooled}", r"'block_feature_norm' scores block features, not input"),
])
def test_ood_rows_choose_a_block_by_their_input_only(tmp_path, row, message):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"benchmark: isic\ndata: {{root: r}}\nsplits: [ink_all]\nscorers: [{row}]\n")
    with pytest.raises(ConfigError, match=message):
        ood_benchmark.load_ood_config(cfg)
