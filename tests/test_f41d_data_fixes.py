"""Listing, masks, labels and pairing agree with what the readers and adapters accept: every
format read_image decodes is listed, an RGBA mask's alpha counts, screen's MVTec labels are the
adapter's, unknown adapter options are refused, hard links cannot leak, NFD names pair."""

from __future__ import annotations

import os
import unicodedata

import cv2
import numpy as np
import pytest
from PIL import Image

from anomaly_inspect.data import image_io
from anomaly_inspect.data.image_io import looks_like_image, read_image, read_mask
from anomaly_inspect.data.layout import DatasetLayoutError, expand_inputs, list_images
from anomaly_inspect.data.mvtec import load_mvtec
from anomaly_inspect.data.registry import load_dataset
from anomaly_inspect.screening.labels import mvtec_label, resolve_labels
from layout_writer import rgb_image, write_image, write_mask, write_mvtec

RGB = rgb_image(8, seed=3)[:6]  # 6 x 8


def _write_formats(d):
    """One small file per format: name -> (RGB array read_image must give, or None = decodes)."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "p1.pbm").write_bytes(b"P1\n4 2\n0 1 0 1\n1 0 1 0\n")
    (d / "p2.pgm").write_bytes(b"P2\n# a comment\n2 2\n255\n0 255\n128 64\n")
    (d / "p3.ppm").write_bytes(b"P3\n2 1\n255\n255 0 0 0 255 0\n")
    Image.fromarray(RGB[..., 0] > 128).save(d / "p4.pbm")
    Image.fromarray(RGB[..., 0]).save(d / "p5.pgm")
    Image.fromarray(RGB).save(d / "p6.ppm")
    Image.fromarray(RGB).save(d / "p6.pnm")
    bgr = np.ascontiguousarray(RGB[..., ::-1])
    assert cv2.imwrite(str(d / "p7.pam"), bgr)
    assert cv2.imwrite(str(d / "pf.pfm"), bgr.astype(np.float32) / 255)
    assert cv2.imwrite(str(d / "pfg.pfm"), RGB[..., 0].astype(np.float32) / 255)
    Image.fromarray(RGB).save(d / "a.jp2")
    Image.fromarray(RGB).save(d / "a.j2k")
    gray = np.repeat(RGB[..., :1], 3, axis=2)
    return {"p1.pbm": np.repeat(np.array([[255, 0, 255, 0], [0, 255, 0, 255]], np.uint8)[..., None], 3, 2),
            "p2.pgm": np.repeat(np.array([[0, 255], [128, 64]], np.uint8)[..., None], 3, 2),
            "p3.ppm": np.array([[[255, 0, 0], [0, 255, 0]]], np.uint8),
            "p4.pbm": None, "p5.pgm": gray, "p6.ppm": RGB, "p6.pnm": RGB, "p7.pam": RGB,
            "pf.pfm": RGB, "pfg.pfm": gray, "a.jp2": RGB, "a.j2k": RGB}


def test_every_netpbm_pfm_and_jpeg_2000_image_is_listed_by_extension_and_by_content(tmp_path):
    expected = _write_formats(tmp_path / "ext")
    write_image(tmp_path / "ext" / "ok.png", RGB)
    assert [p.name for p in list_images(tmp_path / "ext")] == sorted([*expected, "ok.png"])
    for name, want in expected.items():
        got = read_image(tmp_path / "ext" / name)
        assert got.shape[:2] == (want if want is not None else RGB).shape[:2], name
        if want is not None:
            np.testing.assert_allclose(got.astype(int), want.astype(int), atol=1, err_msg=name)
    # the same files without an extension: found by their first bytes
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in expected:
        os.link(tmp_path / "ext" / name, bare / name.replace(".", "_"))
    assert len(list_images(bare)) == len(expected)
    assert len(expand_inputs([str(tmp_path / "ext" / "*")])) == len(expected) + 1


def test_text_that_starts_like_a_netpbm_header_is_not_an_image(tmp_path):
    for i, text in enumerate(["P1 notes: check\n", "PF tasks\n", "P7 NOTES\n", "Pfizer\n"]):
        (tmp_path / f"t{i}").write_text(text)
        assert not looks_like_image(tmp_path / f"t{i}"), text


def _rgba_mask(path, la=False):
    """Transparent white background, an opaque red (LA: white) 10x10 defect."""
    m = np.zeros((32, 32, 4), np.uint8)
    m[..., :3] = 255
    m[10:20, 10:20] = (255, 0, 0, 255)
    Image.fromarray(m[..., [0, 3]] if la else m, "LA" if la else "RGBA").save(path)
    return path


@pytest.mark.parametrize("la", [False, True])
def test_a_mask_with_an_alpha_channel_marks_only_its_opaque_pixels(tmp_path, la):
    got = read_mask(_rgba_mask(tmp_path / "m.png", la))
    want = np.zeros((32, 32), np.uint8)
    want[10:20, 10:20] = 1
    np.testing.assert_array_equal(got, want)


def test_a_constant_alpha_channel_leaves_the_colour_rule(tmp_path):
    m = np.zeros((32, 32, 4), np.uint8)
    m[..., 3] = 255
    m[4:8, 4:8, :3] = 255
    Image.fromarray(m, "RGBA").save(tmp_path / "m.png")
    assert int(read_mask(tmp_path / "m.png").sum()) == 16


def test_a_mask_that_marks_every_pixel_is_warned_about_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(image_io, "_FULL_MASK", [])
    write_image(tmp_path / "full.png", np.full((16, 16), 255, np.uint8))
    write_mask(tmp_path / "part.png", 16, (2, 2, 6, 6))
    with caplog.at_level("WARNING"):
        read_mask(tmp_path / "part.png")
        assert "every pixel" not in caplog.text
        read_mask(tmp_path / "full.png")
        read_mask(tmp_path / "full.png")
    assert caplog.text.count("marks every pixel") == 1 and "full.png" in caplog.text


def test_screen_mvtec_labels_are_the_adapters_for_nested_images(tmp_path):
    cat = write_mvtec(tmp_path, "w", defects={"crack": 1})
    write_image(cat / "test" / "crack" / "sub" / "000.png", rgb_image(32, 9))
    write_mask(cat / "ground_truth" / "crack" / "sub" / "000_mask.png")
    adapter = {str(s.path): s.label for s in load_mvtec(cat).test}
    assert len(adapter) == 4
    assert {p: mvtec_label(p) for p in adapter} == adapter
    assert mvtec_label(cat / "test" / "x.png") is None  # loose in test/: the adapter leaves it out
    # a data folder named test holding categories: the nearest test/ with a type folder below
    assert mvtec_label("/d/test/bottle/test/good/0.png") == 0
    assert mvtec_label("/d/bottle/test/crack/test/0.png") == 1
    assert mvtec_label("/d/bottle/test/.hidden/0.png") is None
    labels, source = resolve_labels(list(adapter), "mvtec")
    assert labels == adapter and "4 of 4" in source


def test_screen_refuses_test_Good_as_the_adapter_does(tmp_path, caplog):
    cat = write_mvtec(tmp_path, "w", defects={"crack": 1}, masks=False)
    (cat / "test" / "good").rename(cat / "test" / "Good")
    with pytest.raises(DatasetLayoutError, match=r"test/Good: normal test images go in test/good/") as a:
        load_mvtec(cat)
    paths = [str(p) for p in list_images(cat / "test")]
    with pytest.raises(DatasetLayoutError) as b:
        resolve_labels(paths, "mvtec")
    assert str(a.value) == str(b.value)
    with caplog.at_level("WARNING"):  # default labels: none (no ROC), said, the run goes on
        assert resolve_labels(paths, None) == ({}, "")
    assert "test/Good: normal test images go in test/good/" in caplog.text


def test_load_dataset_refuses_an_option_the_adapter_does_not_take(tmp_path):
    cat = write_mvtec(tmp_path, "w")
    with pytest.raises(TypeError, match=r"^dataset 'folder' does not take mask_dirs; it takes "
                                        r"train_dirs, .*mask_dir"):
        load_dataset("folder", train_dirs=[cat / "train" / "good"],
                     test_anomalous_dirs=[cat / "test" / "crack"], mask_dirs=cat / "ground_truth")
    # unset options of other adapters (as the CLI passes them all) are still ignored
    assert load_dataset("mvtec", root=tmp_path, category="w", mask_dir=None, train_dirs=[]).name == "w"


def test_the_evaluate_command_still_passes_its_flags_to_either_adapter(tmp_path, capsys):
    from anomaly_inspect.cli import main

    write_mvtec(tmp_path, "w")
    code = main(["evaluate", "--dataset", "mvtec", "--root", str(tmp_path), "--category", "w",
                 "--mask-dir", str(tmp_path), "--quiet"])
    assert code != 0 and "--dataset mvtec does not take --mask-dir" in capsys.readouterr().err


def test_a_hard_link_of_a_training_image_in_test_is_refused(tmp_path):
    cat = write_mvtec(tmp_path, "w")
    os.link(cat / "train" / "good" / "000.png", cat / "test" / "good" / "leak.png")
    with pytest.raises(DatasetLayoutError, match=r"leak\.png: both a training image and a normal "
                                                 r"test image \(the same file as .*000\.png\)"):
        load_mvtec(cat)


def test_a_dangling_link_keeps_its_path_key(tmp_path):
    cat = write_mvtec(tmp_path, "w")
    (cat / "test" / "good" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (cat / "test" / "good" / "gone2.png").symlink_to(tmp_path / "nowhere2.png")
    assert sum(s.path.name.startswith("gone") for s in load_mvtec(cat).test) == 2


def test_nfc_and_nfd_names_pair_image_and_mask(tmp_path):
    cat = write_mvtec(tmp_path, "w", defects={"crack": 1})
    nfc, nfd = (unicodedata.normalize(f, "café") for f in ("NFC", "NFD"))
    assert nfc != nfd
    write_image(cat / "test" / "crack" / f"{nfc}.png", rgb_image(32, 7))
    write_mask(cat / "ground_truth" / "crack" / f"{nfd}_mask.png")
    # a defect type whose folder names differ by normalisation too
    write_image(cat / "test" / f"{nfc}_type" / "0.png", rgb_image(32, 8))
    write_mask(cat / "ground_truth" / f"{nfd}_type" / "0_mask.png")
    masks = {s.path.name: s.mask_path.name for s in load_mvtec(cat).test if s.label}
    assert masks[f"{nfc}.png"] == f"{nfd}_mask.png" and masks["0.png"] == "0_mask.png"
