"""A root given one level too high (the folder of several datasets) is named with the folder that
holds the category (it said 'categories found: none' and nothing more)."""

import pytest

from anomaly_inspect.data.mvtec import load_mvtec


def test_a_root_one_level_too_high_points_to_the_right_root(tmp_path):
    (tmp_path / "mvtec_ad" / "bottle" / "train" / "good").mkdir(parents=True)
    (tmp_path / "other").mkdir()
    with pytest.raises(FileNotFoundError, match=r"categories found under .*: none; bottle is under "
                                                r".*mvtec_ad: pass that as the root"):
        load_mvtec(tmp_path, "bottle")


def test_no_hint_where_no_folder_below_holds_the_category(tmp_path):
    (tmp_path / "mvtec_ad" / "screw" / "train" / "good").mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as e:
        load_mvtec(tmp_path, "bottle")
    assert "categories found under" in str(e.value) and "pass that as the root" not in str(e.value)


def test_an_unreadable_folder_beside_it_does_not_hide_the_hint(tmp_path, monkeypatch):
    """A disk's mount point holds a root-only lost+found: is_dir() on what lies below it raises
    PermissionError for other users (Python 3.11); that folder is skipped, the hint stays."""
    from pathlib import Path

    (tmp_path / "mvtec_ad" / "bottle" / "train" / "good").mkdir(parents=True)
    (tmp_path / "lost+found").mkdir()
    real = Path.is_dir

    def is_dir(self):
        if "lost+found" in self.parts and self.name != "lost+found":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "is_dir", is_dir)
    with pytest.raises(FileNotFoundError, match=r"categories found under .*: none; bottle is under "
                                                r".*mvtec_ad: pass that as the root"):
        load_mvtec(tmp_path, "bottle")
