"""Labels CSVs a spreadsheet writes: another encoding is named, contradictions refused."""

import pytest

from anomaly_inspect.screening.labels import load_labels_csv, resolve_labels


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
