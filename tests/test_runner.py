"""The one fit / score loop (pipeline.Runner) and the engine seam it runs on."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly_inspect.config import ModelConfig
from anomaly_inspect.data.image_io import ImageReadError
from anomaly_inspect.data.registry import load_dataset
from anomaly_inspect.pipeline import (
    LocalEngine,
    Runner,
    build_backbone,
    build_extractor,
    make_engine,
)
from anomaly_inspect.scorers import build_scorer
from anomaly_inspect.scorers.patchcore import PatchCore
from layout_writer import write_mvtec


class _Counting:
    """A toy engine task: squares of numbers, three per batch; counts its set-ups."""

    batch_size = 3

    def __init__(self):
        self.setups = 0

    def setup(self):
        self.setups += 1

    def run(self, items):
        for i in range(0, len(items), self.batch_size):
            chunk = items[i:i + self.batch_size]
            yield len(chunk), [x * x for x in chunk]


class _Bar:
    def __init__(self):
        self.n = 0

    def update(self, n):
        self.n += n


def test_local_engine_sets_up_once_keeps_order_and_counts_progress():
    task, bar = _Counting(), _Bar()
    out = list(LocalEngine().map(task, list(range(7)), bar))
    assert out == [[0, 1, 4], [9, 16, 25], [36]] and task.setups == 1 and bar.n == 7


def test_make_engine_errors():
    assert isinstance(make_engine("local"), LocalEngine)
    with pytest.raises(ValueError, match="unknown engine 'spark'; choose from local, ray"):
        make_engine("spark")
    with pytest.raises(ValueError, match="distributed engine"):
        make_engine("local", workers=2)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("runner")
    write_mvtec(root, "widget", n_train=6, n_good=3, defects={"scratch": 3}, size=48)
    cfg = ModelConfig()
    cfg.backbone.weights, cfg.backbone.runtime = "random", "torch"
    cfg.features.image_size, cfg.features.batch_size = 64, 4
    data = load_dataset("mvtec", root=root, category="widget")
    return cfg, data, Runner(build_extractor(cfg, build_backbone(cfg), PatchCore), progress=False)


def test_several_scorers_score_in_one_pass_as_they_do_alone(tiny):
    cfg, data, runner = tiny
    train, test = [s.path for s in data.train], [s.path for s in data.test]
    a = build_scorer("patchcore", coreset_ratio=0.5, progress=False)
    b = build_scorer("patchcore", coreset_ratio=1.0, progress=False)
    info = runner.fit({"a": a, "b": b}, train).info
    assert info["b"]["memory_bank_items"] > info["a"]["memory_bank_items"] > 0
    together = [item.results for item in runner.score({"a": a, "b": b}, test)]
    alone = [item.results["a"] for item in runner.score({"a": a}, test)]
    for both, one in zip(together, alone, strict=True):
        np.testing.assert_array_equal(both["a"].image_scores, one.image_scores)
    assert sum(len(r["b"].image_scores) for r in together) == len(test)


def test_streamed_fit_equals_fit_on_gathered_features(tiny):
    _, data, runner = tiny
    train = [s.path for s in data.train]
    streamed = build_scorer("patchcore", coreset_ratio=0.5, progress=False)
    runner.fit({"pc": streamed}, train)  # one scorer: fit_batches, while batches arrive
    gathered = build_scorer("patchcore", coreset_ratio=0.5, progress=False)
    gathered.fit(runner.extract(train, "train").features)
    np.testing.assert_array_equal(streamed.memory_bank, gathered.memory_bank)
    assert runner.times.seconds["fit"] > 0 and runner.times.seconds["backbone"] > 0


def test_fit_skipping_unreadable_images_streams_the_readable_ones(tiny, tmp_path):
    _, data, runner = tiny
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    train = [s.path for s in data.train]
    skipping = build_scorer("patchcore", coreset_ratio=0.5, progress=False)
    fitted = runner.fit({"pc": skipping}, [train[0], bad, *train[1:]], skip_errors=True)
    assert fitted.indices == [0, *range(2, len(train) + 1)]
    assert len(fitted.skipped) == 1 and "broken.png" in fitted.skipped[0]["path"]
    clean = build_scorer("patchcore", coreset_ratio=0.5, progress=False)
    runner.fit({"pc": clean}, train)
    np.testing.assert_array_equal(skipping.memory_bank, clean.memory_bank)
    with pytest.raises(ImageReadError, match="broken.png"):
        runner.fit({"pc": clean}, [bad, *train])
    with pytest.raises(ValueError, match="none of the 1 training images could be read"):
        runner.fit({"pc": clean}, [bad], skip_errors=True)


def test_unreadable_images_raise_or_are_skipped(tiny, tmp_path, caplog):
    _, data, runner = tiny
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    paths = [data.train[0].path, bad, data.train[1].path]
    with pytest.raises(ImageReadError, match="broken.png"):
        runner.extract(paths, "x")
    got = runner.extract(paths, "x", skip_errors=True)
    assert got.indices == [0, 2] and len(got.features) == 2
    assert got.skipped[0]["path"].endswith("broken.png") and "skipping" in caplog.text
    scorer = build_scorer("patchcore", coreset_ratio=0.5, progress=False).fit(got.features)
    with pytest.raises(ImageReadError, match="broken.png"):
        list(runner.score({"pc": scorer}, paths))
    items = list(runner.score({"pc": scorer}, paths, strict=False))
    assert [i for item in items for i, _ in item.batch.errors] == [1]


def test_tasks_read_the_engines_local_copies(tiny, tmp_path):
    """The runner's tasks read the copies an engine shipped (--no-shared-storage: they took no
    local_copies) and report the original paths' positions, errors included."""
    import shutil

    from anomaly_inspect.pipeline.runner import ExtractTask, ScoreTask

    _, data, runner = tiny
    paths = [s.path for s in data.train[:3]]
    copies = [tmp_path / f"{k}_copy.png" for k in range(3)]
    for src, dst in zip(paths[:2], copies[:2], strict=True):
        shutil.copyfile(src, dst)  # the third copy is missing: unreadable
    task = ExtractTask(runner.extractor)
    (n, (batch, feats)), = task.run(paths, local_copies=copies)
    assert n == 3 and batch.indices == [0, 1] and batch.errors == [(2, "file not found")]
    want = runner.extract(paths[:2], "x").features
    np.testing.assert_array_equal(feats.patches, want.patches)
    scorer = build_scorer("patchcore", coreset_ratio=0.5, progress=False).fit(want)
    (n, scored), = ScoreTask(runner.extractor, {"pc": scorer}).run(paths, local_copies=copies)
    direct = scorer.score(want).image_scores
    np.testing.assert_array_equal(scored.results["pc"].image_scores, direct)


def test_pipeline_names_stay_the_functions():
    """pipeline/__init__ imports lazily (ray_engine must load without torch); its names are the
    functions and classes, whichever submodule was imported first."""
    import subprocess
    import sys

    code = ("import types, anomaly_inspect.pipeline.builders; from anomaly_inspect.pipeline import "
            "build, Runner; assert not isinstance(build, types.ModuleType) and callable(build); "
            "import anomaly_inspect.pipeline as p; assert p.build is build")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
