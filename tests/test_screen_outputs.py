"""screen / explain against their own inputs and a model directory: --output-json never
replaces an input image, explain --out refuses a model directory as screen --out does, and a
user's images in thumbs/ overlays/ explain/ of an input folder used as --out are screened
unless an earlier screen wrote those folders; thumbnails keep the source's aspect ratio in
stretch mode; ``screen --output-json`` gives whole-folder totals beside this run's counts.

The model is a tiny one (random backbone weights, 64 px inputs) fitted once per module."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from anomaly_inspect.cli import main
from anomaly_inspect.commands.common import check_output_json
from anomaly_inspect.screening.explain import explain_to_dir
from anomaly_inspect.screening.runner import screen
from layout_writer import fit_tiny_model, rgb_image, write_image


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(fitted model, saved model directory)."""
    return fit_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.mark.parametrize("command", ["screen", "explain"])
def test_output_json_refuses_an_input_image(tiny, tmp_path, capsys, command):
    """--output-json naming the image being screened / explained used to replace it with the
    summary (exit 0); it is refused before any work, naming the path and why."""
    _, saved = tiny
    img = write_image(tmp_path / "ow" / "part.png", rgb_image(40))
    before = img.read_bytes()
    out = tmp_path / "row"
    assert main([command, str(saved), str(img), "--out", str(out), "--quiet",
                 "--output-json", str(img)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: --output-json {img}: is an input image of this command; give another path"
    assert img.read_bytes() == before and not out.exists()


def test_output_json_refuses_inputs_and_images_it_would_replace(tmp_path):
    """An input a folder, a glob or a link brings in is compared as resolved; a named input
    that is no image by content still is one; an image that is no input is refused by its
    signature; a JSON file of an earlier run (no input, no image) may be replaced."""
    folder = tmp_path / "in"
    img = write_image(folder / "a.png", rgb_image(16))
    named = folder / "broken.png"  # named: an input (its error row), whatever it holds
    named.write_text("not an image")
    (tmp_path / "link.json").symlink_to(img)
    for path, inputs in ((img, [folder]), (img, [str(folder / "*.png")]),
                         (tmp_path / "link.json", [folder]), (named, [named])):
        with pytest.raises(ValueError, match=r": is an input image of this command; give"):
            check_output_json(path, inputs=inputs)
    other = write_image(tmp_path / "photo.png", rgb_image(16))
    disguised = tmp_path / "summary.json"
    disguised.write_bytes(other.read_bytes())  # an image whatever its name says
    for path in (other, disguised):
        with pytest.raises(ValueError, match=rf"--output-json {path}: is an image file \(by its "
                                             r"content\); give another path"):
            check_output_json(path, inputs=[folder])
    earlier = tmp_path / "earlier.json"
    earlier.write_text("{}")
    check_output_json(earlier, inputs=[folder])  # a re-run's summary: replaced
    check_output_json(folder / "notes.txt", inputs=[folder])  # not there (nor an input)


def test_explain_refuses_a_model_directory_as_out(tiny, tmp_path, capsys):
    """explain --out MODEL wrote its strips, explanations.json and lock among the model's
    files; it is refused as screen --out MODEL is, with the same words, nothing written."""
    model, saved = tiny
    copy = Path(shutil.copytree(saved, tmp_path / "m"))
    img = write_image(tmp_path / "a.png", rgb_image(40))
    before = sorted(p.name for p in copy.iterdir())
    assert main(["explain", str(copy), str(img), "--out", str(copy), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {copy}: is a model directory; choose another --out (explain "
                   f"writes explanations.json and its strips into it)")
    assert sorted(p.name for p in copy.iterdir()) == before
    with pytest.raises(ValueError, match=r"m: is a model directory; choose another out_dir"):
        explain_to_dir(model, [img], copy)
    assert sorted(p.name for p in copy.iterdir()) == before


def test_user_images_in_output_named_subfolders_are_inputs_until_a_screen_wrote_them(
        tiny, tmp_path):
    """With --out the input folder, thumbs/ overlays/ explain/ there were left out even when
    no run had written them ('no images found', or an image silently missing); now only an
    earlier screen's (explain writes none of them: only its listed strips stay out)."""
    model, _ = tiny
    odd3 = tmp_path / "odd3"
    write_image(odd3 / "explain" / "user_b.png", rgb_image(40, seed=1))
    for _ in range(2):  # an explain run's folder: its subfolders are still the user's
        results = explain_to_dir(model, [odd3], odd3, top=1)
        assert [Path(p).name for p, _, _ in results] == ["user_b.png"]
    odd2 = tmp_path / "odd2"
    write_image(odd2 / "thumbs" / "user_a.png", rgb_image(40, seed=2))
    write_image(odd2 / "top.png", rgb_image(40, seed=3))
    s = screen(model, [odd2], odd2, progress=False, report=False, overlays="all")
    assert s.n_inputs == 2 and s.n_scored == 2
    # now an earlier screen wrote thumbs/ and overlays/: its thumbnails are no inputs
    s = screen(model, [odd2], odd2, progress=False, report=False, overlays="all")
    assert s.n_scored == 0 and not s.n_errors


# Thumbnails keep the source's aspect ratio in stretch mode, and screen --output-json gives
# whole-folder totals beside this run's counts.
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """(fitted model, saved model directory)."""
    return fit_tiny_model(tmp_path_factory.mktemp("tiny_model"))


# -- thumbnails keep the source's aspect ratio ---------------------------------------------
def _wide(seed: int = 0) -> np.ndarray:
    return np.concatenate([rgb_image(48, seed), rgb_image(48, seed + 1)], axis=1)  # 48 x 96


def test_stretch_thumbnails_keep_the_source_aspect_ratio(tiny_model, tmp_path):
    model, _ = tiny_model
    assert model.extractor.transform.resize == "stretch"
    write_image(tmp_path / "in" / "wide.png", _wide())
    write_image(tmp_path / "in" / "tall.png", _wide(2).transpose(1, 0, 2).copy())
    out = tmp_path / "out"
    screen(model, [tmp_path / "in"], out, progress=False, report=False, overlays="all")
    shapes = {}
    for p in (out / "thumbs").glob("*.jpg"):
        kind = "overlay" if p.stem.endswith("_overlay") else "thumb"
        shapes[(p.name.split("_")[0], kind)] = cv2.imread(str(p)).shape[:2]
    # the 64 px model input (not upscaled) at the source's 1:2 / 2:1, as its overlay thumbnail
    assert shapes[("wide", "thumb")] == (32, 64) and shapes[("tall", "thumb")] == (64, 32)
    assert shapes[("wide", "overlay")] == (48, 96) and shapes[("tall", "overlay")] == (96, 48)


def test_a_remote_workers_square_thumbnail_is_brought_back_to_the_aspect_ratio(tiny_model, tmp_path):
    """A remote engine sends the thumbnail of the (squashed) model input: the writer makes the
    same shape of it as of a local model input."""
    from anomaly_inspect.screening.model import ScoredImage
    from anomaly_inspect.screening.runner import _BatchWriter, thumb_relpath

    model, _ = tiny_model
    src = write_image(tmp_path / "wide.png", _wide())
    out = tmp_path / "out"
    out.mkdir()
    writer = _BatchWriter(model, out, out / "results.csv", "none", 128)
    try:
        r = ScoredImage(str(src), 0.1, 0.5, False)
        writer.write([r], {0: np.zeros((128, 128, 3), np.uint8)})  # remote: a 128 px square
    finally:
        writer.close()
    assert cv2.imread(str(out / thumb_relpath(str(src)))).shape[:2] == (64, 128)


# -- --output-json totals of the whole results folder ---------------------------------------
def test_output_json_gives_the_results_folders_totals_on_a_resumed_run(tiny_model, tmp_path):
    """On a resumed run this run's n_flagged is 0 while report.html counts every row: the JSON
    now also gives the totals of the rows the report counts."""
    _, saved = tiny_model
    inp = tmp_path / "in"
    for i in range(2):
        write_image(inp / f"{i}.png", rgb_image(40, seed=i))
    striped = np.zeros((40, 40, 3), np.uint8)
    striped[::4] = 255  # far from the training images: flagged
    write_image(inp / "striped.png", striped)
    (inp / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    args = ["screen", str(saved), str(inp), "--out", str(out), "--quiet", "--overlays", "none"]
    assert main([*args, "--output-json", str(tmp_path / "a.json")]) == 1
    first = json.loads((tmp_path / "a.json").read_text())
    assert main([*args, "--output-json", str(tmp_path / "b.json")]) == 1  # resumed: the error retried
    second = json.loads((tmp_path / "b.json").read_text())
    summary = json.loads((out / "report.html").read_text().split(
        "<script type='application/json' id='summary'>")[1].split("</script>")[0])
    assert first["n_flagged"] >= 1 and first["n_flagged_total"] == first["n_flagged"]
    assert (first["n_rows_total"], first["n_errors_total"]) == (4, 1)
    assert (second["n_scored"], second["n_resumed"], second["n_flagged"], second["n_errors"]) == (
        0, 3, 0, 1)
    assert (second["n_rows_total"], second["n_flagged_total"], second["n_errors_total"]) == (
        summary["n_images"], summary["n_flagged"], summary["n_errors"]) == (
        4, first["n_flagged"], 1)
