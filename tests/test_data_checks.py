"""Dataset checks that must hold before any fitting: a truncated BMP / TIFF / Netpbm / WebP is
refused from its header, images and masks the MVTec layout leaves out are warned about, and
ambiguous or empty paths and overlapping mask folders are refused naming the cause."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomaly_inspect.data.folder import load_folders
from anomaly_inspect.data.image_io import ImageReadError, image_size, read_image
from anomaly_inspect.data.isic import resolve_archive_images
from anomaly_inspect.data.layout import DatasetLayoutError
from anomaly_inspect.data.mvtec import load_mvtec
from anomaly_inspect.data.registry import load_dataset
from anomaly_inspect.evaluation.evaluate import check_dataset
from layout_writer import rgb_image, write_image, write_mask, write_mvtec

# (file name, PIL format, save options, mode, the format's name in the error)
_FORMATS = [
    ("rgb.bmp", "BMP", {}, "RGB", "BMP"),
    ("gray.bmp", "BMP", {}, "L", "BMP"),
    ("bits.bmp", "BMP", {}, "1", "BMP"),
    ("raw.tif", "TIFF", {}, "RGB", "TIFF"),
    ("deep.tif", "TIFF", {}, "I;16", "TIFF"),
    ("rgb.ppm", "PPM", {}, "RGB", "PPM"),
    ("gray.pgm", "PPM", {}, "L", "PGM"),
    ("deep.pgm", "PPM", {}, "I;16", "PGM"),
    ("bits.pbm", "PPM", {}, "1", "PBM"),
    ("lossless.webp", "WEBP", {"lossless": True}, "RGB", "WebP"),
    ("cut.png", "PNG", {}, "RGB", "PNG (no IEND chunk)"),
    ("cut.jpg", "JPEG", {}, "RGB", "JPEG (no end-of-image marker)"),
]


def _encoded(fmt: str, kwargs: dict, mode: str, size: tuple[int, int] = (37, 29)) -> bytes:
    """An image of ``size`` (width, height; odd, so that rows are padded) in ``fmt``."""
    rgb = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), np.uint8)
    image = Image.fromarray(rgb)
    if mode == "I;16":
        image = Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257)
    elif mode != "RGB":
        image = image.convert(mode)
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


@pytest.mark.parametrize(("name", "fmt", "kwargs", "mode", "said"), _FORMATS)
def test_a_truncated_image_is_refused_by_the_header_check(tmp_path, name, fmt, kwargs, mode, said):
    data = _encoded(fmt, kwargs, mode)
    whole = tmp_path / name
    whole.write_bytes(data)
    assert image_size(whole) == (37, 29)  # the intact file passes and reads
    assert read_image(whole).shape == (29, 37, 3)
    cut = tmp_path / f"cut_{name}"
    cut.write_bytes(data[: len(data) * 9 // 10])
    with pytest.raises(ImageReadError) as err:
        image_size(cut)  # the header-only check before fitting, no decoding
    assert err.value.path == cut and str(cut) in str(err.value)
    assert err.value.reason.startswith(f"truncated {said}"), err.value.reason


def test_a_bmp_without_its_last_row_padding_is_not_truncated(tmp_path):
    """Some writers leave out the last row's padding to 4 bytes: all its pixels are there."""
    data = _encoded("BMP", {}, "RGB")  # 37 * 3 = 111 bytes a row, padded to 112
    path = tmp_path / "short.bmp"
    path.write_bytes(data[:-1])
    assert image_size(path) == (37, 29)
    path.write_bytes(data[:-2])  # a pixel byte missing
    with pytest.raises(ImageReadError, match="truncated BMP"):
        image_size(path)


def test_text_starting_like_a_bitmap_is_not_called_a_truncated_one(tmp_path):
    path = tmp_path / "parts.bmp"
    path.write_text("BMW parts list\nmore text here\n")
    with pytest.raises(ImageReadError) as err:
        image_size(path)
    assert "truncated" not in err.value.reason


def test_truncated_bmp_and_tiff_are_refused_before_fitting(tmp_path):
    """The evaluate check (headers of every image) finds them, not the scoring after the fit."""
    for i in range(3):
        write_image(tmp_path / "train" / f"{i}.png", rgb_image(32, seed=i))
        write_image(tmp_path / "good" / f"{i}.png", rgb_image(32, seed=10 + i))
        write_image(tmp_path / "bad" / f"{i}.png", rgb_image(32, seed=20 + i))
    check_dataset(load_folders(tmp_path / "train", tmp_path / "good", tmp_path / "bad"))
    for name, fmt in (("cut.bmp", "BMP"), ("cut.tif", "TIFF")):
        data = _encoded(fmt, {}, "RGB", (32, 32))
        (tmp_path / "good" / name).write_bytes(data[: len(data) * 9 // 10])
    with pytest.raises(DatasetLayoutError) as err:
        check_dataset(load_folders(tmp_path / "train", tmp_path / "good", tmp_path / "bad"))
    message = str(err.value)
    assert "2 file(s) cannot be used" in message
    assert f"{tmp_path / 'good' / 'cut.bmp'}: truncated BMP" in message
    assert f"{tmp_path / 'good' / 'cut.tif'}: truncated TIFF" in message


def _samples(ds):
    return [(s.path, s.label, s.group, s.mask_path) for s in ds.train + ds.test]


def test_mvtec_warns_of_images_outside_train_good_and_normal_masks(tmp_path, caplog):
    cat = write_mvtec(tmp_path, "w")
    before = _samples(load_mvtec(cat))
    write_image(cat / "train" / "loose.png", rgb_image(32, seed=40))
    write_image(cat / "train" / "ok" / "a.png", rgb_image(32, seed=41))
    write_image(cat / "train" / "ok" / "b.png", rgb_image(32, seed=42))
    write_image(cat / "train" / ".cache" / "c.png", rgb_image(32, seed=43))  # hidden: no set
    write_mask(cat / "ground_truth" / "good" / "000_mask.png")
    with caplog.at_level(logging.WARNING, logger="anomaly_inspect.data.mvtec"):
        ds = load_mvtec(cat)
    assert _samples(ds) == before  # what is loaded does not change
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"{cat / 'train'}: 1 image(s) directly in train/ left out (training images go in " \
           f"train/good/)" in warnings
    assert f"{cat / 'train' / 'ok'}: 2 image(s) left out of training (only train/good/ is " \
           f"read)" in warnings
    assert any(w.startswith(f"{cat / 'ground_truth' / 'good'}: 1 mask(s) of normal images not "
                            f"read") for w in warnings)
    assert not any(".cache" in w for w in warnings)


def test_mvtec_clean_layout_warns_of_nothing(tmp_path, caplog):
    cat = write_mvtec(tmp_path, "w")
    with caplog.at_level(logging.WARNING, logger="anomaly_inspect.data.mvtec"):
        load_mvtec(cat)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_isic_id_with_two_image_files_is_refused(tmp_path):
    write_image(tmp_path / "ISIC_1.png", rgb_image(8))
    write_image(tmp_path / "ISIC_1.jpg", rgb_image(8, seed=1))
    write_image(tmp_path / "ISIC_2.jpg", rgb_image(8, seed=2))
    with pytest.raises(DatasetLayoutError) as err:
        resolve_archive_images(["ISIC_2", "ISIC_1"], tmp_path)
    assert str(tmp_path / "ISIC_1.png") in str(err.value)
    assert str(tmp_path / "ISIC_1.jpg") in str(err.value)
    assert "more than one image file" in str(err.value)
    assert resolve_archive_images(["ISIC_2"], tmp_path) == [tmp_path / "ISIC_2.jpg"]


def _folders(root: Path) -> dict[str, Path]:
    dirs = {name: root / name for name in ("train", "good", "bad", "masks")}
    for i in range(2):
        write_image(dirs["train"] / f"t{i}.png", rgb_image(32, seed=i))
        write_image(dirs["good"] / f"g{i}.png", rgb_image(32, seed=10 + i))
        write_image(dirs["bad"] / f"b{i}.png", rgb_image(32, seed=20 + i))
        write_mask(dirs["masks"] / f"b{i}_mask.png")
    return dirs


def test_an_empty_path_is_refused_naming_the_option(tmp_path, monkeypatch):
    """"" is the current folder: here a folder of images, which it would silently read."""
    dirs = _folders(tmp_path)
    monkeypatch.chdir(dirs["train"])
    cases = [
        (lambda: load_folders("", dirs["good"], dirs["bad"]), "train_dirs"),
        (lambda: load_folders([dirs["train"], ""], dirs["good"], dirs["bad"]), "train_dirs"),
        (lambda: load_folders(dirs["train"], "", dirs["bad"]), "test_normal_dirs"),
        (lambda: load_folders(dirs["train"], dirs["good"], [""]), "test_anomalous_dirs"),
        (lambda: load_dataset("folder", train_dirs=dirs["train"], test_normal_dirs=dirs["good"],
                              test_anomalous_dirs=dirs["bad"], mask_dir=""), "mask_dir"),
        (lambda: load_mvtec(""), "root"),
        (lambda: load_dataset("mvtec", root=""), "root"),
    ]
    for load, option in cases:
        with pytest.raises(ValueError) as err:
            load()
        assert str(err.value).startswith(f'{option}: an empty path ("")'), str(err.value)
    ds = load_folders(".", dirs["good"], dirs["bad"], dirs["masks"])  # "." says it
    assert len(ds.train) == 2 and ds.has_masks


@pytest.mark.parametrize("where", ["same", "inside", "around"])
def test_a_mask_folder_overlapping_an_anomalous_folder_is_refused(tmp_path, where):
    dirs = _folders(tmp_path)
    bad, masks = dirs["bad"], dirs["masks"]
    for m in masks.iterdir():
        m.rename(bad / m.name)  # masks beside their images
    if where == "inside":  # masks in a sub-folder of the anomalous folder
        (bad / "m").mkdir()
        for m in bad.glob("*_mask.png"):
            m.rename(bad / "m" / m.name)
        masks = bad / "m"
    elif where == "around":  # the anomalous images in a sub-folder of the mask folder
        (bad / "img").mkdir()
        for m in bad.glob("b?.png"):
            m.rename(bad / "img" / m.name)
        masks, bad = bad, bad / "img"
    else:
        masks = bad
    with pytest.raises(DatasetLayoutError) as err:
        load_folders(dirs["train"], dirs["good"], bad, masks)
    assert str(err.value) == (f"{masks}: the mask folder overlaps the anomalous test folder "
                              f"{bad}; masks must be in a folder of their own")


def test_a_mask_folder_inside_the_training_folder_is_refused(tmp_path):
    dirs = _folders(tmp_path)
    masks = dirs["masks"].rename(dirs["train"] / "masks")
    with pytest.raises(DatasetLayoutError, match="overlaps the training folder"):
        load_folders(dirs["train"], dirs["good"], dirs["bad"], masks)
    ds = load_folders(dirs["train"], dirs["good"], dirs["bad"],
                      masks.rename(tmp_path / "masks"))  # a folder of their own
    assert [s.mask_path.name for s in ds.test if s.label] == ["b0_mask.png", "b1_mask.png"]
