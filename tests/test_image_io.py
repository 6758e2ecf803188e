"""Robust image reading: every supported format decodes to RGB uint8, bad files name themselves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from anomaly_inspect.data import image_io
from anomaly_inspect.data.image_io import (
    ImageReadError,
    image_size,
    is_image_file,
    looks_like_image,
    read_file,
    read_image,
    read_mask,
    unreadable_copies,
)
from anomaly_inspect.data.layout import expand_inputs, list_images
from layout_writer import rgb_image, write_image, write_mask


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


@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_with_data_after_its_end_is_read_and_a_cut_one_refused(tmp_path, progressive):
    """Bytes after the end-of-image marker (a phone's motion photo appends a video, which may
    hold a start-of-scan marker and no end) do not make a JPEG truncated; a JPEG cut inside a
    scan, or between a progressive JPEG's scans, still is."""
    params = [cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive), cv2.IMWRITE_JPEG_RST_INTERVAL, 1]
    ok, buf = cv2.imencode(".jpg", rgb_image(48, seed=3), params)
    assert ok
    data = buf.tobytes()
    path = tmp_path / "motion.jpg"
    path.write_bytes(data + b"ftypmp42\xff\xda\x00\x08" + bytes(64) + b"\xff\xd8\xff\xe1")
    assert read_image(path).shape == (48, 48, 3)
    scans = [i for i in range(len(data)) if data[i:i + 2] == b"\xff\xda"]
    assert (len(scans) > 1) == progressive
    # in the first scan; before the last one's start (a progressive JPEG); just before the end
    for cut in {scans[0] + 40, scans[-1] if progressive else len(data) - 2, len(data) - 4}:
        path.write_bytes(data[:cut] + b"ftypmp42")
        _assert_read_error(path, "truncated jpeg")


def test_pixel_budget_holds_for_a_format_the_header_probe_does_not_read(tmp_path):
    """A PPM saved as .png is decoded by OpenCV alone; its size is still held to the budget."""
    ok, buf = cv2.imencode(".ppm", rgb_image(40)[:30])
    assert ok
    path = tmp_path / "disguised.png"
    path.write_bytes(buf.tobytes())
    assert read_image(path, max_pixels=1200).shape == (30, 40, 3)
    with pytest.raises(ImageReadError, match=r"larger than the pixel budget \(40x30 = "):
        read_image(path, max_pixels=1199)


def test_the_pil_fallback_scales_16_bit_samples_by_the_fixed_rule(tmp_path, monkeypatch):
    """Where OpenCV cannot decode a file and PIL does, 16-bit samples become x / 257 as
    OpenCV's decode would give, not clipped to 255."""
    values = np.array([[0, 257 * 100, 65535, 300]], np.uint16)
    path = tmp_path / "g16.png"
    assert cv2.imwrite(str(path), values)
    want = read_image(path)
    monkeypatch.setattr(cv2, "imdecode", lambda *a: None)
    got = read_image(path)
    np.testing.assert_array_equal(got, want)
    assert got[0, :, 0].tolist() == [0, 100, 255, 1]


def test_gif_is_an_image_extension_like_the_others():
    assert is_image_file(Path("a.GIF")) and is_image_file(Path("b.gif"))


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


# ------------------------------------------------ orientation, label masks, fixed scaling


def _oriented(path: Path, rgb: np.ndarray, orientation: int, **kw) -> Path:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb).save(path, exif=exif, **kw)
    return path


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 6, 7, 8])
def test_a_tiff_is_turned_upright_once_like_png_and_webp(tmp_path, orientation):
    """OpenCV 5 (and recent Pillow) apply a TIFF's orientation tag themselves: the TIFF must
    come out as the PNG / WebP with the same tag does (what ImageOps.exif_transpose gives)."""
    from PIL import Image, ImageOps

    from anomaly_inspect.data.image_io import image_size

    rgb = np.zeros((40, 64, 3), np.uint8)
    rgb[:10, :20] = 255
    rgb[30:, 50:, 2] = 200
    with Image.open(_oriented(tmp_path / "ref.png", rgb, orientation)) as im:
        upright = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    for name, kw in (("a.png", {}), ("a.tif", {}), ("a.webp", {"lossless": True})):
        path = _oriented(tmp_path / name, rgb, orientation, **kw)
        np.testing.assert_array_equal(read_image(path), upright, err_msg=name)
        assert image_size(path) == (upright.shape[1], upright.shape[0]), name
        assert read_mask(path).shape == upright.shape[:2], name


def test_a_two_level_mask_is_unchanged_and_label_masks_count_every_label(tmp_path):
    mvtec = np.zeros((8, 8), np.uint8)
    mvtec[2:5, 2:5] = 255
    np.testing.assert_array_equal(read_mask(write_image(tmp_path / "m.png", mvtec)), mvtec // 255)
    labels = np.zeros((8, 8), np.uint8)
    labels[1:3, 1:3], labels[5:7, 5:7], labels[0, 7] = 1, 2, 7  # class indices
    np.testing.assert_array_equal(read_mask(write_image(tmp_path / "l.png", labels)), labels > 0)
    np.testing.assert_array_equal(read_mask(write_image(tmp_path / "l16.png",
                                                        labels.astype(np.uint16))), labels > 0)
    soft = mvtec.copy()
    soft[2, 2], soft[0, 0] = 128, 100  # anti-aliased: still thresholded at the middle
    expect = mvtec // 255
    expect[0, 0] = 0
    np.testing.assert_array_equal(read_mask(write_image(tmp_path / "aa.png", soft)), expect)


def test_an_empty_mask_is_said_once_naming_the_file(tmp_path, monkeypatch, caplog):
    from anomaly_inspect.data import image_io

    monkeypatch.setattr(image_io, "_EMPTY_MASK", [])
    dark = np.zeros((8, 8), np.uint16)
    dark[2:4, 2:4], dark[0, 0] = 300, 200  # 16-bit, three levels: nothing above the middle
    with caplog.at_level("WARNING"):
        assert not read_mask(write_image(tmp_path / "empty1.png", dark)).any()
        assert not read_mask(write_image(tmp_path / "empty2.png", np.zeros((8, 8), np.uint8))).any()
    assert caplog.text.count("marks no pixel") == 1 and "empty1.png" in caplog.text


def _tif(path: Path, array: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), array), path
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).dtype == array.dtype, "writer changed the type"
    return path


def test_float_tiffs_are_scaled_by_a_fixed_rule_not_by_their_own_maximum(tmp_path):
    ramp = np.tile(np.linspace(0, 1, 6, dtype=np.float32), (2, 1))  # 0, .2, .4, .6, .8, 1
    expect = [0, 51, 102, 153, 204, 255]
    assert read_image(_tif(tmp_path / "a.tif", ramp))[0, :, 0].tolist() == expect
    over = ramp.copy()
    over[1, 0] = 1.0001  # one pixel just above 1 used to switch the whole image to [0, 255]
    assert read_image(_tif(tmp_path / "b.tif", over))[0, :, 0].tolist() == expect
    wild = ramp.copy()
    wild[0, 0], wild[0, 1], wild[1, 0] = np.nan, -3.0, 40.0  # clipped to [0, 1]; NaN is 0
    out = read_image(_tif(tmp_path / "c.tif", wild))
    assert out[0, :2, 0].tolist() == [0, 0] and out[1, 0, 0] == 255
    assert read_image(_tif(tmp_path / "d.tif", ramp.astype(np.float64)))[0, :, 0].tolist() == expect


def test_wide_and_signed_integer_tiffs_are_scaled_by_their_type_range(tmp_path, monkeypatch, caplog):
    from anomaly_inspect.data import image_io

    frac = np.array([[0.0, 0.2, 0.5, 1.0]])
    i16 = np.round(frac * 32767).astype(np.int16)
    assert read_image(_tif(tmp_path / "i16.tif", i16))[0, :, 0].tolist() == [0, 51, 128, 255]
    u32 = np.round(frac * (2**32 - 1)).astype(np.uint32)
    assert read_image(_tif(tmp_path / "u32.tif", u32))[0, :, 0].tolist() == [0, 51, 128, 255]
    i32 = np.round(frac * (2**31 - 1)).astype(np.int32)
    assert read_image(_tif(tmp_path / "i32.tif", i32))[0, :, 0].tolist() == [0, 51, 128, 255]
    negative = i16.copy()
    negative[0, 0] = -5
    with pytest.raises(ImageReadError, match=r"neg\.tif: signed 16-bit samples with negative "
                                             r"values \(down to -5\)"):
        read_image(_tif(tmp_path / "neg.tif", negative))
    monkeypatch.setattr(image_io, "_DARK_WIDE", [])
    small = np.full((2, 2), 70000, np.uint32)  # counts, not a full-range image: nearly black
    with caplog.at_level("WARNING"):
        assert read_image(_tif(tmp_path / "small.tif", small)).max() == 0
        read_image(_tif(tmp_path / "small2.tif", small))
    assert caplog.text.count("nearly black") == 1 and "small.tif" in caplog.text


def test_read_file_reads_no_more_than_the_file_with_an_unbounded_budget(tmp_path):
    path = write_image(tmp_path / "a.png", rgb_image(8))
    assert read_file(path, max_pixels=2**62) == path.read_bytes()


def test_a_huge_jpeg_is_decoded_alike_with_or_without_a_mask(tmp_path):
    """Training (no mask) and evaluation (with masks) go through one decode: a JPEG over 16 MP
    is reduced for both (it was reduced for training only, 9 grey levels apart on average),
    and its full-size mask follows the reduced image to the model input."""
    import cv2

    from anomaly_inspect.data.loader import BatchStream
    from anomaly_inspect.data.transforms import TransformConfig

    rng = np.random.default_rng(0)
    big = cv2.resize((rng.random((64, 64, 3)) * 255).astype(np.uint8), (4104, 4104),
                     interpolation=cv2.INTER_CUBIC)
    path, mask_path = tmp_path / "big.jpg", tmp_path / "big_mask.png"
    cv2.imwrite(str(path), big, [cv2.IMWRITE_JPEG_QUALITY, 95])
    mask = np.zeros((4104, 4104), np.uint8)
    mask[1026:2052, 2052:3078] = 255  # rows 1/4-1/2, columns 1/2-3/4
    cv2.imwrite(str(mask_path), mask)
    cfg = TransformConfig(256, None, (0.5,) * 3, (0.5,) * 3)
    plain = next(iter(BatchStream([path], cfg, 1, None, prefetch=False)))
    masked = next(iter(BatchStream([path], cfg, 1, [mask_path], prefetch=False)))
    assert np.array_equal(plain.images[0], masked.images[0])
    got = masked.masks[0] > 0
    expected = np.zeros_like(got)
    expected[64:128, 128:192] = True  # two nearest-neighbour resizes: edges within one cell
    inner, outer = expected.copy(), expected.copy()
    inner[64:128, 128:192], inner[65:127, 129:191] = False, True
    outer[63:129, 127:193] = True
    assert got[inner].all() and not got[~outer].any()


def test_an_image_above_the_decoders_own_cap_says_so_not_corrupt(tmp_path):
    """OpenCV refuses an image above its own cap (OPENCV_IO_MAX_IMAGE_PIXELS, 2^30 pixels) whatever
    --max-pixels allows, and PIL's bomb guard then refuses it too: the error says so rather than
    "corrupt". Both caps are lowered here (OpenCV reads its own at start: a child process) so that
    a 40x40 image stands for a 33000x33000 one."""
    path = write_image(tmp_path / "big.png", rgb_image(40, seed=9))
    code = ("import sys; from PIL import Image; Image.MAX_IMAGE_PIXELS = 100\n"
            "from anomaly_inspect.data.image_io import ImageReadError, read_image\n"
            "try:\n    read_image(sys.argv[1], max_pixels=10**9)\n"
            "except ImageReadError as exc:\n    print(exc.reason)\n")
    env = {**os.environ, "OPENCV_IO_MAX_IMAGE_PIXELS": "1000"}
    out = subprocess.run([sys.executable, "-c", code, str(path)], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout.strip()
    assert out == ("40x40 = 0.0 MP: above the decoder's own size limit (OpenCV's "
                   "OPENCV_IO_MAX_IMAGE_PIXELS, by default 2^30 pixels, 2^20 a side); "
                   "--max-pixels cannot raise it")


# Text that starts like a Netpbm magic is no image (a full header decides); a mask drawn as a
# semi-transparent overlay keeps its defect.
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


def test_a_netpbm_file_with_a_long_header_comment_is_listed_by_content(tmp_path):
    """A header comment longer than the first kilobyte still leaves the file an image."""
    from anomaly_inspect.data.image_io import looks_like_image

    path = tmp_path / "scan"  # no extension: found by content
    path.write_bytes(b"P5\n# " + b"x" * 3000 + b"\n4 2\n255\n" + bytes(8))
    assert looks_like_image(path)


# Every format read_image decodes is listed; an RGBA mask's alpha counts.
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


# A PGM / PPM / JPEG 2000 over the pixel budget is refused from its header, before any pixel is
# decoded.
# ---------------------------------------------------------------- PGM / PPM / JPEG 2000 headers


def _no_decoding(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("decoded before the pixel budget was checked")

    monkeypatch.setattr(image_io.cv2, "imdecode", refuse)
    monkeypatch.setattr(image_io, "_decode_pil", refuse)


@pytest.mark.parametrize("ext", [".pgm", ".ppm", ".pbm", ".jp2"])
def test_an_over_budget_netpbm_or_jpeg2000_is_refused_from_its_header(tmp_path, monkeypatch, ext):
    path = tmp_path / f"img{ext}"
    shape = (300, 400, 3) if ext in (".ppm", ".jp2") else (300, 400)
    assert cv2.imwrite(str(path), np.full(shape, 255, np.uint8))
    assert read_image(path).shape == (300, 400, 3)  # a format the reader reads
    _no_decoding(monkeypatch)
    assert image_size(path) == (400, 300)  # from the header
    with pytest.raises(ImageReadError, match=r"400x300 = 0\.1 MP > 0\.119999 MP; raise --max-pixels"):
        read_image(path, max_pixels=119_999)


def test_a_huge_pgm_header_is_refused_unread(tmp_path, monkeypatch):
    path = tmp_path / "huge.pgm"
    path.write_bytes(b"P5\n12000 12000\n255\n" + bytes(64))  # claims 144 MP
    _no_decoding(monkeypatch)
    with pytest.raises(ImageReadError, match=r"12000x12000 = 144\.0 MP > 100 MP"):
        read_image(path)
