"""A labels CSV pairs with the screened images by name in one Unicode form (NFC), as masks
do: a file copied from macOS (NFD) pairs with the name typed in the CSV (NFC), and back."""

from __future__ import annotations

import re
import unicodedata

import pytest

from anomaly_inspect.screening.labels import load_labels_csv, resolve_labels


def _nfd(name: str) -> str:
    return unicodedata.normalize("NFD", name)


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


@pytest.mark.parametrize("on_disk, in_csv", [(_nfd, _nfc), (_nfc, _nfd)])
def test_a_labels_csv_pairs_names_in_either_unicode_form(tmp_path, on_disk, in_csv):
    folder = tmp_path / on_disk("café")
    folder.mkdir()
    paths = []
    for name in ("crème_ok.png", "brûlé_bad.png"):
        (folder / on_disk(name)).write_bytes(b"")
        paths.append(str(folder / on_disk(name)))
    rows = [f"{in_csv('café/crème_ok.png')},0",  # relative to the CSV's folder
            f"{in_csv(str(tmp_path / 'café' / 'brûlé_bad.png'))},1"]  # absolute
    (tmp_path / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    found, source = resolve_labels(paths, str(tmp_path / "labels.csv"))
    assert found == {paths[0]: 0, paths[1]: 1}
    assert "2 of 2 images labelled" in source


def test_two_spellings_of_one_name_in_a_labels_csv_are_one_image(tmp_path):
    name = "café.png"
    (tmp_path / "labels.csv").write_text(f"path,label\n{_nfc(name)},0\n{_nfd(name)},1\n",
                                         encoding="utf-8")
    with pytest.raises(ValueError, match="labels the same image"):
        load_labels_csv(tmp_path / "labels.csv")


def test_a_labels_csv_message_names_the_files_line_past_blank_lines(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("path,label\na.png,0\n\n\nb.png,x\n")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}:5: label 'x'"):
        load_labels_csv(path)
