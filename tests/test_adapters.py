"""Dataset adapters (MVTec layout, plain folders) and per-image errors in batched loading."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly_inspect.data import loader
from anomaly_inspect.data.folder import load_folders
from anomaly_inspect.data.layout import DatasetLayoutError
from anomaly_inspect.data.loader import BatchStream, iter_batches
from anomaly_inspect.data.mvtec import load_mvtec
from anomaly_inspect.data.transforms import TransformConfig
from layout_writer import rgb_image, write_image, write_mask, write_mvtec

# ----------------------------------------------------------------- MVTec layout


def test_mvtec_layout_with_masks(tmp_path):
    write_mvtec(tmp_path, "widget", n_train=3, n_good=2, defects={"scratch": 2, "dent": 1})
    ds = load_mvtec(tmp_path, "widget")
    assert ds.name == "widget" and ds.has_masks
    assert len(ds.train) == 3 and all(s.label == 0 and s.split == "train" for s in ds.train)
    assert len(ds.test) == 5 and ds.n_anomalous == 3
    assert ds.groups == ["dent", "good", "scratch"]
    for s in ds.test:
        if s.label == 1:  # masks paired by name: test/<d>/NNN.png <-> ground_truth/<d>/NNN_mask.png
            assert s.mask_path.parent.name == s.group
            assert s.mask_path.name == f"{s.path.stem}_mask.png"
        else:
            assert s.mask_path is None and s.group == "good"


def test_mvtec_category_folder_given_directly(tmp_path):
    cat = write_mvtec(tmp_path, "widget")
    ds = load_mvtec(cat)
    assert ds.name == "widget" and len(ds.test) == 5


def test_mvtec_without_masks(tmp_path):
    write_mvtec(tmp_path, "plain", masks=False)
    ds = load_mvtec(tmp_path, "plain")
    assert not ds.has_masks and all(s.mask_path is None for s in ds.test)


def test_mvtec_missing_mask_names_the_image(tmp_path):
    cat = write_mvtec(tmp_path, "widget")
    (cat / "ground_truth" / "scratch" / "001_mask.png").unlink()
    with pytest.raises(DatasetLayoutError) as info:
        load_mvtec(tmp_path, "widget")
    msg = str(info.value)
    assert str(cat / "test" / "scratch" / "001.png") in msg and "no mask" in msg


def test_mvtec_mismatched_mask_name(tmp_path):
    cat = write_mvtec(tmp_path, "widget")
    gt = cat / "ground_truth" / "scratch"
    (gt / "001_mask.png").rename(gt / "007_mask.png")
    with pytest.raises(DatasetLayoutError) as info:
        load_mvtec(tmp_path, "widget")
    msg = str(info.value)
    assert "001.png" in msg  # image without its mask
    assert str(gt / "007_mask.png") in msg and "no matching image" in msg  # orphan mask


def test_mvtec_missing_mask_folder_for_defect(tmp_path):
    cat = write_mvtec(tmp_path, "widget")
    write_image(cat / "test" / "crack" / "000.png", rgb_image(32, 9))
    with pytest.raises(DatasetLayoutError, match=r"ground_truth/crack: no mask folder"):
        load_mvtec(tmp_path, "widget")


def test_mvtec_missing_category_lists_the_ones_found(tmp_path):
    write_mvtec(tmp_path, "widget")
    with pytest.raises(FileNotFoundError) as info:
        load_mvtec(tmp_path, "gadget")
    assert str(tmp_path / "gadget") in str(info.value) and "widget" in str(info.value)


@pytest.mark.parametrize("remove", ["train/good", "test"])
def test_mvtec_wrong_layout(tmp_path, remove):
    import shutil

    cat = write_mvtec(tmp_path, "widget")
    shutil.rmtree(cat / remove)
    with pytest.raises(DatasetLayoutError) as info:
        load_mvtec(tmp_path, "widget")
    assert str(cat / remove) in str(info.value)


def test_mvtec_empty_train_and_no_test_types(tmp_path):
    cat = tmp_path / "empty"
    (cat / "train" / "good").mkdir(parents=True)
    (cat / "test").mkdir()
    with pytest.raises(DatasetLayoutError, match="no training images"):
        load_mvtec(cat)
    write_image(cat / "train" / "good" / "000.png", rgb_image())
    with pytest.raises(DatasetLayoutError, match=r"no test/<type>/ folders"):
        load_mvtec(cat)


def test_mvtec_real_bottle(shared_data):
    ds = load_mvtec(shared_data / "mvtec_ad", "bottle")
    assert (len(ds.train), len(ds.test), ds.n_anomalous) == (209, 83, 63)
    assert ds.has_masks and ds.groups == ["broken_large", "broken_small", "contamination", "good"]
    assert all(s.mask_path is not None and s.mask_path.stem == f"{s.path.stem}_mask"
               for s in ds.test if s.label == 1)


# ----------------------------------------------------------------- folder adapter


def _folders(tmp_path):
    for i in range(3):
        write_image(tmp_path / "normal" / f"n{i}.png", rgb_image(32, i))
    for i in range(2):
        write_image(tmp_path / "ok" / f"o{i}.jpg", rgb_image(32, 10 + i))
    for i in range(2):
        write_image(tmp_path / "bad" / f"b{i}.png", rgb_image(32, 20 + i))
        write_mask(tmp_path / "masks" / f"b{i}_mask.png")
    return tmp_path


def test_folder_adapter(tmp_path):
    root = _folders(tmp_path)
    ds = load_folders([root / "normal"], [root / "ok"], [root / "bad"], root / "masks", name="parts")
    assert ds.name == "parts" and len(ds.train) == 3 and ds.has_masks
    assert [s.label for s in ds.test] == [0, 0, 1, 1]
    assert [s.mask_path.name for s in ds.test if s.label] == ["b0_mask.png", "b1_mask.png"]
    assert ds.groups == ["bad", "good"]
    no_masks = load_folders([root / "normal"], [root / "ok"], [root / "bad"])
    assert not no_masks.has_masks and all(s.mask_path is None for s in no_masks.test)


def test_folder_adapter_missing_mask(tmp_path):
    root = _folders(tmp_path)
    (root / "masks" / "b1_mask.png").unlink()
    with pytest.raises(DatasetLayoutError) as info:
        load_folders([root / "normal"], [], [root / "bad"], root / "masks")
    assert str(root / "masks") in str(info.value) and "b1.png" in str(info.value)


def test_folder_adapter_missing_or_empty_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetLayoutError, match=str(tmp_path / "empty")):
        load_folders([tmp_path / "empty"])
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "absent")):
        load_folders([tmp_path / "absent"])


# ----------------------------------------------------------------- batched loading


def test_iter_batches_reports_bad_images_and_keeps_going(tmp_path):
    good = [write_image(tmp_path / f"g{i}.png", rgb_image(40, i)) for i in range(4)]
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    cut = tmp_path / "cut.jpg"
    data = write_image(cut, rgb_image(64, 7)).read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    paths = [good[0], empty, good[1], good[2], cut, good[3]]
    cfg = TransformConfig(image_size=32)
    batches = list(iter_batches(paths, cfg, batch_size=4))
    assert len(batches) == 2
    assert [i for b in batches for i in b.indices] == [0, 2, 3, 5]
    errors = dict(e for b in batches for e in b.errors)
    assert set(errors) == {1, 4}
    assert "empty" in errors[1] and "truncated JPEG" in errors[4]
    assert batches[0].images.shape == (3, 3, 32, 32) and batches[0].images.dtype == np.float32
    assert batches[0].originals == [(40, 40)] * 3
    # normalised with mean = std = 0.5: values in [-1, 1]
    assert batches[0].images.min() >= -1.0 and batches[0].images.max() <= 1.0


def test_iter_batches_masks_and_all_bad_batch(tmp_path):
    img = write_image(tmp_path / "a.png", rgb_image(32, 1))
    mask = write_mask(tmp_path / "a_mask.png", 32, box=(0, 0, 16, 32))  # left half
    bad = tmp_path / "bad.png"
    bad.write_text("no")
    cfg = TransformConfig(image_size=16)
    (b,) = iter_batches([img, img], cfg, batch_size=2, mask_paths=[mask, None], prefetch=False)
    assert b.masks.shape == (2, 16, 16)
    assert b.masks[0, :, :8].all() and not b.masks[0, :, 8:].any()  # resized with the image
    assert not b.masks[1].any()  # no mask: all background
    (only_bad,) = iter_batches([bad], cfg, batch_size=4)
    assert only_bad.images.shape == (0, 3, 16, 16) and only_bad.indices == []
    assert only_bad.errors[0][0] == 0
    # a broken mask is named as the mask, not as its (readable) image
    empty_mask = tmp_path / "empty_mask.png"
    empty_mask.write_bytes(b"")
    (b,) = iter_batches([img], cfg, batch_size=1, mask_paths=[empty_mask], prefetch=False)
    assert b.indices == [] and b.errors[0][0] == 0
    assert b.errors[0][1].startswith(f"its mask {empty_mask}: ")


def test_batch_stream_decodes_the_next_batch_only_when_asked(tmp_path, monkeypatch):
    paths = [write_image(tmp_path / f"g{i}.png", rgb_image(24, i)) for i in range(5)]
    cfg = TransformConfig(image_size=16)
    expected = [b.images for b in iter_batches(paths, cfg, batch_size=2, prefetch=False)]
    decoded = []
    real = loader._load_one
    monkeypatch.setattr(loader, "_load_one", lambda path, *a: (decoded.append(path), real(path, *a))[1])
    with BatchStream(paths, cfg, batch_size=2, eager=False) as stream:
        first = next(stream)
        assert decoded == paths[:2]  # lazy: batch 2 waits for prefetch()
        stream.prefetch()
        rest = list(stream)
    assert decoded == paths  # each image decoded once, in order
    got = [first.images] + [b.images for b in rest]
    assert len(got) == 3 and all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
    with pytest.raises(ValueError, match="batch size"):
        BatchStream(paths, cfg, batch_size=0)


def test_mvtec_refuses_a_training_image_linked_into_test_and_counts_links_once(tmp_path, caplog):
    """The folder adapter's disjointness check (canonical paths) runs on the MVTec layout too."""
    cat = write_mvtec(tmp_path, "cat", defects={"crack": 1})
    leak = cat / "test" / "good" / "leak.png"
    leak.symlink_to(cat / "train" / "good" / "000.png")
    with pytest.raises(DatasetLayoutError, match=r"leak\.png: both a training image and a normal "
                                                 r"test image \(the same file as .*000\.png\)"):
        load_mvtec(tmp_path, "cat")
    leak.unlink()
    (cat / "test" / "crack" / "000.png").rename(tmp_path / "c.png")
    (cat / "test" / "good" / "000.png").rename(tmp_path / "g.png")
    (cat / "test" / "crack" / "000.png").symlink_to(tmp_path / "c.png")
    (cat / "test" / "good" / "000.png").symlink_to(tmp_path / "g.png")
    (cat / "test" / "good" / "again.png").symlink_to(tmp_path / "g.png")  # a second link
    with caplog.at_level("WARNING"):
        ds = load_mvtec(tmp_path, "cat")
    assert sorted(s.path.name for s in ds.test) == ["000.png", "000.png", "001.png"]
    assert {s.path.parent.name for s in ds.test if s.path.name == "000.png"} == {"good", "crack"}
    assert "counted once" in caplog.text and "again.png" in caplog.text
    (cat / "test" / "good" / "again.png").unlink()
    (cat / "test" / "good" / "both.png").symlink_to(tmp_path / "c.png")  # normal and anomalous
    with pytest.raises(DatasetLayoutError, match=r"both an anomalous test image and a normal"):
        load_mvtec(tmp_path, "cat")


# Folder defect groups are one per anomalous folder.
def _images(folder, n=2, seed=0):
    for i in range(n):
        write_image(folder / f"{folder.parent.name}_{i}.png", rgb_image(16, seed + i))
    return folder


def test_folder_defect_groups_are_one_per_anomalous_folder(tmp_path):
    from anomaly_inspect.data.folder import load_folders

    train = _images(tmp_path / "train" / "ok")
    normal = _images(tmp_path / "test" / "ok", seed=5)
    a, b = _images(tmp_path / "a" / "bad", seed=10), _images(tmp_path / "b" / "bad", seed=20)
    hole = _images(tmp_path / "c" / "hole", seed=30)
    d = load_folders(train, normal, [a, b, hole])
    assert d.groups == ["a/bad", "b/bad", "good", "hole"]  # clashing names get their parent
    assert {(s.path.parent, s.group) for s in d.test if s.label} == {
        (a, "a/bad"), (b, "b/bad"), (hole, "hole")}
    deep = [_images(tmp_path / p / "x" / "bad", seed=40 + 3 * i) for i, p in enumerate("pq")]
    assert load_folders(train, normal, deep).groups == ["good", "p/x/bad", "q/x/bad"]
    # an anomalous folder called good is never the normal images' group
    named_good = _images(tmp_path / "fold" / "good", seed=50)
    d = load_folders(train, normal, [named_good])
    assert sorted({(s.group, s.label) for s in d.test}) == [("fold/good", 1), ("good", 0)]
