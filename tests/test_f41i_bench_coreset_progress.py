"""bench-coreset showed no bar after the test extraction: each row's coreset, covering radius and
scoring ran silently for minutes. Each stage now has a bar named after the row and the stage."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly_inspect.core import Features
from anomaly_inspect.evaluation import coreset_bench
from anomaly_inspect.evaluation.coreset_bench import (
    bench_coreset_features,
    image_scores,
    radius_with_bar,
)
from anomaly_inspect.scorers.coreset import covering_radius
from anomaly_inspect.scorers.patchcore import PatchCore

STAGES = ("coreset", "radius", "scoring")


def _features(seed: int = 0):
    rng = np.random.default_rng(seed)
    train = Features(rng.standard_normal((6, 4, 4, 8), dtype=np.float32))
    test = Features(rng.standard_normal((10, 4, 4, 8), dtype=np.float32))
    return train, test, np.array([0] * 5 + [1] * 5)


def test_each_stage_of_a_row_has_a_bar_named_after_the_row(capsys):
    train, test, labels = _features()
    rows = bench_coreset_features("tiny", train, test, labels, {}, [0.5], ["two_round", "exact"])
    err = capsys.readouterr().err
    for variant in ("two_round", "exact"):
        for stage in STAGES:
            assert f"{variant} 50 %: {stage}" in err
    # round 1 counts the training patches, the radius the patches, scoring the test images
    assert "two_round 50 %: coreset: 100%" in err and "96/96" in err
    assert "exact 50 %: scoring: 100%" in err and "10/10" in err
    assert "exact 50 %: coreset round 2: 100%" in err and "48/48" in err  # the exact greedy
    assert [r["bank"] for r in rows] == [48, 48]


def test_progress_false_prints_no_bar_and_the_same_rows(capsys):
    train, test, labels = _features()
    quiet = bench_coreset_features("tiny", train, test, labels, {}, [0.25], ["one_round", "cells"],
                                   progress=False)
    assert capsys.readouterr().err == ""
    loud = bench_coreset_features("tiny", train, test, labels, {}, [0.25], ["one_round", "cells"])
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in quiet] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in loud]


def test_radius_and_scores_block_by_block_are_those_of_one_call(monkeypatch):
    """The radius is covering_radius's; the scores those of one score() call (to a rounding)."""
    monkeypatch.setattr(coreset_bench, "RADIUS_BLOCK", 7)
    monkeypatch.setattr(coreset_bench, "SCORE_IMAGES", 3)
    train, test, _ = _features(1)
    points = train.patches.reshape(-1, 8)
    assert radius_with_bar(points, points[::5], "r", False) == covering_radius(points, points[::5])
    scorer = PatchCore(coreset_ratio=0.5, index="flat", num_neighbors=3, progress=False).fit(train)
    np.testing.assert_allclose(image_scores(scorer, test, "s", False),
                               scorer.score(test).image_scores, rtol=1e-6)


@pytest.mark.parametrize("quiet", [False, True])
def test_the_command_shows_the_row_bars_unless_quiet(tmp_path, capsys, quiet):
    from anomaly_inspect.cli import main
    from anomaly_inspect.data.synthetic import generate_dataset

    root = generate_dataset(tmp_path / "data", "tiny", n_train=2, n_test_good=1,
                            n_test_per_defect=1, image_size=64).parent
    assert main(["bench-coreset", "--root", str(root), "--category", "tiny", "--image-size", "64",
                 "--ratios", "0.1", "--variants", "one_round"] + (["--quiet"] if quiet else [])) == 0
    err = capsys.readouterr().err
    for stage in STAGES:
        assert (f"one_round 10 %: {stage}" in err) is not quiet
