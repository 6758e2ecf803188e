"""Explanations end to end on real MVTec bottle images (subsampled, 128 px, for speed)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from anomaly_inspect.cli import main
from anomaly_inspect.data.image_io import read_image
from anomaly_inspect.screening import load_model
from anomaly_inspect.screening.model_dir import write_checksums
from anomaly_inspect.screening.runner import explain_relpath
from browser import headless_dom

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(bottle_subset):
    root = bottle_subset(24, 4, ("--calibration-fraction", "0.25", "--target-fpr", "0.1"))
    return root, root / "model"


def test_a_defect_is_matched_with_a_train_good_patch_inside_its_image(setup, capsys):
    root, model_dir = setup
    defects = sorted((root / "bottle" / "test" / "broken_large").iterdir())
    out = root / "explained"
    assert main(["explain", str(model_dir), *map(str, defects), "--out", str(out), "--quiet"]) == 0
    assert "matched" in capsys.readouterr().out
    doc = json.loads((out / "explanations.json").read_text())
    model = load_model(model_dir)
    scores = {r.path: r.score for r in model.score(defects)}
    assert len(doc) == 4
    for e in doc:
        assert (out / e["strip"]).is_file()
        top = e["patches"][0]
        assert top["distance"] == scores[e["path"]]  # exactly the image score
        assert len(e["patches"]) == 3
        for p in e["patches"]:
            m = p["match"]
            assert m["note"] == "" and m["view"] is None
            assert "/bottle/train/good/" in m["path"]  # a normal training image
            h, w = read_image(m["path"]).shape[:2]
            b = m["box"]
            assert b["top"] >= 0 and b["top"] + b["height"] <= h and b["height"] > 0
            assert b["left"] >= 0 and b["left"] + b["width"] <= w and b["width"] > 0
            b = p["box"]  # the suspicious patch lies inside the screened image (900 x 900)
            assert b["top"] + b["height"] <= 900 and b["left"] + b["width"] <= 900
    # the Python API: one image alone (a batch of one: the backbone's float rounding may
    # differ from the batch of four in the last digits, the explanation is the same)
    e = model.explain(defects[0])
    assert e.patches[0].distance == model.score([defects[0]])[0].score
    first = next(d for d in doc if d["path"] == str(defects[0].resolve()))
    assert e.patches[0].distance == pytest.approx(first["patches"][0]["distance"], rel=1e-5)
    assert e.patches[0].match.path == first["patches"][0]["match"]["path"]


def test_explaining_into_the_same_folder_keeps_earlier_entries(setup, capsys):
    root, model_dir = setup
    defects = sorted((root / "bottle" / "test" / "broken_large").iterdir())
    out = root / "explained_twice"
    assert main(["explain", str(model_dir), str(defects[0]), "--out", str(out), "--quiet"]) == 0
    assert main(["explain", str(model_dir), str(defects[1]), str(defects[0]), "--out", str(out),
                 "--quiet"]) == 0
    doc = json.loads((out / "explanations.json").read_text())
    assert sorted(d["path"] for d in doc) == sorted(str(p.resolve()) for p in defects[:2])
    (out / "explanations.json").write_text('{"not": "ours"}')
    assert main(["explain", str(model_dir), str(defects[2]), "--out", str(out), "--quiet"]) == 1
    assert "not an explanations file of this tool" in capsys.readouterr().err
    assert (out / "explanations.json").read_text() == '{"not": "ours"}'


def test_screen_explain_strips_in_the_report(setup):
    root, model_dir = setup
    out = root / "screened"
    assert main(["screen", str(model_dir), str(root / "bottle" / "test"), "--out", str(out),
                 "--explain", "2", "--quiet"]) == 0
    rows = (out / "results.csv").read_text().splitlines()[1:]
    flagged = [r.split(",")[0] for r in rows if ",anomalous," in r]
    assert flagged
    for path in flagged:
        assert (out / explain_relpath(path)).is_file()
        e = json.loads((out / explain_relpath(path, ".json")).read_text())
        assert len(e["patches"]) == 2 and e["flagged"]
    html = (out / "report.html").read_text()
    assert html.count("class='why-row'") == len(flagged)
    opened = out / "opened.html"
    opened.write_text(html.replace("<details class='why'>", "<details class='why' open>", 1))
    dom, console = headless_dom(opened)
    assert console == []
    assert 'data-ready="1"' in dom
    # the opened strip is decoded (embedded, as the thumbnails are), the others are not
    assert len(re.findall(r'<img alt="nearest normal patches of [^"]*" src="data:image/jpeg', dom)) == 1
    assert dom.count("data-src=") == len(flagged) - 1


def _copy_model(src, dst, edit_state=None, edit_info=None):
    shutil.copytree(src, dst)
    if edit_state:
        path = dst / "scorer" / "scorer_state.safetensors"
        save_file(edit_state(load_file(str(path))), str(path))
    if edit_info:
        info = json.loads((dst / "model.json").read_text())
        edit_info(info)
        (dst / "model.json").write_text(json.dumps(info))
    write_checksums(dst)
    return dst


def test_rescore_with_another_model_removes_the_earlier_rows_files_only(setup, caplog):
    """screen A --overlays all --explain; screen C --rescore (C flags nothing): A's overlays,
    overlay thumbnails and strips go (also those of an image C no longer screens), the
    thumbnails C writes again are C's, and files screen did not write stay."""
    from anomaly_inspect.screening.runner import overlay_relpath, row_files, thumb_relpath

    root, model_dir = setup
    test = root / "bottle" / "test"
    out = root / "rescored_by_c"
    c = _copy_model(model_dir, root / "model_c",
                    edit_info=lambda i: i["calibration"].update(threshold=1e9, scores=[]))
    assert main(["screen", str(model_dir), str(test), "--out", str(out), "--overlays", "all",
                 "--explain", "2", "--quiet"]) == 0
    a_rows = _csv(out)
    a_files = {f for r in a_rows for f in row_files(r)}
    assert all(r["overlay"] == overlay_relpath(r["path"]) for r in a_rows)
    assert any(r["explain"] for r in a_rows) and all((out / f).is_file() for f in a_files)
    mine = [out / "overlays" / "mine.jpg", out / "explain" / "notes.json", out / "thumbs" / "x.jpg"]
    for f in mine:
        f.write_bytes(b"not the tool's")
    kept = sorted((test / "good").iterdir())  # C screens the good images only
    with caplog.at_level("INFO"):
        assert main(["screen", str(c), str(test / "good"), "--out", str(out), "--rescore",
                     "--quiet"]) == 0
    assert "rescore: removed" in caplog.text
    c_rows = _csv(out)
    assert len(c_rows) == len(kept) and all(r["decision"] == "normal" and r["overlay"] == ""
                                            and r["explain"] == "" for r in c_rows)
    left = {str(p.relative_to(out)) for d in ("overlays", "thumbs", "explain") if (out / d).exists()
            for p in (out / d).iterdir()}
    assert left == {thumb_relpath(r["path"]) for r in c_rows} | {"overlays/mine.jpg",
                                                                  "explain/notes.json",
                                                                  "thumbs/x.jpg"}
    assert all(f.read_bytes() == b"not the tool's" for f in mine)


def test_rescore_keeps_the_strips_an_explain_into_the_same_folder_lists(setup):
    """`explain --out OUT/explain` names its strips as `screen --explain` does; `screen
    --rescore` into OUT removes the earlier rows' files but not the strips explanations.json
    lists (it deleted them, leaving the file naming missing strips)."""
    root, model_dir = setup
    test = root / "bottle" / "test"
    out = root / "rescore_keeps_explain"
    assert main(["screen", str(model_dir), str(test), "--out", str(out), "--explain", "2",
                 "--quiet"]) == 0
    defects = sorted((test / "broken_large").iterdir())
    assert main(["explain", str(model_dir), *map(str, defects), "--out", str(out / "explain"),
                 "--quiet"]) == 0
    listed = [e["strip"] for e in json.loads((out / "explain" / "explanations.json").read_text())]
    assert listed and all((out / "explain" / name).is_file() for name in listed)
    assert main(["screen", str(model_dir), str(test), "--out", str(out), "--rescore",
                 "--quiet"]) == 0
    assert all((out / "explain" / name).is_file() for name in listed)


def test_old_models_screen_but_say_refit_to_explain(setup, capsys):
    root, model_dir = setup
    old = _copy_model(model_dir, root / "old_model",
                      edit_state=lambda s: {k: v for k, v in s.items()
                                            if not k.startswith("provenance")},
                      edit_info=lambda i: i.pop("train_image_sha256"))
    test = root / "bottle" / "test"
    assert main(["screen", str(old), str(test), "--out", str(root / "old_screen"), "--quiet"]) == 0
    assert main(["screen", str(old), str(test), "--out", str(root / "old_screen_x"),
                 "--explain", "--quiet"]) == 0  # screens, with a warning and no strips
    assert not (root / "old_screen_x" / "explain").exists()
    capsys.readouterr()
    assert main(["explain", str(old), str(test), "--out", str(root / "old_x"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "refit" in err and str(old) in err and len(err.strip().splitlines()) == 1


def test_moved_or_changed_training_images_give_notes_not_crashes(setup):
    root, model_dir = setup

    def edit(info):
        info["train_images"][0::2] = [p + ".moved" for p in info["train_images"][0::2]]
        info["train_image_sha256"][1::2] = ["0" * 64] * len(info["train_image_sha256"][1::2])

    moved = _copy_model(model_dir, root / "moved_model", edit_info=edit)
    defect = sorted((root / "bottle" / "test" / "broken_large").iterdir())[0]
    out = root / "moved_x"
    assert main(["explain", str(moved), str(defect), "--out", str(out), "--quiet"]) == 0
    doc = json.loads((out / "explanations.json").read_text())
    notes = [p["match"]["note"] for p in doc[0]["patches"]]
    assert all(("moved or deleted" in n) or ("changed since fit" in n) for n in notes)
    assert all(p["match"]["box"] is None for p in doc[0]["patches"])
    assert (out / doc[0]["strip"]).is_file()
    assert np.isfinite(doc[0]["score"])


def test_tailedcore_view_items_are_the_views_they_name(shared_data):
    """Real bottle images: every tail-memory item taken from an augmented view equals the patch
    feature recomputed from the view its provenance names (image, angle / flip, row, column)."""
    import torch

    from anomaly_inspect.config import ModelConfig
    from anomaly_inspect.data.loader import iter_batches
    from anomaly_inspect.features.views import ViewFeatures, one_view
    from anomaly_inspect.pipeline import Runner, build

    cfg = ModelConfig()
    cfg.method = "tailedcore"
    cfg.features.image_size = 96
    cfg.features.batch_size = 2  # views arrive in several batches
    _, extractor, scorer = build(cfg, progress=False)
    paths = sorted((shared_data / "mvtec_ad" / "bottle" / "train" / "good").glob("*.png"))[:6]
    feats = Runner(extractor, progress=False).extract(paths, "train").features
    tail = np.array([1, 4, 5])
    rows = scorer.tail_memory(feats.patches, tail, feats.valid,
                              ViewFeatures(extractor, paths, "rotflip", progress=False))
    prov = scorer.tail_provenance_
    assert len(prov) == len(rows) and set(prov.image.tolist()) <= set(tail.tolist())
    views = np.flatnonzero(prov.cell[:, 2] > 0)
    assert len(views) > len(rows) // 2  # 7 views per image: most items come from views
    inputs = {i: torch.from_numpy(b.images) for i, b in
              zip(tail, iter_batches([paths[i] for i in tail], extractor.transform, 1), strict=True)}
    for k in views[:: max(1, len(views) // 12)]:
        r, c, v = (int(x) for x in prov.cell[k])
        angle, flip = (int(x) for x in prov.views[v])
        view = one_view(inputs[int(prov.image[k])], angle, bool(flip))
        again = extractor.features_of(view, patches_only=True).patches[0, r, c]
        np.testing.assert_allclose(rows[k], again, rtol=1e-4, atol=1e-4)
    own = np.flatnonzero(prov.cell[:, 2] == 0)
    for k in own[:5]:
        np.testing.assert_array_equal(rows[k], feats.patches[prov.image[k], prov.cell[k, 0],
                                                             prov.cell[k, 1]])


def _csv(out):
    import csv

    with open(out / "results.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_the_report_shows_the_strips_results_csv_records(setup):
    """screen A --explain; screen B --rescore: A's strips are removed with A's rows, the
    report shows none; screen B --explain (resumed): B's flagged rows get theirs, scores kept."""
    root, model_dir = setup
    test = str(root / "bottle" / "test")
    out = root / "screened_twice"
    b = _copy_model(model_dir, root / "model_b",
                    edit_info=lambda i: i["calibration"].update(threshold=0.0, scores=[]))  # flags all
    assert main(["screen", str(model_dir), test, "--out", str(out), "--explain", "2",
                 "--quiet"]) == 0
    a_rows = _csv(out)
    a_flagged = [r for r in a_rows if r["decision"] == "anomalous"]
    assert a_flagged and all(r["explain"] == explain_relpath(r["path"]) for r in a_flagged)
    assert all(r["explain"] == "" for r in a_rows if r["decision"] == "normal")

    assert main(["screen", str(b), test, "--out", str(out), "--rescore", "--quiet"]) == 0
    b_rows = _csv(out)
    assert [r["path"] for r in b_rows] == [r["path"] for r in a_rows]  # every image rescored
    assert all(r["decision"] == "anomalous" and r["explain"] == "" for r in b_rows)
    assert not any((out / explain_relpath(r["path"], suffix)).exists()
                   for r in a_flagged for suffix in (".jpg", ".json"))  # A's: gone with its rows
    assert all(r["p_value"] == "" for r in b_rows)  # B's record keeps no calibration scores
    html = (out / "report.html").read_text()
    assert "class='why-row'" not in html and "<th>why?</th>" not in html

    assert main(["screen", str(b), test, "--out", str(out), "--explain", "2", "--quiet"]) == 0
    again = _csv(out)
    assert [(r["path"], r["score"], r["decision"]) for r in again] == \
        [(r["path"], r["score"], r["decision"]) for r in b_rows]  # resumed: not rescored
    assert all(r["explain"] == explain_relpath(r["path"]) for r in again)
    for r in again:
        assert json.loads((out / explain_relpath(r["path"], ".json")).read_text())["threshold"] == 0
    assert (out / "report.html").read_text().count("class='why-row'") == len(again) == 8
    stamps = {p: p.stat().st_mtime_ns for p in (out / "explain").iterdir()}
    assert main(["screen", str(b), test, "--out", str(out), "--explain", "2", "--quiet"]) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "explain").iterdir()} == stamps  # none redone
    gone = out / again[0]["explain"]
    gone.unlink()
    assert main(["screen", str(b), test, "--out", str(out), "--explain", "2", "--quiet"]) == 0
    redone = {p for p, t in stamps.items() if not p.is_file() or p.stat().st_mtime_ns != t}
    assert gone.is_file() and redone == {gone, gone.with_suffix(".json")}  # that one only


def test_images_named_like_strips_are_still_inputs(setup, tmp_path):
    """Images named <stem>_<10 hex digits>.jpg beside explanations.json: only the strips that
    file lists are left out of the inputs, explaining into the input folder again and again."""
    root, model_dir = setup
    import cv2

    defect = sorted((root / "bottle" / "test" / "broken_large").iterdir())[0]
    folder = tmp_path / "in"
    folder.mkdir()
    image = cv2.imread(str(defect))
    names = ["part_1700000000.jpg", "part_1700000001.jpg"]
    for name in names:
        cv2.imwrite(str(folder / name), image)
    for _ in range(2):
        assert main(["explain", str(model_dir), str(folder), "--out", str(folder), "--quiet"]) == 0
        doc = json.loads((folder / "explanations.json").read_text())
        assert sorted(Path(d["path"]).name for d in doc) == names
    assert len(list(folder.glob("*.jpg"))) == 4  # two images, two strips
    assert main(["screen", str(model_dir), str(folder), "--out", str(tmp_path / "s"),
                 "--quiet"]) == 0
    assert sorted(Path(r["path"]).name for r in _csv(tmp_path / "s")) == names


@pytest.mark.parametrize("stop", ["KeyboardInterrupt", "Terminated"])
def test_an_interrupted_explain_keeps_what_it_finished(setup, tmp_path, monkeypatch, stop):
    import anomaly_inspect.screening.explain as ex
    from anomaly_inspect.cli import Terminated

    root, model_dir = setup
    model = load_model(model_dir, batch_size=2)
    defects = sorted((root / "bottle" / "test" / "broken_large").iterdir())
    out = tmp_path / "why"
    render, record = ex.render_strip, []

    def render_then_stop(model, e, image, train):
        if len(record) == 2:  # the third image: the first batch of two was saved before it
            record.append(ex.read_explanations(out))  # explanations.json and its journal
            raise {"KeyboardInterrupt": KeyboardInterrupt, "Terminated": Terminated}[stop]
        record.append(e.path)
        return render(model, e, image, train)

    monkeypatch.setattr(ex, "render_strip", render_then_stop)
    with pytest.raises(BaseException) as stopped:
        ex.explain_to_dir(model, defects, out, top=1)
    assert type(stopped.value).__name__ == stop
    first_two = [str(p.resolve()) for p in defects[:2]]
    assert [d["path"] for d in record[2]] == first_two  # saved per batch (kill -9 keeps it)
    doc = json.loads((out / "explanations.json").read_text())
    assert [d["path"] for d in doc] == first_two  # and when stopped, folded into the file
    assert not (out / ex.JOURNAL).exists()
    assert all((out / d["strip"]).is_file() for d in doc)
    monkeypatch.setattr(ex, "render_strip", render)
    ex.explain_to_dir(model, defects, out, top=1)  # the lock was released; all four now
    assert len(json.loads((out / "explanations.json").read_text())) == len(defects)


def test_an_image_whose_strip_cannot_be_written_keeps_its_explanation(setup, tmp_path,
                                                                     monkeypatch, capsys):
    import anomaly_inspect.screening.explain as ex

    root, model_dir = setup
    defects = sorted((root / "bottle" / "test" / "broken_large").iterdir())[:3]
    out = tmp_path / "why"
    render = ex.render_strip

    def fail_on_the_second(model, e, image, train):
        if e.path == str(defects[1].resolve()):
            raise OSError("could not encode image")
        return render(model, e, image, train)

    monkeypatch.setattr(ex, "render_strip", fail_on_the_second)
    assert main(["explain", str(model_dir), *map(str, defects), "--out", str(out), "--quiet"]) == 1
    assert f"error: {defects[1].resolve()}: no strip: could not encode image" in \
        capsys.readouterr().err
    doc = {Path(d["path"]).name: d for d in json.loads((out / "explanations.json").read_text())}
    failed = doc[defects[1].name]
    assert failed["strip_error"] == "could not encode image" and "error" not in failed
    assert "strip" not in failed and len(failed["patches"]) == 3  # the explanation is kept
    for p in (defects[0], defects[2]):  # the images after it were explained too
        assert (out / doc[p.name]["strip"]).is_file() and len(doc[p.name]["patches"]) == 3
        assert "strip_error" not in doc[p.name]


def test_every_error_line_names_the_image_once(setup, tmp_path, monkeypatch, capsys):
    import anomaly_inspect.screening.explain as ex

    root, model_dir = setup
    folder = tmp_path / "in"
    folder.mkdir()
    defect = sorted((root / "bottle" / "test" / "broken_large").iterdir())[0]
    gone, small = (shutil.copyfile(defect, folder / name) for name in ("gone.png", "small.png"))
    explain, render = ex.explain_scored, ex.render_strip

    def removed_after_scoring(model, scored, *a, **k):
        if scored.path == str(gone):
            gone.unlink()
        return explain(model, scored, *a, **k)

    monkeypatch.setattr(ex, "explain_scored", removed_after_scoring)
    monkeypatch.setattr(ex, "render_strip", lambda model, e, image, train:
                        render(model, e, image[:16, :16], train))  # a thumbnail: refused
    assert main(["explain", str(model_dir), str(folder), "--out", str(tmp_path / "why"),
                 "--quiet"]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert f"error: {gone}: file not found" in lines
    assert any(line.startswith(f"error: {small}: no strip: a strip is drawn on the model "
                               f"input's content") for line in lines)
    for path in (gone, small):
        assert sum(line.count(str(path)) for line in lines) == 1
    monkeypatch.setattr(ex, "render_strip", render)
    shutil.copyfile(defect, gone)
    with pytest.raises(ValueError) as raised:  # the Python API (removed again) names it once
        load_model(model_dir).explain(gone)
    assert str(raised.value) == f"{gone}: file not found"


def test_non_utf8_names_are_written_as_results_csv_writes_them(setup, tmp_path):
    """Two names that display alike (a raw byte 0xE9, the text "\\xe9") are two images: two
    entries and strips; every JSON entry names its image as results.csv does (path as text,
    raw_path as percent-encoded bytes), with no lone surrogate left in the file."""
    import os

    root, model_dir = setup
    defect = sorted((root / "bottle" / "test" / "broken_large").iterdir())[0]
    folder = tmp_path / "in"
    folder.mkdir()
    raw = Path(os.fsdecode(os.fsencode(folder) + b"/\xe9.png"))
    lookalike = folder / "\\xe9.png"
    for path in (raw, lookalike):
        shutil.copyfile(defect, path)
    why = tmp_path / "why"
    assert main(["explain", str(model_dir), str(folder), "--out", str(why), "--quiet"]) == 0
    doc = json.loads((why / "explanations.json").read_bytes().decode("utf-8"))
    assert sorted((d["path"], d["raw_path"]) for d in doc) == [
        (str(lookalike), ""), (str(lookalike), f"{folder}/%E9.png")]
    assert len({d["strip"] for d in doc}) == 2
    out = tmp_path / "screened"
    assert main(["screen", str(model_dir), str(folder), "--out", str(out), "--explain", "1",
                 "--quiet"]) == 0
    rows = [r for r in _csv(out) if r["explain"]]
    assert rows
    for row in rows:
        e = json.loads((out / Path(row["explain"]).with_suffix(".json")).read_bytes()
                       .decode("utf-8"))
        assert (e["path"], e["raw_path"]) == (row["path"], row["raw_path"])


def test_screen_keeps_the_explanation_of_an_image_whose_strip_fails(setup, tmp_path, monkeypatch,
                                                                    caplog):
    """As explain does: the JSON is written with a strip_error, results.csv lists no strip, and
    the warning names the image once (before, the explanation was dropped with the strip)."""
    import logging

    import anomaly_inspect.screening.explain as ex

    root, model_dir = setup
    defects = sorted((root / "bottle" / "test" / "broken_large").iterdir())[:2]

    def fail(model, e, image, train):
        raise OSError("could not encode image")

    monkeypatch.setattr(ex, "render_strip", fail)
    out = tmp_path / "screened"
    with caplog.at_level(logging.WARNING, logger="anomaly_inspect.screening.runner"):
        assert main(["screen", str(model_dir), *map(str, defects), "--out", str(out),
                     "--explain", "2", "--quiet"]) == 0
    rows = (out / "results.csv").read_text().splitlines()[1:]
    flagged = [r.split(",")[0] for r in rows if ",anomalous," in r]
    assert flagged and not list((out / "explain").glob("*.jpg"))
    for path in flagged:
        e = json.loads((out / explain_relpath(path, ".json")).read_text())
        assert e["strip_error"] == "could not encode image" and len(e["patches"]) == 2
        assert f"no explanation strip for {path}: could not encode image" in caplog.text
        assert caplog.text.count(path) == 1
