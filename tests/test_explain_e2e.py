"""Explanations end to end on real MVTec bottle images (subsampled, 128 px, for speed)."""

from __future__ import annotations

import json
import re
import shutil

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
