"""A worker scores with the model the driver loaded, or refuses: the task carries the driver's
model fingerprint (sha256 of its checksums.json) and the worker-side load checks it. No Ray:
the load itself is stubbed, the check is what is tested."""

from __future__ import annotations

import json
import tempfile
import types
from pathlib import Path

import pytest

from anomaly_inspect.pipeline import LocalEngine
from anomaly_inspect.screening import remote
from anomaly_inspect.screening.model_dir import MODEL_JSON, ModelInfo, write_checksums


def _info(created: str) -> ModelInfo:
    return ModelInfo(config={"seed": 0}, backbone={"name": "toy"}, calibration={"threshold": 1.0},
                     train_images=["a.png"], calibration_images=["b.png"], created=created)


def _write(directory: Path, info: ModelInfo) -> None:
    directory.mkdir(exist_ok=True)
    (directory / MODEL_JSON).write_text(json.dumps(info.to_dict()), encoding="utf-8")
    (directory / "scorer").mkdir(exist_ok=True)
    (directory / "scorer" / "bank.bin").write_bytes(info.created.encode())
    write_checksums(directory)


def _loaded(directory: Path, weights: str | None = None):
    """What load_model gives the driver, as far as model_source reads it."""
    info = ModelInfo.from_dict(json.loads((directory / MODEL_JSON).read_text()), "x")
    transform = types.SimpleNamespace(max_pixels=1000)
    cfg = types.SimpleNamespace(backbone=types.SimpleNamespace(weights=weights))
    return types.SimpleNamespace(info=info, directory=directory, cfg=cfg,
                                 extractor=types.SimpleNamespace(batch_size=4, transform=transform))


class _Engine(LocalEngine):
    def __init__(self, shared_storage: bool):
        self.shared_storage = shared_storage


@pytest.fixture
def loads(monkeypatch):
    """Stub load_model: records the directory and overrides; ``during`` runs inside it."""
    calls = types.SimpleNamespace(args=[], during=None)

    def fake(directory, **overrides):
        calls.args.append((directory, overrides))
        if calls.during:
            calls.during()
        return "model"

    monkeypatch.setattr(remote, "load_model", fake)
    return calls


@pytest.mark.parametrize("shared", [True, False])
def test_unchanged_model_loads_with_the_drivers_overrides(tmp_path, loads, shared):
    _write(tmp_path / "m", _info("2024-01-01T00:00:00"))
    source = remote.model_source(_loaded(tmp_path / "m"), _Engine(shared))
    assert source["model_fingerprint"] is not None
    assert remote.load_remote_model(source.get("model_dir"), source.get("model_files"),
                                    source["overrides"], source.get("model_origin"),
                                    source["model_fingerprint"]) == "model"
    assert loads.args[0][1] == {"batch_size": 4, "max_pixels": 1000}


def test_a_model_replaced_after_the_driver_loaded_it_is_refused_by_the_worker(tmp_path, loads):
    _write(tmp_path / "m", _info("2024-01-01T00:00:00"))
    source = remote.model_source(_loaded(tmp_path / "m"), _Engine(True))
    _write(tmp_path / "m", _info("2024-02-02T00:00:00"))  # another fit, same folder
    with pytest.raises(ValueError, match="replaced or changed since the driver loaded it") as err:
        remote.load_remote_model(source["model_dir"], None, source["overrides"], None,
                                 source["model_fingerprint"])
    assert "\n" not in str(err.value) and str(tmp_path / "m") in str(err.value)
    assert not loads.args  # refused before loading


def test_a_model_replaced_while_the_worker_loads_it_is_refused(tmp_path, loads):
    _write(tmp_path / "m", _info("2024-01-01T00:00:00"))
    source = remote.model_source(_loaded(tmp_path / "m"), _Engine(True))
    loads.during = lambda: _write(tmp_path / "m", _info("2024-02-02T00:00:00"))
    with pytest.raises(ValueError, match="replaced or changed since the driver loaded it"):
        remote.load_remote_model(source["model_dir"], None, source["overrides"], None,
                                 source["model_fingerprint"])


@pytest.mark.parametrize("shared", [True, False])
def test_a_model_replaced_before_the_task_is_made_is_refused_on_the_driver(tmp_path, loads, shared):
    _write(tmp_path / "m", _info("2024-01-01T00:00:00"))
    model = _loaded(tmp_path / "m")
    _write(tmp_path / "m", _info("2024-02-02T00:00:00"))
    with pytest.raises(ValueError, match="replaced or changed since this run loaded it"):
        remote.model_source(model, _Engine(shared))


@pytest.mark.parametrize("weights, shared, refused", [
    ("/models/backbone.pth", False, True), ("/models/backbone.pth", True, False),
    ("random", False, False), (None, False, False)])
def test_a_weights_file_is_refused_on_workers_without_shared_storage(tmp_path, weights, shared,
                                                                     refused):
    """The workers build the backbone from the model's weights path; --no-shared-storage ships
    only the model's files, so the file would not be there (or be another one)."""
    _write(tmp_path / "m", _info("2024-01-01T00:00:00"))
    model = _loaded(tmp_path / "m", weights)
    if refused:
        with pytest.raises(ValueError, match=r"backbone weights /models/backbone.pth: .*"
                                             r"--no-shared-storage"):
            remote.model_source(model, _Engine(shared))
    else:
        remote.model_source(model, _Engine(shared))


# A never-saved model is shipped without leaving a copy behind on the driver.
def _unsaved_model():
    """A model that was never saved, as far as model_source reads it (``save`` writes a
    model.json, a bank and the checksums)."""
    info = ModelInfo(config={"seed": 0}, backbone={"name": "toy"}, calibration={},
                     train_images=["a.png"], calibration_images=[])

    def save(directory):
        directory = Path(directory)
        (directory / "scorer").mkdir(parents=True)
        (directory / MODEL_JSON).write_text(json.dumps(info.to_dict()), encoding="utf-8")
        (directory / "scorer" / "bank.bin").write_bytes(b"\0" * 1000)
        write_checksums(directory)
        return directory

    return types.SimpleNamespace(
        info=info, directory=None, save=save,
        cfg=types.SimpleNamespace(backbone=types.SimpleNamespace(weights=None)),
        extractor=types.SimpleNamespace(batch_size=4,
                                        transform=types.SimpleNamespace(max_pixels=1000)))


def test_a_never_saved_model_is_shipped_without_leaving_a_copy_behind(tmp_path, monkeypatch):
    """Each call saved a full copy under /tmp, removed only at exit (30-45 MB at 320 px)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model = _unsaved_model()
    for _ in range(2):
        source = remote.model_source(model, LocalEngine())
        files = source["model_files"].get()
        assert set(files) == {MODEL_JSON, "checksums.json", "scorer/bank.bin"}
        assert source["model_fingerprint"] is not None
        assert list(tmp_path.iterdir()) == []
