"""Four of today's fixes had gone too far: links to one file inside one folder split are kept
once (a deduplicated dataset loads) while overlapping named folders and links across roles stay
refused; text that starts like a Netpbm magic is no image (a full header decides); a mask
drawn as a semi-transparent overlay keeps its defect; a failed fit leaves no empty folders it
made for ``--out``."""

from __future__ import annotations

import logging
import os

import cv2
import numpy as np
import pytest

from anomaly_inspect.cli import main
from anomaly_inspect.data.folder import load_folders
from anomaly_inspect.data.image_io import looks_like_image, read_mask
from anomaly_inspect.data.layout import DatasetLayoutError, list_images
from anomaly_inspect.screening.model_dir import save_lock
from layout_writer import rgb_image, write_image


def _folders(root):
    for i in range(3):
        write_image(root / "train" / f"{i}.png", rgb_image(32, seed=i))
        write_image(root / "good" / f"{i}.png", rgb_image(32, seed=10 + i))
        write_image(root / "bad" / f"{i}.png", rgb_image(32, seed=20 + i))
    return root


@pytest.mark.parametrize("link", [os.link, os.symlink])
def test_links_to_one_file_in_one_split_are_kept_once_with_a_log_line(tmp_path, link, caplog):
    root = _folders(tmp_path)
    link(root / "train" / "0.png", root / "train" / "0_dup.png")  # rdfind / jdupes -L / cp -al
    link(root / "bad" / "1.png", root / "bad" / "1_dup.png")
    with caplog.at_level(logging.WARNING):
        ds = load_folders(root / "train", root / "good", root / "bad")
    assert sorted(s.path.name for s in ds.train) == ["0.png", "1.png", "2.png"]
    assert sorted(s.path.name for s in ds.test if s.label == 1) == ["0.png", "1.png", "2.png"]
    assert "0_dup.png" in caplog.text and "1_dup.png" in caplog.text


def test_overlapping_named_folders_and_links_across_roles_stay_refused(tmp_path):
    root = _folders(tmp_path)
    write_image(root / "train" / "sub" / "s.png", rgb_image(32, seed=30))
    with pytest.raises(DatasetLayoutError, match=r"s\.png: a training image twice; the folders "
                                                 r"must not overlap"):
        load_folders([root / "train", root / "train" / "sub"], root / "good", root / "bad")
    (tmp_path / "again").symlink_to(root / "train", target_is_directory=True)
    with pytest.raises(DatasetLayoutError, match=r"a training image twice.*; the folders must not"):
        load_folders([root / "train", tmp_path / "again"], root / "good", root / "bad")
    os.link(root / "train" / "2.png", root / "good" / "leak.png")
    with pytest.raises(DatasetLayoutError, match=r"leak\.png: both a training image and a normal "
                                                 r"test image \(the same file as .*2\.png\)"):
        load_folders(root / "train", root / "good", root / "bad")
    os.unlink(root / "good" / "leak.png")
    os.symlink(root / "good" / "0.png", root / "bad" / "both.png")
    with pytest.raises(DatasetLayoutError, match=r"both\.png: both a normal test image and an "
                                                 r"anomalous test image"):
        load_folders(root / "train", root / "good", root / "bad")


def test_text_files_that_start_like_a_netpbm_magic_are_not_listed(tmp_path):
    write_image(tmp_path / "0.png", rgb_image(32, seed=0))
    (tmp_path / "parts.csv").write_text("P1 12, bracket left\nP2 7, bracket right\n")
    (tmp_path / "notes.txt").write_text("P3 #12 reshoot pending\n")
    texts = [b"P1 12, bracket", b"P6 foo", b"PF 2024 report", b"P3 #12 reshoot", b"P2 3 4 x",
             b"P5 3 4\n", b"P4 3", b"P7 WIDTH 3\n", b"Pf 2 2 x", b"P6 1 2 3"]
    for i, text in enumerate(texts):
        (tmp_path / f"t{i}.bin").write_bytes(text)
        assert not looks_like_image(tmp_path / f"t{i}.bin"), text
    assert [p.name for p in list_images(tmp_path)] == ["0.png"]


def test_netpbm_pam_and_pfm_files_with_comments_are_listed_by_content(tmp_path):
    bgr = rgb_image(8, seed=3)[:6]
    (tmp_path / "p1").write_bytes(b"P1\n# drawn by hand\n4 2\n0 1 0 1\n1 0 1 0\n")
    (tmp_path / "p2").write_bytes(b"P2 # c\n2 # w\n2\n# maxval next\n255\n0 255\n128 64\n")
    (tmp_path / "p4").write_bytes(b"P4 8 1\n\xff")
    (tmp_path / "p6").write_bytes(b"P6\n#x\n2 1 255\n" + bytes(6))
    (tmp_path / "pam").write_bytes(b"P7\n# pam\nWIDTH 2\nHEIGHT 1\nDEPTH 1\nMAXVAL 255\n"
                                   b"TUPLTYPE GRAYSCALE\nENDHDR\n\x00\xff")
    (tmp_path / "pf").write_bytes(b"Pf\n1 1\n-1.0\n" + bytes(4))
    assert cv2.imwrite(str(tmp_path / "cv.pam"), bgr)
    assert cv2.imwrite(str(tmp_path / "cv.pfm"), bgr.astype(np.float32) / 255)
    os.rename(tmp_path / "cv.pam", tmp_path / "cv_pam")
    os.rename(tmp_path / "cv.pfm", tmp_path / "cv_pfm")
    names = ["cv_pam", "cv_pfm", "p1", "p2", "p4", "p6", "pam", "pf"]
    assert all(looks_like_image(tmp_path / n) for n in names)
    (tmp_path / "x.pgm").write_text("P2 notes\n")  # a Netpbm extension: listed (an error row)
    assert [p.name for p in list_images(tmp_path)] == [*names, "x.pgm"]


def test_a_semi_transparent_overlay_mask_marks_its_visible_pixels(tmp_path):
    m = np.zeros((32, 32, 4), np.uint8)
    m[8:16, 8:16] = (0, 0, 255, 100)  # BGRA: red defect at 40 % opacity, transparent background
    m[20:24, 20:24] = (0, 0, 0, 200)  # visible but black: the colour rule leaves it out
    cv2.imwrite(str(tmp_path / "m.png"), m)
    want = np.zeros((32, 32), np.uint8)
    want[8:16, 8:16] = 1
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), want)


def test_a_refused_fit_leaves_no_empty_folders_it_made_for_out(tmp_path, capsys):
    out = tmp_path / "deep_new" / "a" / "b" / "model"
    assert main(["fit", "--train", str(tmp_path / "nonexistent"), "--out", str(out),
                 "--weights", "random", "--image-size", "64", "--quiet"]) != 0
    assert "nonexistent" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == []


def test_the_lock_removes_only_the_empty_parents_it_made_and_only_on_an_error(tmp_path):
    (tmp_path / "kept").mkdir()
    with pytest.raises(RuntimeError, match="boom"), save_lock(tmp_path / "kept" / "n" / "m" / "x"):
        (tmp_path / "kept" / "n" / "note.txt").write_text("the user's")
        raise RuntimeError("boom")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "kept", "kept/n", "kept/n/note.txt"]
    with save_lock(tmp_path / "new" / "y" / "z"):
        pass
    assert (tmp_path / "new" / "y").is_dir()


def test_a_netpbm_file_with_a_long_header_comment_is_listed_by_content(tmp_path):
    """A header comment longer than the first kilobyte still leaves the file an image."""
    from anomaly_inspect.data.image_io import looks_like_image

    path = tmp_path / "scan"  # no extension: found by content
    path.write_bytes(b"P5\n# " + b"x" * 3000 + b"\n4 2\n255\n" + bytes(8))
    assert looks_like_image(path)
