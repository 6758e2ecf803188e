"""Atomic writes (``anomaly_inspect.files``): the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from anomaly_inspect import files


def test_write_json_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "record.json"
    files.write_json(target, {"a": 1})
    files.write_json(target, {"a": 2}, indent=None)
    assert json.loads(target.read_text()) == {"a": 2}
    assert target.read_text() == '{"a": 2}'
    assert sorted(p.name for p in target.parent.iterdir()) == ["record.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    target = tmp_path / "results.csv"
    target.write_text("old rows\n")
    with pytest.raises(RuntimeError, match="disk"), files.replacing(target) as tmp:
        tmp.write_text("half of the new ro")
        raise RuntimeError("disk full")
    assert target.read_text() == "old rows\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]


@pytest.mark.parametrize("error, said", [
    (OSError(28, "No space left on device"), "no space left on the device to write it; free "
                                             "space there or write to another folder"),
    (OSError(122, "Disk quota exceeded"), "no space left on the device"),
    (OSError(5, "Input/output error"), "cannot write it (Input/output error)"),
    (OSError(13, "Permission denied"), "cannot write it (Permission denied)"),
    (OSError(28, "No space left on device", "TMP"), "no space left on the device")])
def test_a_write_error_naming_no_file_names_the_target(tmp_path, monkeypatch, error, said):
    """A full disk fails a write with no file name (``[Errno 28] No space left on device``
    alone), or only the temporary file's: the error names the target, keeps its type and
    errno (callers test them), and the temporary file is removed."""
    import errno

    target = tmp_path / "report.html"
    target.write_text("old")

    def failing(self, *args, **kwargs):
        if error.filename == "TMP":
            error.filename = str(self)
        raise error

    monkeypatch.setattr(type(target), "write_text", failing)
    with pytest.raises(OSError) as info:
        files.write_text(target, "<html></html>")
    monkeypatch.undo()
    assert str(info.value).startswith(f"{target}: {said}")
    assert info.value.errno == error.errno and type(info.value) is type(error)
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"] and target.read_text() == "old"
    # an error that names another file already says where: kept as it is
    other = PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "elsewhere"))
    with pytest.raises(PermissionError) as info, files.replacing(target):
        raise other
    assert info.value is other


def test_unserialisable_json_leaves_the_old_file(tmp_path):
    target = tmp_path / "screen.json"
    files.write_json(target, {"model_id": "x"})
    with pytest.raises(TypeError):
        files.write_json(target, {"bad": object()})
    assert json.loads(target.read_text()) == {"model_id": "x"}
    assert [p.name for p in tmp_path.iterdir()] == ["screen.json"]


def test_temporaries_are_unique_per_writer_and_keep_the_suffix(tmp_path):
    target = tmp_path / "features.npz"
    with files.replacing(target) as a, files.replacing(target) as b:
        assert a != b and a.parent == b.parent == tmp_path
        assert a.name.startswith(".features.npz.") and a.suffix == ".npz"
        np.savez(a, x=np.arange(3))  # np.savez would append .npz to a name without it
        np.savez(b, x=np.arange(4))
    # the writer that finished last wins, whole
    with np.load(target) as data:
        assert data["x"].tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["features.npz"]


def test_permissions_follow_the_umask_like_a_plain_open(tmp_path):
    old = os.umask(0o027)
    try:
        files.write_text(tmp_path / "report.html", "<html></html>")
        (tmp_path / "plain.html").write_text("<html></html>")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "report.html").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.html").stat().st_mode) == 0o640


def test_a_file_where_a_folder_should_be_is_named(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"afile: is a file, not a folder"):
        files.write_json(tmp_path / "afile" / "sub" / "record.json", {})
    assert (tmp_path / "afile").read_text() == "x"


def test_umask_is_read_without_changing_it_and_a_gone_folder_is_not_locked(tmp_path):
    old = os.umask(0o027)
    try:
        assert files.current_umask() == 0o027
        assert files.current_umask() == 0o027  # left as it was
    finally:
        os.umask(old)
    assert files.lock_folder(tmp_path / "gone") is None
    fd = files.lock_folder(tmp_path)
    try:
        assert fd is not None and files.lock_folder(tmp_path) is None  # held
    finally:
        os.close(fd)


def test_cached_entry_builds_once_rebuilds_a_broken_entry_and_names_one_it_cannot_read(tmp_path):
    entry = tmp_path / "entry"
    built = []

    def read(d):
        f = d / "value"
        return f.read_text() if f.is_file() and f.read_text() != "broken" else None

    def build(tmp):
        built.append(tmp)
        (tmp / "value").write_text("v")

    assert files.cached_entry(entry, read, build, "the test entry") == "v"
    assert files.cached_entry(entry, read, build, "the test entry") == "v" and len(built) == 1
    (entry / "value").write_text("broken")  # read says None: removed and built again
    assert files.cached_entry(entry, read, build, "the test entry") == "v" and len(built) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry"]  # no work folder left

    with pytest.raises(OSError, match="other: the test entry there is not the one just built"):
        files.cached_entry(tmp_path / "other", lambda d: None, build, "the test entry")


def test_cached_entry_in_a_folder_it_cannot_write_names_the_folder_and_the_reason(tmp_path,
                                                                                  monkeypatch):
    import errno

    from layout_writer import read_only_below

    read_only_below(monkeypatch, "ro")
    with pytest.raises(OSError) as info:  # its folder, or one above it, cannot be made
        files.cached_entry(tmp_path / "ro" / "tc" / "key", lambda d: None, lambda tmp: None,
                           "the test entry")
    assert str(info.value) == (f"{tmp_path / 'ro' / 'tc'}: cannot write the test entry there "
                               f"(Read-only file system: {tmp_path / 'ro' / 'tc'}); use another "
                               f"cache folder")

    def unreadable_source(tmp):  # another file's error is its own, as it was
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "image.png"))

    with pytest.raises(PermissionError, match=r"\[Errno 13\] Permission denied: .*image\.png"):
        files.cached_entry(tmp_path / "tc" / "key", lambda d: None, unreadable_source, "x",
                           "choose another with --cache")


def test_a_symbolic_link_is_written_through_and_kept(tmp_path):
    """``latest.json`` -> a dated file: the target gets the new content, the link stays."""
    dated = tmp_path / "runs" / "2026-12-04.json"
    dated.parent.mkdir()
    dated.write_text('{"old": 1}')
    link = tmp_path / "latest.json"
    link.symlink_to(os.path.join("runs", dated.name))
    files.write_json(link, {"new": 2})
    assert link.is_symlink() and json.loads(dated.read_text()) == {"new": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.json", "runs"]  # no temp left
