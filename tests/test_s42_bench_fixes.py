"""Benchmark commands' fixes: bench-scale counts only the images it scored (unreadable ones are
an ``errors`` count, all of them a refusal); bench-coreset's rows say what their seconds time
(the --engine-only one-machine row is extraction + fit, not the coreset alone), --engine-only
needs --engine ray, and a ratio or a worker count given twice is refused."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from anomaly_inspect.cli import main
from anomaly_inspect.screening import scale_bench
from anomaly_inspect.screening.model import ScoredImage
from layout_writer import stub_model_dir


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err.strip()


# ------------------------------------------------------ 1. bench-scale: unreadable images


class _Batch:
    def __init__(self, rows):
        self.images = rows


class _Model:
    """Scores a batch of 4: the paths named ``bad*`` come back as error rows, as unreadable
    images do from ``Model.iter_score``."""

    class extractor:  # noqa: N801  (the attribute run_one reads)
        batch_size = 4

    def iter_score(self, paths, **kwargs):
        for s in range(0, len(paths), 4):
            yield _Batch([ScoredImage(p, float("nan"), float("nan"), None,
                                      "cannot identify image file") if "bad" in p else
                          ScoredImage(p, 1.0, 0.5, False) for p in paths[s:s + 4]])


def _run(tmp_path, monkeypatch, names):
    import anomaly_inspect.screening.model as model_module

    monkeypatch.setattr(model_module, "load_model", lambda directory, **kw: _Model())
    (tmp_path / "paths.txt").write_text("\n".join(names))
    started = time.perf_counter() - 10  # the run's process started 10 s ago
    row = scale_bench.run_one(str(tmp_path / "m"), str(tmp_path / "paths.txt"), "local", None,
                              started=started)
    row.update(round=0, load_before=0.0, load_after=0.0)
    return row


def test_run_one_counts_only_the_scored_images(tmp_path, monkeypatch):
    """8 random-byte files gave '40 img overall 11.26 img/s': error rows were counted."""
    row = _run(tmp_path, monkeypatch, [f"bad{i}.png" if i % 4 == 0 else f"{i}.png"
                                       for i in range(40)])
    assert row["images"] == 30 and row["errors"] == 10
    assert row["first_error"] == "bad0.png: cannot identify image file"
    assert row["overall_img_s"] == pytest.approx(30 / row["total_s"], rel=0.01)
    assert "   30 img (10 unreadable)" in scale_bench.format_row(row, [row])


def test_a_run_that_read_no_image_prints_without_dividing_by_zero(tmp_path, monkeypatch):
    row = _run(tmp_path, monkeypatch, [f"bad{i}.png" for i in range(8)])
    assert row["images"] == 0 and row["errors"] == 8 and row["overall_img_s"] == 0.0
    assert "0 img (8 unreadable)" in scale_bench.format_row(row, [row])
    assert "(xnan local)" in scale_bench.format_row(row, [row])


def _row(engine, workers, images, errors):
    return {"engine": engine, "workers": workers, "images": images, "errors": errors,
            **({"first_error": "x/bad.png: cannot identify image file"} if errors else {}),
            "batch_size": 4, "init_s": 0.0, "first_batch_s": 0.1, "startup_s": 0.2,
            "total_s": 1.0, "steady_img_s": None, "overall_img_s": float(images),
            "driver_peak_rss_mb": 1.0, "worker_peak_rss_mb": 0.0, "worker_processes": 0,
            "round": 0, "load_before": 0.0, "load_after": 0.0}


def _bench_scale(tmp_path, monkeypatch, rows):
    monkeypatch.setattr("anomaly_inspect.pipeline.ray_engine.import_ray", lambda: None)
    monkeypatch.setattr(scale_bench, "bench_scale", lambda *a, **k: rows)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a.png").write_bytes(b"x")
    return main(["bench-scale", str(stub_model_dir(tmp_path / "model")), str(tmp_path / "x"),
                 "--images", "8", "--workers", "1", "--quiet"])


def test_bench_scale_refuses_when_every_image_failed(tmp_path, monkeypatch, capsys):
    assert _bench_scale(tmp_path, monkeypatch, [_row("local", None, 0, 8),
                                                _row("ray", 1, 0, 8)]) == 1
    assert _one_line_error(capsys) == (
        "error: no image could be read in 2 of 2 bench-scale runs (first: local: "
        "x/bad.png: cannot identify image file)")


def test_bench_scale_warns_with_the_count_when_some_images_failed(tmp_path, monkeypatch, capsys,
                                                                  caplog):
    with caplog.at_level(logging.WARNING):
        assert _bench_scale(tmp_path, monkeypatch, [_row("local", None, 6, 2),
                                                    _row("ray", 1, 6, 2)]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["2 of 8 images could not be read in 2 of 2 bench-scale runs (first: "
                        "local: x/bad.png: cannot identify image file); the rates count the "
                        "scored images only"]
    assert "6 img (2 unreadable)" in capsys.readouterr().out


# ------------------------------------------ 2. bench-coreset: what each row's seconds time


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


# ---------------------------------------------- 3. --engine-only needs a distributed engine


@pytest.mark.parametrize("engine", [[], ["--engine", "local"]])
def test_engine_only_without_ray_is_refused(capsys, engine):
    assert main(["bench-coreset", "--root", "r", "--category", "c", "--engine-only",
                 *engine]) == 1
    assert _one_line_error(capsys) == ("error: --engine-only applies to a distributed engine "
                                       "(--engine ray) only")


# ------------------------------------------------------ 5. a value given twice in a list


@pytest.mark.parametrize("argv, message", [
    (["bench-coreset", "--root", "r", "--category", "c", "--ratios", "0.1,0.25,0.10"],
     "argument --ratios: 0.1 given twice in '0.1,0.25,0.10'; each ratio is one row"),
    (["bench-scale", "m", "x", "--workers", "1,2,1"],
     "argument --workers: 1 given twice in '1,2,1'; each value is one run"),
])
def test_a_value_given_twice_is_refused_when_parsed(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and message in err, err
