"""Training images are one set whatever links or spellings bring them in: ``fit`` counts a
hard-linked twin once, as ``evaluate`` does (and says so in the same words), and the order
they are fitted in (which the seeded hold-out and coreset draws follow) is one for ``fit``
and ``evaluate`` alike, whether the folders are named relative, absolute, through ``..`` or a
link, and whatever Unicode form the names are in."""

from __future__ import annotations

import logging
import os
import unicodedata

from anomaly_inspect.data.folder import load_folders
from anomaly_inspect.data.layout import canonical_path, list_images, listing_order
from anomaly_inspect.screening.model import fit_split, input_images
from layout_writer import rgb_image, write_image


def _twins(tmp_path):
    """Folders A (6 images) and B (4 of its own and 2 hard links to A's)."""
    a, b = tmp_path / "A", tmp_path / "B"
    for i in range(6):
        write_image(a / f"a{i}.png", rgb_image(40, seed=i))
    for i in range(4):
        write_image(b / f"b{i}.png", rgb_image(40, seed=100 + i))
    os.link(a / "a0.png", b / "hard.png")
    os.link(a / "a1.png", b / "hard2.png")
    return a, b


def test_fit_counts_a_hard_linked_twin_once_as_evaluate_does(tmp_path, caplog):
    a, b = _twins(tmp_path)
    with caplog.at_level(logging.WARNING):
        forward = input_images([a, b], twins="once")
    fit_says = [r.getMessage() for r in caplog.records if "brought in twice" in r.getMessage()]
    backward = input_images([b, a], twins="once")
    caplog.clear()
    assert len(forward) == 10
    # the twin kept is the one listed first, whichever folder was named first
    assert sorted(forward) == sorted(backward)
    assert {p.name for p in forward} == {f"a{i}.png" for i in range(6)} | {f"b{i}.png" for i in range(4)}
    fit_part, held, _, _ = fit_split(forward, None, 0.25, 0)
    assert fit_split(backward, None, 0.25, 0)[:2] == (fit_part, held)
    assert len({os.stat(p).st_ino for p in fit_part + held}) == 10  # no twin across the split
    with caplog.at_level(logging.WARNING):
        ds = load_folders([a, b])
    evaluate_says = [r.getMessage() for r in caplog.records if "brought in twice" in r.getMessage()]
    assert [canonical_path(s.path) for s in ds.train] == listing_order(forward)
    assert len(fit_says) == len(evaluate_says) == 1
    for said in (fit_says[0], evaluate_says[0]):
        assert said.startswith("2 file(s) brought in twice ")
        assert "(links to one file) counted once: " in said
        assert "hard.png" in said and "hard2.png" in said


def test_the_training_order_does_not_depend_on_how_the_folders_are_spelled(tmp_path, monkeypatch):
    for i in range(5):
        write_image(tmp_path / "a" / "A" / f"a{i}.png", rgb_image(40, seed=i))
        write_image(tmp_path / "b" / "B" / f"b{i}.png", rgb_image(40, seed=50 + i))
    (tmp_path / "link").symlink_to(tmp_path / "b" / "B", target_is_directory=True)
    monkeypatch.chdir(tmp_path / "a")
    spellings = [["A", "../b/B"], [str(tmp_path / "a" / "A"), str(tmp_path / "b" / "B")],
                 ["../link", "./A/"], [str(tmp_path / "link"), "A"]]
    orders = [[canonical_path(s.path) for s in load_folders(dirs).train] for dirs in spellings]
    fitted = [fit_split(input_images(dirs, twins="once"), None, 0.25, 0)[:2] for dirs in spellings]
    assert all(order == orders[0] for order in orders)
    assert all(f == fitted[0] for f in fitted)
    assert listing_order(input_images(spellings[0], twins="once")) == orders[0]  # fit's order is evaluate's


def test_the_training_order_does_not_depend_on_the_unicode_form_of_the_names(tmp_path):
    """``é`` sorts after ``z`` composed (NFC) and before ``f`` decomposed (NFD, a copy from
    macOS): the one order takes names in NFC, as labels and masks pair."""
    stems = ["e", "f", "\u00e9", "z"]
    orders = {}
    for form in ("NFC", "NFD"):
        for i, stem in enumerate(stems):
            write_image(tmp_path / form / f"{unicodedata.normalize(form, stem)}.png",
                        rgb_image(40, seed=i))
        listed = list_images(tmp_path / form)
        assert [p.name for p in load_folders(tmp_path / form).train] == [p.name for p in listed]
        assert listing_order(reversed(listed)) == listed
        orders[form] = [unicodedata.normalize("NFC", p.stem) for p in listed]
    assert orders["NFC"] == orders["NFD"] == ["e", "f", "z", "\u00e9"]


def test_calibration_images_count_a_hard_linked_twin_once_and_screening_keeps_it(tmp_path):
    """fit's calibration images are training inputs too (one file, one calibration score);
    screening's inputs keep each hard link (tests/test_screen_hardlinks.py)."""
    from anomaly_inspect.screening.model import calibration_split

    a, b = _twins(tmp_path)
    cal = tmp_path / "cal"
    for i in range(3):
        write_image(cal / f"c{i}.png", rgb_image(40, seed=200 + i))
    os.link(cal / "c0.png", cal / "c0_again.png")
    train = input_images([a], twins="once")
    fitted, calibrated, _ = calibration_split(train, [cal], 0.2, 0)
    assert fitted == listing_order(train)
    assert [p.name for p in calibrated] == ["c0.png", "c1.png", "c2.png"]
    assert len(input_images([a, b], twins="keep")) == 12
