"""What killed runs leave in the feature and ONNX caches is removed by the next run; a feature
cache that cannot be read or written is no reason to stop."""

from __future__ import annotations

import errno
import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest

from anomaly_inspect.features import runtime
from anomaly_inspect.features.cache import FeatureCache, cache_key
from anomaly_inspect.files import (
    STALE_AFTER_S,
    STALE_TEMP_AFTER_S,
    WORK_FOLDERS,
    lock_folder,
    replacing,
)

HOUR = STALE_TEMP_AFTER_S


def _age(path: Path, seconds: float) -> Path:
    t = time.time() - seconds
    os.utime(path, (t, t))
    return path


_UNFINISHED: list = []  # kept, so their clean-up never runs (it would when collected)


def _killed_write(path: Path) -> Path:
    """The temporary file of a ``replacing`` write whose run died before it finished."""
    writing = replacing(path)
    tmp = writing.__enter__()  # never left: as a kill -9 leaves it
    _UNFINISHED.append(writing)
    tmp.write_bytes(b"PK\x03\x04 half an archive")
    return tmp


def test_feature_cache_removes_the_temporary_files_killed_writes_left(tmp_path):
    """Opening the cache removes the temporary files of a killed ``save`` once an hour old;
    younger ones (a live run may be writing them) and other files are kept."""
    folder = tmp_path / "fc"
    old_npz = _age(_killed_write(folder / f"{'a' * 24}.npz"), HOUR + 60)
    old_json = _age(_killed_write(folder / f"{'a' * 24}.json"), HOUR + 60)
    young = _age(_killed_write(folder / f"{'b' * 24}.npz"), HOUR - 60)
    assert old_npz.name.startswith(f".{'a' * 24}.npz.") and old_npz.name.endswith(".tmp.npz")
    others = [folder / "notes.tmp", folder / ".x.npz.abcdefgh.tmp.json"]  # not a temp of x.npz
    for p in others:
        p.write_text("keep")
        _age(p, 2 * HOUR)
    cache = FeatureCache(folder)
    desc = {"k": 1}
    assert cache.load(desc) is None
    assert not old_npz.exists() and not old_json.exists()
    assert young.exists() and all(p.exists() for p in others)
    cache.save(desc, {"x": np.arange(3)})
    assert np.array_equal(FeatureCache(folder).load(desc)["x"], np.arange(3))


def test_feature_cache_that_cannot_be_written_is_one_warning(tmp_path, monkeypatch, caplog):
    """``save`` on a folder that cannot be written (a file stands there; a full disk) warns
    once, naming the folder and why, returns None and leaves no temporary file; ``load`` is a
    miss on a folder it cannot read."""
    from anomaly_inspect.features import cache as feature_cache

    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    cache = FeatureCache(blocked / "fc")
    with caplog.at_level(logging.WARNING, logger="anomaly_inspect.features.cache"):
        assert cache.save({"k": 1}, {"x": np.zeros(3)}) is None
        assert cache.save({"k": 2}, {"x": np.zeros(3)}) is None  # not tried again, not said again
    assert len(caplog.records) == 1
    assert str(blocked / "fc") in caplog.text and "not a folder" in caplog.text
    assert cache.load({"k": 1}) is None

    caplog.clear()

    def full(file, **arrays):
        Path(file).write_bytes(b"PK")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(feature_cache.np, "savez", full)
    folder = tmp_path / "full"
    with caplog.at_level(logging.WARNING, logger="anomaly_inspect.features.cache"):
        assert FeatureCache(folder).save({"k": 1}, {"x": np.zeros(3)}) is None
    assert len(caplog.records) == 1 and str(folder) in caplog.text
    assert "no space left" in caplog.text.lower()
    assert list(folder.iterdir()) == []

    monkeypatch.undo()
    folder = tmp_path / "unreadable"
    FeatureCache(folder).save({"k": 1}, {"x": np.zeros(3)})
    real = Path.is_file
    npz = folder / f"{cache_key({'k': 1})}.npz"

    def denied(self):
        if self == npz:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "is_file", denied)
    assert FeatureCache(folder).load({"k": 1}) is None


def test_export_removes_the_temporary_files_of_killed_exports(tmp_path, monkeypatch):
    """An export killed mid-write leaves ``.NAME.onnx.XXXXXXXX.tmp.onnx`` (as large as the
    graph); the next export to that folder removes those an hour old."""
    folder = tmp_path / "onnx"
    old = _age(_killed_write(folder / "lite0-abc.onnx"), HOUR + 60)
    card = _age(_killed_write(folder / "lite0-abc.card.json"), HOUR + 60)
    young = _killed_write(folder / "lite0-def.onnx")
    assert old.name.startswith(".lite0-abc.onnx.") and old.name.endswith(".tmp.onnx")
    # the export itself is not what is tested: it writes a stand-in graph
    monkeypatch.setattr(runtime.torch.onnx, "export", lambda *a, **k: Path(a[2]).write_bytes(b"g"))
    monkeypatch.setattr(runtime, "_finish_graph", lambda *a, **k: None, raising=False)
    monkeypatch.setattr(runtime, "_drop_empty_pad_inputs", lambda *a, **k: None, raising=False)
    path = folder / "lite0-ghi.onnx"
    runtime.export_onnx(runtime.torch.nn.Conv2d(3, 3, 1), [1], (8, 8), "stages", path)
    assert not old.exists() and not card.exists() and young.exists()
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [young.name, path.name, runtime.checksum_path(path).name])


def _fake_quantisation(monkeypatch, seen: list):
    import onnxruntime.quantization as q
    import onnxruntime.quantization.shape_inference as si

    def pre(src, dst, **kw):
        work = Path(dst).parent
        seen.append((work, lock_folder(work)))  # None: held by the quantising run
        Path(dst).write_bytes(b"pre")

    monkeypatch.setattr(si, "quant_pre_process", pre)
    monkeypatch.setattr(q, "quantize_static", lambda pre, out, *a, **k: Path(out).write_bytes(b"q"))


def test_quantisation_works_in_a_locked_folder_the_next_run_removes_when_killed(tmp_path, monkeypatch):
    """int8 quantisation works in a files.work_folder ``.<graph>.onnx.<pid>.<hex>.tmp``, locked while it runs and
    removed after; one a killed run left (unlocked) is removed by the next quantisation, as is
    an earlier version's ``tmpXXXXXXXX`` holding only its pre.onnx / int8.onnx once an hour old.
    """
    folder = tmp_path / "onnx"
    folder.mkdir()
    src = folder / "b-key.onnx"
    src.write_bytes(b"f32")
    killed = folder / ".b-key-int8-abc.onnx.4242.0123abcd.tmp"
    killed.mkdir()
    (killed / "pre.onnx").write_bytes(b"x" * 1000)
    _age(killed, STALE_AFTER_S + 5)
    live = folder / ".b-key-int8-def.onnx.4343.89abcdef.tmp"
    live.mkdir()
    _age(live, STALE_AFTER_S + 5)
    held = lock_folder(live)
    legacy = folder / "tmpab_12cd3"
    legacy.mkdir()
    (legacy / "pre.onnx").write_bytes(b"x")
    _age(legacy, HOUR + 60)
    young_legacy = folder / "tmpzz_12cd3"
    young_legacy.mkdir()
    (young_legacy / "int8.onnx").write_bytes(b"x")
    not_ours = folder / "tmpab_99cd3"
    not_ours.mkdir()
    (not_ours / "something.txt").write_bytes(b"x")
    _age(not_ours, HOUR + 60)
    seen: list = []
    _fake_quantisation(monkeypatch, seen)
    try:
        dst = folder / "b-key-int8-ghi.onnx"
        runtime.quantize_int8(src, np.zeros((2, 3, 8, 8), np.float32), dst)
    finally:
        os.close(held)
    (work, fd), = seen
    assert fd is None and work.parent == folder and WORK_FOLDERS.fullmatch(work.name)
    assert work.name.startswith(f".{dst.name}.") and not work.exists()
    assert dst.read_bytes() == b"q"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [src.name, dst.name, runtime.checksum_path(dst).name, live.name, young_legacy.name,
         not_ours.name])


def test_a_failed_quantisation_leaves_no_work_folder(tmp_path, monkeypatch):
    import onnxruntime.quantization as q

    seen: list = []
    _fake_quantisation(monkeypatch, seen)

    def fail(*a, **k):
        raise RuntimeError("calibration failed")

    monkeypatch.setattr(q, "quantize_static", fail)
    src = tmp_path / "b-key.onnx"
    src.write_bytes(b"f32")
    with pytest.raises(RuntimeError, match="calibration failed"):
        runtime.quantize_int8(src, np.zeros((2, 3, 8, 8), np.float32), tmp_path / "b-int8.onnx")
    assert [p.name for p in tmp_path.iterdir()] == [src.name]
