"""bench-coreset with a distributed engine starts it before the timed fits: the start-up (Ray's
``ray.init``, ~7 s) once counted in the first engine row's seconds alone; it is now the rows'
``engine_start``, on the first engine row (0 on later ones, which reuse the running engine)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from anomaly_inspect.config import ModelConfig
from anomaly_inspect.data.mvtec import load_mvtec
from anomaly_inspect.data.synthetic import generate_dataset
from anomaly_inspect.evaluation import coreset_bench
from anomaly_inspect.pipeline import Runner, build, remote_fit

START_S = 0.6  # the fake engine's start-up


@pytest.fixture()
def fake(tmp_path, monkeypatch):
    """A distributed engine by its members whose start takes START_S, the workers' fit run here
    (each call's own seconds recorded), and a tiny dataset."""
    calls, fit_seconds = [], []

    def start():
        calls.append("start")
        time.sleep(START_S)

    def fit_here(scorer, engine, cfg, paths, max_pixels, progress=None):
        calls.append("fit")
        t = time.perf_counter()
        Runner(build(cfg, progress=False)[1], progress=False).fit({cfg.method: scorer}, paths)
        fit_seconds.append(time.perf_counter() - t)

    monkeypatch.setattr(remote_fit, "fit_bank_remote", fit_here)
    engine = SimpleNamespace(name="fake", in_process=False, shared_storage=True, start=start,
                             map=None, share=None)
    root = generate_dataset(tmp_path / "data", "tiny", n_train=3, n_test_good=2,
                            n_test_per_defect=1, image_size=64).parent
    cfg = ModelConfig.from_dict({"features": {"image_size": 64, "batch_size": 2}}, "test")
    return SimpleNamespace(engine=engine, calls=calls, fit_seconds=fit_seconds,
                           dataset=load_mvtec(root, "tiny"), cfg=cfg)


def test_engine_rows_exclude_the_start_up_and_record_it_once(fake):
    rows = coreset_bench.bench_coreset(fake.dataset, fake.cfg, [0.1, 0.2], ["two_round"],
                                       progress=False, engine=fake.engine)
    engine_rows = [r for r in rows if r["variant"] == "engine:fake"]
    assert fake.calls == ["start", "fit", "fit"]  # started once, before the timed fits
    assert engine_rows[0]["engine_start"] >= START_S
    assert engine_rows[1]["engine_start"] == 0
    for row, own in zip(engine_rows, fake.fit_seconds, strict=True):
        assert row["seconds"] < own + 0.3  # the fit alone, not the start-up
    assert all("engine_start" not in r for r in rows if r["variant"] == "two_round")
    assert "engine start 0.6 s" in coreset_bench.format_row(engine_rows[0])
    assert "engine start" not in coreset_bench.format_row(engine_rows[1])


def test_engine_only_row_excludes_the_start_up(fake):
    rows = coreset_bench.bench_engine_fit(fake.dataset, fake.cfg, fake.engine, progress=False)
    assert [r["variant"] for r in rows] == ["streamed_fit", "engine:fake"]
    assert fake.calls == ["start", "fit"]
    assert rows[1]["engine_start"] >= START_S
    assert rows[1]["seconds"] < fake.fit_seconds[0] + 0.3
    assert "engine_start" not in rows[0]
