"""``anomaly-inspect cache`` at its edges: groups holding stray files, writes in progress deep in
an entry, a cache folder moved elsewhere by a link, a mistaken root listed, and ``--quiet``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from anomaly_inspect import user_cache
from cache_helpers import cache_file, run_cache


def _young_work_folder(parent: Path, name: str) -> Path:
    """A work folder as :func:`..files.work_folder` names it, of a run that started just now."""
    work = parent / f".{name}.4242.deadbeef.tmp"
    cache_file(work / "stride8.npy")
    return work


@pytest.mark.parametrize("stray", ["file", "link"])
def test_clear_keeps_a_group_holding_a_stray_item_and_its_writes_in_progress(tmp_path, capsys, stray):
    """``tune/maps`` holding a ``.DS_Store`` (or a link) is still a group: its entries are
    removed one by one, the young work folder beside them left, the group kept."""
    root, outside = tmp_path / "c", cache_file(tmp_path / "outside" / "keep.txt")
    maps = root / "tune" / "maps"
    cache_file(maps / "net-64-stretch-1" / "stride8.npy", 20000)
    if stray == "file":
        cache_file(maps / ".DS_Store", 10)
    else:
        (maps / "linkgroup").symlink_to(outside.parent)
    work = _young_work_folder(maps, "net-64-stretch-2")
    cache_file(root / "tune" / "synthetic" / "0123" / "00000_scar.png")
    rc, out, err = run_cache(capsys, "--cache-dir", str(root), "--clear", "all")
    assert rc == 0 and err == ""
    assert os.listdir(maps) == [work.name] and (work / "stride8.npy").is_file()
    assert os.listdir(root / "tune" / "synthetic") == []
    assert "tune: freed " in out and "(3 entries) (1 being written, left)" in out
    assert outside.is_file()


def test_clear_leaves_an_entry_that_holds_a_write_in_progress(tmp_path, capsys):
    """ood's synthetic sets are built one split at a time inside the set's folder: a set with a
    split being built is left whole; the others, and the group, go and stay."""
    root = tmp_path / "c"
    building = root / "ood" / "synthetic" / "key1"
    cache_file(building / "scar" / "00000.png")
    work = _young_work_folder(building, "blob")
    cache_file(root / "ood" / "synthetic" / "key2" / "scar" / "00000.png")
    cache_file(root / "ood" / "k1.npz")
    rc, out, err = run_cache(capsys, "--cache-dir", str(root), "--clear", "ood")
    assert rc == 0 and err == ""
    assert os.listdir(root / "ood") == ["synthetic"]
    assert os.listdir(root / "ood" / "synthetic") == ["key1"] and (work / "stride8.npy").is_file()
    assert "ood: freed " in out and "(2 entries) (1 being written, left)" in out


def _linked_onnx(tmp_path: Path) -> tuple[Path, Path]:
    """A cache whose onnx folder was moved to a bigger disk and linked back."""
    root, big = tmp_path / "c", tmp_path / "big" / "onnx"
    cache_file(big / "net-a.onnx", 300_000)
    cache_file(big / "net-b.onnx", 1000)
    root.mkdir()
    (root / "onnx").symlink_to(big)
    cache_file(root / "tune" / "maps" / "net-64-stretch-1" / "stride8.npy")
    return root, big


def test_a_linked_cache_folder_is_listed_by_its_target_s_use(tmp_path, capsys):
    root, big = _linked_onnx(tmp_path)
    rc, out, err = run_cache(capsys, "--cache-dir", str(root))
    assert rc == 0 and err == ""
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert " 2 entries " in rows["onnx"] and f"(a link to {big})" in rows["onnx"]
    assert "not a cache folder" not in rows["onnx"]
    onnx = user_cache.cache_usage(root)[0]
    assert onnx.cache_folder and onnx.size >= 301_000 and onnx.link_to == big


def test_clear_empties_the_other_folders_and_refuses_a_linked_one(tmp_path, capsys):
    root, big = _linked_onnx(tmp_path)
    rc, out, err = run_cache(capsys, "--cache-dir", str(root), "--clear", "tune")
    assert rc == 0 and err == "" and "tune: freed " in out
    assert os.listdir(root / "tune" / "maps") == [] and len(os.listdir(big)) == 2
    for names in (["onnx"], ["all"], ["tune", "onnx"]):
        cache_file(root / "tune" / "maps" / "net-64-stretch-1" / "stride8.npy")
        rc, out, err = run_cache(capsys, "--cache-dir", str(root), "--clear", *names)
        assert rc == 2 and out == "" and err.count("\n") == 1
        assert f"its 'onnx' is a link to {big}" in err and "nothing deleted" in err
        assert len(os.listdir(big)) == 2 and os.listdir(root / "tune" / "maps") == ["net-64-stretch-1"]


def test_the_listing_does_not_size_what_is_not_a_cache_folder(tmp_path, capsys, monkeypatch):
    """A root set to a project folder by mistake: its other items are named, never walked (a
    tree of 15 GB, or one that cannot be listed), and their bytes are not in the total."""
    root = tmp_path / "c"
    cache_file(root / "onnx" / "net-a.onnx", 5000)
    cache_file(root / "project" / "deep" / "data.bin", 500_000)
    cache_file(root / "notes.txt", 100_000)
    listed = []
    items = user_cache._items
    monkeypatch.setattr(user_cache, "_items", lambda folder: listed.append(Path(folder)) or items(folder))
    rc, out, err = run_cache(capsys, "--cache-dir", str(root))
    assert rc == 0 and err == ""
    assert not any(p == root / "project" or root / "project" in p.parents for p in listed)
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "not a cache folder, not sized" in rows["project"] and "not sized" in rows["notes.txt"]
    assert "500.0 kB" not in out and "kB" not in rows["project"]
    total = user_cache.summed(user_cache.cache_usage(root))
    assert 5000 <= total.size < 100_000


def test_the_listing_refuses_the_home_folder_and_the_file_system_root(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    cache_file(home / "big" / "x.bin")
    monkeypatch.setenv("HOME", str(home))
    for root, why in ((str(home), "it is the home folder"), ("/", "it is the file system root")):
        rc, out, err = run_cache(capsys, "--cache-dir", root)
        assert rc == 2 and out == "" and err.count("\n") == 1
        assert err.startswith(f"error: {root}: does not look like an anomaly-inspect cache ({why})")


def test_quiet_keeps_the_results_and_the_errors(tmp_path, capsys):
    root = tmp_path / "c"
    cache_file(root / "onnx" / "net-a.onnx", 5000)
    cache_file(root / "ood" / "k1.npz", 4000)
    rc, out, err = run_cache(capsys, "--cache-dir", str(root), "--quiet")
    assert rc == 0 and err == "" and out.splitlines()[-1].startswith("total ")
    _young_work_folder(root / "ood", "k2")
    rc, out, err = run_cache(capsys, "--cache-dir", str(root), "--clear", "all", "--quiet")
    assert rc == 0 and err == ""
    assert out.splitlines() == [out.splitlines()[-1]]  # the total line alone
    assert out.startswith("total: freed ") and "(2 entries) (1 being written, left)" in out
    cache_file(tmp_path / "f")
    rc, out, err = run_cache(capsys, "--cache-dir", str(tmp_path / "f"), "--quiet")
    assert rc == 2 and out == "" and f"error: {tmp_path / 'f'}: not a folder" in err


def test_a_cache_folder_linked_to_a_missing_folder_blocks_only_its_own_clear(tmp_path, capsys):
    """``onnx`` moved to a disk that is not mounted now: listed as a link to a missing folder;
    ``--clear tune`` empties tune; naming onnx (or all) refuses, saying so, nothing deleted."""
    root, gone = tmp_path / "c", tmp_path / "unmounted" / "onnx"
    cache_file(root / "tune" / "maps" / "net-64-stretch-1" / "stride8.npy")
    (root / "onnx").symlink_to(gone, target_is_directory=True)
    said = f"a link to {gone}, which is missing"
    rc, out, err = run_cache(capsys, "--cache-dir", str(root))
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert rc == 0 and err == "" and said in rows["onnx"] and "not a cache folder" not in out
    for names in (["onnx"], ["all"], ["tune", "onnx"]):
        rc, out, err = run_cache(capsys, "--cache-dir", str(root), "--clear", *names)
        assert rc == 2 and out == "" and err.count("\n") == 1
        assert f"its 'onnx' is {said})" in err and "nothing deleted" in err
        assert os.listdir(root / "tune" / "maps") == ["net-64-stretch-1"]
    rc, out, err = run_cache(capsys, "--cache-dir", str(root), "--clear", "tune")
    assert rc == 0 and err == "" and "tune: freed " in out and "(1 entry)" in out
    assert os.listdir(root / "tune" / "maps") == [] and (root / "onnx").is_symlink()
