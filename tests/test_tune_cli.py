"""`tune`, `fit --auto` and `evaluate --auto` end to end: small synthetic data (fast) and a small
real category (slow)."""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import shutil

import numpy as np
import pytest

from anomaly_inspect.cli import main
from anomaly_inspect.config import ModelConfig
from anomaly_inspect.data.anomalies import read_anomalies
from anomaly_inspect.data.mvtec import load_mvtec
from anomaly_inspect.data.synthetic import generate_dataset
from anomaly_inspect.tuning.candidates import Candidate
from anomaly_inspect.tuning.judge import test_scores as scores_of_test  # not a test itself
from anomaly_inspect.tuning.tune import tune

TINY = ["--image-size", "64", "--candidates", "lite0-64-8+16-rows-stretch,lite0-64-8+16-mean-stretch",
        "--batch-size", "8", "--quiet"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    return generate_dataset(root, "fabric", "fabric", n_train=12, n_test_good=3, n_test_per_defect=2,
                            image_size=64, seed=0)


def test_candidate_names_round_trip():
    c = Candidate.parse("lite2-384-4+8+16-full-pad")
    assert c == Candidate("tf_efficientnet_lite2", 384, (4, 8, 16), "full", "pad") and c.name == "lite2-384-4+8+16-full-pad"
    with pytest.raises(ValueError, match="bad candidate name"):
        Candidate.parse("lite0-320-rows")
    with pytest.raises(ValueError, match="bad candidate name"):
        Candidate.parse("lite0-320-8+16-sum-stretch")


def test_fit_auto_records_the_choice_in_model_json(demo, tmp_path, capsys):
    out = tmp_path / "model"
    rc = main(["fit", "--auto", "--train", str(demo / "train" / "good"), "--out", str(out),
               "--tune-cache", str(tmp_path / "cache"), *TINY])
    assert rc == 0
    info = json.loads((out / "model.json").read_text())
    tuning = info["tuning"]
    names = {c["name"] for c in tuning["candidates"]}
    assert names == {"lite0-64-8+16-rows-stretch", "lite0-64-8+16-mean-stretch"}
    assert tuning["default"] == "lite0-64-8+16-rows-stretch" and tuning["chosen"] in names
    assert tuning["settings"]["recipe"]["seed"] == 0 and tuning["settings"]["n_folds"] == 3
    for c in tuning["candidates"]:
        assert len(c["fold_auroc"]) == 3 and 0 < len(c["judge_auroc"]) <= 15  # 12 images: some (fold, family) empty
        assert 0 <= c["mean_auroc"] <= 1 and c["normal_calibration"]["mad"] > 0
    assert info["config"]["features"]["finest_stage"] == tuning["chosen_config"]["embedding"]
    assert "tune: chose" in capsys.readouterr().out
    # where the candidates came from, and the base config they were derived from
    from anomaly_inspect.config import ModelConfig

    assert tuning["settings"]["candidates"] == "given"
    assert Candidate.of(ModelConfig.from_dict(tuning["base"])).name == tuning["default"]


def test_evaluate_auto_with_ensemble(demo, tmp_path):
    out = tmp_path / "eval.json"
    rc = main(["evaluate", "--root", str(demo.parent), "--category", demo.name, "--auto",
               "--ensemble", "2", "--tune-cache", str(tmp_path / "cache"), "--output-json", str(out), *TINY])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["tuning"]["chosen_config"]["embedding"] == result["config"]["features"]["finest_stage"]
    ens = result["ensemble"]
    assert len(ens["members"]) == 2 and 0 <= ens["image_auroc"] <= 1
    assert set(ens["member_image_auroc"]) == set(ens["members"])
    # the chosen member scored by the ensemble path equals evaluate's own figure
    assert ens["member_image_auroc"][result["tuning"]["chosen"]] == pytest.approx(result["image_auroc"], abs=1e-6)


def test_fit_auto_skips_unreadable_training_images_as_fit_does(demo, tmp_path, capsys, caplog):
    # fit leaves unreadable images out before it draws its calibration hold-out, and --auto
    # tunes on the images fit fits on: tuning on the folder equals tuning on its readable
    # images alone (the same split, the same fold plan)
    import shutil

    good, mixed = demo / "train" / "good", tmp_path / "mixed"
    shutil.copytree(good, mixed)
    (mixed / "000_broken.png").write_text("not an image")
    png = next(iter(sorted(good.glob("*.png")))).read_bytes()
    (mixed / "zzz_truncated.png").write_bytes(png[: len(png) // 2])
    runs = {}
    for name, folder in (("clean", good), ("mixed", mixed)):
        out = tmp_path / f"model_{name}"
        assert main(["fit", "--auto", "--train", str(folder), "--out", str(out),
                     "--tune-cache", str(tmp_path / "cache"), *TINY]) == 0
        runs[name] = json.loads((out / "model.json").read_text())
    capsys.readouterr()
    tuning = runs["mixed"]["tuning"]
    assert sorted(s["path"].rsplit("/", 1)[-1] for s in runs["mixed"]["skipped_images"]) == [
        "000_broken.png", "zzz_truncated.png"]
    assert all(s["error"] for s in runs["mixed"]["skipped_images"])
    assert tuning["skipped_images"] == runs["clean"]["tuning"]["skipped_images"] == []
    n_fit = len(runs["clean"]["train_images"])  # the fit part, not the calibration images
    assert tuning["n_images"] == runs["clean"]["tuning"]["n_images"] == n_fit < 12
    clean = {c["name"]: c["fold_auroc"] for c in runs["clean"]["tuning"]["candidates"]}
    assert {c["name"]: c["fold_auroc"] for c in tuning["candidates"]} == clean
    from anomaly_inspect.data.anomalies import MANIFEST

    sets = list((tmp_path / "cache" / "synthetic").iterdir())  # no partly drawn set left behind
    assert sets and all((d / MANIFEST).is_file() for d in sets)
    assert any("000_broken.png" in r.getMessage() for r in caplog.records)


def test_tune_takes_the_pixel_budget_fit_takes(demo, tmp_path):
    from anomaly_inspect.config import ModelConfig
    from anomaly_inspect.tuning.tune import tune

    paths = sorted((demo / "train" / "good").glob("*.png"))  # 64 x 64 = 4,096 pixels each
    with pytest.raises(ValueError, match=r"at least 6 training images, only 5 left after skipping 7 unreadable"):
        tune(paths, ModelConfig(), cache_dir=tmp_path / "cache", progress=False, max_pixels=4000)


def test_tune_without_images_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc = main(["tune", "--train", str(tmp_path / "empty"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err and err.startswith("error: tune needs at least 6 training images")


@pytest.mark.slow
def test_tune_judge_on_real_bottle(shared_data, tmp_path):
    out = tmp_path / "tune.json"
    rc = main(["tune", "--root", str(shared_data / "mvtec_ad"), "--category", "bottle", "--judge",
               "--image-size", "256", "--max-tune-images", "30",
               "--candidates", "lite0-256-8+16-rows-stretch,lite0-256-8+16-mean-stretch",
               "--tune-cache", str(tmp_path / "cache"), "--output-json", str(out), "--quiet"])
    assert rc == 0
    result = json.loads(out.read_text())
    tuning, judge = result["tuning"], result["judge"]
    assert tuning["n_images"] == 30 and len(tuning["candidates"]) == 2
    for c in judge["candidates"]:
        assert c["test_auroc"] >= 0.97  # bottle is easy for both embeddings
        assert 0.5 <= c["validation_mean_auroc"] <= 1.0
    assert judge["regret_chosen"] >= 0 and judge["regret_default"] >= 0
    assert judge["best_test_auroc"] == max(c["test_auroc"] for c in judge["candidates"])
    assert judge["ensemble_test_auroc"] >= 0.97


def test_ascent_validates_the_combination_of_two_winners_and_can_choose_it(demo, tmp_path, monkeypatch):
    """The ``ascent`` plumbing on the tiny set: two one-change candidates beat the default on
    every fold (scores planted), so their combination is validated in a second round, appears
    in the result and, scoring best, is chosen."""
    import importlib

    tune_mod = importlib.import_module("anomaly_inspect.tuning.tune")  # the package exports tune()

    grid = [Candidate.parse(n) for n in ("lite0-64-8+16-rows-stretch", "lite0-64-8+16-mean-stretch",
                                         "lite0-64-8+16-rows-pad")]
    planted = {"lite0-64-8+16-rows-stretch": 0.70, "lite0-64-8+16-mean-stretch": 0.80,
               "lite0-64-8+16-rows-pad": 0.75, "lite0-64-8+16-mean-pad": 0.90}
    real = tune_mod.score_candidate
    seen = []

    def planted_scores(cand, *a, **k):
        scores, raw = real(cand, *a, **k)  # runs the real validation, then plants the AUROCs
        seen.append(cand.name)
        v = planted[cand.name]
        scores.fold_auroc = [v, v + 0.01, v - 0.01]
        scores.judge_auroc = dict.fromkeys(scores.judge_auroc, v)
        return scores, raw

    monkeypatch.setattr(tune_mod, "candidate_grid", lambda grid_name, base: list(grid))
    monkeypatch.setattr(tune_mod, "score_candidate", planted_scores)
    # the planted pad scores differ from stretch's, which the square demo images rule out
    monkeypatch.setattr(tune_mod, "all_square", lambda paths: False)
    from anomaly_inspect.config import ModelConfig

    base = ModelConfig()
    base.features.image_size, base.features.batch_size = 64, 8
    result = tune_mod.tune(sorted((demo / "train" / "good").glob("*.png")), base,
                           tune_mod.TuneSettings(grid="ascent"), cache_dir=tmp_path / "cache", progress=False)
    assert seen == [*planted]  # the combination is validated after the first round
    assert result.to_dict()["settings"]["candidates"] == "grid"
    assert result.chosen.name == "lite0-64-8+16-mean-pad"
    assert [c["name"] for c in result.to_dict()["candidates"]][0] == "lite0-64-8+16-mean-pad"


def test_pad_twin_on_square_images_takes_the_stretch_validation(demo, tmp_path, monkeypatch):
    """On square images ``pad`` is the same model input as ``stretch``: the pad candidate is not
    validated again but takes its twin's scores (which a real validation reproduces exactly),
    and the ensemble does not take both twins."""
    import importlib

    import numpy as np

    from anomaly_inspect.config import ModelConfig

    tune_mod = importlib.import_module("anomaly_inspect.tuning.tune")
    names = ("lite0-64-8+16-rows-stretch", "lite0-64-8+16-rows-pad", "lite0-64-8+16-mean-stretch")
    real, seen = tune_mod.score_candidate, []

    def spy(cand, *a, **k):
        seen.append(cand.name)
        return real(cand, *a, **k)

    monkeypatch.setattr(tune_mod, "score_candidate", spy)
    base = ModelConfig()
    base.features.image_size, base.features.batch_size = 64, 8
    paths = sorted((demo / "train" / "good").glob("*.png"))
    settings = tune_mod.TuneSettings(ensemble=3)
    result = tune_mod.tune(paths, base, settings, [Candidate.parse(n) for n in names],
                           cache_dir=tmp_path / "cache", progress=False)
    assert seen == [names[0], names[2]]
    by = {c["name"]: c for c in result.to_dict()["candidates"]}
    assert by[names[1]]["same_as"] == names[0] and "same_as" not in by[names[0]]
    assert by[names[1]]["judge_auroc"] == by[names[0]]["judge_auroc"]
    assert by[names[1]]["borda"] == by[names[0]]["borda"]
    assert len(result.ensemble) == 2 and {names[0], names[1]} & set(result.to_dict()["ensemble"])
    # what the reuse stands for: the pad validation itself gives the very same scores
    monkeypatch.setattr(tune_mod, "all_square", lambda paths: False)
    again = tune_mod.tune(paths, base, settings, [Candidate.parse(n) for n in names[:2]],
                          cache_dir=tmp_path / "cache", progress=False)
    for fold, (normal, anomalous) in again.scores[names[1]].items():
        np.testing.assert_array_equal(normal, again.scores[names[0]][fold][0])
        np.testing.assert_array_equal(anomalous, again.scores[names[0]][fold][1])


def _tuning(path):
    """A tune record without its timings (what must not change between equal runs)."""
    d = json.loads(path.read_text())["tuning"]
    d.pop("seconds")
    for c in d["candidates"]:
        c.pop("seconds")
    return d


def test_a_training_image_spoilt_after_a_cached_tune_is_skipped_as_on_a_fresh_cache(demo, tmp_path):
    """The synthetic set is keyed on its files (size, mtime): an image changed in place is read
    again, so a truncated one is skipped exactly as a fresh cache skips it (it used to be taken
    from the old set and fail at extraction; a replaced one gave the old set's AUROCs)."""
    import shutil

    train = tmp_path / "train"
    shutil.copytree(demo / "train" / "good", train)
    args = ["tune", "--train", str(train), *TINY]
    assert main([*args, "--tune-cache", str(tmp_path / "shared"), "--output-json", str(tmp_path / "a.json")]) == 0
    png = (train / "004.png").read_bytes()
    (train / "004.png").write_bytes(png[: len(png) // 2])
    for cache, out in (("shared", "b.json"), ("fresh", "c.json")):
        assert main([*args, "--tune-cache", str(tmp_path / cache), "--output-json", str(tmp_path / out)]) == 0
    cached, fresh = _tuning(tmp_path / "b.json"), _tuning(tmp_path / "c.json")
    assert cached == fresh and cached["n_images"] == 11
    assert [s["path"].rsplit("/", 1)[-1] for s in cached["skipped_images"]] == ["004.png"]
    assert _tuning(tmp_path / "a.json")["n_images"] == 12


def test_an_image_too_small_for_anomalies_is_skipped_naming_it(demo, tmp_path, caplog):
    import shutil

    import cv2
    import numpy as np

    train = tmp_path / "train"
    shutil.copytree(demo / "train" / "good", train)
    cv2.imwrite(str(train / "005_small.png"), np.full((12, 12, 3), 128, np.uint8))
    for folder, out in ((train, "small.json"), (demo / "train" / "good", "clean.json")):
        assert main(["tune", "--train", str(folder), *TINY, "--tune-cache", str(tmp_path / "cache"),
                     "--output-json", str(tmp_path / out)]) == 0
    small, clean = _tuning(tmp_path / "small.json"), _tuning(tmp_path / "clean.json")
    assert small["skipped_images"] == [{"path": str(train / "005_small.png"), "error":
                                        "too small for synthetic anomalies: 12 x 12 px (need at least 32 on each side)",
                                        "kind": "too_small"}]
    small["skipped_images"] = []
    assert small == clean  # the plan drawn again without it: the clean folder's validation
    assert any("skipping" in r.getMessage() and "005_small.png" in r.getMessage() for r in caplog.records)


def test_the_result_does_not_depend_on_the_order_of_the_candidates(demo, tmp_path):
    names = ["lite0-64-8+16-mean-stretch", "lite0-64-8+16-full-stretch", "lite0-64-8+16-rows-stretch"]
    runs = []
    for order in (names, names[::-1], [names[1], names[2], names[0], names[1]]):  # a repeat too
        out = tmp_path / f"{len(runs)}.json"
        assert main(["tune", "--train", str(demo / "train" / "good"), "--image-size", "64", "--batch-size", "8",
                     "--quiet", "--candidates", ",".join(order), "--tune-cache", str(tmp_path / "cache"),
                     "--output-json", str(out)]) == 0
        runs.append(_tuning(out))
    assert runs[0] == runs[1] == runs[2]
    assert runs[0]["default"] == "lite0-64-8+16-rows-stretch" and len(runs[0]["candidates"]) == 3


def test_judge_skips_an_unreadable_training_image_outside_the_tuning_subset(demo, tmp_path, caplog):
    """Tuning read only its subset; fitting every candidate on all training images skips an
    unreadable one there as fit does (it used to fail on it), with the clean set's scores."""
    import shutil

    import numpy as np

    from anomaly_inspect.config import ModelConfig
    from anomaly_inspect.data.mvtec import load_mvtec
    from anomaly_inspect.tuning.judge import test_scores
    from anomaly_inspect.tuning.tune import tune

    spoilt = tmp_path / demo.name
    shutil.copytree(demo, spoilt)
    (spoilt / "train" / "good" / "zzz_broken.png").write_bytes(b"not an image")
    base = ModelConfig()
    base.features.image_size, base.features.batch_size = 64, 8
    cands = [Candidate.parse("lite0-64-8+16-rows-stretch"), Candidate.parse("lite0-64-8+16-mean-stretch")]
    result = tune(sorted((demo / "train" / "good").glob("*.png")), base, candidates=cands,
                  cache_dir=tmp_path / "cache", progress=False)
    assert result.skipped == []  # the broken image was not among those tuned on
    clean = test_scores(load_mvtec(demo.parent, demo.name), result, cands, base, tmp_path / "cache", False)
    got = test_scores(load_mvtec(tmp_path, demo.name), result, cands, base, tmp_path / "cache", False)
    for c in cands:
        np.testing.assert_allclose(got[c.name], clean[c.name], rtol=1e-5)
    assert any("skipping" in r.getMessage() and "zzz_broken.png" in r.getMessage() for r in caplog.records)


def test_validation_takes_the_crop_fit_takes(demo, tmp_path):
    import numpy as np

    from anomaly_inspect.config import ModelConfig
    from anomaly_inspect.tuning.tune import tune

    base = ModelConfig()
    base.features.image_size, base.features.crop_size, base.features.batch_size = 64, 48, 8
    tune(sorted((demo / "train" / "good").glob("*.png")), base,
         candidates=[Candidate.parse("lite0-64-8+16-mean-stretch")], cache_dir=tmp_path / "cache", progress=False)
    shapes = {np.load(e / "stride8.npy", mmap_mode="r").shape[2:] for e in (tmp_path / "cache" / "maps").iterdir()}
    assert shapes == {(6, 6)}  # 48 px / stride 8, for the images and their synthetic copies
    with pytest.raises(ValueError, match=r"candidate lite0-32-8\+16-rows-stretch: .*crop_size \(48\) must not exceed"):
        tune([], base, candidates=[Candidate.parse("lite0-32-8+16-rows-stretch")], cache_dir=tmp_path / "c2")


def test_tune_command_line_refusals_are_one_line(demo, tmp_path, capsys):
    rc = main(["tune", "--train", str(tmp_path), "--root", str(tmp_path), "--category", "x", "--quiet"])
    assert rc == 1 and capsys.readouterr().err == "error: tune: give --train DIR or --root/--category, not both\n"
    assert main(["tune", "--category", "bottle", "--quiet"]) == 1
    assert capsys.readouterr().err == "error: tune --category: needs --root, the folder holding the category\n"
    # --grid was ignored silently next to --candidates (and the record named it)
    grid = "error: --grid: not with --candidates (the listed candidates replace the grid); drop one of them\n"
    for command in (["tune", "--train", str(demo / "train" / "good")],
                    ["evaluate", "--auto", "--root", str(demo.parent), "--category", demo.name],
                    ["fit", "--auto", "--train", str(demo / "train" / "good"), "--out", str(tmp_path / "m")]):
        assert main([*command, *TINY, "--grid", "ascent", "--tune-cache", str(tmp_path / "cache")]) == 1
        assert capsys.readouterr().err == grid
    assert not (tmp_path / "cache").exists() and not (tmp_path / "m").exists()
    with pytest.raises(SystemExit) as exc:
        main(["tune", "--train", str(tmp_path), "--folds", "1"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "argument --folds: must be at least 2" in err and err.count("\n") == 1


def test_int8_auto_evaluate_calibrates_every_extraction_on_training_images(demo, tmp_path,
                                                                           monkeypatch):
    """tune's validation, the ensemble's test scores and normal calibrations, and the final
    fit each calibrate their int8 backbone on training images (never a graph found in the
    user cache, never a test image)."""
    from pathlib import Path

    from anomaly_inspect.features.backbone import Backbone
    from anomaly_inspect.features.extractor import FeatureExtractor

    seen: list[tuple[str, int]] = []
    real = Backbone.calibrate

    def spy(self, images, source="training images"):
        seen.append((source, len(images)))
        return real(self, images, source)

    given: list[list[Path]] = []
    real_paths = FeatureExtractor.calibrate
    monkeypatch.setattr(Backbone, "calibrate", spy)
    monkeypatch.setattr(FeatureExtractor, "calibrate",
                        lambda self, paths: given.append(list(paths)) or real_paths(self, paths))
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--root", str(demo.parent), "--category", demo.name, "--auto",
                 "--ensemble", "2", "--precision", "int8", "--tune-cache", str(tmp_path / "cache"),
                 "--output-json", str(out), *TINY]) == 0
    result = json.loads(out.read_text())
    assert result["config"]["backbone"]["precision"] == "int8"
    train = demo / "train" / "good"
    # tune (one backbone x size), the ensemble's test scores, its 2 normal calibrations, the fit
    assert len(given) == 5 and all(Path(p).parent == train for paths in given for p in paths)
    assert seen == [("training images", 12)] * 5


@pytest.mark.parametrize("command", ["evaluate", "fit"])
def test_auto_keeps_the_tuning_record_when_the_later_step_fails(demo, tmp_path, monkeypatch, capsys, command):
    """``--output-json`` holds ``{"tuning": ...}`` as soon as tuning ends: a failed evaluation
    or fit no longer loses minutes of tuning; a successful run replaces it with its own JSON."""
    import importlib
    from types import SimpleNamespace

    module = importlib.import_module(f"anomaly_inspect.commands.{command}")
    tuning = SimpleNamespace(chosen_config=lambda cfg: cfg, to_dict=lambda: {"chosen": "base"})
    monkeypatch.setattr(module, "run_tune", lambda paths, args, cfg: tuning)

    def failed(*args, **kwargs):
        raise RuntimeError(f"{command} failed")

    if command == "evaluate":
        from anomaly_inspect.evaluation import evaluate as target
        args = ["evaluate", "--root", str(demo.parent), "--category", demo.name]
    else:
        import anomaly_inspect.screening as target
        args = ["fit", "--train", str(demo / "train" / "good"), "--out", str(tmp_path / "model")]
    monkeypatch.setattr(target, command, failed)
    out = tmp_path / "r.json"
    assert main([*args, "--auto", "--quiet", "--output-json", str(out)]) == 1
    assert f"{command} failed" in capsys.readouterr().err
    assert json.loads(out.read_text()) == {"tuning": {"chosen": "base"}}


def test_judge_with_two_candidates_writes_valid_json_and_no_warning(demo, tmp_path, capsys):
    """Spearman's rho is undefined with two candidates: null and the reason (a bare NaN was
    written, no valid JSON, and scipy's warning printed under --quiet)."""
    import re
    import warnings

    out = tmp_path / "tune.json"

    def no_nan(name):
        raise ValueError(f"{name} in the JSON")

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["tune", "--root", str(demo.parent), "--category", demo.name, "--judge",
                     "--tune-cache", str(tmp_path / "cache"), "--output-json", str(out), *TINY]) == 0
    captured = capsys.readouterr()
    judge = json.loads(out.read_text(), parse_constant=no_nan)["judge"]
    assert judge["spearman_borda_test"] is None and judge["spearman_validation_auroc_test"] is None
    assert judge["spearman_note"] == dict.fromkeys(["spearman_borda_test", "spearman_validation_auroc_test"],
                                                   "undefined with 2 candidates (needs 3)")
    assert "Warning" not in captured.err
    assert re.search(r"Spearman \(Borda, test\) +n/a, undefined with 2 candidates \(needs 3\)\n", captured.out)


def test_judge_refuses_a_test_split_without_defects_before_tuning(tmp_path, capsys, monkeypatch):
    """tune --judge tuned every candidate, then failed with 'AUROC needs both positive and
    negative samples' (no category, no path); the labels are checked first now."""
    import shutil

    from anomaly_inspect.commands import tune as tune_cmd

    root = tmp_path / "d"
    cat = generate_dataset(root, "solo", "fabric", n_train=6, n_test_good=2, n_test_per_defect=1,
                           image_size=64, seed=0)
    for d in (cat / "test").iterdir():
        if d.name != "good":
            shutil.rmtree(d)
    shutil.rmtree(cat / "ground_truth", ignore_errors=True)
    monkeypatch.setattr(tune_cmd, "run_tune", lambda *a, **k: pytest.fail("tuned before the check"))
    assert main(["tune", "--root", str(root), "--category", "solo", "--judge", *TINY]) == 1
    err = capsys.readouterr().err
    assert "solo" in err and "AUROC needs both" not in err, err


@pytest.mark.parametrize("command", ["fit", "evaluate"])
@pytest.mark.parametrize("given, refusal", [
    (["--method", "softpatch"], "a distributed fit builds PatchCore memory banks only, not 'softpatch'"),
    (["--precision", "int8"], "precision int8 cannot run on a distributed engine"),
    (["--weights", "WEIGHTS", "--no-shared-storage"], "--no-shared-storage says they cannot see"),
])
def test_auto_refuses_what_the_distributed_fit_cannot_take_before_tuning(
        demo, tmp_path, monkeypatch, capsys, command, given, refusal):
    """``--auto --engine ray`` tuned for minutes, then the fit refused the method, int8 or a
    weights file the workers cannot read; the command refuses them before tuning now."""
    import anomaly_inspect.pipeline as pipeline
    from anomaly_inspect.commands import evaluate, fit
    from anomaly_inspect.pipeline.engine import LocalEngine

    class FakeRay(LocalEngine):  # never started: the command must stop before any work
        name, in_process = "ray", False

        def __init__(self, shared_storage: bool):
            self.shared_storage = shared_storage

    monkeypatch.setattr(pipeline, "make_engine", lambda name, address, workers, shared: FakeRay(shared))
    for module in (fit, evaluate):
        monkeypatch.setattr(module, "run_tune", lambda *a, **k: pytest.fail("tuned before the check"))
    weights = tmp_path / "lite0.pth"
    weights.write_bytes(b"x")
    given = [str(weights) if g == "WEIGHTS" else g for g in given]
    head = {"fit": ["fit", "--train", str(demo / "train" / "good"), "--out", str(tmp_path / "m")],
            "evaluate": ["evaluate", "--root", str(demo.parent), "--category", demo.name]}[command]
    assert main([*head, "--auto", *given, "--engine", "ray", *TINY]) == 1
    err = capsys.readouterr().err
    assert refusal in err and err.count("\n") == 1, err
    assert not (tmp_path / "m").exists()


def test_tune_takes_its_training_images_without_earlier_screen_outputs(demo, tmp_path, monkeypatch):
    """tune --train took an earlier screen's overlays and thumbnails under the folder as normal
    images, while fit --auto (the same tuning) left them out."""
    import shutil

    import cv2

    from anomaly_inspect.commands import tune as tune_cmd

    train = tmp_path / "train"
    shutil.copytree(demo / "train" / "good", train)
    run = train / "res"
    (run / "results.csv").parent.mkdir()
    (run / "results.csv").write_text("path\n")
    (run / "screen.json").write_text("{}")
    (run / "thumbs").mkdir()
    cv2.imwrite(str(run / "thumbs" / "a_0123456789.jpg"), np.zeros((8, 8, 3), np.uint8))
    seen = {}

    def fake_tune(paths, args, cfg):
        seen["paths"] = paths
        raise SystemExit(0)

    monkeypatch.setattr(tune_cmd, "run_tune", fake_tune)
    with pytest.raises(SystemExit):
        main(["tune", "--train", str(train), *TINY])
    assert sorted(p.name for p in seen["paths"]) == sorted(p.name for p in (demo / "train" / "good").iterdir())


# tune's cache and messages: a damaged synthetic-anomaly set is drawn again, fit --auto names its
# calibration hold-out when too few images are left, and an empty --candidates list is refused.
TINY_ONE = ["--image-size", "64", "--candidates", "lite0-64-8+16-mean-stretch", "--batch-size", "8", "--quiet"]


def test_a_damaged_synthetic_cache_entry_is_drawn_again(demo, tmp_path, caplog, capsys):
    cache = tmp_path / "cache"
    args = ["tune", "--train", str(demo / "train" / "good"), "--tune-cache", str(cache), *TINY_ONE]
    assert main([*args, "--output-json", str(tmp_path / "first.json")]) == 0
    (entry,) = (cache / "synthetic").iterdir()
    png = sorted(p for p in entry.glob("00001_*.png") if "mask" not in p.name)[0]
    png.write_bytes(png.read_bytes()[:100])
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main([*args, "--output-json", str(tmp_path / "second.json")]) == 0
    warned = [r.getMessage() for r in caplog.records if "synthetic-anomaly" in r.getMessage()]
    assert len(warned) == 1 and png.name in warned[0] and "\n" not in warned[0]
    assert read_anomalies(entry) is not None  # drawn again in place
    first, second = (json.loads((tmp_path / f"{n}.json").read_text())["tuning"]["candidates"]
                     for n in ("first", "second"))
    assert [(c["name"], c["fold_auroc"], c["judge_auroc"]) for c in second] == \
        [(c["name"], c["fold_auroc"], c["judge_auroc"]) for c in first]
    capsys.readouterr()


def test_fit_auto_names_the_calibration_hold_out_when_too_few_are_left(demo, tmp_path, capsys):
    seven = tmp_path / "seven"
    seven.mkdir()
    for p in sorted((demo / "train" / "good").glob("*.png"))[:7]:
        shutil.copy(p, seven)
    rc = main(["fit", "--auto", "--train", str(seven), "--calibration-fraction", "0.3",
               "--out", str(tmp_path / "model"), "--tune-cache", str(tmp_path / "cache"), *TINY_ONE])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err, err
    assert "got 5" in err and "2 of the 7" in err and "held out for calibration" in err
    for option in ("--calibration DIR", "--calibration-fraction", "--folds"):
        assert option in err


@pytest.mark.parametrize("given", ["", " ", ","])
def test_an_empty_candidate_list_is_refused(tmp_path, capsys, given):
    (tmp_path / "empty").mkdir()
    rc = main(["tune", "--train", str(tmp_path / "empty"), "--candidates", given, "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err and err.startswith("error: --candidates"), err


# The ensemble's test scores read the training maps validation cached, the "too few images"
# message does not call images it never read readable, and --candidates takes spaces after its
# commas.
def _base() -> ModelConfig:
    base = ModelConfig()
    base.features.image_size, base.features.batch_size = 64, 8
    return base


# -- the ensemble's training maps are those validation extracted ------------------------------
def test_ensemble_test_scores_read_the_training_maps_validation_cached(demo, tmp_path):
    """evaluate --auto --ensemble K scores only the members: a member with fewer stages than
    its validation group was extracted again on the training images (its own stages, another
    cache key); with the training list equal to the tuning subset it reads validation's entry,
    with the same scores."""
    base = _base()
    member = Candidate.parse("lite0-64-16-rows-stretch")  # validated with the default's 8+16
    result = tune(sorted((demo / "train" / "good").glob("*.png")), base, candidates=[member],
                  cache_dir=tmp_path / "cache", progress=False)
    dataset = load_mvtec(demo.parent, demo.name)
    maps = tmp_path / "cache" / "maps"
    before = set(maps.iterdir())
    got = scores_of_test(dataset, result, [member], base, tmp_path / "cache", False)
    added = set(maps.iterdir()) - before
    assert len(added) == 1  # the test images only: the training images' maps were there
    # as before the fix: the member's own extraction (in a cache of its own)
    alone = dataclasses.replace(result, candidates=[dataclasses.replace(c, extraction=None)
                                                    for c in result.candidates])
    own = scores_of_test(dataset, alone, [member], base, tmp_path / "other", False)
    assert len(list((tmp_path / "other" / "maps").iterdir())) == 2  # train and test
    np.testing.assert_array_equal(got[member.name], own[member.name])


# -- images never read are not called readable ---------------------------------------------
def test_too_few_left_does_not_call_the_images_left_readable(demo, tmp_path):
    """Every image is over the budget: 7 skipped, then 5 left that were never read; the
    message said "only 5 left after skipping 7 unreadable" as if those 5 were fine."""
    paths = sorted((demo / "train" / "good").glob("*.png"))  # 64 x 64 = 4,096 pixels each
    with pytest.raises(ValueError) as caught:
        tune(paths, ModelConfig(), cache_dir=tmp_path / "cache", progress=False, max_pixels=4000)
    assert str(caught.value) == (
        "tune needs at least 6 training images, only 5 left after skipping 7 unreadable "
        "(reading stopped there: some of those 5 may be unreadable too)")


# -- --candidates with spaces after the commas ---------------------------------------------
@pytest.mark.parametrize("given", ["lite0-64-8+16-mean-stretch, lite0-64-8+16-rows-stretch",
                                   " lite0-64-8+16-mean-stretch ,lite0-64-8+16-rows-stretch "])
def test_candidates_take_spaces_around_the_commas(demo, tmp_path, monkeypatch, capsys, given):
    tuning = importlib.import_module("anomaly_inspect.tuning.tune")  # the module, not the function
    seen = []

    def stop(paths, cfg, settings, cands, **kwargs):
        seen.append([c.name for c in cands])
        raise RuntimeError("stopped once the candidates were parsed")

    monkeypatch.setattr(tuning, "tune", stop)
    assert main(["tune", "--train", str(demo / "train" / "good"), "--image-size", "64", "--quiet",
                 "--candidates", given, "--tune-cache", str(tmp_path / "cache")]) == 1
    assert "stopped once the candidates were parsed" in capsys.readouterr().err
    assert seen == [["lite0-64-8+16-mean-stretch", "lite0-64-8+16-rows-stretch"]]
