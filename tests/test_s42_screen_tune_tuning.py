"""tune fixes: the ensemble's test scores read the training maps validation cached, the "too
few images" message does not call images it never read readable, and ``--candidates`` takes
spaces after its commas.

Tuning runs on a small synthetic dataset (64 px images, random-weight Lite0 at 64 px)."""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np
import pytest

from anomaly_inspect.cli import main
from anomaly_inspect.config import ModelConfig
from anomaly_inspect.data.mvtec import load_mvtec
from anomaly_inspect.data.synthetic import generate_dataset
from anomaly_inspect.tuning.candidates import Candidate
from anomaly_inspect.tuning.judge import test_scores as scores_of_test  # not a test itself
from anomaly_inspect.tuning.tune import tune


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("s42_tune")
    return generate_dataset(root, "fabric", "fabric", n_train=12, n_test_good=3, n_test_per_defect=2,
                            image_size=64, seed=0)


def _base() -> ModelConfig:
    base = ModelConfig()
    base.features.image_size, base.features.batch_size = 64, 8
    return base


# -- 5: the ensemble's training maps are those validation extracted ------------------------------
def test_ensemble_test_scores_read_the_training_maps_validation_cached(demo, tmp_path):
    """evaluate --auto --ensemble K scores only the members: a member with fewer stages than
    its validation group was extracted again on the training images (its own stages, another
    cache key); with the training list equal to the tuning subset it reads validation's entry,
    with the same scores."""
    base = _base()
    member = Candidate.parse("lite0-64-16-rows-stretch")  # validated with the default's 8+16
    result = tune(sorted((demo / "train" / "good").glob("*.png")), base, candidates=[member],
                  cache_dir=tmp_path / "cache", progress=False)
    dataset = load_mvtec(demo.parent, demo.name)
    maps = tmp_path / "cache" / "maps"
    before = set(maps.iterdir())
    got = scores_of_test(dataset, result, [member], base, tmp_path / "cache", False)
    added = set(maps.iterdir()) - before
    assert len(added) == 1  # the test images only: the training images' maps were there
    # as before the fix: the member's own extraction (in a cache of its own)
    alone = dataclasses.replace(result, candidates=[dataclasses.replace(c, extraction=None)
                                                    for c in result.candidates])
    own = scores_of_test(dataset, alone, [member], base, tmp_path / "other", False)
    assert len(list((tmp_path / "other" / "maps").iterdir())) == 2  # train and test
    np.testing.assert_array_equal(got[member.name], own[member.name])


# -- 6: images never read are not called readable ---------------------------------------------
def test_too_few_left_does_not_call_the_images_left_readable(demo, tmp_path):
    """Every image is over the budget: 7 skipped, then 5 left that were never read; the
    message said "only 5 left after skipping 7 unreadable" as if those 5 were fine."""
    paths = sorted((demo / "train" / "good").glob("*.png"))  # 64 x 64 = 4,096 pixels each
    with pytest.raises(ValueError) as caught:
        tune(paths, ModelConfig(), cache_dir=tmp_path / "cache", progress=False, max_pixels=4000)
    assert str(caught.value) == (
        "tune needs at least 6 training images, only 5 left after skipping 7 unreadable "
        "(reading stopped there: some of those 5 may be unreadable too)")


# -- 7: --candidates with spaces after the commas ---------------------------------------------
@pytest.mark.parametrize("given", ["lite0-64-8+16-mean-stretch, lite0-64-8+16-rows-stretch",
                                   " lite0-64-8+16-mean-stretch ,lite0-64-8+16-rows-stretch "])
def test_candidates_take_spaces_around_the_commas(demo, tmp_path, monkeypatch, capsys, given):
    tuning = importlib.import_module("anomaly_inspect.tuning.tune")  # the module, not the function
    seen = []

    def stop(paths, cfg, settings, cands, **kwargs):
        seen.append([c.name for c in cands])
        raise RuntimeError("stopped once the candidates were parsed")

    monkeypatch.setattr(tuning, "tune", stop)
    assert main(["tune", "--train", str(demo / "train" / "good"), "--image-size", "64", "--quiet",
                 "--candidates", given, "--tune-cache", str(tmp_path / "cache")]) == 1
    assert "stopped once the candidates were parsed" in capsys.readouterr().err
    assert seen == [["lite0-64-8+16-mean-stretch", "lite0-64-8+16-rows-stretch"]]
