"""Distributed fit: round 1 on blocks (as workers run it), round 2 over the union on the driver;
and the same fit through the engine seam on real images (local engine: no Ray needed)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from anomaly_inspect.config import ModelConfig
from anomaly_inspect.core import Features
from anomaly_inspect.features.runtime import graph_signature
from anomaly_inspect.pipeline import LocalEngine
from anomaly_inspect.pipeline.engine import run_task
from anomaly_inspect.pipeline.ray_engine import batch_groups
from anomaly_inspect.pipeline.remote_fit import check_distributed_precision, fit_bank_remote
from anomaly_inspect.scorers.coreset import TwoRoundCoreset, covering_radius, round_one
from anomaly_inspect.scorers.nn_index import PROBE_STREAM, ProbeSample
from anomaly_inspect.scorers.patchcore import PatchCore, image_patches
from layout_writer import write_mvtec

DIAMOND = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]], np.float32)
PLANTED = np.concatenate([c + DIAMOND for c in ([0, 0], [10, 0], [0, 10])]).astype(np.float32)


def _distributed(x, blocks, **kw):
    """Round 1 per block (a worker each), round 2 on the driver; returns sorted positions."""
    params = {"ratio": 0.25, "chunk_size": 6, "first_round_ratio": 0.5, "projection_dim": None,
              "seed": 0, **kw}
    driver = TwoRoundCoreset(params["ratio"], None, params["chunk_size"],
                             params["first_round_ratio"], params["projection_dim"], params["seed"],
                             keep_rows=True)
    for stream, block in enumerate(blocks):
        chunks = round_one(block, **params, stream=stream)
        driver.add_round_one(chunks, block[np.concatenate(chunks)], len(block))
    return driver


def test_planted_clusters_by_hand_across_two_workers():
    # two workers get 6 points each (clusters 0 + half of 1, half of 1 + cluster 2); each keeps
    # 3 (= k); round 2 over the 6 picks one centre per cluster: radius 2, the optimum
    for seed in range(10):
        driver = _distributed(PLANTED, [PLANTED[:6], PLANTED[6:]], seed=seed)
        pos = driver.finish()
        assert len(pos) == 3 and driver.n_seen == 12
        assert {int(i) // 4 for i in pos} == {0, 1, 2}
        assert covering_radius(PLANTED, PLANTED[pos]) == pytest.approx(2.0)
        assert np.array_equal(driver.finish_rows(), PLANTED[pos])  # positions are global


def test_distributed_covers_like_the_one_machine_coreset():
    rng = np.random.default_rng(0)
    centres = rng.uniform(-50, 50, (60, 8))
    x = (centres.repeat(50, 0) + rng.normal(0, 1, (3000, 8))).astype(np.float32)
    x = x[rng.permutation(len(x))]
    local = TwoRoundCoreset(0.05, None, 256, 0.1, None, 0)
    local.add(x)
    dist = _distributed(x, np.array_split(x, 5), ratio=0.05, chunk_size=256,
                        first_round_ratio=0.1)
    a, b = local.finish(), dist.finish()
    assert len(a) == len(b) == 150
    assert covering_radius(x, x[b]) <= 1.25 * covering_radius(x, x[a])


def test_add_round_one_refuses_a_partial_window():
    c = TwoRoundCoreset(0.1, chunk_size=4)
    c.add(np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="partial window"):
        c.add_round_one([np.array([0])], np.zeros((1, 2), np.float32), 4)


def test_round_one_rows_holding_nan_are_refused():
    """A NaN row broke the worker's greedy (picks repeated) and reached the saved bank."""
    x = np.random.default_rng(0).standard_normal((40, 4)).astype(np.float32)
    chunks = round_one(x, 0.5, None, "auto", None, 0)
    bad = x[np.concatenate(chunks)].copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="add_round_one: 1 of 40 rows hold NaN or Inf"):
        TwoRoundCoreset(0.5, chunk_size=None, keep_rows=True).add_round_one(chunks, bad, len(x))


def test_remote_fit_task_names_the_images_whose_features_hold_nan():
    """The distributed fit had no finiteness check (the one-machine fit's Scorer.check_input):
    the worker's task now refuses, before round 1, naming the training images."""
    from types import SimpleNamespace

    from anomaly_inspect.pipeline.remote_fit import RemoteFitTask

    patches = np.random.default_rng(0).standard_normal((3, 4, 4, 8)).astype(np.float32)
    patches[1, 2, 3, 0] = np.inf
    paths = [Path(f"/train/{name}.png") for name in ("a", "b", "c")]
    task = RemoteFitTask({}, 10**8, frozenset({os.fsencode(paths[0])}))
    batch = SimpleNamespace(indices=[0, 1, 2], errors=[])
    task._extractor = SimpleNamespace(
        iter_extract=lambda p: iter([SimpleNamespace(batch=batch, features=Features(patches))]))
    task._scorer = PatchCore(progress=False)
    with pytest.raises(ValueError, match=r"features of 1 training images hold NaN or Inf values: "
                                         r"/train/b\.png$"):
        list(task.run(paths))
    patches[1, 2, 3, 0] = 0.0  # finite: the task runs round 1 on b and c
    (_, part), = task.run(paths)
    assert part.n_rows == 2 * 16 and part.featured == [0]


@pytest.mark.slow
def test_engine_fit_on_real_images_matches_streamed_fit(shared_data):
    """fit_bank_remote through the local engine: workers' code path, no Ray; same bank size
    and close scores to PatchCore.fit_batches on the same bottle images."""
    from anomaly_inspect.config import ModelConfig
    from anomaly_inspect.pipeline import LocalEngine, Runner, build
    from anomaly_inspect.pipeline.remote_fit import fit_bank_remote

    src = shared_data / "mvtec_ad" / "bottle"
    train = sorted((src / "train" / "good").glob("*.png"))[:10]
    test = sorted((src / "test" / "broken_large").glob("*.png"))[:3] + \
        sorted((src / "test" / "good").glob("*.png"))[:3]
    # round 1 oversamples (30 %), as at full size, where a batch holds 13 chunks of ~4,000
    # patches; here a batch of 4 small images is one chunk of 1,024
    cfg = ModelConfig.from_dict({"features": {"image_size": 128, "batch_size": 4},
                                 "scorer": {"first_round_ratio": 0.3}}, "test")
    _, extractor, local = build(cfg, progress=False)
    runner = Runner(extractor, progress=False)
    local.fit_batches(runner.iter_features(train, "train"), len(train))
    _, _, remote = build(cfg, progress=False)
    ok, errors = fit_bank_remote(remote, LocalEngine(), cfg, train, 10**8)
    assert ok == list(range(10)) and errors == []
    assert remote.bank_size == local.bank_size
    # provenance travels from the workers: every item is the training patch it names
    prov, train_feats = remote.provenance, runner.extract(train, "train").features
    assert prov is not None and len(prov) == remote.bank_size
    rows = train_feats.patches[prov.image, prov.cell[:, 0], prov.cell[:, 1]]
    np.testing.assert_allclose(remote.memory_bank, rows, rtol=1e-6)
    # images after the training set ride the same pass; batch 2 holds both kinds
    with_then, alone, got = build(cfg, progress=False)[2], build(cfg, progress=False)[2], []
    fit_bank_remote(with_then, LocalEngine(), cfg, train[:7], 10**8, then=train[7:],
                    on_then=got.append)
    fit_bank_remote(alone, LocalEngine(), cfg, train[:7], 10**8)
    np.testing.assert_array_equal(with_then.memory_bank, alone.memory_bank)
    assert [i for part in got for i in part.indices] == [0, 1, 2]
    np.testing.assert_allclose(np.concatenate([part.features.patches for part in got]),
                               train_feats.patches[7:], atol=1e-4)
    feats = runner.extract(test, "test").features
    s_local, s_remote = local.score(feats).image_scores, remote.score(feats).image_scores
    np.testing.assert_allclose(s_remote, s_local, rtol=0.15)
    for s in (s_local, s_remote):  # both separate the 3 broken bottles from the 3 good ones
        assert s[:3].min() > s[3:].max()


@pytest.mark.slow
def test_fit_on_engine_saves_a_complete_model(shared_data, tmp_path):
    """The distributed fit's driver side (through the local engine): held-out split over the
    listed paths, calibration scored batch by batch, the backbone export saved with the model,
    an unreadable training image skipped with its reason."""
    from anomaly_inspect.config import ModelConfig
    from anomaly_inspect.pipeline import LocalEngine
    from anomaly_inspect.screening import load_model
    from anomaly_inspect.screening.distributed_fit import fit_on_engine

    src = shared_data / "mvtec_ad" / "bottle" / "train" / "good"
    train = sorted(src.glob("*.png"))[:10]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    cfg = ModelConfig.from_dict({"features": {"image_size": 128, "crop_size": 112,
                                              "batch_size": 4}}, "test")

    class CountingEngine(LocalEngine):
        maps = 0

        def map(self, *args, **kwargs):
            CountingEngine.maps += 1
            return super().map(*args, **kwargs)

    model = fit_on_engine([*train, bad], cfg, CountingEngine(), None, 0.2, 0.25, False, 10**8)
    assert CountingEngine.maps == 1  # training and calibration images: one pass, one pool
    info = model.info
    assert len(info.train_images) + len(info.calibration_images) == 10
    assert len(info.calibration_images) in (2, 3) and len(info.skipped_images) == 1
    assert "broken.png" in info.skipped_images[0]["path"]
    assert np.isfinite(model.threshold) and info.display["map_vmax"] > info.display["map_vmin"]
    out = model.save(tmp_path / "model")
    graphs = list((out / "backbone").glob("*.onnx"))  # the driver ran its backbone once,
    assert graphs and all(graph_signature(g)[0] == (3, 112, 112) for g in graphs)  # on crops
    again = load_model(out)
    assert again.scorer.bank_size == model.scorer.bank_size
    for scorer in (model.scorer, again.scorer):  # the width check holds for a distributed bank
        with pytest.raises(ValueError, match="the scorer was fitted on width"):
            scorer.score(Features(patches=np.zeros((1, 4, 4, 7), np.float32)))
    with pytest.raises(ValueError, match="1 calibration images are also training images"):
        fit_on_engine(train, cfg, LocalEngine(), [str(train[0])], 0.2, 0.25, False, 10**8)


# -- batch numbering, shipped copies, location, probes (a random backbone: no real data) --

@pytest.fixture(scope="module")
def widget(tmp_path_factory):
    """12 small training images (batches of 4 at 128 px: 3 batches, 3 x 1,024 patches) and a
    config whose bank (half of them: HNSW from 1,024 items) is searched by HNSW, so that the
    fit checks its graph."""
    root = tmp_path_factory.mktemp("dfit")
    write_mvtec(root, "widget", n_train=12, n_good=1, defects={"scratch": 1}, size=48)
    cfg = ModelConfig.from_dict({"backbone": {"weights": "random", "runtime": "torch"},
                                 "features": {"image_size": 128, "batch_size": 4},
                                 "scorer": {"coreset_ratio": 0.5, "index": "hnsw"}}, "test")
    return cfg, sorted((root / "widget" / "train" / "good").glob("*.png"))


class GroupEngine(LocalEngine):
    """The Ray engine's batching, in this process: the paths cut into the task's batches
    (``batch_groups``), each run on its own and numbered by its first position; with
    ``spool``, from copies of the files under other names there (as shipped bytes are)."""

    def __init__(self, spool: Path | None = None):
        self.spool = spool

    def map(self, task, paths, progress=None):
        task.setup()
        for first, group in batch_groups(paths, task.batch_size):
            group = [Path(os.fsdecode(p)) for p in group]
            copies = None
            if self.spool is not None:
                copies = [self.spool / f"{first + k}_copy.png" for k in range(len(group))]
                for src, dst in zip(group, copies, strict=True):
                    shutil.copyfile(src, dst)
            for _, out in run_task(task, group, copies, first):
                yield out


def _bank(cfg, paths, engine):
    from anomaly_inspect.pipeline import build

    scorer = build(cfg, progress=False)[2]
    ok, errors = fit_bank_remote(scorer, engine, cfg, paths, 10**8)
    assert ok == list(range(len(paths))) and errors == []
    return scorer


def test_bank_does_not_depend_on_batching_copies_or_location(widget, tmp_path):
    """The bank of the distributed fit's task, run once over every path (local engine), per
    batch as Ray runs it, from shipped copies, and on the same files in another folder: one
    bank (round 1 was seeded by the batch's first absolute path: the folder changed it)."""
    cfg, train = widget
    local = _bank(cfg, train, LocalEngine())
    (tmp_path / "spool").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    moved = [Path(shutil.copyfile(p, elsewhere / p.name)) for p in train]
    for other in (_bank(cfg, train, GroupEngine()), _bank(cfg, train, GroupEngine(tmp_path / "spool")),
                  _bank(cfg, moved, LocalEngine())):
        np.testing.assert_array_equal(other.memory_bank, local.memory_bank)
        np.testing.assert_array_equal(other.provenance.cell, local.provenance.cell)
        assert other._nn.graph_m == local._nn.graph_m


def test_distributed_bank_graph_is_checked_on_its_probe_sample(widget, monkeypatch):
    """The distributed fit installs its bank as the local fit does (PatchCore.install_coreset):
    the HNSW graph is checked, on the 1,024 training patches with the smallest keys, each
    batch's keys drawn from (seed, batch number); the summary reports the check (it was
    skipped: no search_graph_m)."""
    from anomaly_inspect.pipeline import Runner, build

    cfg, train = widget
    got = []
    install = PatchCore.install_coreset

    def spy(self, coreset, valid, probes):
        got.append(probes)
        return install(self, coreset, valid, probes)

    monkeypatch.setattr(PatchCore, "install_coreset", spy)
    scorer = _bank(cfg, train, LocalEngine())
    assert scorer.fit_summary()["search_graph_m"] == scorer._nn.graph_m >= 16
    assert scorer._nn.graph_checks  # the check ran: (M, excess) per graph tried
    # by hand: every training patch with its key, the 1,024 smallest
    runner = Runner(build(cfg, progress=False)[1], progress=False)
    rows, keys = [], []
    for batch, feats in enumerate(runner.iter_features(train, "train")):
        patches = image_patches(feats)
        rows.append(patches)
        keys.append(np.random.default_rng((cfg.seed, PROBE_STREAM, batch)).random(len(patches)))
    assert len(rows) == 3 and sum(map(len, rows)) > 1024
    order = np.argsort(np.concatenate(keys), kind="stable")[:1024]
    np.testing.assert_allclose(got[0], np.concatenate(rows)[order], rtol=1e-6)


def test_probe_shares_merge_into_the_rows_with_the_smallest_keys():
    """A batch's share is ProbeSample on the batch's own stream; merged shares keep the rows
    of every batch with the smallest keys (the sample's first on equal keys), whatever the
    grouping."""
    rows = np.arange(8, dtype=np.float32).reshape(4, 2)
    share = ProbeSample(2, seed=0, stream=2).add(rows)
    want = np.random.default_rng((0, PROBE_STREAM, 2)).random(4)
    assert share.rows.tolist() == rows[np.argsort(want)[:2]].tolist()
    x = np.random.default_rng(5).normal(size=(300, 3)).astype(np.float32)
    blocks = np.split(x, [40, 41, 200])
    shares = [ProbeSample(64, seed=3, stream=b).add(block) for b, block in enumerate(blocks)]
    merged = ProbeSample(64)
    for share in shares:
        merged.merge(share)
    keys = np.concatenate([np.random.default_rng((3, PROBE_STREAM, b)).random(len(block))
                           for b, block in enumerate(blocks)])
    assert merged.rows.tobytes() == x[np.argsort(keys, kind="stable")[:64]].tobytes()
    halves = ProbeSample(64).merge(ProbeSample(64).merge(shares[0]).merge(shares[1]))
    halves.merge(ProbeSample(64).merge(shares[2]).merge(shares[3]))
    assert halves.rows.tobytes() == merged.rows.tobytes()
    assert ProbeSample(64).merge(ProbeSample(64)).rows is None  # nothing seen: no sample


def test_distributed_fit_refuses_int8_before_any_batch(widget):
    """One refusal, before the engine is asked for anything."""
    cfg, train = widget
    int8 = ModelConfig.from_dict({**cfg.to_dict(), "backbone": {
        **cfg.to_dict()["backbone"], "runtime": "onnxruntime", "precision": "int8"}})
    check_distributed_precision(cfg)  # f32: passes

    class NoEngine:
        def map(self, *args, **kwargs):
            raise AssertionError("the engine was asked to run")

    scorer = PatchCore(**{**int8.scorer, "seed": int8.seed, "progress": False})
    with pytest.raises(ValueError, match="int8 cannot run on a distributed engine"):
        fit_bank_remote(scorer, NoEngine(), int8, train, 10**8)


def test_ray_fit_bank_is_the_same_on_1_or_2_workers_and_shipped(widget, ray_session):
    """Ray: 1 worker, 2 workers, and --no-shared-storage (it failed: the task took no
    local_copies) all pick the local engine's bank items (the features themselves differ in
    the last bits with the backbone's thread count: 2, 1, 2 here, 1 in this process), check
    its graph, and leave no spool behind."""
    from anomaly_inspect.pipeline.ray_engine import RayEngine
    from test_ray_engine import no_run_folders

    cfg, train = widget
    local = _bank(cfg, train, LocalEngine())
    banks = []
    for engine in (RayEngine(workers=1), RayEngine(workers=2),
                   RayEngine(workers=1, shared_storage=False)):
        remote = _bank(cfg, train, engine)
        np.testing.assert_array_equal(remote.provenance.image, local.provenance.image)
        np.testing.assert_array_equal(remote.provenance.cell, local.provenance.cell)
        np.testing.assert_allclose(remote.memory_bank, local.memory_bank, atol=1e-5)
        assert remote._nn.graph_checks and remote._nn.graph_m == local._nn.graph_m
        banks.append(remote.memory_bank)
    np.testing.assert_array_equal(banks[2], banks[0])  # shipped or by path: 2 threads each
    assert no_run_folders()


def test_bench_coreset_refuses_int8_on_a_distributed_engine_before_extracting(monkeypatch):
    """bench-coreset's local rows would take minutes before the distributed fit refused int8:
    the one refusal runs first."""
    import types

    from anomaly_inspect.config import ModelConfig
    from anomaly_inspect.evaluation import coreset_bench

    cfg = ModelConfig.from_dict({"backbone": {"runtime": "onnxruntime", "precision": "int8"}})
    monkeypatch.setattr(coreset_bench, "build", lambda *a, **k: pytest.fail("extracted first"))
    engine = types.SimpleNamespace(in_process=False)
    with pytest.raises(ValueError, match="int8 cannot run on a distributed engine"):
        coreset_bench.bench_coreset(None, cfg, [0.1], ["two_round"], engine=engine)


def test_distributed_fit_refuses_a_weights_file_without_shared_storage():
    """Workers build the backbone from --weights FILE's path, which --no-shared-storage says
    they cannot see: refused before any batch (they built it from whatever lay there)."""
    from anomaly_inspect.pipeline.remote_fit import extract_parts

    class NoSharedStorage(LocalEngine):
        shared_storage = False

    cfg = ModelConfig.from_dict({"backbone": {"weights": "/models/backbone.pth"}}, "test")
    with pytest.raises(ValueError, match="backbone weights /models/backbone.pth: .*"
                                         "--no-shared-storage"):
        next(extract_parts(NoSharedStorage(), cfg, [Path("a.png")], frozenset(), 10**6))


def test_round_two_is_timed_as_the_fit_stage():
    """Round 2 runs on the driver: timed as ``fit`` (as a local fit's coreset is), not hidden
    in the caller's time for the workers' pass."""
    import time

    from anomaly_inspect.pipeline import remote_fit
    from anomaly_inspect.resources import StageTimes

    class Scorer:
        def install_coreset(self, coreset, valid, probes):
            time.sleep(0.05)

    times = StageTimes()
    remote_fit._finish(Scorer(), None, [0], [], ProbeSample(), 1, times)
    assert times.seconds["fit"] >= 0.05
