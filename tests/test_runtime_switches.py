"""Runtime switches (``progress``) are not model parameters: not saved, set by the caller."""

from __future__ import annotations

import json

import numpy as np
import pytest

from anomaly_inspect.features.extractor import Features
from anomaly_inspect.scorers import Scorer, scorer_parameters
from anomaly_inspect.scorers.distance import KNN
from anomaly_inspect.scorers.patchcore import PatchCore

PATCHES = Features(patches=np.random.default_rng(0).standard_normal((3, 4, 4, 8)).astype(np.float32))


def test_progress_is_not_a_model_parameter():
    assert "progress" not in PatchCore(progress=False).get_params()
    assert "progress" not in scorer_parameters("patchcore")
    assert "coreset_ratio" in scorer_parameters("patchcore")
    assert PatchCore.runtime_kwargs(progress=False) == {"progress": False}
    assert KNN.runtime_kwargs(progress=False) == {}  # a scorer without the switch
    with pytest.raises(TypeError, match="not runtime switches"):
        PatchCore.runtime_kwargs(coreset_ratio=0.5)


@pytest.mark.parametrize("progress", [False, True])
def test_saved_without_progress_and_loaded_with_the_callers(tmp_path, progress):
    pc = PatchCore(coreset_ratio=1.0, progress=not progress).fit(PATCHES)
    pc.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "scorer.json").read_text())
    assert "progress" not in meta["params"] and meta["params"]["coreset_ratio"] == 1.0
    back = Scorer.load(tmp_path / "m", progress=progress)
    assert back.progress is progress
    np.testing.assert_array_equal(back.score(PATCHES).image_scores, pc.score(PATCHES).image_scores)


def test_old_files_with_progress_saved_still_load(tmp_path):
    PatchCore(coreset_ratio=1.0, progress=False).fit(PATCHES).save(tmp_path / "m")
    path = tmp_path / "m" / "scorer.json"
    meta = json.loads(path.read_text())
    meta["params"]["progress"] = True  # as written before the switch was left out
    path.write_text(json.dumps(meta))
    assert Scorer.load(tmp_path / "m", progress=False).progress is False


def test_scorer_without_the_switch_loads_with_it(tmp_path):
    pooled = Features(pooled=np.random.default_rng(1).standard_normal((10, 4)).astype(np.float32))
    KNN(k=2).fit(pooled).save(tmp_path / "k")
    assert Scorer.load(tmp_path / "k", progress=False).get_params() == {
        "k": 2, "normalize": True, "reduction": "kth"}
