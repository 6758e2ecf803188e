"""TIFF and float corners of image reading: a gray+alpha TIFF mask keeps its alpha, a float
image far above 1 is warned about, a BigTIFF is found by its content, and a TIFF's thumbnail
page is not a second frame."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from anomaly_inspect.data import image_io
from anomaly_inspect.data.image_io import ImageReadError, looks_like_image, read_image, read_mask
from anomaly_inspect.data.layout import list_images


def _la_mask(path, orientation=1):
    """White everywhere, visible (alpha 255) only on a 4x6 defect; elsewhere transparent."""
    la = np.zeros((16, 20, 2), np.uint8)
    la[..., 0] = 255
    la[2:6, 3:9, 1] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(la, "LA").save(path, exif=exif)
    return path


@pytest.mark.parametrize("ext", ["tif", "png"])
def test_a_gray_alpha_mask_marks_only_its_visible_pixels_in_a_tiff_too(tmp_path, ext):
    got = read_mask(_la_mask(tmp_path / f"m.{ext}"))
    want = np.zeros((16, 20), np.uint8)
    want[2:6, 3:9] = 1
    np.testing.assert_array_equal(got, want)


def test_a_gray_alpha_tiff_mask_is_turned_upright_once(tmp_path):
    with Image.open(_la_mask(tmp_path / "ref.png", orientation=6)) as im:
        upright = np.asarray(ImageOps.exif_transpose(im))[..., 1] > 0
    got = read_mask(_la_mask(tmp_path / "r.tif", orientation=6))
    assert got.shape == (20, 16)
    np.testing.assert_array_equal(got, upright)


def test_an_rgba_tiff_mask_keeps_its_alpha_rule(tmp_path):
    m = np.zeros((8, 8, 4), np.uint8)
    m[..., :3] = 255
    m[1:3, 1:4, 3] = 255
    Image.fromarray(m, "RGBA").save(tmp_path / "m.tif")
    assert int(read_mask(tmp_path / "m.tif").sum()) == 6


def test_a_float_image_mostly_above_1_is_warned_about_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(image_io, "_BRIGHT_FLOAT", [])
    ramp = np.tile(np.linspace(0, 255, 20, dtype=np.float32), (4, 1))  # 0..255, not 0..1
    Image.fromarray(ramp, "F").save(tmp_path / "f255.tif")
    assert cv2.imwrite(str(tmp_path / "f255.pfm"), np.dstack([ramp] * 3))
    with caplog.at_level("WARNING"):
        assert (read_image(tmp_path / "f255.tif")[..., 0] == 255).mean() > 0.9  # the rule stays
        read_image(tmp_path / "f255.pfm")
    assert caplog.text.count("above 1") == 1
    assert "f255.tif: a float image with 95% of its samples above 1 (max 255)" in caplog.text


def test_a_float_image_with_a_few_samples_above_1_is_not_warned_about(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(image_io, "_BRIGHT_FLOAT", [])
    img = np.tile(np.linspace(0, 1, 20, dtype=np.float32), (4, 1))
    img[0, :4] = (1.5, 3.0, np.inf, np.nan)  # 2 of 80 clipped; inf and NaN have their own rule
    img[1:, -1] = np.inf
    Image.fromarray(img, "F").save(tmp_path / "hdr.tif")
    with caplog.at_level("WARNING"):
        out = read_image(tmp_path / "hdr.tif")
    assert out[0, :4, 0].tolist() == [255, 255, 255, 0]
    assert "above 1" not in caplog.text and not image_io._BRIGHT_FLOAT


def test_a_bigtiff_without_an_extension_is_found_by_its_content(tmp_path):
    pytest.importorskip("PIL", minversion="11.1")  # the big_tiff writer option
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[2:4, 2:4] = (200, 10, 30)
    Image.fromarray(rgb).save(tmp_path / "big", "TIFF", big_tiff=True)
    (tmp_path / "big_be").write_bytes(b"MM\x00+\x00\x08\x00\x00" + bytes(24))  # big-endian magic
    assert (tmp_path / "big").read_bytes()[:4] == b"II+\x00"
    assert looks_like_image(tmp_path / "big") and looks_like_image(tmp_path / "big_be")
    assert tmp_path / "big" in list_images(tmp_path)
    np.testing.assert_array_equal(read_image(tmp_path / "big"), rgb)


def _two_page_tiff(path, second_subfiletype):
    tifffile = pytest.importorskip("tifffile")
    page = np.zeros((32, 32, 3), np.uint8)
    page[4:8, 4:8] = 255
    with tifffile.TiffWriter(path) as tw:
        tw.write(page, photometric="rgb")
        tw.write(page[::4, ::4].copy(), photometric="rgb", subfiletype=second_subfiletype)
    return path, page


def test_a_tiff_with_a_reduced_resolution_thumbnail_reads_its_full_page(tmp_path):
    path, page = _two_page_tiff(tmp_path / "thumb.tif", 1)  # NewSubfileType bit 0: reduced copy
    np.testing.assert_array_equal(read_image(path), page)
    assert read_mask(path).sum() == 16


def test_a_tiff_with_two_full_pages_is_still_refused(tmp_path):
    path, _ = _two_page_tiff(tmp_path / "pages.tif", 0)
    with pytest.raises(ImageReadError, match=r"pages\.tif: multi-frame image \(2 frames"):
        read_image(path)


def test_a_tiff_whose_first_page_is_the_thumbnail_is_refused_not_read_as_it(tmp_path):
    """IFD 0 is what is decoded: where it is the reduced copy and the full page comes second,
    the file is refused as multi-frame (as before thumbnails were told apart), not scored as
    its thumbnail."""
    tifffile = pytest.importorskip("tifffile")
    page = np.zeros((32, 32, 3), np.uint8)
    with tifffile.TiffWriter(tmp_path / "first.tif") as tw:
        tw.write(page[::4, ::4].copy(), photometric="rgb", subfiletype=1)
        tw.write(page, photometric="rgb")
    with pytest.raises(ImageReadError, match=r"first\.tif: multi-frame image \(2 frames"):
        read_image(tmp_path / "first.tif")


def test_a_float_image_past_1_by_rounding_only_is_not_warned_about(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(image_io, "_BRIGHT_FLOAT", [])
    img = np.ones((8, 8), np.float32) * 1.00001  # a [0, 1] pipeline's saturated area
    Image.fromarray(img, "F").save(tmp_path / "sat.tif")
    with caplog.at_level("WARNING"):
        out = read_image(tmp_path / "sat.tif")
    assert (out == 255).all() and "above 1" not in caplog.text
