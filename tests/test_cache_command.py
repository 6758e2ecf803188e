"""``anomaly-inspect cache``: the user cache's folders listed (entries, size, last write) and
emptied on request, never anything outside the cache root; and the cache's readers, which
count an entry that ``--clear`` removed under them as a miss."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from anomaly_inspect import user_cache as cache_dir
from anomaly_inspect.features import backbone, runtime
from anomaly_inspect.features.cache import FeatureCache, cache_key
from anomaly_inspect.files import STALE_AFTER_S, replacing, work_folder
from anomaly_inspect.tuning import stage_cache
from cache_helpers import cache_file, run_cache

# ------------------------------------------------------------------ readers: a vanished entry


def test_an_onnx_export_removed_while_it_is_checked_is_a_miss_not_an_error(tmp_path, monkeypatch):
    """The export is found, then removed (``cache --clear``) before its bytes are hashed: it is
    exported again (``_reusable`` False), where it raised FileNotFoundError out of ``export``."""
    graph = tmp_path / "net-0123.onnx"
    graph.write_bytes(b"graph")
    runtime.checksum_path(graph).write_text("0" * 64 + "\n")

    def read_then_cleared(path):
        graph.unlink()  # the clear runs between reading the graph's signature and its hash
        return (3, 8, 8), ("stage0",), {}

    monkeypatch.setattr(backbone, "graph_signature", read_then_cleared)
    assert backbone._reusable(graph) is False


def test_a_feature_cache_entry_removed_after_it_was_found_is_a_miss(tmp_path, monkeypatch):
    cache = FeatureCache(tmp_path / "ood")
    desc = {"k": 1}
    cache.save(desc, {"x": np.zeros(3)})
    path = cache.directory / f"{cache_key(desc)}.npz"
    found = Path.is_file

    def found_then_cleared(self):
        seen = found(self)
        if self == path:
            path.unlink()
        return seen

    monkeypatch.setattr(Path, "is_file", found_then_cleared)
    assert cache.load(desc) is None


def test_a_stage_map_entry_removed_after_it_was_found_is_a_miss(tmp_path):
    entry = tmp_path / "maps" / "net-64-stretch-0123"
    entry.mkdir(parents=True)
    (entry / "done").write_text('{"n": 1}')  # found complete; its arrays removed since
    assert stage_cache._complete(entry, [8], 64) is None


# ------------------------------------------------------------------ the command


def _cache(root: Path) -> Path:
    """A small cache: two exports, a stage-map entry and a synthetic set, two ood arrays."""
    cache_file(root / "onnx" / "net-a.onnx", 5000)
    cache_file(root / "onnx" / "net-a.onnx.sha256", 65)
    cache_file(root / "onnx" / "net-b.onnx", 5000, age_s=86400)
    cache_file(root / "tune" / "maps" / "net-64-stretch-1" / "stride8.npy", 20000)
    cache_file(root / "tune" / "maps" / "net-64-stretch-1" / "done", 10)
    cache_file(root / "tune" / "synthetic" / "0123" / "00000_scar.png", 3000)
    cache_file(root / "ood" / "k1.npz", 4000)
    cache_file(root / "ood" / "k1.json", 100)
    return root


def test_cache_lists_each_folder_with_its_entries_size_and_last_use(tmp_path, monkeypatch, capsys):
    root = _cache(tmp_path / "c")
    cache_file(root / "models" / "m.bin", 10)  # not a cache folder: listed as such
    monkeypatch.setenv(cache_dir.CACHE_ENV, str(root))
    rc, out, err = run_cache(capsys)
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == f"cache: {root}"
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {"onnx", "tune", "ood", "models", "total"}
    assert " 3 entries " in rows["onnx"] and " 2 entries " in rows["tune"]  # a map, a synthetic set
    assert " 2 entries " in rows["ood"] and "not a cache folder" in rows["models"]
    today = time.strftime("%Y-%m-%d")
    assert f"last written {today}" in rows["onnx"]
    assert " 8 entries " in rows["total"]  # the other folder's counted too: it is on that disk
    usage = cache_dir.cache_usage(root)
    assert [u.name for u in usage] == ["onnx", "tune", "ood", "models"]
    assert usage[1].size >= 23000 and usage[0].entries == 3 and not usage[3].cache_folder
    assert cache_dir.summed(usage).size == sum(u.size for u in usage)
    assert cache_dir.human_size(412_300_000) == "412.3 MB" and cache_dir.human_size(999) == "999 B"


def test_an_absent_cache_is_empty(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(cache_dir.CACHE_ENV, str(tmp_path / "none"))
    assert run_cache(capsys) == (0, f"cache: {tmp_path / 'none'}: empty (no such folder)\n", "")
    rc, out, _ = run_cache(capsys, "--clear", "all")
    assert rc == 0 and "nothing to free" in out


def test_clear_empties_the_named_folders_and_says_what_it_freed(tmp_path, capsys):
    root = _cache(tmp_path / "c")
    rc, out, err = run_cache(capsys, "--cache-dir", str(root), "--clear", "onnx", "tune")
    assert rc == 0 and err == ""
    assert out.startswith("onnx: freed ") and "3 entries" in out.splitlines()[0]
    assert "tune: freed " in out and out.splitlines()[-1].startswith("total: freed ")
    assert sorted(os.listdir(root / "onnx")) == []
    # tune's groups stay (a run may be about to build an entry in them), empty
    assert sorted(os.listdir(root / "tune")) == ["maps", "synthetic"]
    assert os.listdir(root / "tune" / "maps") == os.listdir(root / "tune" / "synthetic") == []
    assert sorted(os.listdir(root / "ood")) == ["k1.json", "k1.npz"]  # not named: kept
    assert run_cache(capsys, "--cache-dir", str(root), "--clear", "all")[0] == 0
    assert os.listdir(root / "ood") == []


def test_clear_removes_links_never_what_they_point_to(tmp_path, capsys):
    root = _cache(tmp_path / "c")
    outside = cache_file(tmp_path / "precious" / "data.bin")
    (root / "onnx" / "link").symlink_to(outside.parent)
    (root / "tune" / "maps" / "net-64-stretch-2").mkdir()
    (root / "tune" / "maps" / "net-64-stretch-2" / "done").symlink_to(outside)
    assert run_cache(capsys, "--cache-dir", str(root), "--clear", "all")[0] == 0
    assert outside.read_bytes() == b"x" * 1000 and not (root / "onnx" / "link").is_symlink()
    assert os.listdir(root / "tune" / "maps") == []


@pytest.mark.parametrize("stray", ["file", "folder", "link"])
def test_clear_refuses_a_root_that_holds_more_than_cache_folders(tmp_path, capsys, stray):
    """A root set to ``~`` or ``/`` by mistake: it holds other files or folders (or a link in a
    cache folder's place), so nothing in it is deleted."""
    root = _cache(tmp_path / "home")
    if stray == "file":
        cache_file(root / ".bashrc")
    elif stray == "folder":
        (root / "Documents").mkdir()
    else:
        (root / "ood").rename(tmp_path / "ood")
        (root / "ood").symlink_to(tmp_path / "ood")
    rc, out, err = run_cache(capsys, "--cache-dir", str(root), "--clear", "all")
    assert rc == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"error: {root}: does not look like an anomaly-inspect cache")
    assert len(os.listdir(root / "onnx")) == 3 and len(os.listdir(root / "ood")) == 2


def test_clear_refuses_the_home_folder_and_the_file_system_root(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    home.mkdir()  # empty, so only the explicit rule refuses it
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv(cache_dir.CACHE_ENV, "~")
    rc, _, err = run_cache(capsys, "--clear", "all")
    assert rc == 2 and f"{home}: does not look like an anomaly-inspect cache" in err
    with pytest.raises(ValueError, match="does not look like an anomaly-inspect cache"):
        cache_dir.check_clearable(Path("/"))


def test_clear_skips_writes_in_progress(tmp_path, capsys):
    """A work folder a live run holds (an entry being built, an int8 graph being quantised) and
    a file still being written are left; one a killed run left is removed."""
    root = _cache(tmp_path / "c")
    maps = root / "tune" / "maps"
    with work_folder(maps / "net-64-stretch-9") as building:
        cache_file(building / "stride8.npy")
        writing = replacing(root / "ood" / "k2.npz")
        tmp = writing.__enter__()
        tmp.write_bytes(b"half")
        dead = maps / f".net-64-stretch-8.{os.getpid()}.0123abcd.tmp"
        cache_file(dead / "stride8.npy", age_s=2 * STALE_AFTER_S)
        t = time.time() - 2 * STALE_AFTER_S
        os.utime(dead, (t, t))
        rc, out, err = run_cache(capsys, "--cache-dir", str(root), "--clear", "tune", "ood")
        assert rc == 0 and err == ""
        assert os.listdir(maps) == [building.name] and (building / "stride8.npy").is_file()
        assert os.listdir(root / "ood") == [tmp.name]
        assert "tune: freed " in out and "(1 being written, left)" in out
        writing.__exit__(None, None, None)  # the write finishes as if nothing happened
        assert (root / "ood" / "k2.npz").read_bytes() == b"half"


@pytest.mark.parametrize("name", ["ood", "tune"])  # files; entry folders (rmtree)
def test_a_deletion_that_fails_exits_1_naming_the_path(tmp_path, capsys, monkeypatch, name):
    root = _cache(tmp_path / "c")

    def denied(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(cache_dir.os, "unlink", denied)
    rc, out, err = run_cache(capsys, "--cache-dir", str(root), "--clear", name)
    assert rc == 1 and err.count("\n") == 1
    assert err.startswith(f"error: {root / name}/") and "cannot delete it (Permission denied)" in err
    assert f"{name}: freed 0 B (0 entries)" in out


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert run_cache(capsys, "--clear", "models")[0] == 2
    assert run_cache(capsys, "--clear")[0] == 2
    assert run_cache(capsys, "--cache-dir", "")[0] == 2
    cache_file(tmp_path / "f")
    rc, _, err = run_cache(capsys, "--cache-dir", str(tmp_path / "f"))
    assert rc == 2 and f"error: {tmp_path / 'f'}: not a folder" in err


def test_help_states_the_safety_rule(capsys):
    rc, out, _ = run_cache(capsys, "--help")
    text = " ".join(out.split())
    assert rc == 0 and "anything but the folders onnx, tune and ood" in text
    assert "a symbolic link as a link" in text and "being written" in text


def test_the_command_offers_the_library_s_cache_folders():
    from anomaly_inspect.commands import cache as command

    assert (*cache_dir.CACHE_FOLDERS, "all") == command.NAMES
