"""Errors writing the outputs, simulated (a folder made read-only mid-run, a full disk): the
user sees the real reason in one line naming the file or folder asked for, never a lock
release's error nor a hidden temporary name; screen stops (rows kept) where its folders
cannot be written."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from anomaly_inspect import files
from anomaly_inspect.features.extractor import Features
from anomaly_inspect.scorers.patchcore import PatchCore
from layout_writer import stub_batch_writer

NO_SPACE = "no space left on the device to write it; free space there or write to another folder"


def _unlink_refused(monkeypatch, name: str):
    """``os.unlink`` of a file called ``name`` fails as in a folder made read-only meanwhile."""
    unlink = os.unlink

    def refused(path, *args, **kwargs):
        if Path(path).name == name:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", refused)


# --- 1: the lock's release never replaces the error in flight ---------------------------------

def test_an_output_lock_that_cannot_be_removed_keeps_the_error_in_flight(tmp_path, monkeypatch):
    from anomaly_inspect.screening.lock import LOCK_NAME, OutputLock

    _unlink_refused(monkeypatch, LOCK_NAME)
    with pytest.raises(OSError, match="^the real reason$"), OutputLock(tmp_path, "screen"):
        raise OSError("the real reason")
    assert (tmp_path / LOCK_NAME).is_file()  # left: the next run takes it over
    with OutputLock(tmp_path, "screen"):  # without an error, the release says nothing either
        pass
    monkeypatch.undo()
    with OutputLock(tmp_path, "screen"):
        pass
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_save_lock_that_cannot_be_removed_keeps_the_error_in_flight(tmp_path, monkeypatch):
    from anomaly_inspect.screening.model_dir import save_lock

    _unlink_refused(monkeypatch, ".m.lock")
    with pytest.raises(RuntimeError, match="^the real reason$"), save_lock(tmp_path / "m"):
        raise RuntimeError("the real reason")
    with save_lock(tmp_path / "m"):  # the file left is taken again
        pass


def _mkstemp_refused(monkeypatch):
    """``mkstemp`` fails as in a folder made read-only meanwhile (its error names the temporary
    file it tried)."""
    def refused(prefix="", suffix="", dir=None, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES),
                              os.path.join(dir, f"{prefix}abcd1234{suffix}"))

    monkeypatch.setattr(files.tempfile, "mkstemp", refused)


def test_a_file_whose_temporary_file_cannot_be_made_is_named_not_the_temporary(tmp_path,
                                                                              monkeypatch):
    _mkstemp_refused(monkeypatch)
    target = tmp_path / "report.html"
    with pytest.raises(PermissionError, match=f"^{target}: cannot write it \\(Permission denied\\)$"):
        files.write_text(target, "x")


def test_a_report_that_cannot_be_written_says_the_rows_are_kept(tmp_path, monkeypatch):
    from anomaly_inspect.screening import html_report, runner

    csv_path = tmp_path / "results.csv"
    runner._write_rows_atomic(csv_path, [])
    _mkstemp_refused(monkeypatch)
    monkeypatch.setattr(html_report, "write_report",
                        lambda out_dir, rows, model, **kw: files.write_text(out_dir / "report.html", ""))
    with pytest.raises(OSError) as caught:
        runner._write_report(tmp_path, csv_path, None, None, None)
    assert str(caught.value) == (
        f"{tmp_path / 'report.html'}: cannot write it (Permission denied); the rows screened are "
        f"kept in {csv_path}: run again (it resumes) to write the report")
    assert caught.value.errno == errno.EACCES


# --- 2: a model save on a full disk or a folder made read-only ---------------------------------

def _fitted():
    rng = np.random.default_rng(0)
    return PatchCore(coreset_ratio=0.5, progress=False).fit(
        Features(patches=rng.normal(size=(4, 3, 3, 8)).astype(np.float32)))


def _info():
    from anomaly_inspect.config import ModelConfig
    from anomaly_inspect.screening.calibration import calibrate
    from anomaly_inspect.screening.model_dir import ModelInfo

    return ModelInfo(config=ModelConfig.from_dict({}, "config").to_dict(),
                     backbone={"name": "b", "weights": {"checksum": "abc"}},
                     calibration=calibrate(np.arange(20.0), 0.1, "x").to_dict(),
                     train_images=["a.png"] * 4, calibration_images=["b.png"])


def _safetensors_full(monkeypatch, module):
    from safetensors import SafetensorError

    def full(state, path):
        raise SafetensorError("Error while serializing: I/O error: No space left on device "
                              "(os error 28)")

    monkeypatch.setattr(module, "save_file", full)


def test_a_scorer_state_that_cannot_be_written_is_an_os_error_naming_it(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    from anomaly_inspect.scorers import base

    _safetensors_full(monkeypatch, base)
    with pytest.raises(OSError) as caught:
        _fitted().save(tmp_path / "s")
    assert caught.value.errno == errno.ENOSPC
    assert caught.value.filename == str(tmp_path / "s" / "scorer_state.safetensors")

    def other(state, path):
        raise SafetensorError("Error while serializing: I/O error: weird (no number)")

    monkeypatch.setattr(base, "save_file", other)
    with pytest.raises(OSError) as caught:
        _fitted().save(tmp_path / "s")
    assert caught.value.errno == errno.EIO

    def not_io(state, path):
        raise SafetensorError("Error while serializing: something else")

    monkeypatch.setattr(base, "save_file", not_io)
    with pytest.raises(SafetensorError, match="something else"):  # passed on as it was
        _fitted().save(tmp_path / "s")


def test_a_projection_state_that_cannot_be_written_is_an_os_error(tmp_path, monkeypatch):
    from anomaly_inspect.scorers import base, nuisance

    _safetensors_full(monkeypatch, base)
    scorer = SimpleNamespace(save=lambda directory: None)
    projection = SimpleNamespace(to_state=lambda: {"w": np.zeros(3, np.float32)})
    with pytest.raises(OSError) as caught:
        nuisance.ProjectedScorer.save(SimpleNamespace(scorer=scorer, projection=projection),
                                      tmp_path / "s")
    assert caught.value.errno == errno.ENOSPC


def _no_staging_left(parent: Path) -> None:
    """No staging folder left beside the target (a parent the failed save made is gone too)."""
    assert not parent.exists() or [p.name for p in parent.iterdir() if ".tmp-" in p.name] == []


def test_a_model_save_on_a_full_disk_is_one_line_naming_the_model(tmp_path, monkeypatch):
    from anomaly_inspect.scorers import base
    from anomaly_inspect.screening.model_dir import save_model_dir

    _safetensors_full(monkeypatch, base)
    target = tmp_path / "tiny" / "m"
    with pytest.raises(OSError, match=f"^{target}: {NO_SPACE}$") as caught:
        save_model_dir(target, _info(), _fitted())
    assert caught.value.errno == errno.ENOSPC
    assert not target.exists()
    _no_staging_left(target.parent)


def _save_copying_a_graph(tmp_path, monkeypatch, code: int):
    """Save a model carrying a cached graph whose copy into it fails with ``code`` (the error
    names the graph and the copy's destination, as ``shutil.copyfile``'s do)."""
    from anomaly_inspect.screening import model_dir

    graph = tmp_path / "cache" / "bb.onnx"
    graph.parent.mkdir()
    graph.write_bytes(b"graph")

    def failing(src, dst):
        raise OSError(code, os.strerror(code), str(src), None, str(dst))

    monkeypatch.setattr(model_dir.shutil, "copyfile", failing)
    model_dir.save_model_dir(tmp_path / "tiny" / "m", _info(), _fitted(),
                             extra_files={"backbone/bb.onnx": graph})


def test_copying_a_graph_onto_a_full_disk_names_the_model_not_its_staging_folder(tmp_path,
                                                                                 monkeypatch):
    target = tmp_path / "tiny" / "m"
    with pytest.raises(OSError, match=f"^{target}: {NO_SPACE}$"):
        _save_copying_a_graph(tmp_path, monkeypatch, errno.ENOSPC)
    _no_staging_left(target.parent)


def test_a_copy_that_fails_reading_its_source_keeps_both_paths(tmp_path, monkeypatch):
    """Only a full or read-only disk is the model folder's fault: an I/O error reading the cached
    graph mid-copy names the graph and where it went, not 'cannot write' the model."""
    with pytest.raises(OSError) as caught:
        _save_copying_a_graph(tmp_path, monkeypatch, errno.EIO)
    assert caught.value.errno == errno.EIO
    assert caught.value.filename == str(tmp_path / "cache" / "bb.onnx")


def test_a_model_folder_made_read_only_before_the_save_is_named(tmp_path, monkeypatch):
    from anomaly_inspect.screening import model_dir

    def refused(prefix="", dir=None, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES),
                              os.path.join(dir, f"{prefix}abcd1234"))

    monkeypatch.setattr(model_dir.tempfile, "mkdtemp", refused)
    _unlink_refused(monkeypatch, ".m.lock")  # the lock file cannot be removed either
    target = tmp_path / "ro" / "m"
    denied = f"^{target}: cannot write it \\(Permission denied\\)$"
    with pytest.raises(PermissionError, match=denied), model_dir.save_lock(target):
        model_dir.save_model_dir(target, _info(), _fitted())


def test_a_source_that_cannot_be_read_is_still_named_itself(tmp_path):
    from anomaly_inspect.screening.model_dir import save_model_dir

    missing = tmp_path / "cache" / "gone.onnx"
    with pytest.raises(FileNotFoundError, match="gone.onnx"):
        save_model_dir(tmp_path / "m", _info(), _fitted(), extra_files={"backbone/g.onnx": missing})


# --- 3: synthetic images written through the normal file write ---------------------------------

def test_png_written_as_cv2_imwrite_writes_it(tmp_path):
    from anomaly_inspect.data.synthetic import write_png

    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (37, 53, 3), np.uint8)
    mask = (rng.random((37, 53)) > 0.7).astype(np.uint8) * 255
    for name, array, as_cv2 in (("rgb", rgb, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)),
                                ("mask", mask, mask)):
        write_png(tmp_path / f"{name}.png", array)
        cv2.imwrite(str(tmp_path / f"{name}_cv2.png"), as_cv2)
        assert (tmp_path / f"{name}.png").read_bytes() == (tmp_path / f"{name}_cv2.png").read_bytes()


def _write_bytes_full(monkeypatch):
    def full(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(Path, "write_bytes", full)


def test_anomalies_on_a_full_cache_are_the_cache_entrys_one_line(tmp_path, monkeypatch):
    from anomaly_inspect.data.anomalies import AnomalyRecipe, write_anomalies

    src = tmp_path / "n.png"
    cv2.imwrite(str(src), np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8))
    _write_bytes_full(monkeypatch)
    entry = tmp_path / "tc" / "entry"
    full = f"^{entry}: no space left on the device for this cache entry"
    with pytest.raises(OSError, match=full), files.new_entry(entry) as tmp:
        write_anomalies([src], ["scar"], [None], tmp, AnomalyRecipe())


def test_a_synthetic_image_on_a_full_disk_keeps_its_errno(tmp_path, monkeypatch):
    from anomaly_inspect.data.synthetic import write_png

    _write_bytes_full(monkeypatch)
    with pytest.raises(OSError) as caught:
        write_png(tmp_path / "x.png", np.zeros((8, 8, 3), np.uint8))
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path / "x.png")


# --- 4: a thumbs folder that cannot be written stops the screening -----------------------------

@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS])
def test_a_thumbnail_folder_that_cannot_be_written_stops_keeping_the_rows(tmp_path, monkeypatch,
                                                                          code):
    from anomaly_inspect.screening import runner
    from anomaly_inspect.screening.model import ScoredImage

    images = [ScoredImage(f"/in/img{i}.png", 0.5, 0.5, False) for i in range(3)]
    inputs = {i: np.full((8, 8, 3), 100, np.uint8) for i in range(3)}
    blocked = tmp_path / "out" / runner.thumb_relpath(images[1].path)
    def fail(path):
        if path == blocked:
            raise OSError(code, os.strerror(code))

    writer, csv_path = stub_batch_writer(tmp_path, monkeypatch, fail)
    with pytest.raises(runner.DiskFullError) as caught:
        writer.write(images, inputs)
    writer.close()
    assert str(caught.value) == (
        f"{blocked}: cannot write the thumbnail of /in/img1.png ({os.strerror(code)}); the rows "
        f"screened so far are kept: make the folder writable and run again to resume")
    assert [r["path"] for r in runner.read_results(csv_path)[0]] == [images[0].path]
