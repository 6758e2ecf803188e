"""Reading masks: a palette (P-mode) label mask by its class indices, not its colours; and the
mask-shape error naming an image's EXIF orientation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomaly_inspect.data.image_io import ImageReadError, read_mask
from anomaly_inspect.data.layout import DatasetLayoutError
from anomaly_inspect.data.samples import Sample
from anomaly_inspect.evaluation.evaluate import check_files


def _voc_palette() -> list[int]:
    """The PASCAL VOC colour map (labelme and CVAT write it too): class 1 = (128, 0, 0),
    class 8 = (64, 0, 0), 255 (void) = (224, 224, 192), background 0 = black."""
    out = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= (c & 1) << 7 - j
            g |= ((c >> 1) & 1) << 7 - j
            b |= ((c >> 2) & 1) << 7 - j
            c >>= 3
        out += [r, g, b]
    return out


def _indices() -> np.ndarray:
    idx = np.zeros((24, 32), np.uint8)
    idx[2:6, 2:6] = 1
    idx[10:16, 10:20] = 8
    idx[20:22, 25:30] = 255  # VOC's void border: not background either
    return idx


def _palette_png(path: Path, idx: np.ndarray, palette: list[int], **save) -> Path:
    im = Image.fromarray(idx, "P")
    im.putpalette(palette)
    im.save(path, **save)
    return path


@pytest.mark.parametrize("ext", ["png", "gif", "bmp", "tif"])
def test_a_voc_palette_mask_marks_every_class_whatever_its_colour(tmp_path, ext):
    idx = _indices()
    path = _palette_png(tmp_path / f"m.{ext}", idx, _voc_palette())
    assert Image.open(path).mode == "P"
    mask = read_mask(path)
    np.testing.assert_array_equal(mask, (idx > 0).astype(np.uint8))  # class 8 is dark red


def test_a_grey_palette_label_mask_marks_its_dark_class_too(tmp_path):
    idx = np.zeros((16, 16), np.uint8)
    idx[2:6, 2:6], idx[9:13, 9:13] = 1, 2
    palette = [0, 0, 0, 60, 60, 60, 200, 200, 200] + [0] * 759
    mask = read_mask(_palette_png(tmp_path / "g.png", idx, palette))
    np.testing.assert_array_equal(mask, (idx > 0).astype(np.uint8))


@pytest.mark.parametrize("white_first", [False, True])
def test_a_black_and_white_palette_mask_reads_as_its_greyscale_twin(tmp_path, white_first):
    grey = np.zeros((16, 16), np.uint8)
    grey[3:9, 4:12] = 255
    if white_first:  # PIL's quantize puts the most common colour... white at index 0 here
        im = Image.fromarray(np.stack([grey] * 3, -1)).quantize(2)
        assert im.getpalette()[:3] == [255, 255, 255]
    else:
        im = Image.fromarray((grey > 0).astype(np.uint8), "P")
        im.putpalette([0, 0, 0, 255, 255, 255])
    im.save(tmp_path / "p.png")
    Image.fromarray(grey).save(tmp_path / "l.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "p.png"), read_mask(tmp_path / "l.png"))
    assert int(read_mask(tmp_path / "p.png").sum()) == 48


def test_a_transparent_palette_index_is_background(tmp_path):
    idx = np.full((16, 16), 2, np.uint8)  # a light grey background, marked transparent
    idx[4:8, 4:8] = 1
    palette = [255, 0, 0, 0, 255, 0, 200, 200, 200] + [255] * 759  # nothing is black
    single = read_mask(_palette_png(tmp_path / "t.png", idx, palette, transparency=2))
    np.testing.assert_array_equal(single, (idx == 1).astype(np.uint8))
    table = bytes([255, 255, 0] + [255] * 253)  # per-index alpha: index 2 alpha 0
    per_index = read_mask(_palette_png(tmp_path / "t2.png", idx, palette, transparency=table))
    np.testing.assert_array_equal(per_index, (idx == 1).astype(np.uint8))


def test_a_palette_mask_without_black_has_index_0_as_background(tmp_path):
    idx = np.zeros((16, 16), np.uint8)  # white background at index 0, a red defect
    idx[4:8, 4:8] = 1
    mask = read_mask(_palette_png(tmp_path / "w.png", idx, [255, 255, 255, 255, 0, 0]))
    np.testing.assert_array_equal(mask, idx)


def test_a_palette_mask_is_turned_upright_by_its_exif_orientation(tmp_path):
    idx = _indices()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: 90 degrees clockwise makes it upright
    path = _palette_png(tmp_path / "e.png", idx, _voc_palette(), exif=exif.tobytes())
    Image.fromarray((idx > 0).astype(np.uint8)).save(tmp_path / "l.png", exif=exif.tobytes())
    mask = read_mask(path)
    assert mask.shape == (32, 24)
    np.testing.assert_array_equal(mask, read_mask(tmp_path / "l.png"))
    np.testing.assert_array_equal(mask, np.rot90(idx > 0, -1).astype(np.uint8))


def test_a_palette_mask_over_the_pixel_budget_is_refused(tmp_path):
    path = _palette_png(tmp_path / "big.png", _indices(), _voc_palette())
    with pytest.raises(ImageReadError, match="pixel budget"):
        read_mask(path, max_pixels=100)


def _exif_png(path: Path, array: np.ndarray, orientation: int) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(array).save(path, exif=exif.tobytes())
    return path


def test_the_mask_shape_error_says_the_image_size_is_after_its_exif_orientation(tmp_path):
    image = _exif_png(tmp_path / "img.png", np.zeros((64, 128, 3), np.uint8), 6)  # 128x64 stored
    mask = np.zeros((64, 128), np.uint8)
    mask[10:20, 10:20] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")  # 128x64 too, drawn on the stored pixels
    with pytest.raises(DatasetLayoutError) as err:
        check_files("folder", [Sample(image, 1, mask_path=tmp_path / "mask.png")])
    text = str(err.value)
    assert "a 128x64 mask for the 64x128 image" in text
    assert "EXIF orientation 6" in text and "128x64 as stored" in text


def test_the_mask_shape_error_names_no_orientation_where_there_is_none(tmp_path):
    Image.fromarray(np.zeros((64, 128, 3), np.uint8)).save(tmp_path / "img.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "mask.png")
    with pytest.raises(DatasetLayoutError, match="a 32x32 mask for the 128x64 image") as err:
        check_files("folder", [Sample(tmp_path / "img.png", 1, mask_path=tmp_path / "mask.png")])
    assert "EXIF" not in str(err.value)
