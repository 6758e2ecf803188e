"""explain / screen fixes: an earlier strip stays out of the inputs after its entry became an
error, patch boxes in file pixels never overlap (also at a fractional scale), thumbnails keep
the source's aspect ratio in stretch mode, and ``screen --output-json`` gives whole-folder totals
beside this run's counts.

The model is a tiny one (random backbone weights, 64 px inputs, stretch) fitted once per module."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from anomaly_inspect.cli import main
from anomaly_inspect.data.transforms import Box, TransformConfig
from anomaly_inspect.screening.explain import explain_scored, explain_to_dir, input_to_file
from anomaly_inspect.screening.runner import screen
from layout_writer import fit_tiny_model, rgb_image, write_image
from test_explain import _hand_made, _overlap, _scored_map


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(fitted model, saved model directory)."""
    return fit_tiny_model(tmp_path_factory.mktemp("s42_screen_tune"))


# -- 1: an error entry keeps the strip of the entry it replaces ------------------------------
def test_a_strip_stays_out_of_the_inputs_after_its_entry_became_an_error(tiny, tmp_path):
    """explain --out INPUT_FOLDER; the image made unreadable (its entry becomes an error);
    restored: the first run's strip used to be scored as an input (and a strip of it drawn)."""
    model, _ = tiny
    inp = tmp_path / "inp2"
    first = write_image(inp / "000.png", rgb_image(40, seed=0))
    write_image(inp / "001.png", rgb_image(40, seed=1))
    names = ["000.png", "001.png"]
    assert [Path(p).name for p, _, _ in explain_to_dir(model, [inp], inp, top=1)] == names
    strip = {e["path"]: e["strip"] for e in json.loads((inp / "explanations.json").read_text())}
    good = first.read_bytes()
    first.write_bytes(b"not an image")
    results = explain_to_dir(model, [inp], inp, top=1)
    assert [Path(p).name for p, _, _ in results] == names and results[0][2]  # an error
    entries = {e["path"]: e for e in json.loads((inp / "explanations.json").read_text())}
    broken = entries[str(first)]
    assert broken["error"] and broken["strip"] == strip[str(first)]  # its file is still there
    assert (inp / broken["strip"]).is_file()
    first.write_bytes(good)
    results = explain_to_dir(model, [inp], inp, top=1)
    assert [Path(p).name for p, _, _ in results] == names  # no strip among them
    assert all(not error for _, _, error in results)
    assert sorted(p.name for p in inp.glob("*.jpg")) == sorted(strip.values())


# -- 2: boxes of adjacent cells share no pixel --------------------------------------------------
@pytest.mark.parametrize("resize", ["stretch", "pad"])
@pytest.mark.parametrize("size,factor", [((900, 900), 1), ((900, 700), 1), ((1801, 1203), 2)])
def test_boxes_of_adjacent_cells_are_disjoint_and_cover_the_image(resize, size, factor):
    """Input-pixel cells mapped to file pixels at a fractional scale (320 px over 900 px):
    the start was floored and the end ceiled, so neighbours shared a pixel."""
    t = TransformConfig(image_size=320, resize=resize)
    content = t.content_box(-(-size[0] // factor), -(-size[1] // factor))
    for axis, (start, extent) in enumerate(((content.top, content.height),
                                            (content.left, content.width))):
        edges = list(range(start, start + extent, 8)) + [start + extent]
        spans = []
        for a, b in zip(edges, edges[1:], strict=False):
            rect = (a, 0, b, 8) if axis == 0 else (0, a, 8, b)
            box = input_to_file(t, size, factor, rect)
            spans.append((box.top, box.height) if axis == 0 else (box.left, box.width))
        assert spans[0][0] == 0 and spans[-1][0] + spans[-1][1] == size[axis]  # all of it
        for (s0, n0), (s1, _) in zip(spans, spans[1:], strict=False):
            assert s0 + n0 == s1, (axis, s0, n0, s1)  # touching, not overlapping, no gap


def test_explained_boxes_never_overlap_in_the_files_pixels(tmp_path):
    """Patches 3 cells apart at a fractional scale (64 px input over a 100 px image)."""
    model, _, _ = _hand_made(tmp_path)
    rng = np.random.default_rng(0)
    for _ in range(20):
        e = explain_scored(model, _scored_map(rng.random((8, 8)).astype(np.float32)), top=9,
                           image_size=(100, 100))
        boxes = [p.box for p in e.patches]
        assert len(boxes) > 1
        assert not any(_overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_the_input_to_image_rounding_is_hand_checked():
    t = TransformConfig(image_size=64)
    # 100 / 64 = 1.5625 px per input px: 8 -> 12.5, 16 -> 25, 24 -> 37.5, rounded half up
    assert t.input_to_image(100, 100, 8, 8, 24, 16) == Box(13, 13, 25, 12)
    assert t.input_to_image(100, 100, 0, 0, 8, 8) == Box(0, 0, 13, 13)
    assert t.input_to_image(100, 100, 56, 56, 64, 64) == Box(88, 88, 12, 12)


# -- 3: thumbnails keep the source's aspect ratio ---------------------------------------------
def _wide(seed: int = 0) -> np.ndarray:
    return np.concatenate([rgb_image(48, seed), rgb_image(48, seed + 1)], axis=1)  # 48 x 96


def test_stretch_thumbnails_keep_the_source_aspect_ratio(tiny, tmp_path):
    model, _ = tiny
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


def test_a_remote_workers_square_thumbnail_is_brought_back_to_the_aspect_ratio(tiny, tmp_path):
    """A remote engine sends the thumbnail of the (squashed) model input: the writer makes the
    same shape of it as of a local model input."""
    from anomaly_inspect.screening.model import ScoredImage
    from anomaly_inspect.screening.runner import _BatchWriter, thumb_relpath

    model, _ = tiny
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


# -- 4: --output-json totals of the whole results folder ---------------------------------------
def test_output_json_gives_the_results_folders_totals_on_a_resumed_run(tiny, tmp_path):
    """On a resumed run this run's n_flagged is 0 while report.html counts every row: the JSON
    now also gives the totals of the rows the report counts."""
    _, saved = tiny
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

def test_a_strip_that_cannot_be_drawn_again_keeps_the_earlier_ones_name(tiny, tmp_path,
                                                                       monkeypatch):
    import anomaly_inspect.screening.explain as ex

    model, _ = tiny
    inp = tmp_path / "inp"
    write_image(inp / "000.png", rgb_image(40, seed=0))
    explain_to_dir(model, [inp], inp, top=1)
    (entry,) = json.loads((inp / "explanations.json").read_text())

    def fails(*args):
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(ex, "render_strip", fails)
        (result,) = explain_to_dir(model, [inp], inp, top=1)
    assert result[2] == "no strip: disk full"
    (again,) = json.loads((inp / "explanations.json").read_text())
    assert again["strip_error"] == "disk full" and again["strip"] == entry["strip"]
    assert [Path(p).name for p, _, _ in explain_to_dir(model, [inp], inp, top=1)] == ["000.png"]
