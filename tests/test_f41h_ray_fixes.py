"""Ray engine fixes: a never-saved model leaves no copy behind on the driver, bench-scale's
start-up counts from the run's process start, and ``--address auto`` without a cluster is refused
before --out is touched. No Ray instance is started here."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import pytest

from anomaly_inspect.pipeline import LocalEngine
from anomaly_inspect.screening import remote, scale_bench
from anomaly_inspect.screening.model_dir import MODEL_JSON, ModelInfo, write_checksums


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


_STUB = """
import time, types
import anomaly_inspect.screening.model as model_module
class _Model:
    extractor = types.SimpleNamespace(batch_size=2)
    def iter_score(self, paths, **kwargs):
        yield types.SimpleNamespace(images=[types.SimpleNamespace(error="") for _ in paths])
model_module.load_model = lambda directory, batch_size=None: _Model()
time.sleep(1.5)  # the heavy imports of a real run
"""


def test_bench_scale_start_up_counts_from_the_runs_process_start(tmp_path, monkeypatch):
    """The start-up figure began after the run's imports (torch, the model module), while the
    docs say 'process start to the first scored batch'."""
    (tmp_path / "stub.py").write_text(_STUB, encoding="utf-8")

    def run_child(call, grace=scale_bench.STOP_GRACE_S):
        code = f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import stub; {call}"
        return subprocess.run([sys.executable, "-c", scale_bench._CHILD_PREAMBLE + code],
                              capture_output=True, text=True, timeout=120)

    monkeypatch.setattr(scale_bench, "run_child", run_child)
    rows = scale_bench.bench_scale(tmp_path / "m", [tmp_path / "a.png"], [("local", None)],
                                   tmp_path / "w", progress=False)
    assert "error" not in rows[0], rows[0]
    assert rows[0]["startup_s"] >= 1.5 and rows[0]["total_s"] >= rows[0]["startup_s"]


@pytest.mark.parametrize("found", [None, "127.0.0.1:1"])
def test_address_auto_without_a_cluster_is_refused_when_the_engine_is_made(monkeypatch, found):
    """None: Ray finds no instance; 127.0.0.1:1: the last `ray start`'s address, stopped since
    (ray.init would retry it forever). screen makes the engine before it touches --out; the
    cluster was looked for only when the first batch was sent, after results.csv was begun."""
    import argparse
    import os
    import time

    if os.environ.get("CI"):  # CI installs the ray extra: without it, the test fails there
        import ray._private.services as services
    else:
        services = pytest.importorskip("ray._private.services")
    from anomaly_inspect.commands.common import engine_from_args
    from anomaly_inspect.pipeline.ray_engine import EngineFailed

    def resolve(addr, temp_dir):
        if found is None:
            raise ConnectionError("Could not find any running Ray instance.\nPlease specify...")
        return found

    monkeypatch.setattr(services, "get_ray_address_from_environment", resolve)
    args = argparse.Namespace(engine="ray", address="auto", workers=None, shared_storage=True)
    start = time.monotonic()
    with pytest.raises(EngineFailed, match=r"^cannot reach the Ray cluster at auto \(") as err:
        engine_from_args(args)
    assert "\n" not in str(err.value) and time.monotonic() - start < 5
    if found:
        assert "127.0.0.1:1" in str(err.value)


def test_address_auto_with_a_cluster_listening_is_accepted(monkeypatch):
    """The address Ray finds for auto is only probed: a listening one makes the engine (Ray
    connects when the first map starts)."""
    import os
    import socket

    if os.environ.get("CI"):  # CI installs the ray extra: without it, the test fails there
        import ray._private.services as services
    else:
        services = pytest.importorskip("ray._private.services")
    from anomaly_inspect.pipeline import make_engine

    with socket.create_server(("127.0.0.1", 0)) as server:
        found = f"127.0.0.1:{server.getsockname()[1]}"
        monkeypatch.setattr(services, "get_ray_address_from_environment", lambda a, t: found)
        engine = make_engine("ray", address="auto")
    assert engine.address == "auto"  # ray.init still resolves it itself
