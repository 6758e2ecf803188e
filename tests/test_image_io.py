"""Robust image reading: every supported format decodes to RGB uint8, bad files name themselves."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from anomaly_inspect.data.image_io import (
    ImageReadError,
    read_file,
    read_image,
    read_mask,
    unreadable_copies,
)
from layout_writer import rgb_image, write_image


def test_rgb_png_roundtrip(tmp_path):
    img = rgb_image(24, seed=1)
    out = read_image(write_image(tmp_path / "a.png", img))
    assert out.dtype == np.uint8 and out.shape == (24, 24, 3)
    np.testing.assert_array_equal(out, img)  # RGB order preserved (not BGR)


def test_grayscale_png_becomes_three_equal_channels(tmp_path):
    gray = rgb_image(16, seed=2)[:, :, 0]
    out = read_image(write_image(tmp_path / "g.png", gray))
    assert out.shape == (16, 16, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)


def test_rgba_png_drops_alpha(tmp_path):
    rgb = rgb_image(16, seed=3)
    alpha = np.full((16, 16, 1), 7, np.uint8)
    out = read_image(write_image(tmp_path / "rgba.png", np.concatenate([rgb, alpha], axis=2)))
    np.testing.assert_array_equal(out, rgb)


def test_16bit_png_scaled_to_8bit(tmp_path):
    levels = np.array([[0, 257, 257 * 128, 65535]], np.uint16)  # exactly 0, 1, 128, 255 in 8 bit
    out = read_image(write_image(tmp_path / "deep.png", levels))
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 128, 255])
    rgb16 = (np.array([255, 128, 64], np.uint16) * 257).reshape(1, 1, 3).repeat(4, axis=1)
    out = read_image(write_image(tmp_path / "deep_rgb.png", rgb16))
    assert out.dtype == np.uint8 and out.shape == (1, 4, 3)
    assert out[0, 3].tolist() == [255, 128, 64]


def test_jpeg_reads_close_to_original(tmp_path):
    img = rgb_image(32, seed=4)
    out = read_image(write_image(tmp_path / "a.jpg", img))
    assert out.dtype == np.uint8 and out.shape == (32, 32, 3)
    # Lossy, but colours must not be swapped or shifted: the mean error is a few levels.
    assert np.abs(out.astype(int) - img.astype(int)).mean() < 12
    assert np.abs(out.astype(int) - img[:, :, ::-1].astype(int)).mean() > 30


def test_read_mask_binarises(tmp_path):
    m = np.zeros((8, 8), np.uint8)
    m[2:4, 2:6] = 255
    m[6, 6] = 100  # below half: background
    out = read_mask(write_image(tmp_path / "m.png", m))
    assert out.dtype == np.uint8 and set(np.unique(out)) == {0, 1}
    assert out.sum() == 8 and out[6, 6] == 0
    colour = np.zeros((8, 8, 3), np.uint8)
    colour[1, 1] = (255, 255, 255)
    assert read_mask(write_image(tmp_path / "mc.png", colour)).sum() == 1


def _assert_read_error(path: Path, fragment: str) -> None:
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert str(path) in str(info.value), "the error must name the file"
    assert fragment in info.value.reason.lower()
    assert info.value.path == path


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_empty_file(tmp_path):
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    _assert_read_error(p, "empty")


def test_corrupt_file(tmp_path):
    p = tmp_path / "noise.png"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    _assert_read_error(p, "not a decodable image")


def test_non_image_file(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is text, not a picture\n")
    _assert_read_error(p, "not a decodable image")


def test_truncated_png(tmp_path):
    p = _truncate(write_image(tmp_path / "cut.png", rgb_image(64, seed=5)))
    _assert_read_error(p, "truncated png")


def test_truncated_jpeg(tmp_path):
    p = _truncate(write_image(tmp_path / "cut.jpg", rgb_image(64, seed=6)))
    _assert_read_error(p, "truncated jpeg")


def test_missing_file_and_directory(tmp_path):
    _assert_read_error(tmp_path / "nope.png", "not found")
    d = tmp_path / "folder.png"
    d.mkdir()
    _assert_read_error(d, "directory")


def test_corrupt_mask_names_the_mask(tmp_path):
    p = _truncate(write_image(tmp_path / "000_mask.png", np.full((64, 64), 255, np.uint8)))
    with pytest.raises(ImageReadError, match="000_mask.png"):
        read_mask(p)


def test_real_mvtec_images(shared_data):
    """Real RGB (bottle) and grayscale (screw) PNGs decode to 256x256 RGB uint8."""
    bottle = sorted((shared_data / "mvtec_ad" / "bottle" / "train" / "good").glob("*.png"))[0]
    screw = sorted((shared_data / "mvtec_ad" / "screw" / "train" / "good").glob("*.png"))[0]
    for path in (bottle, screw):
        img = read_image(path)
        assert img.shape == (256, 256, 3) and img.dtype == np.uint8
        assert img.std() > 5  # a real picture, not a blank decode
    raw = cv2.imread(str(screw), cv2.IMREAD_UNCHANGED)
    assert raw.ndim == 2  # screw is stored as grayscale: the reader expanded it
    np.testing.assert_array_equal(read_image(screw)[:, :, 1], raw)
    mask = next((shared_data / "mvtec_ad" / "bottle" / "ground_truth").rglob("*_mask.png"))
    m = read_mask(mask)
    assert m.shape == (256, 256) and 0 < m.sum() < m.size


def test_jpeg_with_trailing_padding_is_not_truncated(tmp_path):
    ok, buf = cv2.imencode(".jpg", rgb_image(32, 32))
    assert ok
    path = tmp_path / "padded.jpg"
    path.write_bytes(buf.tobytes() + b"\x00" * 300)
    assert read_image(path).shape == (32, 32, 3)


def test_unreadable_copies_read_with_the_reason_given(tmp_path):
    """A copy of a file refused where it lives (a distributed engine ships the reason, not the
    bytes) reads as that reason, for the image reader too, and only within the block."""
    copy = write_image(tmp_path / "0_a.png", rgb_image(16))
    with unreadable_copies({copy: "broken symbolic link (to /gone.png)"}):
        for read in (read_file, read_image):
            with pytest.raises(ImageReadError) as err:
                read(copy)
            assert err.value.path == copy and err.value.reason == "broken symbolic link (to /gone.png)"
    assert read_image(copy).shape == (16, 16, 3)
