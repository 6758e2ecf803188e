"""Resumed screening runs: ``--explain TOP`` redraws the strips drawn for a smaller TOP (and
keeps those drawn for a larger one); a labels CSV naming none of the images counts each
screened image once."""

from __future__ import annotations

import csv
import json

import pytest

from anomaly_inspect.screening.runner import explain_relpath, screen
from layout_writer import fit_tiny_model, rgb_image, write_image


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("s47")
    model, _ = fit_tiny_model(root)
    model.calibration.threshold = -1.0  # below every score: every image is flagged
    inp = root / "inp"
    for i in range(2):
        write_image(inp / f"{i}.png", rgb_image(64, seed=30 + i))
    return model, inp


def _screen(model, inp, out, **kw):
    kw = {"report": False, **kw}
    return screen(model, [inp], out, progress=False, overlays="none", **kw)


def _strips(out) -> dict:
    """{explanation JSON: (number of patches, mtime of the JSON, mtime of its strip)}."""
    with open(out / "results.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and all(r["explain"] == explain_relpath(r["path"]) for r in rows)
    got = {}
    for r in rows:
        js, jpg = out / explain_relpath(r["path"], ".json"), out / r["explain"]
        got[js] = (len(json.loads(js.read_text())["patches"]), js.stat().st_mtime_ns,
                   jpg.stat().st_mtime_ns)
    return got


def test_a_resumed_run_redraws_the_strips_drawn_for_a_smaller_top(tiny, tmp_path):
    model, inp = tiny
    out = tmp_path / "out"
    _screen(model, inp, out, explain=2)
    first = _strips(out)
    assert {n for n, *_ in first.values()} == {2}

    s = _screen(model, inp, out, explain=2)  # the same TOP: nothing redrawn
    assert s.n_resumed == 2 and _strips(out) == first

    s = _screen(model, inp, out, explain=4)  # a larger TOP: every strip redrawn with 4
    assert s.n_resumed == 2 and s.n_scored == 0
    larger = _strips(out)
    assert {n for n, *_ in larger.values()} == {4}
    assert all(larger[k][1:] != first[k][1:] for k in first)

    _screen(model, inp, out, explain=3)  # a smaller TOP: the strips of 4 are kept
    assert _strips(out) == larger


def test_a_damaged_explanation_counts_as_lacking(tiny, tmp_path):
    model, inp = tiny
    out = tmp_path / "out"
    _screen(model, inp, out, explain=2)
    before = _strips(out)
    damaged = next(iter(before))
    damaged.write_text('{"patches": [')
    _screen(model, inp, out, explain=2)
    after = _strips(out)
    assert after[damaged][0] == 2 and after[damaged][1:] != before[damaged][1:]
    assert {k: v for k, v in after.items() if k != damaged} == \
        {k: v for k, v in before.items() if k != damaged}  # the others kept


def test_a_top_larger_than_the_image_gives_is_drawn_once(tiny, tmp_path):
    """A strip with fewer patches than TOP because its image has no more (the patch grid
    is small) is not redrawn by every later run with that TOP."""
    model, inp = tiny
    out = tmp_path / "out"
    _screen(model, inp, out, explain=40)
    first = _strips(out)
    assert all(n < 40 for n, *_ in first.values())
    _screen(model, inp, out, explain=40)
    assert _strips(out) == first


def test_labels_naming_no_image_count_each_resumed_image_once(tiny, tmp_path):
    model, inp = tiny
    out = tmp_path / "out"
    _screen(model, inp, out)
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\nelsewhere/a.png,1\n")
    with pytest.raises(ValueError, match=r"names none of the 2 screened images"):
        _screen(model, inp, out, report=True, labels=str(bad))
    new = tmp_path / "new"
    write_image(new / "n.png", rgb_image(64, seed=40))
    with pytest.raises(ValueError, match=r"names none of the 3 screened images"):
        _screen(model, new, out, report=True, labels=str(bad))  # this run's and the earlier rows
