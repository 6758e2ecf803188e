"""Screening building blocks without a backbone: labels, report charts, model directory."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from anomaly_inspect.features.extractor import Features
from anomaly_inspect.scorers.patchcore import PatchCore
from anomaly_inspect.screening.html_report import histogram_svg, roc_points
from anomaly_inspect.screening.labels import load_labels_csv, mvtec_label, resolve_labels
from anomaly_inspect.screening.model_dir import (
    MODEL_JSON,
    ModelFormatError,
    ModelInfo,
    model_dir_holding,
    read_model_info,
    save_model_dir,
    write_checksums,
)
from anomaly_inspect.screening.runner import image_key
from layout_writer import (
    corrupt_data_png,
    earlier_screen,
    rgb_image,
    stub_batch_writer,
    write_image,
)


def test_labels_csv(tmp_path):
    (tmp_path / "l.csv").write_text("path,label\na b/ü.png,anomalous\nx.png,0\n/abs/y.png,1\n",
                                    encoding="utf-8")
    table = load_labels_csv(tmp_path / "l.csv")
    assert table[str(tmp_path / "a b" / "ü.png")] == 1
    assert table[str(tmp_path / "x.png")] == 0 and table["/abs/y.png"] == 1
    (tmp_path / "bad.csv").write_text("path,label\nx.png,maybe\n")
    with pytest.raises(ValueError, match=r"bad.csv:2: label 'maybe'"):
        load_labels_csv(tmp_path / "bad.csv")
    (tmp_path / "cols.csv").write_text("file,y\nx.png,1\n")
    with pytest.raises(ValueError, match="'path' and 'label'"):
        load_labels_csv(tmp_path / "cols.csv")


def test_mvtec_labels():
    assert mvtec_label("/d/bottle/test/good/000.png") == 0
    assert mvtec_label("/d/bottle/test/broken_large/000.png") == 1
    assert mvtec_label("/d/bottle/train/good/000.png") is None
    paths = ["/d/test/good/1.png", "/d/test/crack/2.png"]
    labels, src = resolve_labels(paths, None)
    assert labels == {paths[0]: 0, paths[1]: 1} and "MVTec" in src
    assert resolve_labels(paths + ["/elsewhere/3.png"], None) == ({}, "")  # auto needs all
    assert resolve_labels(paths, "none") == ({}, "")


def test_roc_points_by_hand():
    # scores 4(pos) 3(neg) 2(pos) 1(neg): ROC (0,0) (0,.5) (.5,.5) (.5,1) (1,1)
    fpr, tpr = roc_points(np.array([1, 0, 1, 0]), np.array([4.0, 3.0, 2.0, 1.0]))
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    # a tie between a positive and a negative is one diagonal step
    fpr, tpr = roc_points(np.array([1, 0]), np.array([1.0, 1.0]))
    np.testing.assert_allclose(fpr, [0, 1])
    np.testing.assert_allclose(tpr, [0, 1])  # was never run: assert_allclose returns None


def test_histogram_counts_all_scores():
    scores = np.array([1.0, 1.1, 5.0, 9.0])
    svg = histogram_svg(scores, np.array([0, 0, 1, -1]), threshold=4.0, bins=4)
    assert svg.count('class="bar"') == 3  # one bar each: 2 normal, 1 anomalous, 1 unlabelled
    assert 'id="threshold"' in svg and "normal: 2" in svg


def test_image_key_is_safe_and_unique():
    a, b = image_key("/x/test/good/000.png"), image_key("/x/test/crack/000.png")
    assert a != b and a.startswith("000_")
    assert image_key("/x/ü ñ?.png").isascii()
    # a raw byte 0xE9 and the text "\\xe9" display alike but are two files: two keys
    raw = os.fsdecode(b"/x/lat\xe9n.png")
    assert image_key(raw) != image_key("/x/lat\\xe9n.png")
    assert image_key("/x/ü.png") == image_key(os.fsdecode("/x/ü.png".encode()))  # UTF-8: as before


def _fitted_scorer() -> PatchCore:
    rng = np.random.default_rng(0)
    sc = PatchCore(coreset_ratio=0.5, progress=False)
    return sc.fit(Features(patches=rng.normal(size=(4, 3, 3, 8)).astype(np.float32)))


def _info() -> ModelInfo:
    return ModelInfo(config={}, backbone={"name": "b", "weights": {"checksum": "abc"}},
                     calibration={}, train_images=["a.png"], calibration_images=["b.png"])


def test_model_dir_save_refuses_overwrite_and_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "model"
    save_model_dir(target, _info(), _fitted_scorer())
    assert read_model_info(target).train_images == ["a.png"]
    with pytest.raises(FileExistsError, match=r"overwrite=True"):
        save_model_dir(target, _info(), _fitted_scorer())
    # a crash while writing the new model leaves the old one intact and no temp folder
    scorer = _fitted_scorer()
    monkeypatch.setattr(scorer, "save", lambda d: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        save_model_dir(target, _info(), scorer, overwrite=True)
    assert read_model_info(target).train_images == ["a.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    # a crash on a fresh target leaves nothing that could load
    with pytest.raises(OSError):
        save_model_dir(tmp_path / "new", _info(), scorer)
    assert not (tmp_path / "new").exists()
    # never replace a folder that is not a model directory, even with overwrite
    other = tmp_path / "home"
    other.mkdir()
    (other / "precious.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not a model directory"):
        save_model_dir(other, _info(), _fitted_scorer(), overwrite=True)
    assert (other / "precious.txt").exists()


# Saves a model tagged ARGV[2] over ARGV[1], the process ending (os._exit: like kill -9) once
# ARGV[3] os.replace calls are done: 0 before the old model is moved aside, 1 after, 2 after the
# new one is moved in.
_KILLED_SAVE = """
import os, sys
from pathlib import Path
from anomaly_inspect.screening import model_dir as md
target, tag, at = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])

class Scorer:
    def save(self, d):
        d.mkdir()
        (d / "scorer.json").write_text(tag)
        (d / "scorer_state.safetensors").write_text(tag)

real, calls = os.replace, []
def replace(a, b):
    if len(calls) == at:
        os._exit(9)
    real(a, b)
    calls.append(b)
    if len(calls) == at:
        os._exit(9)
md.os.replace = replace
if at == 3:  # after both moves, when the aside is removed
    md.shutil.rmtree = lambda *a, **k: os._exit(9)
info = md.ModelInfo(config={}, backbone={}, calibration={}, train_images=[tag], calibration_images=[])
md.save_model_dir(target, info, Scorer(), overwrite=True)
os._exit(9)
"""


def _save_killed(target, tag: str, at: int) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _KILLED_SAVE, str(target), tag, str(at)])
    assert done.returncode == 9


def _tag(target) -> str:
    return read_model_info(target).train_images[0]


@pytest.mark.parametrize(("at", "left"), [(0, "old"), (1, "new"), (2, "new")])
def test_a_model_replaced_by_a_killed_run_is_put_back_and_its_folders_removed(tmp_path, at, left,
                                                                              monkeypatch, caplog):
    from anomaly_inspect import files

    target = tmp_path / "m"
    save_model_dir(target, _info(), _fitted_scorer())
    _save_killed(target, "new", at)
    assert target.exists() == (at != 1)  # between the two moves: no model there
    leftovers = sorted(p.name[:7] for p in tmp_path.iterdir() if p.name != "m")
    assert leftovers == [".m.lock", ".m.old-", ".m.tmp-"][:3 if at < 2 else 2]
    assert _tag(target) == {"old": "a.png", "new": "new"}[left]  # loading puts it back
    assert ("put back the new model" in caplog.text) == (at == 1)
    # the next save removes what the killed run left
    monkeypatch.setattr(files, "STALE_AFTER_S", -1.0)
    save_model_dir(target, _info(), _fitted_scorer(), overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["m"] and _tag(target) == "a.png"


def test_a_model_deleted_after_a_killed_swap_is_not_brought_back(tmp_path):
    """Killed after the new model was moved in (only the aside's removal left), then the model
    deleted: a load finds no model (the older one is not resurrected) and the stale aside goes."""
    target = tmp_path / "m"
    save_model_dir(target, _info(), _fitted_scorer())
    _save_killed(target, "new", 3)
    assert _tag(target) == "new" and list(tmp_path.glob(".m.old-*"))
    shutil.rmtree(target)
    with pytest.raises(FileNotFoundError, match="model directory not found"):
        read_model_info(target)
    # the killed save's lock file stays: a load never writes beside the model (a user who may
    # not write there can still load it); it is harmless, and the next save removes it
    assert [p.name for p in tmp_path.iterdir()] == [".m.lock"]


def test_a_killed_replace_rolls_back_where_the_new_model_is_incomplete(tmp_path, monkeypatch):
    from anomaly_inspect.files import lock_folder

    target = tmp_path / "m"
    save_model_dir(target, _info(), _fitted_scorer())
    _save_killed(target, "new", 1)
    (aside,) = tmp_path.glob(".m.old-*")
    (new,) = tmp_path.glob(".m.tmp-*")
    # a live run's folders are left alone (the lock is what tells them from a killed run's)
    held = lock_folder(aside)
    try:
        with pytest.raises(FileNotFoundError, match="model directory not found"):
            read_model_info(target)
    finally:
        os.close(held)
    (new / "scorer" / "scorer.json").write_text("damaged")
    # the next save puts back the old model first (so without overwrite it is refused)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_model_dir(target, _info(), _fitted_scorer())
    assert _tag(target) == "a.png" and not aside.exists()


def _save_new_failing(target, monkeypatch, fails) -> None:
    """Save a model tagged "new.png" over ``target`` with ``os.replace`` raising at its k-th
    call (1-based) where ``fails(k)``; the save must raise it."""
    from anomaly_inspect.screening import model_dir as md

    real, calls = os.replace, []

    def replace(a, b):
        calls.append(b)
        if fails(len(calls)):
            raise OSError("device busy")
        real(a, b)

    monkeypatch.setattr(md.os, "replace", replace)
    other = ModelInfo(**{**_info().__dict__, "train_images": ["new.png"]})
    with pytest.raises(OSError, match="device busy"):
        save_model_dir(target, other, _fitted_scorer(), overwrite=True)
    monkeypatch.setattr(md.os, "replace", real)


@pytest.mark.parametrize("fails", [[0], [1], [1, 2]])
def test_a_failed_move_keeps_the_old_model(tmp_path, monkeypatch, fails):
    """os.replace raising at the first move, the second (the old model is moved back), or the
    second and the move back (the next load puts it back)."""
    target = tmp_path / "m"
    save_model_dir(target, _info(), _fitted_scorer())
    _save_new_failing(target, monkeypatch, lambda k: k - 1 in fails)
    assert target.exists() == (fails != [1, 2])
    assert _tag(target) == "a.png"
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def _with_users_files(target):
    (target / "notes.txt").write_text("mine")
    (target / "scorer" / "readme.md").parent.mkdir(exist_ok=True)
    (target / "scorer" / "readme.md").write_text("also mine")


def _users_files_kept(target) -> bool:
    return ((target / "notes.txt").read_text() == "mine"
            and (target / "scorer" / "readme.md").read_text() == "also mine")


# os.replace calls of a save over a model folder holding two of the user's files: 1-2 move them
# into the new folder, 3 moves the old model aside, 4 moves the new one in
@pytest.mark.parametrize("at", range(5))
def test_a_killed_save_over_a_folder_with_the_users_files_keeps_a_model_and_the_files(tmp_path, at):
    target = tmp_path / "m"
    save_model_dir(target, _info(), _fitted_scorer())
    _with_users_files(target)
    _save_killed(target, "new", at)
    from anomaly_inspect.screening.model_dir import recover_replace, verify_model_files

    recover_replace(target)
    verify_model_files(target)  # a whole model, not one half replaced
    assert _tag(target) == ("a.png" if at < 3 else "new") and _users_files_kept(target)


def test_users_files_that_cannot_be_given_back_are_set_apart_once(tmp_path, caplog):
    """Killed after moving the user's notes.txt into its staging folder; the user then wrote a
    new notes.txt: the old one cannot go back. It is kept in m.recovered-X without the model
    copy (before: the staging folder, a whole model, stayed forever and every load warned)."""
    import logging

    target = tmp_path / "m"
    save_model_dir(target, _info(), _fitted_scorer())
    _with_users_files(target)
    _save_killed(target, "new", 2)  # both of the user's files moved, the model not yet
    (target / "notes.txt").write_text("newer")
    with caplog.at_level(logging.WARNING):
        _tag(target)
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("m.recovered-")]
    assert len(kept) == 1 and (kept[0] / "notes.txt").read_text() == "mine"
    assert sorted(str(f.relative_to(kept[0])) for f in kept[0].rglob("*") if f.is_file()) == [
        "notes.txt"]
    assert (target / "notes.txt").read_text() == "newer"
    assert (target / "scorer" / "readme.md").read_text() == "also mine"  # given back
    assert "1 kept in" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _tag(target)
    assert caplog.text == ""  # said once


@pytest.mark.parametrize("at", range(1, 6))
def test_a_failed_move_over_a_folder_with_the_users_files_keeps_the_old_model_and_them(
        tmp_path, monkeypatch, at):
    """os.replace raising at its at-th call (at=5: at the 4th, and at the 5th, the old model's
    move back: the next load puts the new one, with the files, in place)."""
    target = tmp_path / "m"
    save_model_dir(target, _info(), _fitted_scorer())
    _with_users_files(target)
    _save_new_failing(target, monkeypatch, lambda k: k in (at, 4 if at == 5 else at))
    assert _tag(target) == ("new.png" if at == 5 else "a.png") and _users_files_kept(target)
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_a_second_save_to_one_target_is_refused_and_the_model_kept(tmp_path):
    target = tmp_path / "m"
    save_model_dir(target, _info(), _fitted_scorer())
    inner = _fitted_scorer()

    class Saving:  # the second save starts while the first one writes
        def save(self, d):
            save_model_dir(target, _info(), inner, overwrite=True)

    with pytest.raises(RuntimeError) as info:
        save_model_dir(target, _info(), Saving(), overwrite=True)
    assert str(info.value) == (f"{target}: another save to it is in progress (it holds "
                               f"{tmp_path / '.m.lock'}); wait for it to finish")
    assert _tag(target) == "a.png" and [p.name for p in tmp_path.iterdir()] == ["m"]


def test_saving_a_loaded_model_keeps_the_graphs_of_its_directory(tmp_path):
    """Right after loading, the backbone has exported nothing: the graphs its directory holds
    (an int8 one cannot be remade) go with a copy, and stay when it is saved over itself."""
    from types import SimpleNamespace

    from anomaly_inspect.screening.model import Model

    graph = tmp_path / "g.onnx"
    graph.write_bytes(b"int8 graph")
    src = save_model_dir(tmp_path / "m", _info(), _fitted_scorer(),
                         extra_files={"backbone/b-int8.onnx": graph})
    model = Model(None, SimpleNamespace(backbone=SimpleNamespace(exports=[])), _fitted_scorer(),
                  None, read_model_info(src))
    model.directory = src
    for target, overwrite in ((tmp_path / "copy", False), (src, True)):
        model.save(target, overwrite=overwrite)
        assert (target / "backbone" / "b-int8.onnx").read_bytes() == b"int8 graph"
        assert "backbone/b-int8.onnx" in json.loads((target / "checksums.json").read_text())["files"]


def test_overwrite_drops_exported_graphs_the_new_model_does_not_hold(tmp_path):
    graph = tmp_path / "g.onnx"
    graph.write_bytes(b"old graph")
    target = save_model_dir(tmp_path / "m", _info(), _fitted_scorer(),
                            extra_files={"backbone/old-key.onnx": graph})
    (target / "backbone" / "exported-since.onnx").write_bytes(b"cache")  # not in its checksums
    for keep in ([], ["notes.txt"]):  # the model's folder replaced whole, or file by file
        for name in keep:
            (target / name).write_text("mine")
        graph.write_bytes(b"new graph")
        save_model_dir(target, _info(), _fitted_scorer(), overwrite=True,
                       extra_files={"backbone/new-key.onnx": graph})
        assert sorted(p.name for p in (target / "backbone").iterdir()) == ["new-key.onnx"]
        assert all((target / name).read_text() == "mine" for name in keep)
        (target / "backbone" / "exported-since.onnx").write_bytes(b"cache")
        read_model_info(target)


def test_model_folder_permissions_follow_the_umask(tmp_path):
    import stat

    for mask, mode in ((0o027, 0o750), (0o002, 0o775)):
        old = os.umask(mask)
        try:
            target = save_model_dir(tmp_path / f"m{mask:o}", _info(), _fitted_scorer())
        finally:
            os.umask(old)
        assert stat.S_IMODE(target.stat().st_mode) == mode
        assert stat.S_IMODE((target / "scorer").stat().st_mode) == mode
        files = [f for f in target.rglob("*") if f.is_file()]
        assert files and all(stat.S_IMODE(f.stat().st_mode) == mode & 0o666 for f in files)


def test_model_dir_refuses_other_format_version(tmp_path):
    target = save_model_dir(tmp_path / "m", _info(), _fitted_scorer())
    data = json.loads((target / MODEL_JSON).read_text())
    data["format_version"] = 99
    (target / MODEL_JSON).write_text(json.dumps(data))
    write_checksums(target)  # as a newer version saves it
    with pytest.raises(ModelFormatError, match="format version 99"):
        read_model_info(target)
    with pytest.raises(ModelFormatError, match="not a model directory"):
        read_model_info(tmp_path)


@pytest.mark.parametrize("content", [{"format_version": 99}, {"auroc": 0.9}])
def test_a_replaced_model_json_is_reported_as_changed_not_as_another_version(tmp_path, content):
    # another command's JSON written over model.json: the damage, not "re-fit with this version"
    target = save_model_dir(tmp_path / "m", _info(), _fitted_scorer())
    (target / MODEL_JSON).write_text(json.dumps(content))
    with pytest.raises(ModelFormatError, match=r"model\.json: changed or truncated since the model "
                                               r"was saved"):
        read_model_info(target)
    (target / "checksums.json").unlink()  # nothing to compare with: still no version "None"
    if "format_version" not in content:
        with pytest.raises(ModelFormatError, match=r"model\.json: not a model description \(no "
                                                   r"format_version\); restore"):
            read_model_info(target)


def test_model_dir_holding_names_a_models_own_files_only(tmp_path):
    target = save_model_dir(tmp_path / "m", _info(), _fitted_scorer())
    for rel in ("model.json", "checksums.json", "scorer/scorer.json",
                "scorer/scorer_state.safetensors"):
        assert model_dir_holding(target / rel) == target.resolve()
    (target / "backbone").mkdir()
    (target / "backbone" / "g.onnx").write_bytes(b"x")
    assert model_dir_holding(target / "backbone" / "g.onnx") == target.resolve()
    (tmp_path / "link").symlink_to(target)
    assert model_dir_holding(tmp_path / "link" / "model.json") == target.resolve()
    for other in (target / "notes.json", tmp_path / "model.json", tmp_path / "x" / "model.json"):
        assert model_dir_holding(other) is None


def test_raw_training_image_names_are_saved_and_checked_and_older_models_load(tmp_path):
    from dataclasses import replace

    info = replace(_info(), train_images=["a.png", "caf\\xe9.png"],
                   train_images_raw=["", "caf%E9.png"])
    target = save_model_dir(tmp_path / "m", info, _fitted_scorer())
    assert read_model_info(target).train_images_raw == ["", "caf%E9.png"]
    # an older model.json, without them: loads, and its description (identity) is unchanged
    data = json.loads((target / MODEL_JSON).read_text())
    del data["train_images_raw"]
    old = ModelInfo.from_dict(data, "old")
    assert old.train_images_raw == [] and old.to_dict() == data  # what model_identity hashes
    with pytest.raises(ModelFormatError, match=r"m/model.json: train_images_raw: 1 entries for "
                                               r"2 train_images"):
        ModelInfo.from_dict({**data, "train_images_raw": ["x"]}, str(target / MODEL_JSON))
    with pytest.raises(ModelFormatError, match=r"train_images_raw: expected"):
        ModelInfo.from_dict({**data, "train_images_raw": ["", 3]}, "m")


def test_screen_refuses_labels_without_a_report_and_a_model_directory_as_out(tmp_path):
    from anomaly_inspect.screening.runner import screen

    image = tmp_path / "in" / "a.png"
    image.parent.mkdir()
    image.write_bytes(b"")
    with pytest.raises(ValueError, match=r"labels='l.csv': used only by the report, which "
                                         r"report=False turns off"):
        screen(None, [image], tmp_path / "out", labels="l.csv", report=False)
    model = save_model_dir(tmp_path / "m", _info(), _fitted_scorer())
    with pytest.raises(ValueError, match=r"m: is a model directory; choose another out_dir \(screening"):
        screen(None, [image], model)
    assert not (model / "results.csv").exists() and not (tmp_path / "out").exists()


def test_a_shipped_models_load_error_names_the_drivers_model_directory(tmp_path):
    """A worker loads a shipped model from its private copy; the error names the directory the
    model was shipped from, not that copy (which the user never sees)."""
    from anomaly_inspect.screening.remote import load_remote_model

    class Shipped:
        def get(self):
            return {"model.json": b"{not json"}

    with pytest.raises(ValueError) as info:
        load_remote_model(None, Shipped(), None, "/data/models/bottle")
    assert str(info.value).startswith("/data/models/bottle/model.json: unreadable model description")
    assert "anomaly-inspect-model-" not in str(info.value)


def test_written_scores_give_the_decision_against_the_kept_threshold():
    """results.csv's score reads back as the same float64, so `score > threshold` on the file
    (threshold as screen.json keeps it) is the decision, also at the threshold itself (a
    9-digit score, 3.29075885, read back above a threshold of 3.2907588481903076)."""
    import math

    from anomaly_inspect.screening.runner import _fmt

    threshold = float(np.float32(3.2907588481903076))
    assert float(_fmt(np.float32(threshold))) == threshold
    assert not float(_fmt(np.float32(threshold))) > threshold
    values = np.random.default_rng(0).random(1000).astype(np.float32) * 10
    assert all(float(_fmt(v)) == float(v) for v in values)
    assert _fmt(math.nan) == ""


# -- fit's inputs, calibration hold-out and skipped images; the writer's file errors ----------




def test_fit_calibration_and_screen_take_inputs_without_earlier_outputs(tmp_path):
    from anomaly_inspect.screening.model import calibration_split, input_images

    good = [write_image(tmp_path / "train" / f"n{i}.png", rgb_image(16, seed=i)) for i in range(3)]
    earlier_screen(tmp_path / "train" / "res")
    assert input_images([tmp_path / "train"], twins="once") == [p.resolve() for p in good]
    named = tmp_path / "train" / "res" / "overlays" / "a_0123456789.jpg"
    assert input_images([named], twins="once") == [named.resolve()]  # a file named itself stays
    cal = calibration_split(good, [tmp_path / "train"], 0.2, 0)[1]
    assert cal == [p.resolve() for p in good]  # --calibration: the same expansion


def test_the_hold_out_replaces_well_headed_images_that_do_not_decode(tmp_path, caplog):
    from anomaly_inspect.data.image_io import image_size, read_image
    from anomaly_inspect.screening.calibration import holdout_split
    from anomaly_inspect.screening.model import calibration_split, fit_split

    drawn = set(holdout_split(15, 0.2, 12)[1].tolist())  # 9 of 15 do not decode, among them
    corrupt = drawn | set([i for i in range(15) if i not in drawn][:9 - len(drawn)])  # the 3 drawn
    paths = [corrupt_data_png(tmp_path / f"{i:02d}.png", i) if i in corrupt
             else write_image(tmp_path / f"{i:02d}.png", rgb_image(40, seed=i)) for i in range(15)]
    bad = {paths[i] for i in corrupt}
    assert all(image_size(p) == (40, 40) for p in bad)  # only decoding finds them
    assert set(calibration_split(paths, None, 0.2, 12)[1]) <= bad  # the plain draw: all bad
    with caplog.at_level("WARNING"):
        fit_part, cal, _, skipped = fit_split(paths, None, 0.2, 12)
    assert cal and not set(cal) & bad
    for p in cal:
        read_image(p)
    left_out = {s["path"] for s in skipped}
    assert left_out <= {str(p) for p in bad} and caplog.text.count("skipping ") == len(skipped)
    kept = [p for p in paths if str(p) not in left_out]
    assert sorted(fit_part + cal) == kept  # the bad ones not drawn stay, skipped at extraction
    assert (fit_part, cal) == calibration_split(kept, None, 0.2, 12)[:2]  # as a remote fit draws
    assert fit_split(paths, None, 0.2, 12) == (fit_part, cal, _, skipped)  # deterministic
    plain = [p for p in paths if p not in bad]  # where every image reads, the plain split
    assert fit_split(plain, None, 0.2, 12)[:2] == calibration_split(plain, None, 0.2, 12)[:2]


def test_skipped_images_keep_their_role_and_older_models_count_them_as_training():
    from anomaly_inspect.screening.model import skipped_as, with_roles

    skipped = with_roles([{"path": "/t/a.png", "error": "e"}, {"path": "/c/b.png", "error": "e"}],
                         [Path("/c/b.png")])
    assert [s["role"] for s in skipped] == ["training", "calibration"]
    info = ModelInfo.from_dict({**_info().to_dict(), "skipped_images": skipped}, "new")
    assert [s["path"] for s in skipped_as(info, "calibration")] == ["/c/b.png"]
    old = ModelInfo.from_dict({**_info().to_dict(), "skipped_images": [
        {"path": "/t/a.png", "error": "e"}]}, "old")  # saved before roles
    assert len(skipped_as(old, "training")) == 1 and not skipped_as(old, "calibration")


def _batch(n):
    from anomaly_inspect.screening.model import ScoredImage

    images = [ScoredImage(f"/in/img{i}.png", 0.5, 0.5, False) for i in range(n)]
    return images, {i: np.full((8, 8, 3), 100, np.uint8) for i in range(n)}


def test_a_thumbnail_that_cannot_be_written_keeps_its_row_with_a_warning(tmp_path, monkeypatch,
                                                                         caplog):
    from anomaly_inspect.screening.runner import read_results, thumb_relpath

    images, inputs = _batch(3)
    writer, csv_path = stub_batch_writer(tmp_path, monkeypatch, lambda path: None)
    blocked = tmp_path / "out" / thumb_relpath(images[1].path)
    blocked.mkdir(parents=True)  # a folder where the thumbnail goes
    with caplog.at_level("WARNING"):
        writer.write(images, inputs)
    writer.close()
    assert [r["path"] for r in read_results(csv_path)[0]] == [r.path for r in images]
    assert "no thumbnail for /in/img1.png: cannot write " + str(blocked) in caplog.text
    assert (tmp_path / "out" / thumb_relpath(images[2].path)).is_file()


def test_a_full_disk_stops_naming_the_file_once_the_rows_done_are_written(tmp_path, monkeypatch):
    import errno

    from anomaly_inspect.screening.runner import DiskFullError, read_results, thumb_relpath

    images, inputs = _batch(3)
    full = tmp_path / "out" / thumb_relpath(images[1].path)

    def fail(path):
        if path == full:
            raise OSError(errno.ENOSPC, "No space left on device")

    writer, csv_path = stub_batch_writer(tmp_path, monkeypatch, fail)
    with pytest.raises(DiskFullError, match=f"^{full}: cannot write the thumbnail of "
                                            f"/in/img1.png \\(No space left on device\\)"):
        writer.write(images, inputs)
    writer.close()
    assert [r["path"] for r in read_results(csv_path)[0]] == [images[0].path]



def _two_models(tmp_path):
    """A model (A) at ``tmp_path/m`` and a save of A or B (another threshold, another bank)
    over it."""
    from anomaly_inspect.config import ModelConfig
    from anomaly_inspect.screening.calibration import calibrate

    def made(n_images: int, offset: float):
        rng = np.random.default_rng(n_images)
        scorer = PatchCore(coreset_ratio=0.5, progress=False).fit(
            Features(patches=rng.normal(size=(n_images, 3, 3, 8)).astype(np.float32)))
        info = ModelInfo(config=ModelConfig.from_dict({}, "config").to_dict(),
                         backbone={"name": "b", "weights": {"checksum": "abc"}},
                         calibration=calibrate(np.arange(20.0) + offset, 0.1, "x").to_dict(),
                         train_images=["a.png"] * n_images, calibration_images=["b.png"])
        return info, scorer

    target = tmp_path / "m"
    models = {"A": made(4, 0.0), "B": made(2, 100.0)}
    save_model_dir(target, *models["A"])
    return target, lambda name: save_model_dir(target, *models[name], overwrite=True)


def _stub_backbone(monkeypatch, built=(), extracted=()):
    """load_model without a backbone: its build and the extractor's stubbed. The n-th build
    runs ``built[n]`` (after ``model.json`` and the checksums are read and verified, before
    the scorer is), the n-th extractor ``extracted[n]`` (after the scorer is read)."""
    from types import SimpleNamespace

    from anomaly_inspect.screening import model as model_module

    built, extracted = list(built), list(extracted)

    def build(cfg, cache_dir):
        if built:
            built.pop(0)()
        return SimpleNamespace(weight_source=SimpleNamespace(checksum="abc"))

    def extractor(*args, **kwargs):
        if extracted:
            extracted.pop(0)()

    monkeypatch.setattr(model_module, "build_backbone", build)
    monkeypatch.setattr(model_module, "build_extractor", extractor)


def _which(model) -> tuple[int, int, bool]:
    """(images in model.json, rows of the bank, threshold of B): (4, 18, False) for A,
    (2, 9, True) for B, anything else mixes the two."""
    return (len(model.info.train_images), model.scorer.memory_bank.shape[0],
            model.threshold > 100)


def test_a_model_replaced_while_it_loads_is_loaded_again_whole(tmp_path, monkeypatch):
    from anomaly_inspect.screening.model import load_model

    target, save = _two_models(tmp_path)
    _stub_backbone(monkeypatch, built=[lambda: save("B")])  # after A's model.json is read
    assert _which(load_model(target)) == (2, 9, True)  # all of B, not A's threshold
    # B, then A, then B again while it loads (its scorer read from A): the same checksums.json
    # bytes before and after, yet two saves
    before = (target / "checksums.json").read_bytes()
    _stub_backbone(monkeypatch, built=[lambda: save("A")], extracted=[lambda: save("B")])
    assert _which(load_model(target)) == (2, 9, True)
    assert (target / "checksums.json").read_bytes() == before


def test_the_errors_of_a_load_a_save_raced_are_retried_and_a_folder_replaced_on_every_try_is_refused(
        tmp_path, monkeypatch):
    from anomaly_inspect.screening import model as model_module
    from anomaly_inspect.screening import model_dir

    target, save = _two_models(tmp_path)
    verify, saves, calls = model_dir._verify_file, [lambda: save("B")], []

    def replaced_first(directory, rel, want):  # A's checksums read, B's files: "changed"
        if saves:
            saves.pop()()
        calls.append(rel)
        verify(directory, rel, want)

    monkeypatch.setattr(model_dir, "_verify_file", replaced_first)
    _stub_backbone(monkeypatch)
    assert _which(model_module.load_model(target)) == (2, 9, True)
    listed = list(json.loads((target / "checksums.json").read_text())["files"])
    assert calls == [listed[0], *listed]  # the first try refused its first file, then B whole
    _stub_backbone(monkeypatch, built=[lambda: save("A"), lambda: save("B"), lambda: save("A")])
    with pytest.raises(RuntimeError, match=f"^{target}: replaced while loading \\(3 times in a "
                                           f"row: saves to it ran meanwhile\\); retry$"):
        model_module.load_model(target)
    # damage that no save explains is reported at once, as it was
    calls.clear()
    (target / "model.json").write_bytes((target / "model.json").read_bytes() + b" ")
    with pytest.raises(ModelFormatError, match=r"model\.json: changed since the model was saved"):
        model_module.load_model(target)
    assert calls == ["model.json"]


def test_a_load_takes_no_save_lock(tmp_path, monkeypatch):
    from anomaly_inspect.screening import model_dir
    from anomaly_inspect.screening.model import load_model

    target, _ = _two_models(tmp_path)
    _stub_backbone(monkeypatch)
    with model_dir._saving(target):  # a save to it in progress
        assert _which(load_model(target)) == (4, 18, False)
