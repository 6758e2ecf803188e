"""Distributed fit: round 1 on blocks (as workers run it), round 2 over the union on the driver;
and the same fit through the engine seam on real images (local engine: no Ray needed)."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly_inspect.scorers.coreset import TwoRoundCoreset, covering_radius, round_one

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
    cfg = ModelConfig.from_dict({"features": {"image_size": 128, "batch_size": 4}}, "test")

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
    assert list((out / "backbone").glob("*.onnx"))  # the driver ran its backbone once
    again = load_model(out)
    assert again.scorer.bank_size == model.scorer.bank_size
    with pytest.raises(ValueError, match="1 calibration images are also training images"):
        fit_on_engine(train, cfg, LocalEngine(), [str(train[0])], 0.2, 0.25, False, 10**8)
