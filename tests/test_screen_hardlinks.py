"""Screening keeps one row per canonical path: a hard link to an input image is a row of its
own under its own name (``screen``, ``explain``, ``Model.score``), so a caller matching results
to the paths it named finds each; only ``fit``'s and ``tune``'s training inputs count a
hard-linked twin once (tests/test_fit_inputs_identity.py)."""

from __future__ import annotations

import csv
import logging
import os

import pytest

from anomaly_inspect.data.layout import expand_inputs
from anomaly_inspect.screening.explain import explain_to_dir
from anomaly_inspect.screening.model import input_images, scored_paths
from anomaly_inspect.screening.runner import screen
from layout_writer import fit_tiny_model, rgb_image, write_image


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(fitted model, folder with img0.png, img1.png and copy_of_img0.png, a hard link)."""
    root = tmp_path_factory.mktemp("hardlinks")
    model, _ = fit_tiny_model(root)
    d = root / "in"
    write_image(d / "img0.png", rgb_image(40, seed=1))
    write_image(d / "img1.png", rgb_image(40, seed=2))
    os.link(d / "img0.png", d / "copy_of_img0.png")
    return model, d


def test_screening_inputs_keep_each_hard_link_training_inputs_count_it_once(tiny, caplog):
    _, d = tiny
    names = ["copy_of_img0.png", "img0.png", "img1.png"]
    with caplog.at_level(logging.WARNING):
        assert [p.name for p in expand_inputs([d])] == names
        assert [p.name for p in input_images([d], twins="keep")] == names
        assert [p.name for p in scored_paths([d])] == names
    assert "brought in twice" not in caplog.text
    once = ["copy_of_img0.png", "img1.png"]  # the twin first in listing order kept
    assert [p.name for p in expand_inputs([d], twins="once")] == once
    assert [p.name for p in input_images([d], twins="once")] == once  # fit's and tune's
    assert f"{d / 'img0.png'} (= {d / 'copy_of_img0.png'})" in caplog.text
    with pytest.raises(ValueError, match="twins='twice'"):
        expand_inputs([d], twins="twice")


def test_screen_writes_a_row_for_each_hard_link(tiny, tmp_path):
    model, d = tiny
    s = screen(model, [d], tmp_path / "out", progress=False, report=False, overlays="none")
    with open(tmp_path / "out" / "results.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert s.n_inputs == 3
    assert sorted(os.path.basename(r["path"]) for r in rows) == [
        "copy_of_img0.png", "img0.png", "img1.png"]
    twins = {os.path.basename(r["path"]): r["score"] for r in rows}
    assert twins["img0.png"] == twins["copy_of_img0.png"]  # one file, one score


def test_model_score_returns_each_named_hard_link_under_its_own_path(tiny):
    model, d = tiny
    named = [d / "img0.png", d / "copy_of_img0.png"]
    got = model.score(named)
    assert [r.path for r in got] == [str(p) for p in named]
    got = model.score([d / "copy_of_img0.png", d / "img0.png"])
    assert [os.path.basename(r.path) for r in got] == ["copy_of_img0.png", "img0.png"]


def test_explain_explains_each_hard_link(tiny, tmp_path):
    model, d = tiny
    done = explain_to_dir(model, [d / "img0.png", d / "copy_of_img0.png"], tmp_path / "ex")
    assert [os.path.basename(p) for p, _, _ in done] == ["img0.png", "copy_of_img0.png"]
