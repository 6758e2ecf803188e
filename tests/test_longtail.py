"""Long-tailed noisy split builder: counts, manifests, reproducibility; evaluate-lt end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from anomaly_inspect.cli import main
from anomaly_inspect.data.layout import resolve_category_dirs as resolve_categories
from anomaly_inspect.data.longtail import LongTailSet, build_longtail, manifest_name, pareto_profile
from anomaly_inspect.data.mvtec import AnomalyDataset
from anomaly_inspect.data.samples import Sample


def fake_datasets(root: Path, sizes: dict[str, tuple[int, int]]):
    """Category -> (n_train, n_anomalous) datasets of paths (files need not exist for the builder)."""
    datasets, dirs = {}, {}
    for c, (n_train, n_anom) in sizes.items():
        d = root / c
        train = [Sample(d / "train/good" / f"{i:03d}.png", 0, "train", "good") for i in range(n_train)]
        test = [Sample(d / "test/good" / f"{i:03d}.png", 0, "test", "good") for i in range(5)]
        test += [Sample(d / "test/crack" / f"{i:03d}.png", 1, "test", "crack") for i in range(n_anom)]
        datasets[c], dirs[c] = AnomalyDataset(c, train, test), d
    return datasets, dirs


SIZES = {"a": (200, 30), "b": (100, 5), "c": (60, 20), "d": (50, 20), "e": (40, 20)}


def test_step_counts(tmp_path):
    ds, dirs = fake_datasets(tmp_path, SIZES)
    split = build_longtail(ds, dirs, "step", k=4, noise=0.1, seed=0)
    assert len(split.tail_classes) == 3  # round(0.6 * 5)
    for c, v in split.counts.items():
        if c in split.tail_classes:
            assert (v["good"], v["noise"]) == (4, 0)
        else:
            assert v["good"] == SIZES[c][0]
            assert v["noise"] == min(SIZES[c][1], round(0.1 * SIZES[c][0]))
    assert len(split.train) == sum(v["good"] + v["noise"] for v in split.counts.values())
    noisy = [t for t in split.train if t["noise"]]
    assert all(t["path"].startswith("test/crack/") for t in noisy)
    assert sum(len(v) for v in split.removed_from_test.values()) == len(noisy)


def test_pareto_counts(tmp_path):
    ds, dirs = fake_datasets(tmp_path, SIZES)
    split = build_longtail(ds, dirs, "pareto", noise=0.1, seed=3)
    good = {c: v["good"] for c, v in split.counts.items()}
    assert all(5 <= good[c] <= SIZES[c][0] for c in SIZES)
    shares = np.sort(pareto_profile(5))[::-1]
    assert shares[0] == shares.max() and np.all(np.diff(shares) < 0)
    assert max(good[c] / SIZES[c][0] for c in SIZES) == 1.0  # the largest share keeps all
    total_noise = sum(v["noise"] for v in split.counts.values())
    assert total_noise <= int(np.floor(0.1 * sum(good.values()) + 0.5))  # round half up
    assert all(split.counts[c]["noise"] == 0 for c in SIZES if good[c] < 20)
    assert split.tail_classes == sorted(c for c in SIZES if good[c] < 20)
    # three categories: shares 1, .128, .027 -> no class under 20 here; the smallest share is tail
    three = {"a": (1000, 200), "b": (1000, 200), "c": (1000, 200)}
    ds, dirs = fake_datasets(tmp_path / "3", three)
    split = build_longtail(ds, dirs, "pareto", noise=0.1, seed=0)
    good = {c: v["good"] for c, v in split.counts.items()}
    assert sorted(good.values()) == [27, 128, 1000]  # 1000 x (.0265, .128, 1)
    assert split.tail_classes == [min(good, key=good.get)]


def test_manifest_reproducible_and_roundtrip(tmp_path):
    ds, dirs = fake_datasets(tmp_path, SIZES)
    a = build_longtail(ds, dirs, "step", k=1, noise=0.1, seed=7)
    b = build_longtail(ds, dirs, "step", k=1, noise=0.1, seed=7)
    c = build_longtail(ds, dirs, "step", k=1, noise=0.1, seed=8)
    assert a.to_dict() == b.to_dict()
    assert a.to_dict() != c.to_dict()
    path = a.save(tmp_path / "datasets" / manifest_name("step", 1, 0.1, 7, list(SIZES)))
    assert path.name == "lt_step_k1_noise0.1_seed7_a-b-c-d-e.json"
    back = LongTailSet.load(path)
    assert back.to_dict() == a.to_dict()
    assert back.same_recipe("step", 1, 0.1, 7, False, list(SIZES))
    assert not back.same_recipe("step", 4, 0.1, 7, False, list(SIZES))


def test_injected_images_leave_the_test_set_unless_overlap(tmp_path):
    ds, dirs = fake_datasets(tmp_path, SIZES)
    split = build_longtail(ds, dirs, "step", k=4, noise=0.1, seed=0)
    head = next(c for c in SIZES if c not in split.tail_classes)
    n_removed = len(split.removed_from_test[head])
    assert n_removed > 0
    assert len(split.test_samples(ds[head], dirs[head])) == len(ds[head].test) - n_removed
    split.overlap = True
    assert len(split.test_samples(ds[head], dirs[head])) == len(ds[head].test)


def test_bad_inputs(tmp_path):
    ds, dirs = fake_datasets(tmp_path, SIZES)
    with pytest.raises(ValueError, match="tail kind"):
        build_longtail(ds, dirs, "zipf")
    with pytest.raises(ValueError, match="noise"):
        build_longtail(ds, dirs, noise=1.5)
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="bad.json"):
        LongTailSet.load(bad)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        LongTailSet.load(tmp_path / "missing.json")
    split = build_longtail(ds, dirs, seed=0)
    with pytest.raises(FileNotFoundError, match="missing"):
        split.train_samples(dirs)  # fake paths do not exist


def test_resolve_categories(tmp_path):
    for c in ("x", "y"):
        (tmp_path / "r1" / c / "train").mkdir(parents=True)
    (tmp_path / "z" / "train").mkdir(parents=True)
    got = resolve_categories([str(tmp_path / "r1"), f"w={tmp_path / 'z'}", str(tmp_path / "z")],
                             ["x", "y", "w", "z"])
    assert got == {"x": tmp_path / "r1/x", "y": tmp_path / "r1/y", "w": tmp_path / "z", "z": tmp_path / "z"}
    with pytest.raises(ValueError, match="'q'"):
        resolve_categories([str(tmp_path / "r1")], ["q"])


def mini_layout(shared: Path, dst: Path, n_train: int = 24, n_test: int = 6) -> Path:
    """A small MVTec layout of symlinks to the real images (nothing copied)."""
    picks = {"bottle": shared / "mvtec_ad/bottle", "screw": shared / "mvtec_ad/screw",
             "magnetic_tile": shared / "magnetic_tile/magnetic_tile"}
    for c, src in picks.items():
        for sub in ["train/good"] + [f"test/{d.name}" for d in sorted((src / "test").iterdir())]:
            files = sorted((src / sub).iterdir())
            take = n_train if sub.startswith("train") else n_test
            (dst / c / sub).mkdir(parents=True)
            for f in files[:: max(1, len(files) // take)][:take]:
                (dst / c / sub / f.name).symlink_to(f)
    return dst


@pytest.mark.slow
def test_evaluate_lt_end_to_end(shared_data, tmp_path, monkeypatch):
    root = mini_layout(shared_data, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "lt.json"
    args = ["evaluate-lt", "--root", str(root), "--categories", "bottle,screw,magnetic_tile",
            "--tail", "step", "--k", "4", "--noise", "0.1", "--seed", "0", "--image-size", "128",
            "--tail-views", "rotflip", "--output-json", str(out), "--quiet"]
    assert main(args) == 0
    report = json.loads(out.read_text())
    got = {(r["method"], r["category"]) for r in report["results"]}
    assert got == {(m, c) for m in ("patchcore", "softpatch", "tailedcore")
                   for c in ("bottle", "screw", "magnetic_tile")}
    assert all(0.0 <= r["image_auroc"] <= 1.0 for r in report["results"])
    # bottle defects are obvious: every method must separate them even on this small set
    assert all(r["image_auroc"] > 0.9 for r in report["results"] if r["category"] == "bottle")
    est = report["class_size_estimates"]
    assert set(est["per_class"]) == {"bottle", "screw", "magnetic_tile"}
    split = report["split"]
    assert sum(est["histogram"]) == split["n_train"]
    tc = report["methods"]["tailedcore"]
    assert tc["memory_bank_items"] == tc["tail_items"] + tc["head_items"]
    manifest = tmp_path / "datasets" / manifest_name("step", 4, 0.1, 0, ["bottle", "screw", "magnetic_tile"])
    first = manifest.read_text()
    # the head class (the one not a tail) received real anomalies, and they left its test set
    head = [c for c in ("bottle", "screw", "magnetic_tile") if c not in split["tail_classes"]]
    assert len(head) == 1 and split["counts"][head[0]]["noise"] > 0
    n_test = {r["category"]: r["n_test"] for r in report["results"]}
    assert n_test[head[0]] == len(list((root / head[0] / "test").rglob("*.*"))) - split["counts"][head[0]]["noise"]
    assert report["methods"]["softpatch"]["params"]["soft_weight"] is False
    # a second run re-uses the manifest (same split); the config's scorer section reaches
    # the methods that take its keys (soft_weight: SoftPatch only)
    cfg = tmp_path / "soft.yaml"
    cfg.write_text("scorer: {soft_weight: true, lof_k: 5}\n")
    assert main(args[:-3] + ["--methods", "patchcore,softpatch", "--config", str(cfg),
                             "--output-json", str(out), "--quiet"]) == 0
    assert manifest.read_text() == first
    methods = json.loads(out.read_text())["methods"]
    assert methods["softpatch"]["params"]["soft_weight"] is True
    assert methods["softpatch"]["params"]["lof_k"] == 5 and "lof_k" not in methods["patchcore"]["params"]


def test_scorer_params_merge_and_reject_unknown_keys():
    from anomaly_inspect.scorers import merge_scorer_params as scorer_params

    got = scorer_params({"coreset_ratio": 0.2, "soft_weight": True}, ["patchcore", "softpatch"],
                        {"coreset_ratio": 0.01, "chunk_size": None})
    assert got == {"coreset_ratio": 0.01, "soft_weight": True}
    with pytest.raises(ValueError, match=r"\['sof_weight'\] are not parameters"):
        scorer_params({"sof_weight": True}, ["patchcore", "softpatch"], {})


def test_evaluate_lt_bad_arguments(tmp_path, capsys):
    (tmp_path / "r" / "x" / "train").mkdir(parents=True)
    base = ["evaluate-lt", "--root", str(tmp_path / "r"), "--manifest-dir", str(tmp_path / "m")]
    assert main(base + ["--categories", "x,y", "--methods", "patchcore,nope"]) == 1
    assert "unknown method 'nope'" in capsys.readouterr().err
    assert main(base + ["--categories", "x,y"]) == 1
    assert "category 'y'" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_evaluate_lt_refuses_a_category_left_without_anomalies_before_extracting(tmp_path):
    from anomaly_inspect.config import ModelConfig
    from anomaly_inspect.evaluation.longtail import evaluate_longtail

    ds, dirs = fake_datasets(tmp_path, {"a": (40, 3), "b": (30, 20), "c": (30, 20)})
    split = build_longtail(ds, dirs, "step", k=4, noise=0.1, seed=0)
    head = next(c for c in ("a", "b", "c") if c not in split.tail_classes)
    split.removed_from_test[head] = [s.path.relative_to(dirs[head]).as_posix()
                                     for s in ds[head].test if s.label == 1]
    # the files do not exist: refused before any image is read
    with pytest.raises(ValueError, match=rf"{head}: the long-tailed split leaves its test set 0 "
                                         rf"anomalous and 5 normal images"):
        evaluate_longtail(split, ds, dirs, ModelConfig(), ["patchcore"], progress=False)
