"""evaluate-lt writes no manifest for a refused split; folder defect groups are one per
anomalous folder; TailedCore's view passes count in backbone / embed, not fit."""

from __future__ import annotations

import shutil
import time

import pytest

from anomaly_inspect.cli import main
from layout_writer import noise_layout, rgb_image, write_image


def _no_backbone(monkeypatch):
    from anomaly_inspect.evaluation import longtail as evaluation

    def built(*args, **kwargs):
        raise RuntimeError("the backbone was built")

    monkeypatch.setattr(evaluation, "build_backbone", built)


def test_evaluate_lt_refused_split_writes_no_manifest_and_the_corrected_rerun_runs(
        tmp_path, monkeypatch, capsys):
    """A category whose test set has only normal images was refused after its manifest was
    written, and that manifest then refused the run with anomalies added."""
    _no_backbone(monkeypatch)
    root = noise_layout(tmp_path / "r")
    crack = root / "z" / "test" / "crack"
    kept = shutil.move(crack, tmp_path / "crack")
    man = tmp_path / "m"
    args = ["evaluate-lt", "--root", str(root), "--categories", "x,y,z", "--methods", "patchcore",
            "--manifest-dir", str(man), "--quiet"]
    assert main(args) == 1
    assert "z: the long-tailed split leaves its test set 0 anomalous and 3 normal" in capsys.readouterr().err
    assert not man.exists() or not any(man.iterdir())
    shutil.move(kept, crack)
    assert main(args) == 1
    assert "the backbone was built" in capsys.readouterr().err  # past every check
    assert len(list(man.glob("lt_*.json"))) == 1


def test_evaluate_lt_unreadable_image_writes_no_manifest(tmp_path, monkeypatch, capsys):
    _no_backbone(monkeypatch)
    root = noise_layout(tmp_path / "r")
    bad = root / "y" / "test" / "good" / "000.png"
    bad.write_bytes(bad.read_bytes()[:40])
    man = tmp_path / "m"
    assert main(["evaluate-lt", "--root", str(root), "--categories", "x,y,z", "--methods",
                 "patchcore", "--manifest-dir", str(man), "--quiet"]) == 1
    assert f"y: 1 file(s) cannot be used:\n  {bad}" in capsys.readouterr().err
    assert not man.exists() or not any(man.iterdir())


def _images(folder, n=2, seed=0):
    for i in range(n):
        write_image(folder / f"{folder.parent.name}_{i}.png", rgb_image(16, seed + i))
    return folder


def test_folder_defect_groups_are_one_per_anomalous_folder(tmp_path):
    from anomaly_inspect.data.folder import load_folders

    train = _images(tmp_path / "train" / "ok")
    normal = _images(tmp_path / "test" / "ok", seed=5)
    a, b = _images(tmp_path / "a" / "bad", seed=10), _images(tmp_path / "b" / "bad", seed=20)
    hole = _images(tmp_path / "c" / "hole", seed=30)
    d = load_folders(train, normal, [a, b, hole])
    assert d.groups == ["a/bad", "b/bad", "good", "hole"]  # clashing names get their parent
    assert {(s.path.parent, s.group) for s in d.test if s.label} == {
        (a, "a/bad"), (b, "b/bad"), (hole, "hole")}
    deep = [_images(tmp_path / p / "x" / "bad", seed=40 + 3 * i) for i, p in enumerate("pq")]
    assert load_folders(train, normal, deep).groups == ["good", "p/x/bad", "q/x/bad"]
    # an anomalous folder called good is never the normal images' group
    named_good = _images(tmp_path / "fold" / "good", seed=50)
    d = load_folders(train, normal, [named_good])
    assert sorted({(s.group, s.label) for s in d.test}) == [("fold/good", 1), ("good", 0)]


def test_tailedcore_view_passes_count_in_backbone_not_fit(tmp_path):
    """The rotated / flipped views' backbone passes were timed as the scorer's fit."""
    import torch.nn.functional as F

    from anomaly_inspect.core import FitContext
    from anomaly_inspect.data.transforms import TransformConfig
    from anomaly_inspect.features.extractor import FeatureExtractor
    from anomaly_inspect.features.views import view_params
    from anomaly_inspect.pipeline import Runner

    pause = 0.05

    class SlowBackbone:  # two pooled "stages"; each pass takes ``pause``
        def transform_config(self, size, crop, resize, max_pixels):
            return TransformConfig(size, crop, resize=resize, max_pixels=max_pixels)

        def __call__(self, images):
            time.sleep(pause)
            return [F.avg_pool2d(images, 4), F.avg_pool2d(images, 8)]

    class ReadsViews:  # a scorer that reads the tail views at fit and does nothing else
        fit_views = "rotflip"

        def fit(self, features, labels=None, context=None):
            self.rows = sum(len(f) for f in context.views.iter_views([0, 1]))

        def fit_summary(self):
            return {}

    paths = [write_image(tmp_path / f"{i}.png", rgb_image(32, i)) for i in range(2)]
    ex = FeatureExtractor(SlowBackbone(), image_size=32, batch_size=2)
    runner = Runner(ex, progress=False)
    scorer = ReadsViews()
    context = runner.fit_context({"s": scorer}, paths, FitContext())
    start = time.perf_counter()
    runner.fit_features({"s": scorer}, None, context=context)  # features unread
    wall = time.perf_counter() - start
    n_views = len(view_params("rotflip"))
    assert scorer.rows == 2 * n_views
    times = runner.times.seconds
    assert times["backbone"] >= n_views * pause and times["embed"] > 0
    assert times["fit"] < n_views * pause / 2  # the scorer's own work: none here (was >= 7 pauses)
    assert sum(times.values()) == pytest.approx(wall, abs=0.02)  # the stages still sum to the total
