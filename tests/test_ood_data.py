"""ISIC / MVTec OOD adapters, synthetic artefacts and the feature cache (generated data)."""

from __future__ import annotations

import csv
import hashlib
import logging
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from anomaly_inspect.config import ConfigError
from anomaly_inspect.data.artefacts import (
    ColourRule,
    SyntheticSpec,
    draw_artefact,
    draw_chart,
    draw_ink,
    make_synthetic_set,
)
from anomaly_inspect.data.image_io import ImageReadError
from anomaly_inspect.data.isic import (
    isic_archive_benchmark,
    isic_index_benchmark,
    read_id_list,
)
from anomaly_inspect.data.layout import DatasetLayoutError
from anomaly_inspect.data.mvtec_ood import mvtec_heldout_benchmark, read_colour_manifest
from anomaly_inspect.features.cache import FeatureCache, file_list_hash
from anomaly_inspect.features.runtime import CalibrationError
from ood_helpers import heldout_config as _heldout

HEADER = ["image_id", "split", "path", "melanoma_isic2017", "bissoto_label", "artefacts_annotated",
          "dark_corner", "hair", "gel_border", "gel_bubble", "ruler", "ink", "patches"]


def _img(path: Path, colour=(170, 120, 90), size=64) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((size, size, 3), colour, np.uint8)
    cv2.imwrite(str(path), img)
    return path


def _isic_root(tmp_path: Path) -> Path:
    root = tmp_path / "isic"
    rows = []
    def add(iid, split, mel, ann, ruler=0, ink=0, patches=0):
        _img(root / "imgs" / f"{iid}.png")
        rows.append([iid, split, f"imgs/{iid}.png", "" if mel is None else mel, "", ann,
                     0, 0, 0, 0, ruler, ink, patches])
    add("ID1", "train", 0, 1); add("ID2", "train", 1, 1); add("ID3", "train", 0, 1)  # noqa: E702
    add("RUL", "train", 0, 1, ruler=1)           # ruler -> neither ID nor OOD
    add("UNA", "train", 0, 0)                     # not annotated -> excluded
    add("T1", "val", 0, 1); add("T2", "test", None, 1)  # noqa: E702  (test labels may be missing)
    add("INKR", "test", None, 1, ink=1); add("INKP", "train", 0, 1, ink=1)  # noqa: E702
    add("INKN", "val", 0, 1, ink=1)              # ink not visible -> only in ink_all
    add("BOTH", "train", 0, 1, ink=1, patches=1)  # chart + ink -> charts only
    add("CHY", "val", 0, 1, patches=1); add("CHB", "test", None, 1, patches=1)  # noqa: E702
    add("CHM", "train", 0, 1, patches=1)          # mixed colours -> only charts_all
    with (root / "index.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        w.writerows(rows)
    (root / "labels").mkdir()
    colours = [("INKR", "red", "none"), ("INKP", "purple", "none"), ("INKN", "none", "none"),
               ("BOTH", "purple", "blue"), ("CHY", "none", "yellow+orange"), ("CHB", "none", "blue"),
               ("CHM", "none", "orange+green")]
    with (root / "labels" / "artefact_colours.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_id", "ink", "patches", "ink_colour", "chart_colour", "confidence"])
        w.writerows([(i, 1, 0, a, b, "high") for i, a, b in colours])
    return root


def test_isic_index_splits_on_generated_manifest(tmp_path):
    d = isic_index_benchmark(_isic_root(tmp_path))
    names = lambda s: sorted(x.path.stem for x in s)  # noqa: E731
    assert names(d.id_train) == ["ID1", "ID2", "ID3"]
    assert d.id_train_labels.tolist() == [0, 1, 0]
    assert names(d.id_test) == ["T1", "T2"]
    assert names(d.ood["ink_all"]) == ["INKN", "INKP", "INKR"]
    assert names(d.ood["ink_similar"]) == ["INKR"]
    assert names(d.ood["ink_dissimilar"]) == ["INKP"]
    assert names(d.ood["charts_all"]) == ["BOTH", "CHB", "CHM", "CHY"]
    assert names(d.ood["charts_similar"]) == ["CHY"]
    assert names(d.ood["charts_dissimilar"]) == ["BOTH", "CHB"]


def test_isic_index_errors_name_the_file(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    (root / "index.csv").write_text("image_id,split\nA,train\n")
    with pytest.raises(DatasetLayoutError, match=r"index\.csv: missing columns"):
        isic_index_benchmark(root)
    with pytest.raises(FileNotFoundError, match="index.csv"):
        isic_index_benchmark(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown ISIC OOD splits"):
        isic_index_benchmark(_isic_root(tmp_path), splits=["ink_pink"])


def test_isic_archive_layout(tmp_path):
    images = tmp_path / "archive"
    ids = [f"ISIC_{i:07d}" for i in range(10)]
    for i in ids:
        _img(images / f"{i}.jpg")
    (tmp_path / "meta.csv").write_text("isic_id,benign_malignant\n" + "".join(
        f"{i},{'malignant' if n % 2 else 'benign'}\n" for n, i in enumerate(ids)))
    (tmp_path / "id.txt").write_text("# ID images\n" + "\n".join(ids[:8]) + "\n")
    (tmp_path / "red.txt").write_text(f"{ids[8]}.jpg\n{ids[9]}\n")
    d = isic_archive_benchmark(images, tmp_path / "meta.csv", tmp_path / "id.txt",
                               {"ink_red": tmp_path / "red.txt"}, folds=4, fold=0)
    assert len(d.id_train) == 6 and len(d.id_test) == 2
    assert sorted(d.id_train_labels.tolist()) == [0, 0, 0, 1, 1, 1]
    assert [s.path.stem for s in d.ood["ink_red"]] == ids[8:]
    assert read_id_list(tmp_path / "red.txt") == ids[8:]
    (tmp_path / "twice.txt").write_text("\n".join(ids[:8] + ids[:2]) + "\n")
    with pytest.raises(DatasetLayoutError, match=r"twice.txt: 2 id\(s\) listed twice"):
        read_id_list(tmp_path / "twice.txt")
    (tmp_path / "shared.txt").write_text(f"{ids[0]}\n{ids[9]}\n")
    with pytest.raises(DatasetLayoutError, match=r"ISIC_0000000.jpg: both in ID (train|test) and in OOD"):
        isic_archive_benchmark(images, tmp_path / "meta.csv", tmp_path / "id.txt",
                               {"x": tmp_path / "shared.txt"}, folds=4)
    (tmp_path / "gone.txt").write_text("ISIC_9999999\n")
    with pytest.raises(DatasetLayoutError, match="ISIC_9999999"):
        isic_archive_benchmark(images, tmp_path / "meta.csv", tmp_path / "id.txt",
                               {"x": tmp_path / "gone.txt"}, folds=4)


def test_colour_rule_by_hand():
    rule = ColourRule((176, 116, 77), 115.0)
    assert rule.distance((176, 116, 77)) == 0.0
    assert rule.distance((176 + 3, 116 + 4, 77)) == pytest.approx(5.0)
    assert rule.is_similar((200, 60, 50))       # red: (24, 56, 27) -> 66.6
    assert not rule.is_similar((20, 20, 20))    # black: about 190


@pytest.mark.parametrize("kind", ["ink", "chart"])
@pytest.mark.parametrize("group", ["similar", "dissimilar"])
def test_synthetic_artefacts_follow_the_rule(kind, group):
    rng = np.random.default_rng(0)
    base = np.full((128, 128, 3), (176, 116, 77), np.uint8)
    rule = ColourRule()
    for _ in range(5):
        out, name, mean, tries = draw_artefact(base, SyntheticSpec(kind, group, rule), rng)
        changed = np.abs(out.astype(int) - base).sum(axis=2) > 10
        assert 10 < changed.sum() < 0.3 * changed.size  # a visible but partial artefact
        assert rule.is_similar(mean) == (group == "similar") and tries >= 1


def test_draw_functions_return_masks_where_colour_changed():
    base = np.full((96, 96, 3), 200, np.uint8)
    rng = np.random.default_rng(1)
    out, mask = draw_ink(base, (20, 20, 20), rng)
    assert mask.any() and out[mask].mean() < 120 and out[~mask].mean() > 150
    out, mask = draw_chart(base, (0, 0, 255), rng)
    assert mask.any() and out[mask][:, 2].mean() > out[mask][:, 0].mean() + 100


def test_make_synthetic_set_is_deterministic_and_recorded(tmp_path):
    src = [_img(tmp_path / "src" / f"{i}.png", size=96) for i in range(3)]
    spec = SyntheticSpec("chart", "dissimilar", seed=5)
    recs = make_synthetic_set(src, spec, tmp_path / "a")
    again = make_synthetic_set(src, spec, tmp_path / "b")
    assert [r.colour for r in recs] == [r.colour for r in again]
    for r, q in zip(recs, again, strict=True):
        assert (cv2.imread(r.path) == cv2.imread(q.path)).all()
        assert not r.rule_similar and r.distance >= 115
    rows = list(csv.DictReader((tmp_path / "a" / "manifest.csv").open()))
    assert len(rows) == 3 and {"colour", "distance", "rule_similar"} <= set(rows[0])


def test_mvtec_heldout_and_colour_manifest(tmp_path):
    cat = tmp_path / "mv" / "pill"
    for i in range(10):
        _img(cat / "train" / "good" / f"{i:03d}.png")
    for g, n in (("good", 5), ("crack", 5), ("scratch", 5), ("color", 4)):
        for i in range(n):
            _img(cat / "test" / g / f"{i:03d}.png")
    man = tmp_path / "m.csv"
    man.write_text("category,relpath,colour\npill,test/color/000.png,red\npill,test/color/002.png,red\n"
                   "pill,test/color/001.png,yellow\nother,test/color/003.png,red\n")
    assert read_colour_manifest(man, "pill") == {"red": ["test/color/000.png", "test/color/002.png"],
                                                 "yellow": ["test/color/001.png"]}
    d = mvtec_heldout_benchmark(tmp_path / "mv", "pill", ["good", "crack", "scratch"],
                                {"red": ["colour:red"], "all": ["color"]}, man, folds=5)
    assert len(d.id_train) + len(d.id_test) == 25 and len(d.id_test) == 5
    assert set(d.id_train_labels.tolist()) == {0, 1, 2}
    assert len(d.ood["red"]) == 2 and len(d.ood["all"]) == 4
    with pytest.raises(DatasetLayoutError, match="colour 'blue'"):
        mvtec_heldout_benchmark(tmp_path / "mv", "pill", ["good"], {"b": ["colour:blue"]}, man)
    with pytest.raises(DatasetLayoutError, match="missing folder"):
        mvtec_heldout_benchmark(tmp_path / "mv", "pill", ["good", "bent"], {}, None)
    # an ID group listed as OOD too: the same images would be ID and OOD
    with pytest.raises(DatasetLayoutError, match=r"crack/00\d.png: both in ID (train|test) and in "
                                                 r"OOD split 'c'; ID and OOD images must be distinct"):
        mvtec_heldout_benchmark(tmp_path / "mv", "pill", ["good", "crack"], {"c": ["crack"]}, None)
    # OOD splits may share images (a colour group inside all colour defects)
    d = mvtec_heldout_benchmark(tmp_path / "mv", "pill", ["good"], {"red": ["colour:red"],
                                                                    "all": ["color"]}, man)
    assert len(d.ood["red"]) == 2 and len(d.ood["all"]) == 4


def test_feature_cache_roundtrip_and_key_changes(tmp_path):
    files = [_img(tmp_path / f"{i}.png") for i in range(2)]
    bb = SimpleNamespace(name="m", weight_source=SimpleNamespace(checksum="abc"), layers=(1, 2))
    cache = FeatureCache(tmp_path / "c")
    desc = cache.describe(bb, 256, None, files, {"kind": "pooled"})
    assert cache.load(desc) is None
    cache.save(desc, {"pooled": np.arange(6.0).reshape(2, 3)})
    np.testing.assert_array_equal(cache.load(desc)["pooled"], np.arange(6.0).reshape(2, 3))
    bb2 = SimpleNamespace(name="m", weight_source=SimpleNamespace(checksum="other"), layers=(1, 2))
    assert cache.load(cache.describe(bb2, 256, None, files, {"kind": "pooled"})) is None
    assert cache.load(cache.describe(bb, 224, None, files, {"kind": "pooled"})) is None
    # int8 / bf16 features are not f32's; f32 keeps the key it always had, on any runtime
    for precision, hit in (("f32", True), ("int8", False), ("bf16", False)):
        other = SimpleNamespace(**vars(bb), precision=precision, calibration_digest="d1")
        assert (cache.load(cache.describe(other, 256, None, files, {"kind": "pooled"})) is not None) == hit
    # int8: the images its graph is calibrated on are part of the key; uncalibrated is refused
    int8 = SimpleNamespace(**vars(bb), precision="int8", calibration_digest="d1")
    cache.save(cache.describe(int8, 256, None, files, {}), {"pooled": np.zeros(2)})
    assert cache.load(cache.describe(int8, 256, None, files, {})) is not None
    int8.calibration_digest = "d2"
    assert cache.load(cache.describe(int8, 256, None, files, {})) is None
    int8.calibration_digest = None
    with pytest.raises(CalibrationError, match="precision int8: m is not calibrated"):
        cache.describe(int8, 256, None, files, {})
    h = file_list_hash(files)
    # the hash of path, size and mtime, as it always was (f32 caches keep their keys)
    st = [Path(f).stat() for f in files]
    assert h == hashlib.sha256("".join(f"{Path(f).resolve()}\0{s.st_size}\0{s.st_mtime_ns}\n"
                                       for f, s in zip(files, st, strict=True)).encode()).hexdigest()
    _img(files[0], colour=(0, 0, 0), size=70)  # rewritten file -> new hash
    assert file_list_hash(files) != h
    with pytest.raises(ImageReadError, match="missing.png: No such file or directory"):
        file_list_hash([tmp_path / "missing.png"])


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_a_damaged_feature_cache_entry_is_recomputed_with_a_warning(tmp_path, damage, caplog):
    bb = SimpleNamespace(name="m", weight_source=SimpleNamespace(checksum="abc"), layers=(1, 2))
    files = [_img(tmp_path / "0.png")]
    cache = FeatureCache(tmp_path / "c")
    desc = cache.describe(bb, 256, None, files)
    path = cache.save(desc, {"pooled": np.arange(1000.0)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")
    with caplog.at_level(logging.WARNING):
        assert cache.load(desc) is None
    assert f"{path}: unreadable cache entry (" in caplog.text and "recomputing" in caplog.text
    assert ("BadZipFile" if damage == "truncated" else "EOFError") in caplog.text
    cache.save(desc, {"pooled": np.arange(3.0)})  # recomputed: written again over it
    np.testing.assert_array_equal(cache.load(desc)["pooled"], np.arange(3.0))


def test_repo_pill_manifest_on_generated_layout(tmp_path):
    """The shipped pill colour lists (paper's indices) resolve on an MVTec-layout pill folder."""
    cat = tmp_path / "mv" / "pill"
    for i in range(5):
        _img(cat / "train" / "good" / f"{i:03d}.png", size=32)
    for g, n in (("good", 5), ("crack", 5), ("color", 25)):
        for i in range(n):
            _img(cat / "test" / g / f"{i:03d}.png", size=32)
    manifest = Path(__file__).resolve().parents[1] / "datasets" / "mvtec_pill_ood.csv"
    d = mvtec_heldout_benchmark(tmp_path / "mv", "pill", ["good", "crack"],
                                {"red": ["colour:red"], "yellow": ["colour:yellow"]}, manifest)
    assert len(d.ood["red"]) == 12 and len(d.ood["yellow"]) == 6
    assert {s.path.name for s in d.ood["yellow"]} == {"001.png", "002.png", "003.png", "004.png",
                                                       "022.png", "023.png"}


def _edit_index(root: Path, edit) -> None:
    """Rewrite ``root/index.csv`` with ``edit(rows)`` applied (rows as dicts, in file order)."""
    with (root / "index.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    edit(rows)
    with (root / "index.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=HEADER)
        w.writeheader()
        w.writerows(rows)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda rows: rows[0].update(split="Train"), r"line 2: split must be one of train, val, test, got 'Train'"),
    (lambda rows: rows[5].update(split=""), r"line 7: split must be one of train, val, test, got ''"),
    (lambda rows: rows[1].update(artefacts_annotated=""), r"line 3: artefacts_annotated is blank"),
    (lambda rows: rows[1].update(artefacts_annotated="yes"), r"line 3: artefacts_annotated must be 0 or 1, got 'yes'"),
    (lambda rows: rows[2].update(ink=""), r"line 4: annotated row with blank ink"),
    (lambda rows: rows[2].update(ruler="", patches=""), r"line 4: annotated row with blank ruler, patches"),
    (lambda rows: rows[2].update(ink="2"), r"line 4: ink must be 0 or 1, got '2'"),
    (lambda rows: rows.append(dict(rows[0])), r"line 16: image_id ID1 is listed again \(first on line 2\)"),
])
def test_isic_index_refuses_rows_it_would_misfile_naming_the_line(tmp_path, edit, message):
    root = _isic_root(tmp_path)
    _edit_index(root, edit)
    with pytest.raises(DatasetLayoutError, match=rf"isic/index\.csv, {message}"):
        isic_index_benchmark(root, splits=["ink_all"])


def test_isic_index_reads_flags_written_as_floats_and_blanks_on_unannotated_rows(tmp_path):
    root = _isic_root(tmp_path)

    def edit(rows):
        rows[1].update(artefacts_annotated="1.0", ink="0.0", patches="0.0", ruler="0.0")  # ID2
        rows[4].update(ink="", patches="", ruler="")  # UNA: not annotated, flags may be blank

    _edit_index(root, edit)
    d = isic_index_benchmark(root)
    assert sorted(x.path.stem for x in d.id_train) == ["ID1", "ID2", "ID3"]
    assert d.id_train_labels.tolist() == [0, 1, 0]


def _edit_colours(root: Path, edit) -> Path:
    path = root / "labels" / "artefact_colours.csv"
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    fields = list(rows[0])
    edit(rows)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.mark.parametrize(("edit", "message"), [
    (lambda rows: rows.pop(1), r"artefact_colours\.csv: no row for 1 ink / chart image\(s\) of "
                               r".*index\.csv \(first: INKP, line 10\)"),
    (lambda rows: rows[1].update(ink_colour="purpel"),
     r"artefact_colours\.csv, line 3: ink_colour 'purpel' is not 'none' or colours joined with '\+' "
     r"from black, blue, brown, green, other, purple, red"),
    (lambda rows: rows[4].update(chart_colour="orange+"), r"artefact_colours\.csv, line 6: chart_colour 'orange\+'"),
    (lambda rows: rows[0].update(ink_colour=""), r"artefact_colours\.csv, line 2: ink_colour ''"),
    (lambda rows: rows[0].update(ink_colour="none+red"), r"artefact_colours\.csv, line 2: ink_colour 'none\+red'"),
    (lambda rows: rows.append(dict(rows[0])), r"artefact_colours\.csv, line 9: image_id INKR is listed twice"),
])
def test_artefact_colours_problems_are_errors_not_silently_left_out(tmp_path, edit, message):
    root = _isic_root(tmp_path)
    _edit_colours(root, edit)
    with pytest.raises(DatasetLayoutError, match=message):
        isic_index_benchmark(root)
    assert len(isic_index_benchmark(root, splits=["ink_all", "charts_all"]).ood["ink_all"]) == 3  # not read


def test_artefact_colours_other_and_none_leave_an_image_out_of_both_groups(tmp_path):
    root = _isic_root(tmp_path)
    _edit_colours(root, lambda rows: rows[1].update(ink_colour="other"))  # INKP
    d = isic_index_benchmark(root)
    assert d.ood["ink_dissimilar"] == [] and [s.path.stem for s in d.ood["ink_similar"]] == ["INKR"]
    _edit_colours(root, lambda rows: rows[1].update(ink_colour="Purple"))  # case is not a typo
    assert [s.path.stem for s in isic_index_benchmark(root).ood["ink_dissimilar"]] == ["INKP"]


def test_archive_labels_map_known_values_and_refuse_the_rest_naming_the_line(tmp_path):
    from anomaly_inspect.data.isic import read_archive_labels

    meta = tmp_path / "meta.csv"
    meta.write_text("isic_id,benign_malignant,diagnosis\n"
                    "ISIC_1,malignant,melanoma\n"
                    "ISIC_2,indeterminate/malignant,\n"
                    "ISIC_3,indeterminate/benign,\n"
                    "ISIC_4,,Melanoma\n"
                    "ISIC_5,,nevus\n"
                    "ISIC_6,Benign,\n")
    assert read_archive_labels(meta) == {"ISIC_1": 1, "ISIC_2": 1, "ISIC_3": 0, "ISIC_4": 1,
                                         "ISIC_5": 0, "ISIC_6": 0}
    for row, message in (("ISIC_7,,", r"line 8: ISIC_7 has no label \(benign_malignant and diagnosis blank\)"),
                         ("ISIC_7,indeterminate,", r"line 8: ISIC_7: 'indeterminate' is not one of benign, "
                                                   r"malignant, .*plain 'indeterminate' has no benign / "
                                                   r"malignant leaning"),
                         ("ISIC_7,malignent,", r"line 8: ISIC_7: 'malignent' is not one of"),
                         ("ISIC_7,,actinic keratosis", r"line 8: ISIC_7: 'actinic keratosis' is not a known "
                                                       r"benign or malignant diagnosis"),
                         ("ISIC_1,benign,", r"line 8: ISIC_1 is listed twice")):
        (tmp_path / "bad.csv").write_text(meta.read_text() + row + "\n")
        with pytest.raises(DatasetLayoutError, match=rf"bad\.csv, {message}"):
            read_archive_labels(tmp_path / "bad.csv")
        # only the rows asked for need a label
        assert read_archive_labels(tmp_path / "bad.csv", ["ISIC_2", "ISIC_5"]) == {"ISIC_2": 1, "ISIC_5": 0}
    (tmp_path / "one.csv").write_text("isic_id,benign_malignant\nISIC_1,malignant\nISIC_2,\n")
    with pytest.raises(DatasetLayoutError, match=r"one\.csv, line 3: ISIC_2 has no label \(benign_malignant blank\)"):
        read_archive_labels(tmp_path / "one.csv")
    (tmp_path / "none.csv").write_text("isic_id,label\nISIC_1,malignant\n")
    with pytest.raises(DatasetLayoutError, match=r"none\.csv: needs a 'benign_malignant' or 'diagnosis' column"):
        read_archive_labels(tmp_path / "none.csv")


def test_make_synthetic_set_reuses_its_manifest_only_for_the_same_sources_and_settings(tmp_path, monkeypatch):
    from anomaly_inspect.data import artefacts

    src = [_img(tmp_path / "src" / f"{i}.png", colour=(170, 120 + 10 * i, 90), size=96) for i in range(6)]
    out = tmp_path / "set"
    spec = SyntheticSpec("ink", "dissimilar", ColourRule(threshold=115.0), seed=0)
    first = make_synthetic_set(src[:3], spec, out)
    drawn = []
    real = artefacts.draw_artefact
    monkeypatch.setattr(artefacts, "draw_artefact", lambda *a: drawn.append(1) or real(*a))
    assert make_synthetic_set(src[:3], spec, out) == first and drawn == []  # nothing changed: reused
    changes = [(src[3:], spec),                                                   # other sources
               (src[:3], SyntheticSpec("ink", "dissimilar", ColourRule(threshold=115.0), seed=7)),
               (src[:3], SyntheticSpec("ink", "dissimilar", ColourRule(threshold=105.0), seed=7)),
               (src[:3], SyntheticSpec("chart", "similar", ColourRule(threshold=105.0), seed=7))]
    for sources, changed in changes:
        drawn.clear()
        recs = make_synthetic_set(sources, changed, out)
        assert len(drawn) == 3  # drawn again
        assert [r.source for r in recs] == [str(s) for s in sources]
        assert {(r.kind, r.group, r.seed, r.threshold) for r in recs} == {
            (changed.kind, changed.group, changed.seed, changed.rule.threshold)}
        assert recs == artefacts.read_synthetic_manifest(out / "manifest.csv")
    # a manifest of the older format (no seed / rule columns) is drawn again once
    rows = list(csv.DictReader((out / "manifest.csv").open()))
    keep = ["source", "path", "kind", "group", "colour", "mean_r", "mean_g", "mean_b", "distance",
            "rule_similar", "tries"]
    with (out / "manifest.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keep, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    drawn.clear()
    make_synthetic_set(src[:3], changes[-1][1], out)
    make_synthetic_set(src[:3], changes[-1][1], out)
    assert len(drawn) == 3


def test_make_synthetic_set_is_built_aside_and_never_rewrites_a_listed_image(tmp_path, monkeypatch):
    """The set is drawn in a temporary folder renamed into place once its manifest is written:
    a drawing that fails half-way leaves nothing a later run trusts, one a killed run left is
    removed by the next drawing, and a run that finishes second keeps the first run's set
    (images another run's manifest lists are never rewritten)."""
    import os
    import time

    from anomaly_inspect.data import artefacts
    from anomaly_inspect.files import STALE_AFTER_S

    src = [_img(tmp_path / "src" / f"{i}.png", colour=(170, 120 + 10 * i, 90), size=96) for i in range(3)]
    spec = SyntheticSpec("ink", "similar", seed=3)
    out = tmp_path / "cache" / "set"
    real = artefacts.draw_artefact
    written = []
    real_write = artefacts.cv2.imwrite
    monkeypatch.setattr(artefacts.cv2, "imwrite", lambda p, img: written.append(p) or real_write(p, img))

    calls = []

    def fail_second(image, spec, rng):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("stopped half-way")
        return real(image, spec, rng)

    monkeypatch.setattr(artefacts, "draw_artefact", fail_second)
    with pytest.raises(RuntimeError, match="stopped half-way"):
        make_synthetic_set(src, spec, out)
    assert len(written) == 1 and not written[0].startswith(str(out) + os.sep)  # drawn aside
    assert sorted(os.listdir(out.parent)) == []  # nothing left: neither the set nor its folder

    killed = out.parent / ".set.4242.0badcafe.tmp"  # a run killed mid-write (its lock gone)
    killed.mkdir()
    (killed / "0_ink_similar.png").write_bytes(b"\x89PNG\r\n")
    old = time.time() - STALE_AFTER_S - 5
    os.utime(killed, (old, old))

    def files():
        return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.iterdir()}

    first = {}

    calls.clear()

    def other_run_first(image, spec_, rng):
        calls.append(1)
        if len(calls) == len(src):  # another run finishes the same set before this one
            monkeypatch.setattr(artefacts, "draw_artefact", real)
            make_synthetic_set(src, spec, out)
            first.update(files())
        return real(image, spec_, rng)

    monkeypatch.setattr(artefacts, "draw_artefact", other_run_first)
    recs = make_synthetic_set(src, spec, out)
    assert files() == first  # the first run's set, untouched
    assert sorted(os.listdir(out.parent)) == ["set"]  # the killed run's folder and this copy gone
    assert sorted(first) == sorted([*(f"{i}_ink_similar.png" for i in range(3)), "manifest.csv"])
    assert [r.path for r in recs] == [str(out / f"{i}_ink_similar.png") for i in range(3)]
    assert all(cv2.imread(r.path) is not None for r in recs)
    assert recs == artefacts.read_synthetic_manifest(out / "manifest.csv")
    # reused as it is (nothing rewritten)
    monkeypatch.setattr(artefacts, "draw_artefact", lambda *a: pytest.fail("drawn again"))
    assert make_synthetic_set(src, spec, out) == recs
    assert files() == first


def test_make_synthetic_set_refuses_sources_that_share_a_file_stem(tmp_path):
    """Outputs are named by source stem: a/001.png and b/001.png would overwrite each other."""
    src = [_img(tmp_path / "a" / "001.png", size=64), _img(tmp_path / "b" / "001.png", size=64),
           _img(tmp_path / "b" / "002.png", size=64)]
    with pytest.raises(ValueError, match=r"share one with another: .*b/001\.png and .*a/001\.png"):
        make_synthetic_set(src, SyntheticSpec("chart", "dissimilar"), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert len(make_synthetic_set(src[1:], SyntheticSpec("chart", "dissimilar"), tmp_path / "out")) == 2


@pytest.mark.parametrize("damage", [
    lambda m: m.write_bytes(b"\xff\xfe\x00 not text \x81\x82"),       # not UTF-8
    lambda m: m.write_text("source,path\n" + "x" * 200_000),           # csv.Error: field too long
    lambda m: (m.unlink(), m.mkdir()),                                  # not a file
])
def test_a_damaged_synthetic_manifest_is_drawn_again(tmp_path, damage):
    from anomaly_inspect.data import artefacts

    src = [_img(tmp_path / "src" / f"{i}.png", size=64) for i in range(2)]
    spec = SyntheticSpec("chart", "dissimilar")
    first = make_synthetic_set(src, spec, tmp_path / "set")
    manifest = tmp_path / "set" / "manifest.csv"
    damage(manifest)
    assert artefacts.read_synthetic_manifest(manifest) is None
    assert make_synthetic_set(src, spec, tmp_path / "set") == first


def test_make_synthetic_set_refuses_no_sources(tmp_path):
    with pytest.raises(ValueError, match=r"out: no source images to draw synthetic similar ink"):
        make_synthetic_set([], SyntheticSpec("ink", "similar"), tmp_path / "out")


def test_object_mean_colour_reads_images_as_read_image_does(tmp_path):
    """A 16-bit image gives the object colour its 8-bit copy gives (PIL's convert('RGB')
    clipped 16-bit grey to white)."""
    from anomaly_inspect.data.mvtec_ood import object_mean_colour
    from layout_writer import write_image

    grey = np.full((48, 64), 20, np.uint8)
    grey[12:36, 16:40] = 200
    eight = write_image(tmp_path / "g8.png", grey)
    sixteen = write_image(tmp_path / "g16.png", grey.astype(np.uint16) * 257)
    np.testing.assert_allclose(object_mean_colour([eight]), [200, 200, 200])
    np.testing.assert_allclose(object_mean_colour([sixteen]), [200, 200, 200])


def test_an_image_two_entries_of_one_ood_split_bring_in_counts_once(tmp_path, caplog):
    """A colour: entry and the defect folder its images are in (or a folder listed twice) brought
    the same images into the split twice: 6 images counted where 4 exist, each scored twice."""
    cat = tmp_path / "mv" / "pill"
    for i in range(4):
        _img(cat / "train" / "good" / f"{i:03d}.png")
    for g, n in (("good", 2), ("scratch", 3), ("color", 4)):
        for i in range(n):
            _img(cat / "test" / g / f"{i:03d}.png")
    man = tmp_path / "m.csv"
    man.write_text("category,relpath,colour\npill,test/color/000.png,red\npill,test/color/002.png,red\n")
    with caplog.at_level(logging.WARNING, logger="anomaly_inspect.data.mvtec_ood"):
        d = mvtec_heldout_benchmark(tmp_path / "mv", "pill", ["good"],
                                    {"c": ["colour:red", "color"], "s": ["scratch", "scratch"],
                                     "red": ["colour:red"]}, man, folds=2)
    assert [p.path.name for p in d.ood["c"]] == ["000.png", "002.png", "001.png", "003.png"]
    assert len(d.ood["s"]) == 3 and len(d.ood["red"]) == 2  # other splits may share images
    assert [r.getMessage() for r in caplog.records if r.name.endswith("mvtec_ood")] == [
        "OOD split 'c': 2 image(s) brought in by more than one of ['colour:red', 'color'] are counted once",
        "OOD split 's': 3 image(s) brought in by more than one of ['scratch', 'scratch'] are counted once"]


def test_an_image_twice_in_one_ood_split_is_refused(tmp_path):
    from anomaly_inspect.data.isic import OODData
    from anomaly_inspect.data.samples import Sample

    a, b, c = (_img(tmp_path / f"{n}.png") for n in "abc")
    with pytest.raises(DatasetLayoutError, match=r"c\.png: twice in OOD split 'o'; each image must "
                                                 r"count once"):
        OODData("x", [Sample(a)], np.zeros(1, np.int64), [Sample(b)],
                {"o": [Sample(c), Sample(tmp_path / "." / "c.png")]})
    OODData("x", [Sample(a)], np.zeros(1, np.int64), [Sample(b)], {"o": [Sample(c)], "p": [Sample(c)]})


# BOM / Latin-1 CSVs and blank index paths are named with their file; repeated id_groups and a
# missing MVTec category folder are named as such.
# --- BOM-prefixed and non-UTF-8 CSVs ----------------------------------------------------
def _with_bom(path) -> None:
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())


def _latin1(path) -> None:
    """A Latin-1 'é' in the last line (e.g. a comment or a free-text column)."""
    path.write_bytes(path.read_bytes().rstrip(b"\n") + b"\xe9\n")


def test_bom_prefixed_csvs_are_read_and_latin1_ones_are_named(tmp_path):
    from anomaly_inspect.data.isic import isic_index_benchmark, read_artefact_colours
    from anomaly_inspect.data.layout import DatasetLayoutError
    from test_ood_data import _isic_root

    root = _isic_root(tmp_path)
    plain = isic_index_benchmark(root)
    _with_bom(root / "index.csv")  # Excel's "CSV UTF-8"
    _with_bom(root / "labels" / "artefact_colours.csv")
    bom = isic_index_benchmark(root)
    assert [s.path for s in bom.id_train] == [s.path for s in plain.id_train]
    assert {k: [s.path for s in v] for k, v in bom.ood.items()} == \
        {k: [s.path for s in v] for k, v in plain.ood.items()}
    for name in ("index.csv", "labels/artefact_colours.csv"):
        _latin1(root / name)
        with pytest.raises(DatasetLayoutError, match=rf"{root / name}: not UTF-8 text"):
            (read_artefact_colours(root / name) if "labels" in name else isic_index_benchmark(root))
        (root / name).write_bytes((root / name).read_bytes()[:-2] + b"\n")


def test_bom_prefixed_id_lists_and_colour_manifests(tmp_path):
    from anomaly_inspect.data.isic import read_id_list
    from anomaly_inspect.data.layout import DatasetLayoutError
    from anomaly_inspect.data.mvtec_ood import read_colour_manifest

    ids = tmp_path / "ids.txt"
    ids.write_text("ISIC_0000001\nISIC_0000002\n")
    _with_bom(ids)
    assert read_id_list(ids) == ["ISIC_0000001", "ISIC_0000002"]
    _latin1(ids)
    with pytest.raises(DatasetLayoutError, match=rf"{ids}: not UTF-8 text"):
        read_id_list(ids)
    manifest = tmp_path / "m.csv"
    manifest.write_text("category,relpath,colour\npill,test/color/000.png,red\n")
    _with_bom(manifest)
    assert read_colour_manifest(manifest, "pill") == {"red": ["test/color/000.png"]}
    _latin1(manifest)
    with pytest.raises(DatasetLayoutError, match=rf"{manifest}: not UTF-8 text"):
        read_colour_manifest(manifest, "pill")


# --- a blank or missing image path in index.csv -----------------------------------------
@pytest.mark.parametrize("path, message", [
    ("", r"line 3: path is blank"),
    ("  ", r"line 3: path is blank"),
    ("imgs/gone.png", r"line 3: path imgs/gone\.png: no such file \(.*imgs/gone\.png\)"),
])
def test_index_paths_are_checked_when_the_index_is_read(tmp_path, path, message):
    from anomaly_inspect.data.isic import read_isic_index
    from anomaly_inspect.data.layout import DatasetLayoutError
    from test_ood_data import _edit_index, _isic_root

    root = _isic_root(tmp_path)
    _edit_index(root, lambda rows: rows[1].update(path=path))
    with pytest.raises(DatasetLayoutError, match=rf"isic/index\.csv, {message}"):
        read_isic_index(root)


# --- a repeated id group ----------------------------------------------------------------
def test_a_repeated_id_group_is_refused_as_such(ood_tiny, tmp_path):
    from anomaly_inspect.data.mvtec_ood import mvtec_heldout_benchmark

    with pytest.raises(ConfigError, match=r"c\.yaml: data: id_groups: \['scratch'\] listed more than "
                                          r"once; list each group once"):
        _heldout(ood_tiny, tmp_path, ["nan"], id_groups=["good", "scratch", "scratch"],
                 ood_groups={"defects": ["stain"]})
    with pytest.raises(ValueError, match=r"id_groups: \['scratch'\] listed more than once"):
        mvtec_heldout_benchmark(ood_tiny, "tiny", ["good", "scratch", "scratch"], {"defects": ["stain"]}, folds=2)


def test_a_missing_mvtec_category_folder_is_named_as_missing(tmp_path):
    from anomaly_inspect.data.mvtec_ood import mvtec_heldout_benchmark

    with pytest.raises(FileNotFoundError, match=r"bottle: category folder not found"):
        mvtec_heldout_benchmark(tmp_path, "bottle", [], {"x": ["broken_large"]})
    (tmp_path / "bottle").mkdir()
    with pytest.raises(FileNotFoundError, match="no test/ folder"):
        mvtec_heldout_benchmark(tmp_path, "bottle", [], {"x": ["broken_large"]})
