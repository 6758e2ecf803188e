"""Long-tailed noisy split builder: counts, manifests, reproducibility; evaluate-lt end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from anomaly_inspect.cli import main
from anomaly_inspect.config import ModelConfig
from anomaly_inspect.data.layout import resolve_category_dirs
from anomaly_inspect.data.layout import resolve_category_dirs as resolve_categories
from anomaly_inspect.data.longtail import LongTailSet, build_longtail, manifest_name, pareto_profile
from anomaly_inspect.data.mvtec import AnomalyDataset
from anomaly_inspect.data.samples import Sample
from anomaly_inspect.evaluation.longtail import class_size_report
from anomaly_inspect.scorers.tail_sampler import TailSamplerResult
from layout_writer import fake_datasets, noise_layout

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
    assert len(split.test_samples(head, ds[head], dirs[head])) == len(ds[head].test) - n_removed
    split.overlap = True
    assert len(split.test_samples(head, ds[head], dirs[head])) == len(ds[head].test)


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
    (tmp_path / "w" / "train").mkdir(parents=True)
    got = resolve_categories([str(tmp_path / "r1"), f"w={tmp_path / 'w'}", str(tmp_path / "z")],
                             ["x", "y", "w", "z"])
    assert got == {"x": tmp_path / "r1/x", "y": tmp_path / "r1/y", "w": tmp_path / "w", "z": tmp_path / "z"}
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
    assert main(args[:-5] + ["--methods", "patchcore,softpatch", "--config", str(cfg),  # no --tail-views
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


# -- manifests: data checks, validation, test leaks, recipe flags ------------------------------
def test_saved_manifest_is_refused_on_other_data_and_reused_on_the_same(tmp_path):
    from anomaly_inspect.data.longtail import load_or_build_longtail

    small, dirs = fake_datasets(tmp_path, {"a": (24, 6), "b": (24, 6), "c": (24, 6)})
    first = load_or_build_longtail(small, dirs, "pareto", 4, 0.1, 0, False, tmp_path / "m")
    assert first.sources["a"]["train"] == 24 and first.sources["a"]["anomalies"] == 6
    again = load_or_build_longtail(small, dirs, "pareto", 4, 0.1, 0, False, tmp_path / "m")
    assert again.to_dict() == first.to_dict()  # same data: re-read
    big, _ = fake_datasets(tmp_path, {"a": (209, 63), "b": (24, 6), "c": (24, 6)})
    with pytest.raises(ValueError, match=r"lt_pareto_noise0\.1_seed0_a-b-c\.json: manifest was drawn "
                                         r"from other data than found now \(a: 24 training images and "
                                         r"6 anomalies then, 209 and 63 now\)"):
        load_or_build_longtail(big, dirs, "pareto", 4, 0.1, 0, False, tmp_path / "m")
    renamed = {c: AnomalyDataset(c, [Sample(s.path.with_name("x" + s.path.name), 0, "train", "good")
                                     for s in d.train], d.test) for c, d in small.items()}
    with pytest.raises(ValueError, match=r"\(a: as many images, other file names; b: .*; c: .*\)"):
        load_or_build_longtail(renamed, dirs, "pareto", 4, 0.1, 0, False, tmp_path / "m")


def test_manifest_of_an_older_version_is_checked_by_rebuilding_it(tmp_path):
    from anomaly_inspect.data.longtail import load_or_build_longtail

    ds, dirs = fake_datasets(tmp_path, SIZES)
    path = tmp_path / "m" / manifest_name("step", 4, 0.1, 0, list(SIZES))
    old = build_longtail(ds, dirs, "step", k=4, noise=0.1, seed=0).to_dict()
    del old["sources"]  # as written before manifests recorded their data
    path.parent.mkdir()
    path.write_text(json.dumps(old))
    split = load_or_build_longtail(ds, dirs, "step", 4, 0.1, 0, False, tmp_path / "m")
    assert split.sources == {} and split.train == old["train"]
    assert json.loads(path.read_text()) == old  # re-used as it is, not rewritten
    other, _ = fake_datasets(tmp_path, {**SIZES, "a": (150, 30)})
    with pytest.raises(ValueError, match=r"has no record of its data \(older version\) and differs "
                                         r"from the split rebuilt now \(a: \{'original': 200, "
                                         r"'good': 200, 'noise': 20\} in the manifest, \{'original': "
                                         r"150, 'good': 150, 'noise': 15\} rebuilt\)"):
        load_or_build_longtail(other, dirs, "step", 4, 0.1, 0, False, tmp_path / "m")


def test_an_overlap_split_records_nothing_removed_and_older_overlap_manifests_are_reused(tmp_path):
    """With overlap the injected images stay in the test set, so the manifest lists none as
    removed; a manifest written before (listing them, no sources, like the committed ones) is
    re-used as it is."""
    from anomaly_inspect.data.longtail import load_or_build_longtail

    ds, dirs = fake_datasets(tmp_path, SIZES)
    split = build_longtail(ds, dirs, "step", k=4, noise=0.1, seed=0, overlap=True)
    assert sum(c["noise"] for c in split.counts.values()) > 0
    assert split.removed_from_test == {c: [] for c in SIZES}
    old = split.to_dict()
    del old["sources"]
    old["removed_from_test"] = {c: [i["path"] for i in split.train if i["category"] == c and i["noise"]]
                                for c in SIZES}
    path = tmp_path / "m" / manifest_name("step", 4, 0.1, 0, list(SIZES), overlap=True)
    path.parent.mkdir()
    path.write_text(json.dumps(old))
    again = load_or_build_longtail(ds, dirs, "step", 4, 0.1, 0, True, tmp_path / "m")
    assert again.removed_from_test == old["removed_from_test"]
    assert len(again.test_samples("a", ds["a"], dirs["a"])) == len(ds["a"].test)
    assert json.loads(path.read_text()) == old


def test_injected_images_leave_the_test_set_whatever_the_dataset_is_called(tmp_path):
    ds, dirs = fake_datasets(tmp_path, SIZES)
    for c, d in ds.items():
        d.name = f"{c}_256"  # the folder name (load_mvtec's), not the category key
    split = build_longtail(ds, dirs, "step", k=4, noise=0.1, seed=0)
    head = next(c for c in SIZES if c not in split.tail_classes)
    injected = set(split.removed_from_test[head])
    test = {s.path.relative_to(dirs[head]).as_posix() for s in split.test_samples(head, ds[head], dirs[head])}
    assert len(injected) == 20 and not injected & test and len(test) == len(ds[head].test) - 20
    split.removed_from_test[head] = []  # an in-memory split that forgot them: refused
    with pytest.raises(ValueError, match=rf"{head}: 20 training image\(s\) also in the test set "
                                         r"\(first: .*test/crack/\d+\.png\) although overlap is off"):
        split.test_samples(head, ds[head], dirs[head])


def test_evaluate_longtail_refuses_training_images_in_the_test_set_before_extracting(tmp_path):
    from anomaly_inspect.config import ModelConfig
    from anomaly_inspect.evaluation.longtail import evaluate_longtail

    ds, dirs = fake_datasets(tmp_path, SIZES)
    split = build_longtail(ds, dirs, "step", k=4, noise=0.1, seed=0)
    head = next(c for c in SIZES if c not in split.tail_classes)
    split.removed_from_test[head] = split.removed_from_test[head][1:]
    with pytest.raises(ValueError, match=rf"{head}: 1 training image\(s\) also in the test set"):
        evaluate_longtail(split, ds, dirs, ModelConfig(), ["patchcore"], progress=False)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: m["train"][0].update(category="A"),
     r"train entry 0 \(train/good/\d+\.png\) has category 'A', not one of \['a', 'b', 'c'\]"),
    (lambda m: m["counts"].pop("b"), r"counts must have one entry per category \['a', 'b', 'c'\], got \['a', 'c'\]"),
    (lambda m: m["train"][0].pop("noise"), r"train entry 0 must have exactly the keys category, path, noise"),
    (lambda m: m["counts"]["a"].update(good=3),
     r"category 'a': counts say \{'good': 3, 'noise': \d+\}, the train entries hold \{'good': \d+"),
    (lambda m: m.update(removed_from_test={}),
     r"category '\w': removed_from_test must list exactly its injected \(noise\) training images"),
    (lambda m: m["train"].append(dict(m["train"][0])), r"category 'a' lists a training image twice"),
    (lambda m: m.update(k=None), r"k must be a whole number >= 1 for a step tail and null for pareto"),
    (lambda m: m["sources"].pop("c"), r"sources must give train, anomalies and sha256 for every category"),
    # field types, as config files are checked (seed and noise were not checked at all)
    (lambda m: m.update(overlap="no"), r"overlap: expected true or false, got 'no'"),
    (lambda m: m.update(categories="abc"), r"categories: expected a list of strings, got 'abc'"),
    (lambda m: m.update(seed="0"), r"seed: expected an integer, got '0'"),
    (lambda m: m.update(k=True), r"k: expected an integer or null, got True"),
    (lambda m: m.update(counts=[]), r"counts: expected a mapping, got \[\]"),
])
def test_malformed_manifests_are_refused_naming_the_file(tmp_path, edit, message):
    ds, dirs = fake_datasets(tmp_path, {"a": (50, 20), "b": (50, 20), "c": (50, 20)})
    manifest = build_longtail(ds, dirs, "step", k=4, noise=0.1, seed=0).to_dict()
    assert any(manifest["removed_from_test"].values())  # so dropping them is a leak
    edit(manifest)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=rf"bad\.json: malformed long-tail manifest: {message}"):
        LongTailSet.load(path)


def _fake_layout(root: Path, categories=("x", "y", "z")) -> Path:
    """Empty files in an MVTec layout (enough for the split; never read as images)."""
    for c in categories:
        for sub, n in (("train/good", 30), ("test/good", 3), ("test/crack", 10)):
            (root / c / sub).mkdir(parents=True)
            for i in range(n):
                (root / c / sub / f"{i:03d}.png").write_bytes(b"")
    return root


def test_evaluate_lt_refuses_recipe_flags_that_contradict_the_manifest(tmp_path, monkeypatch, capsys):
    from anomaly_inspect.data.mvtec import load_mvtec
    from anomaly_inspect.evaluation import longtail as evaluation

    root = _fake_layout(tmp_path / "r")
    dirs = {c: root / c for c in ("x", "y", "z")}
    split = build_longtail({c: load_mvtec(d) for c, d in dirs.items()}, dirs, "pareto", noise=0.1, seed=0)
    manifest = split.save(tmp_path / "lt.json")

    def reached(split, *args, **kwargs):
        raise RuntimeError(f"evaluating the {split.tail} split")

    monkeypatch.setattr(evaluation, "evaluate_longtail", reached)
    base = ["evaluate-lt", "--root", str(root), "--categories", "x,y,z", "--manifest", str(manifest)]
    for flags, message in ((["--tail", "step"], "--tail step conflicts with --manifest"),
                           (["--noise", "0.2"], "--noise 0.2 conflicts with --manifest"),
                           (["--k", "4"], "--k 4 conflicts with --manifest"),
                           (["--overlap"], "--overlap conflicts with --manifest")):
        assert main(base + flags) == 1
        err = capsys.readouterr().err
        assert message in err and str(manifest) in err and "leave --" in err, err
    assert "which has tail = pareto" in (main(base + ["--tail", "step"]), capsys.readouterr().err)[1]
    for flags in ([], ["--tail", "pareto", "--noise", "0.1"]):  # left out, or as in the manifest
        assert main(base + flags) == 1
        assert "evaluating the pareto split" in capsys.readouterr().err
    # the manifest is checked against the data too
    (root / "x" / "train" / "good" / "999.png").write_bytes(b"")
    assert main(base) == 1
    assert "x: 30 training images and 10 anomalies then, 31 and 10 now" in capsys.readouterr().err


@pytest.mark.slow
def test_class_size_report_is_tailedcores_own_tail_sampler_run(shared_data, tmp_path, monkeypatch):
    """The report's class sizes come from the one TailSampler run of the fitted TailedCore (the
    config's tail_keep / tail_mass / embedding); without TailedCore, from one run with the same
    defaults TailedCore has."""
    from anomaly_inspect.scorers.tail_sampler import TailSampler

    root = mini_layout(shared_data, tmp_path / "data", 16, 4)
    runs = []
    real = TailSampler.run

    def spy(self, embeddings):
        result = real(self, embeddings)
        runs.append((self.keep, self.tail_mass, embeddings.shape[1], result))
        return result

    monkeypatch.setattr(TailSampler, "run", spy)
    cfg = tmp_path / "tail.yaml"
    cfg.write_text("scorer: {tail_keep: 0.5, tail_mass: 0.6, embedding: patch_mean}\n")
    out = tmp_path / "lt.json"
    args = ["evaluate-lt", "--root", str(root), "--categories", "bottle,screw,magnetic_tile",
            "--tail", "pareto", "--seed", "0", "--image-size", "128",
            "--manifest-dir", str(tmp_path / "m"), "--output-json", str(out), "--quiet"]
    assert main(args + ["--methods", "tailedcore", "--tail-views", "none", "--config", str(cfg)]) == 0
    report = json.loads(out.read_text())
    assert [r[:2] for r in runs] == [(0.5, 0.6)]  # one run, the config's settings
    assert runs[0][2] != 1280  # patch_mean: the patch feature size, not the 1280-d pooled one
    result = runs[0][3]
    est = report["class_size_estimates"]
    assert (est["histogram"], est["max_k"]) == (result.histogram.tolist(), result.max_k)
    assert est["n_tail_images_flagged"] == len(result.tail_indices) == report["methods"]["tailedcore"]["tail_images"]
    assert "tail_sampler_s" not in report["timings"]
    runs.clear()
    assert main(args + ["--methods", "patchcore"]) == 0
    report = json.loads(out.read_text())
    assert [r[:3] for r in runs] == [(0.85, 0.15, 1280)]  # pooled tf_efficientnet_lite0 features
    assert "tail_sampler_s" in report["timings"]
    assert report["class_size_estimates"]["max_k"] == runs[0][3].max_k


def _write_images(datasets: dict[str, AnomalyDataset]) -> None:
    """A tiny PNG at every sample path of ``datasets``."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    for d in datasets.values():
        for sample in d.train + d.test:
            sample.path.parent.mkdir(parents=True, exist_ok=True)
            sample.path.write_bytes(buf.getvalue())


def test_evaluate_lt_calibrates_int8_on_its_training_images_before_extracting(tmp_path, monkeypatch):
    from anomaly_inspect.config import ModelConfig
    from anomaly_inspect.evaluation.longtail import evaluate_longtail
    from anomaly_inspect.features.extractor import FeatureExtractor

    class Calibrated(Exception):
        pass

    given = []

    def stop(self, paths):  # the images need not exist: stop where the calibration would read them
        given.append(list(paths))
        raise Calibrated

    monkeypatch.setattr(FeatureExtractor, "calibrate", stop)
    ds, dirs = fake_datasets(tmp_path, {"a": (40, 20), "b": (30, 20), "c": (30, 20)})
    _write_images(ds)  # readable headers (checked before anything is built); never decoded
    split = build_longtail(ds, dirs, "step", k=4, noise=0.1, seed=0)
    cfg = ModelConfig()
    cfg.backbone.precision = "int8"
    with pytest.raises(Calibrated):
        evaluate_longtail(split, ds, dirs, cfg, ["patchcore"], progress=False)
    assert given == [[s.path for s in split.train_samples(dirs)]]


# -- refused before any work; what the report keeps ------------------------------------------
def test_evaluate_lt_refuses_methods_it_cannot_score_naming_those_it_can():
    from anomaly_inspect.evaluation.longtail import check_methods, runnable

    assert runnable("tailedcore") and runnable("patchcore") and not runnable("knn")
    check_methods(["patchcore", "softpatch", "tailedcore"])
    for method in ("knn", "mahalanobis", "feature_norm", "msp"):  # pooled / class-label scorers
        with pytest.raises(ValueError, match=rf"method '{method}' reads pooled features; evaluate-lt "
                                             r"scores test images from patch features and runs "
                                             r".*patchcore.*tailedcore") as err:
            check_methods(["patchcore", method])
        assert "knn" not in str(err.value).split("runs ")[1]
    with pytest.raises(ValueError, match=r"unknown method 'nope'; evaluate-lt runs ") as err:
        check_methods(["nope"])
    assert "knn" not in str(err.value) and "tailedcore" in str(err.value)
    with pytest.raises(ValueError, match=r"--methods: no method given"):
        check_methods([])


@pytest.mark.parametrize(("flags", "message"), [
    (["--methods", "patchcore,knn"], "method 'knn' reads pooled features"),
    (["--methods", ","], "--methods: no method given"),
    (["--tail", "pareto", "--k", "2"], "--k 2: the images kept per tail class of a step split; "
                                       "--tail pareto does not use it"),
])
def test_evaluate_lt_refuses_flags_it_would_ignore_before_any_work(tmp_path, monkeypatch, capsys,
                                                                   flags, message):
    from anomaly_inspect.data import mvtec

    def listed(*args, **kwargs):
        raise RuntimeError("a dataset was read")

    root = _fake_layout(tmp_path / "r")
    monkeypatch.setattr(mvtec, "load_mvtec", listed)
    base = ["evaluate-lt", "--root", str(root), "--categories", "x,y,z",
            "--manifest-dir", str(tmp_path / "m")]
    assert main(base + flags) == 1
    err = capsys.readouterr().err
    assert message in err and "a dataset was read" not in err, err
    assert not (tmp_path / "m").exists()


def test_evaluate_lt_takes_k_with_a_step_tail(tmp_path, monkeypatch, capsys):
    from anomaly_inspect.evaluation import longtail as evaluation

    def reached(split, *args, **kwargs):
        raise RuntimeError(f"evaluating the {split.tail} split, k {split.k}")

    monkeypatch.setattr(evaluation, "evaluate_longtail", reached)
    root = _fake_layout(tmp_path / "r")
    base = ["evaluate-lt", "--root", str(root), "--categories", "x,y,z", "--manifest-dir",
            str(tmp_path / "m")]
    for flags, split in ((["--k", "3"], "step split, k 3"), (["--tail", "step", "--k", "2"], "step split, k 2"),
                         (["--tail", "pareto"], "pareto split, k None")):
        assert main(base + flags) == 1
        assert f"evaluating the {split}" in capsys.readouterr().err


def test_evaluate_longtail_checks_every_image_before_extracting(tmp_path, monkeypatch):
    """A corrupt test image of the last category was found only after every fit."""
    from anomaly_inspect.config import ModelConfig
    from anomaly_inspect.data.layout import DatasetLayoutError
    from anomaly_inspect.data.mvtec import load_mvtec
    from anomaly_inspect.evaluation import longtail as evaluation

    root = noise_layout(tmp_path / "r")
    dirs = {c: root / c for c in ("x", "y", "z")}
    datasets = {c: load_mvtec(d) for c, d in dirs.items()}
    split = build_longtail(datasets, dirs, "step", k=4, noise=0.1, seed=0)
    bad = split.test_samples("z", datasets["z"], dirs["z"])[-1].path
    bad.write_bytes(bad.read_bytes()[:40])  # truncated

    def built(*args, **kwargs):
        raise RuntimeError("the backbone was built")

    monkeypatch.setattr(evaluation, "build_backbone", built)
    with pytest.raises(DatasetLayoutError, match=rf"z: 1 file\(s\) cannot be used:\n  {bad}"):
        evaluation.evaluate_longtail(split, datasets, dirs, ModelConfig(), ["patchcore"],
                                     progress=False)


def test_evaluate_lt_json_first_tail_views_and_methods_without_a_bank(tmp_path, monkeypatch, capsys):
    """A method without a memory bank (bank n/a, was a KeyError after the whole run); the JSON
    is written before the table and records no tail views (no TailedCore); each test set is
    listed once."""
    from anomaly_inspect.commands import evaluate_lt as command

    root = noise_layout(tmp_path / "r")
    listed = []
    real = LongTailSet.test_samples

    def spy(self, category, *args):
        listed.append(category)
        return real(self, category, *args)

    monkeypatch.setattr(LongTailSet, "test_samples", spy)
    out = tmp_path / "lt.json"
    args = ["evaluate-lt", "--root", str(root), "--categories", "x,y,z", "--methods",
            "patchcore,patch_mahalanobis", "--tail", "step", "--k", "2", "--image-size", "64",
            "--coreset-ratio", "0.5", "--manifest-dir", str(tmp_path / "m"),
            "--output-json", str(out), "--quiet"]
    assert main(args) == 0
    assert "patch_mahalanobis  mean" in (table := capsys.readouterr().out) and "bank n/a" in table
    assert sorted(listed) == ["x", "y", "z"]
    report = json.loads(out.read_text())
    assert report["tail_views"] is None  # no TailedCore: no tail views
    assert "memory_bank_items" not in report["methods"]["patch_mahalanobis"]
    assert {r["method"] for r in report["results"]} == {"patchcore", "patch_mahalanobis"}
    out.unlink()

    def broken(rows):
        raise RuntimeError("table failed")

    monkeypatch.setattr(command, "print_table", broken)
    assert main(args) == 1
    assert json.loads(out.read_text())["tail_views"] is None


def test_long_tail_report_records_its_tail_views():
    from anomaly_inspect.evaluation.longtail import LongTailReport

    report = LongTailReport([], {}, {}, {}, {}, {}, "rot15flip")
    assert report.to_dict()["tail_views"] == "rot15flip"


def test_evaluate_lt_keeps_null_scorer_settings_of_its_config(tmp_path):
    """``chunk_size: null`` (exact greedy) and ``first_round_ratio: null`` (one round) in the
    config reach the scorers as ``evaluate`` gives them (they fell back to 4096 / 'auto'); an
    unset flag still leaves the config's value."""
    from anomaly_inspect.evaluation.longtail import build_scorers

    nulls = {"chunk_size": None, "first_round_ratio": None}
    for method, scorer in build_scorers(["patchcore", "tailedcore"], nulls, 0, False).items():
        assert {k: scorer.get_params()[k] for k in nulls} == nulls, method
    root = noise_layout(tmp_path / "r")
    cfg = tmp_path / "exact.yaml"
    cfg.write_text("scorer: {chunk_size: null, first_round_ratio: null}\n")
    out = tmp_path / "lt.json"
    assert main(["evaluate-lt", "--root", str(root), "--categories", "x,y,z", "--methods", "patchcore",
                 "--config", str(cfg), "--coreset-ratio", "0.5", "--tail", "step", "--k", "2",
                 "--image-size", "64", "--manifest-dir", str(tmp_path / "m"),
                 "--output-json", str(out), "--quiet"]) == 0
    params = json.loads(out.read_text())["methods"]["patchcore"]["params"]
    assert (params["chunk_size"], params["first_round_ratio"], params["coreset_ratio"]) == (None, None, 0.5)


@pytest.mark.parametrize(("flags", "scorer", "message"), [
    (["--chunk-size", "0"], None, "--chunk-size 0: patchcore: chunk_size must be"),
    (["--coreset-ratio", "2"], None, "--coreset-ratio 2.0: patchcore: coreset_ratio must be"),
    (["--coreset-ratio", "nan"], None, "--coreset-ratio nan: patchcore: coreset_ratio must be"),
    (["--coreset-ratio", "inf"], None, "--coreset-ratio inf: patchcore: coreset_ratio must be"),
    # a flag refused on top of a valid config is the flag's fault, an invalid config the config's
    (["--chunk-size", "0"], "{chunk_size: null}", "--chunk-size 0: patchcore: chunk_size must be"),
    (["--chunk-size", "8"], "{coreset_ratio: 0}", "lt.yaml: scorer: patchcore: coreset_ratio must be"),
    ([], "{chunk_size: 0}", "lt.yaml: scorer: patchcore: chunk_size must be"),
])
def test_evaluate_lt_refuses_scorer_settings_before_any_work(tmp_path, monkeypatch, capsys, flags,
                                                            scorer, message):
    """They were checked only after the split manifest was written, naming no flag (a config naming no
    ``method`` is not checked when read)."""
    from anomaly_inspect.data import mvtec

    def listed(*args, **kwargs):
        raise RuntimeError("a dataset was read")

    monkeypatch.setattr(mvtec, "load_mvtec", listed)
    root = _fake_layout(tmp_path / "r")
    if scorer is not None:
        (tmp_path / "lt.yaml").write_text(f"scorer: {scorer}\n")
        flags = [*flags, "--config", str(tmp_path / "lt.yaml")]
    assert main(["evaluate-lt", "--root", str(root), "--categories", "x,y,z", "--methods",
                 "patchcore,tailedcore", "--manifest-dir", str(tmp_path / "m"), *flags]) == 1
    err = capsys.readouterr().err
    assert message in err and "a dataset was read" not in err, err
    assert not (tmp_path / "m").exists()


# evaluate-lt writes no manifest for a refused split.
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


# The long-tail class-size report, checked by hand.
def test_class_size_report_precision_recall_and_detection_by_hand():
    """Head class a (6 images, 1 flagged), tail b (2, both flagged), tail c (3, 1 flagged):
    4 flagged, 3 of them in tail classes -> precision 3/4; 3 of the 5 tail images flagged ->
    recall 3/5; b is detected (2/2 > half), c is not (1/3)."""
    categories = ["a"] * 6 + ["b"] * 2 + ["c"] * 3
    sizes = np.array([6] * 6 + [2] * 2 + [3] * 3)
    result = TailSamplerResult(class_sizes=sizes, thresholds=np.zeros(11, np.float32),
                               histogram=np.array([6, 3, 2]), max_k=2,
                               tail_indices=np.array([0, 6, 7, 8]))
    counts = {c: {"original": n, "good": n, "noise": 0} for c, n in (("a", 6), ("b", 2), ("c", 3))}
    split = LongTailSet(tail="step", k=2, noise=0.0, seed=0, overlap=False,
                        categories=["a", "b", "c"], tail_classes=["b", "c"], train=[],
                        counts=counts)
    report = class_size_report(result, categories, split)
    assert report["n_tail_images_flagged"] == 4
    assert report["tail_image_precision"] == pytest.approx(3 / 4)
    assert report["tail_image_recall"] == pytest.approx(3 / 5)
    assert report["tail_classes_detected"] == {"b": True, "c": False}
    assert report["per_class"]["c"]["flagged_fraction"] == pytest.approx(1 / 3)
    assert report["true_histogram"] == [6, 3, 2]


# evaluate-lt's refusals and records: one folder under two categories, the manifest's seed and
# path, the no-AUROC hint.
# -- evaluate-lt --------------------------------------------------------------------------
def _lt_args(root: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["evaluate-lt", "--root", str(root), "--categories", "x,y,z", "--tail", "step",
            "--k", "2", "--image-size", "64", "--weights", "random", "--runtime", "torch",
            "--coreset-ratio", "0.5", "--manifest-dir", str(tmp_path / "m"), "--quiet", *extra]


def test_evaluate_lt_with_a_manifest_prints_both_seeds_and_records_the_file(tmp_path, capsys):
    root = noise_layout(tmp_path / "r")
    assert main(_lt_args(root, tmp_path, "--methods", "patchcore", "--seed", "3",
                         "--output-json", str(tmp_path / "a.json"))) == 0
    manifest, = (tmp_path / "m").glob("*.json")
    capsys.readouterr()
    out = tmp_path / "b.json"
    args = [a for a in _lt_args(root, tmp_path, "--methods", "patchcore", "--output-json", str(out))
            if a not in ("--tail", "step", "--k", "2")]
    assert main([*args, "--manifest", str(manifest)]) == 0
    table = capsys.readouterr().out
    assert "split seed 3, scorer seed 0" in table
    report = json.loads(out.read_text())
    assert report["split"]["manifest"] == str(manifest) and report["split"]["seed"] == 3
    assert report["config"]["seed"] == 0


# -- one folder under two category names ----------------------------------------
def test_one_folder_under_two_categories_is_refused(tmp_path):
    (tmp_path / "data" / "bottle" / "train").mkdir(parents=True)
    (tmp_path / "data" / "cap" / "train").mkdir(parents=True)
    data = tmp_path / "data"
    with pytest.raises(ValueError, match=rf"categories 'bottle' and 'a' are one folder, "
                                         rf"{data / 'bottle'}"):
        resolve_category_dirs([str(data), f"a={data}/bottle/"], ["bottle", "a"])
    with pytest.raises(ValueError, match="categories 'cap' and 'b' are one folder"):
        resolve_category_dirs([str(data), f"b={data}/x/../cap"], ["cap", "b"])
    assert resolve_category_dirs([str(data)], ["bottle", "cap"]) == {
        "bottle": data / "bottle", "cap": data / "cap"}


# -- the no-AUROC hint --------------------------------------------------------------
def test_no_auroc_hint_blames_the_injection_only_when_it_took_the_last_anomaly(tmp_path):
    from anomaly_inspect.data.longtail import build_longtail
    from anomaly_inspect.evaluation.longtail import evaluate_longtail

    ds, dirs = fake_datasets(tmp_path, {"a": (40, 3), "b": (30, 20), "c": (30, 20)})
    split = build_longtail(ds, dirs, "step", k=4, noise=0.1, seed=0)
    head = next(c for c in ("a", "b", "c") if c not in split.tail_classes)
    # the category's own test set has no anomalies (nothing injected took them)
    ds[head].test = [s for s in ds[head].test if s.label == 0]
    with pytest.raises(ValueError, match=rf"{head}: .* 0 anomalous and 5 normal images, so it has "
                                         rf"no AUROC \(.*{head}/test needs both normal and "
                                         rf"anomalous images\)") as err:
        evaluate_longtail(split, ds, dirs, ModelConfig(), ["patchcore"], progress=False)
    assert "--noise" not in str(err.value)
