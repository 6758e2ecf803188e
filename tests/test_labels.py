"""Labels: CSVs a spreadsheet writes (another encoding is named, contradictions refused) and
screen's MVTec labels, which are the adapter's."""

import pytest

from anomaly_inspect.data.layout import DatasetLayoutError, list_images
from anomaly_inspect.data.mvtec import load_mvtec
from anomaly_inspect.screening.labels import load_labels_csv, mvtec_label, resolve_labels
from layout_writer import rgb_image, write_image, write_mask, write_mvtec


def test_a_labels_csv_in_another_encoding_is_named(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_bytes("path,label\nteil_ä.png,1\n".encode("utf-16"))
    with pytest.raises(ValueError, match=r"labels\.csv: labels CSV is not UTF-8 text .*CSV UTF-8"):
        load_labels_csv(csv)


def test_one_image_labelled_twice_differently_is_refused_naming_both_lines(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    csv = tmp_path / "labels.csv"
    csv.write_text(f"path,label\na.png,normal\nb.png,1\n{tmp_path / 'a.png'},defect\n")
    with pytest.raises(ValueError, match=r"labels\.csv:4: .* is labelled 1, but line 2 labels "
                                         r"the same image 0"):
        load_labels_csv(csv)
    csv.write_text("path,label\na.png,normal\na.png,good\n")  # repeated, agreeing: fine
    assert list(load_labels_csv(csv).values()) == [0]


def test_mvtec_labels_say_resolved_paths_are_read(tmp_path):
    flat = tmp_path / "flat" / "x.png"
    flat.parent.mkdir()
    flat.write_bytes(b"")
    with pytest.raises(ValueError, match="resolved path is read"):
        resolve_labels([str(flat)], "mvtec")


# screen's MVTec labels are the adapter's.
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
