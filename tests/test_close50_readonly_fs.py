"""A path on a read-only file system (a read-only bind mount) is refused before any work with
that reason, not "permission denied" (os.access's W_OK is false for both)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from anomaly_inspect.commands.common import check_writable


def _unwritable(monkeypatch, f_flag: int | None) -> None:
    """os.access refuses writing; os.statvfs gives ``f_flag`` (None: statvfs fails)."""
    def statvfs(path):
        if f_flag is None:
            raise OSError("statvfs failed")
        return SimpleNamespace(f_flag=f_flag)

    monkeypatch.setattr(os, "access", lambda path, mode: False)
    monkeypatch.setattr(os, "statvfs", statvfs, raising=False)


def test_a_read_only_file_system_is_named(tmp_path, monkeypatch):
    _unwritable(monkeypatch, os.ST_RDONLY)
    with pytest.raises(OSError) as info:
        check_writable(tmp_path / "model", "--out")
    assert str(info.value) == (f"--out {tmp_path / 'model'}: cannot write in {tmp_path} "
                               f"(read-only file system)")


@pytest.mark.parametrize("f_flag", [0, None])
def test_otherwise_permission_denied_as_before(tmp_path, monkeypatch, f_flag):
    _unwritable(monkeypatch, f_flag)
    with pytest.raises(PermissionError) as info:
        check_writable(tmp_path / "r.json", "--output-json")
    assert str(info.value) == (f"--output-json {tmp_path / 'r.json'}: cannot write in {tmp_path} "
                               f"(permission denied)")
