"""Dataset adapters on layouts users really have: every image in one split with one label,
every mask with its own image, and what cannot be used refused before any fitting."""

from __future__ import annotations

import logging
import os
import unicodedata

import numpy as np
import pytest

from anomaly_inspect.cli import main
from anomaly_inspect.data.folder import load_folders
from anomaly_inspect.data.image_io import looks_like_image, read_mask
from anomaly_inspect.data.layout import DatasetLayoutError, list_images
from anomaly_inspect.data.mvtec import load_mvtec
from anomaly_inspect.evaluation.evaluate import check_dataset
from layout_writer import rgb_image, write_image, write_mask, write_mvtec


def mask_array(seed: int, size: int = 32) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    m[seed % 8:seed % 8 + 6, 4:12] = 255
    return m


def category(root, defects=("crack",), n=2):
    """A small MVTec-layout category: train/good, test/good, test/<defect> with masks."""
    for i in range(n):
        write_image(root / "train" / "good" / f"{i:03d}.png", rgb_image(32, i))
        write_image(root / "test" / "good" / f"{i:03d}.png", rgb_image(32, 10 + i))
        for d in defects:
            write_image(root / "test" / d / f"{i:03d}.png", rgb_image(32, 20 + i))
            write_image(root / "ground_truth" / d / f"{i:03d}_mask.png", mask_array(i))
    return root


def masks_of(ds):
    return {s.path.relative_to(s.path.parents[1]).as_posix(): s.mask_path.name
            for s in ds.test if s.mask_path is not None}


def test_hidden_files_and_folders_are_not_part_of_a_set(tmp_path):
    cat = category(tmp_path / "cat")
    write_image(cat / "test" / ".ipynb_checkpoints" / "x.png", rgb_image(32, 5))
    write_image(cat / "train" / "good" / ".thumbs" / "000.png", rgb_image(32, 21))
    (cat / "test" / "good" / "._000.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    ds = load_mvtec(cat)
    assert ds.groups == ["crack", "good"] and len(ds.train) == 2 and len(ds.test) == 4
    assert [p.name for p in list_images(cat / "test")] == ["000.png", "001.png"] * 2


def test_nested_defect_images_pair_with_the_mask_in_the_same_sub_folder(tmp_path):
    cat = category(tmp_path / "cat")
    write_image(cat / "test" / "crack" / "more" / "000.png", rgb_image(32, 30))
    write_image(cat / "ground_truth" / "crack" / "more" / "000_mask.png", mask_array(3))
    ds = load_mvtec(cat)
    nested = next(s for s in ds.test if s.path.parent.name == "more")
    assert nested.mask_path == cat / "ground_truth" / "crack" / "more" / "000_mask.png"
    # without its own mask it is refused, not paired with crack/000_mask.png
    (cat / "ground_truth" / "crack" / "more" / "000_mask.png").unlink()
    with pytest.raises(DatasetLayoutError, match=r"more/000.png: no mask .*crack/more/000_mask.png"):
        load_mvtec(cat)


def test_one_mask_for_two_images_is_refused(tmp_path):
    cat = category(tmp_path / "cat")
    write_image(cat / "test" / "crack" / "000.jpg", rgb_image(32, 40))
    with pytest.raises(DatasetLayoutError, match=r"000_mask.png: the mask of both .*000.jpg"):
        load_mvtec(cat)


def test_masks_of_any_image_extension_and_case_pair(tmp_path):
    cat = category(tmp_path / "cat")
    gt = cat / "ground_truth" / "crack"
    (gt / "000_mask.png").rename(gt / "000_MASK.PNG")
    write_image(gt / "001_mask.bmp", mask_array(1))
    (gt / "001_mask.png").unlink()
    assert masks_of(load_mvtec(cat)) == {"crack/000.png": "000_MASK.PNG",
                                         "crack/001.png": "001_mask.bmp"}
    write_image(gt / "001_mask.png", mask_array(1))  # two masks for one image
    with pytest.raises(DatasetLayoutError, match=r"001.png: more than one mask"):
        load_mvtec(cat)


def test_a_capitalised_good_folder_is_not_taken_for_a_defect_type(tmp_path):
    cat = category(tmp_path / "cat")
    (cat / "test" / "good").rename(cat / "test" / "Good")
    with pytest.raises(DatasetLayoutError, match=r"test/Good: normal test images go in test/good/"):
        load_mvtec(cat)


def test_the_category_is_named_as_its_folder_however_the_path_is_spelled(tmp_path, monkeypatch):
    category(tmp_path / "cat")
    assert load_mvtec(tmp_path, "cat/").name == "cat"
    monkeypatch.chdir(tmp_path / "cat")
    assert load_mvtec(".").name == "cat"


def test_folders_refuse_overlapping_splits_and_ambiguous_masks(tmp_path):
    for i in range(2):
        write_image(tmp_path / "train" / f"{i}.png", rgb_image(32, i))
        write_image(tmp_path / "ok" / f"{i}.png", rgb_image(32, 10 + i))
        write_image(tmp_path / "bad" / "large" / f"{i}.png", rgb_image(32, 20 + i))
        write_image(tmp_path / "gt" / "large" / f"{i}_mask.png", mask_array(i))
    ds = load_folders([tmp_path / "train"], [tmp_path / "ok"], [tmp_path / "bad" / "large"],
                      mask_dir=tmp_path / "gt")
    assert sorted(s.mask_path.name for s in ds.test if s.label == 1) == ["0_mask.png", "1_mask.png"]
    with pytest.raises(DatasetLayoutError, match=r"both a training image and a normal test image"):
        load_folders([tmp_path / "train"], [tmp_path / "train"], [tmp_path / "bad"])
    with pytest.raises(DatasetLayoutError, match=r"an anomalous test image twice"):
        load_folders([tmp_path / "train"], [tmp_path / "ok"], [tmp_path / "bad", tmp_path / "bad" / "large"])
    with pytest.raises(DatasetLayoutError, match=r"both a training image and an anomalous"):
        load_folders([tmp_path / "bad"], [tmp_path / "ok"], [tmp_path / "bad" / "large"])
    write_image(tmp_path / "gt" / "small" / "0_mask.png", mask_array(5))
    with pytest.raises(DatasetLayoutError, match=r"two masks for the images named '0'"):
        load_folders([tmp_path / "train"], [tmp_path / "ok"], [tmp_path / "bad" / "large"],
                     mask_dir=tmp_path / "gt")
    write_image(tmp_path / "bad" / "small" / "0.png", rgb_image(32, 30))
    with pytest.raises(DatasetLayoutError, match=r"small/0.png: named like .*large/0.png"):
        load_folders([tmp_path / "train"], [tmp_path / "ok"],
                     [tmp_path / "bad" / "large", tmp_path / "bad" / "small"],
                     mask_dir=tmp_path / "gt" / "large")


@pytest.mark.parametrize("high, dtype", [(1, np.uint8), (255, np.uint8), (255, np.uint16),
                                         (65535, np.uint16)])
def test_two_level_masks_are_read_whatever_their_levels(tmp_path, high, dtype):
    m = (mask_array(2) > 0).astype(dtype) * dtype(high)
    write_image(tmp_path / "m.png", m)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), (m > 0).astype(np.uint8))


def test_text_starting_with_bm_is_not_a_bitmap(tmp_path):
    (tmp_path / "parts").write_text("BMW parts list\nmore text here\n")
    write_image(tmp_path / "real.bmp", rgb_image(32))
    (tmp_path / "real.bmp").rename(tmp_path / "real")
    assert not looks_like_image(tmp_path / "parts") and looks_like_image(tmp_path / "real")


def test_unusable_test_files_are_refused_before_fitting(tmp_path, capsys):
    cat = category(tmp_path / "cat")
    check_dataset(load_mvtec(cat))  # the clean layout passes
    data = (cat / "test" / "good" / "001.png").read_bytes()
    (cat / "test" / "good" / "001.png").write_bytes(data[:len(data) // 2])
    write_image(cat / "ground_truth" / "crack" / "000_mask.png", np.zeros((8, 32), np.uint8))
    with pytest.raises(DatasetLayoutError) as err:
        check_dataset(load_mvtec(cat))
    assert "2 file(s) cannot be used" in str(err.value)
    assert "good/001.png: truncated PNG" in str(err.value)
    assert "000_mask.png: a 32x8 mask for the 32x32 image" in str(err.value)
    assert main(["evaluate", "--root", str(cat), "--quiet"]) == 1
    assert "truncated PNG" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    (cat / "train" / "good" / "001.png").write_text("not an image")  # training images too
    for auto in ([], ["--auto"]):  # before tuning, not after it
        assert main(["evaluate", "--root", str(cat), "--quiet", *auto]) == 1
        assert "3 file(s) cannot be used" in capsys.readouterr().err


def test_evaluate_refuses_the_other_datasets_flags(tmp_path, capsys):
    assert main(["evaluate", "--root", str(tmp_path), "--category", "c", "--train-dir",
                 str(tmp_path), "--quiet"]) == 1
    assert "--dataset mvtec does not take --train-dir" in capsys.readouterr().err


def test_what_the_layout_leaves_out_is_said(tmp_path, caplog):
    cat = category(tmp_path / "cat")
    (cat / "test" / "scratch").mkdir()
    (cat / "ground_truth" / "scratch").mkdir()
    write_image(cat / "test" / "loose.png", rgb_image(32, 7))
    with caplog.at_level("WARNING"):
        ds = load_mvtec(cat)
    assert len(ds.test) == 4
    assert "test/scratch: no images; 'scratch' left out" in caplog.text
    assert "1 image(s) directly in test/ left out" in caplog.text


def test_an_empty_defect_folder_without_a_mask_folder_is_left_out(tmp_path, caplog):
    cat = category(tmp_path / "cat")
    (cat / "test" / "scratch").mkdir()  # no images, so no ground_truth/scratch/ either
    with caplog.at_level("WARNING"):
        ds = load_mvtec(cat)
    assert "'scratch' left out" in caplog.text
    assert len(ds.test) == 4 and ds.groups == ["crack", "good"]


def test_folders_refuse_a_mask_that_pairs_with_no_image(tmp_path):
    for i in range(2):
        write_image(tmp_path / "train" / f"{i}.png", rgb_image(32, i))
        write_image(tmp_path / "bad" / f"{i}.png", rgb_image(32, 20 + i))
        write_image(tmp_path / "gt" / f"{i}_mask.png", mask_array(i))
    assert len(load_folders([tmp_path / "train"], [], [tmp_path / "bad"],
                            mask_dir=tmp_path / "gt").test) == 2
    write_image(tmp_path / "gt" / "2_mask.png", mask_array(2))
    with pytest.raises(DatasetLayoutError, match=r"1 mask\(s\) have no matching anomalous image: "
                                                 r"\[.*gt/2_mask.png'\]"):
        load_folders([tmp_path / "train"], [], [tmp_path / "bad"], mask_dir=tmp_path / "gt")


def test_12_bit_data_in_a_16_bit_file_is_warned_about_once(tmp_path, monkeypatch, caplog):
    from anomaly_inspect.data import image_io

    monkeypatch.setattr(image_io, "_DARK_16_BIT", [])
    write_image(tmp_path / "full.png", (rgb_image(16)[..., 0].astype(np.uint16) * 257))
    write_image(tmp_path / "dark.png", (rgb_image(16)[..., 0].astype(np.uint16) * 16))
    with caplog.at_level("WARNING"):
        image_io.read_image(tmp_path / "full.png")
        assert "12-bit" not in caplog.text
        image_io.read_image(tmp_path / "dark.png")
        image_io.read_image(tmp_path / "dark.png")
    assert caplog.text.count("12-bit camera data") == 1 and "dark.png" in caplog.text


def test_a_mask_of_its_images_aspect_but_another_size_is_refused(tmp_path):
    """A mask must have its image's shape: a 64x64 mask for a 32x32 image (same aspect) or one
    a pixel off would be stretched onto it, and was accepted within 1 % of the aspect."""
    for shape in [(64, 64), (32, 31)]:
        cat = category(tmp_path / f"cat{shape[1]}")
        write_image(cat / "ground_truth" / "crack" / "000_mask.png", np.zeros(shape, np.uint8))
        with pytest.raises(DatasetLayoutError, match=rf"000_mask\.png: a {shape[1]}x{shape[0]} mask "
                                                     r"for the 32x32 image"):
            check_dataset(load_mvtec(cat))


def test_masks_without_an_anomalous_pixel_give_no_pixel_auroc_and_keep_the_image_auroc(caplog):
    from anomaly_inspect.evaluation.evaluate import _pixel_auroc

    maps = [np.array([0.1, 0.9]), np.array([0.2, 0.3])]
    assert _pixel_auroc([np.zeros(2, bool)] * 2, maps, "cat") is None
    assert "cat: the masks mark no pixel anomalous: no pixel AUROC" in caplog.text
    assert _pixel_auroc([], [], "cat") is None
    assert _pixel_auroc([np.array([False, True]), np.array([False, False])], maps, "cat") == 1.0


# Links to one file inside one folder split are kept once (a deduplicated dataset loads), while
# overlapping named folders and links across roles stay refused.
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


# Hard links cannot leak; NFD names pair.
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


# Folder masks pair across Unicode forms.
# ------------------------------------------------------------------ folder masks, Unicode forms


def test_folder_masks_pair_nfc_and_nfd_names(tmp_path):
    nfc, nfd = (unicodedata.normalize(f, "café") for f in ("NFC", "NFD"))
    assert nfc != nfd
    write_image(tmp_path / "good" / "0.png", rgb_image(32, 1))
    write_image(tmp_path / "bad" / f"{nfc}.png", rgb_image(32, 2))
    write_mask(tmp_path / "masks" / f"{nfd}_mask.png")
    ds = load_folders(tmp_path / "good", test_anomalous_dirs=tmp_path / "bad",
                      mask_dir=tmp_path / "masks")
    assert [(s.path.name, s.mask_path.name) for s in ds.test] == [(f"{nfc}.png", f"{nfd}_mask.png")]
