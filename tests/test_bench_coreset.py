"""bench-coreset: each stage of a row (coreset, covering radius, scoring) has a bar named after
the row and the stage (it once ran silently for minutes after the test extraction); each row
says what its seconds time; --engine-only needs --engine ray."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly_inspect.cli import main
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


# bench-coreset's rows say what their seconds time (the --engine-only one-machine row is
# extraction + fit, not the coreset alone); --engine-only needs --engine ray.
def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err.strip()


# ------------------------------------------ bench-coreset: what each row's seconds time


def _tiny(tmp_path):
    from anomaly_inspect.data.synthetic import generate_dataset

    return generate_dataset(tmp_path / "data", "tiny", n_train=4, n_test_good=2,
                            n_test_per_defect=1, image_size=64).parent


def test_engine_only_one_machine_row_is_named_and_timed_as_extraction_and_fit(tmp_path):
    """--engine-only's one-machine row timed extraction + fit under the name two_round, the
    name of the rows that time the coreset alone, in the same column."""
    from anomaly_inspect.config import ModelConfig
    from anomaly_inspect.data.mvtec import load_mvtec
    from anomaly_inspect.evaluation import coreset_bench
    from anomaly_inspect.pipeline import LocalEngine

    cfg = ModelConfig.from_dict({"features": {"image_size": 64, "batch_size": 2}}, "test")
    rows = coreset_bench.bench_engine_fit(load_mvtec(_tiny(tmp_path), "tiny"), cfg,
                                          LocalEngine(), progress=False)
    assert [(r["variant"], r["timed"]) for r in rows] == [
        ("streamed_fit", "extraction + fit"), ("engine:local", "extraction + fit")]
    assert "streamed_fit" not in coreset_bench.CORESET_VARIANTS
    assert "s (extraction + fit)" in coreset_bench.format_row(rows[0])


def test_feature_rows_are_timed_as_the_coreset_alone(tmp_path):
    from anomaly_inspect.config import ModelConfig
    from anomaly_inspect.evaluation.coreset_bench import bench_coreset_features, format_row
    from anomaly_inspect.features.extractor import Features

    rng = np.random.default_rng(0)
    train = Features(patches=rng.normal(size=(4, 4, 4, 8)).astype(np.float32))
    test = Features(patches=rng.normal(size=(4, 4, 4, 8)).astype(np.float32))
    cfg = ModelConfig()
    rows = bench_coreset_features("syn", train, test, np.array([0, 0, 1, 1]), cfg.scorer, [0.5],
                                  ["two_round"], progress=False)
    assert rows[0]["timed"] == "coreset"
    assert "s (coreset)" in format_row(rows[0])


# ---------------------------------------------- --engine-only needs a distributed engine


@pytest.mark.parametrize("engine", [[], ["--engine", "local"]])
def test_engine_only_without_ray_is_refused(capsys, engine):
    assert main(["bench-coreset", "--root", "r", "--category", "c", "--engine-only",
                 *engine]) == 1
    assert _one_line_error(capsys) == ("error: --engine-only applies to a distributed engine "
                                       "(--engine ray) only")
