"""The flat public API: every exported name resolves, lazily; ``import anomaly_inspect`` is cheap."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import anomaly_inspect
from anomaly_inspect.scorers import available_scorers, get_scorer_class

SRC = Path(__file__).resolve().parents[1] / "inspect"


@pytest.mark.parametrize("name", anomaly_inspect.__all__)
def test_every_exported_name_resolves_to_its_definition(name):
    value = getattr(anomaly_inspect, name)
    assert name in dir(anomaly_inspect)
    if name != "__version__":
        module, attr = anomaly_inspect._EXPORTS[name].split(":")
        assert value is getattr(importlib.import_module(f"anomaly_inspect.{module}"), attr)
        assert getattr(value, "__name__", name) == name


def test_every_registered_scorer_is_exported():
    for key in available_scorers():
        cls = get_scorer_class(key)
        assert getattr(anomaly_inspect, cls.__name__) is cls, key


def test_the_documented_names_are_exported():
    from anomaly_inspect import (
        Features,
        ModelConfig,
        PatchCore,
        ScoreResult,
        SoftPatch,
        TailedCore,
        evaluate,
        fit,
        load_folders,
        load_model,
        load_mvtec,
    )

    documented = (Features, ModelConfig, PatchCore, ScoreResult, SoftPatch, TailedCore, evaluate,
                  fit, load_folders, load_model, load_mvtec)
    assert all(callable(v) and v.__name__ in anomaly_inspect.__all__ for v in documented)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'PatchKore'"):
        anomaly_inspect.PatchKore  # noqa: B018
    with pytest.raises(ImportError):
        from anomaly_inspect.screening import load  # noqa: F401 - one name: load_model


def _fresh_python(code: str) -> str:
    """stdout of ``code`` run by a new interpreter (nothing imported yet)."""
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(SRC)},
                          capture_output=True, text=True, check=True).stdout.strip()


def test_import_does_not_import_torch():
    code = ("import sys, anomaly_inspect; "
            "print(sorted(m for m in ('torch', 'faiss', 'timm', 'cv2', 'sklearn') if m in sys.modules))")
    assert _fresh_python(code) == "[]"


def test_core_types_and_scorer_interface_import_without_the_backbone_stack():
    """``Features`` / ``ScoreResult`` / ``FitContext`` and the scorer base are numpy only."""
    code = ("import sys; from anomaly_inspect import Features, FitContext, ScoreResult; "
            "import anomaly_inspect.scorers.base; "
            "print(sorted(m for m in ('torch', 'timm', 'albumentations', 'cv2') if m in sys.modules))")
    assert _fresh_python(code) == "[]"


def _python_without(variable: str, code: str, **env: str) -> str:
    """stdout of ``code`` in a new interpreter whose environment lacks ``variable``."""
    base = {k: v for k, v in os.environ.items() if k != variable}
    return subprocess.run([sys.executable, "-c", code], env={**base, "PYTHONPATH": str(SRC), **env},
                          capture_output=True, text=True, check=True).stdout.strip()


def test_the_library_never_reaches_the_network():
    """Imported without the command line (which sets nothing for it), the library keeps
    albumentations from asking PyPI for a newer version: no name look-up, connection or
    request while importing it and transforming an image."""
    code = ("import sys; seen = []; sys.addaudithook(lambda e, a: seen.append(e) if e in "
            "('socket.getaddrinfo', 'socket.connect', 'urllib.Request') else None); "
            "import numpy as np, anomaly_inspect; import anomaly_inspect.screening.model; "
            "from anomaly_inspect.data.transforms import TransformConfig, build_transform; "
            "x = build_transform(TransformConfig(image_size=32))(np.zeros((40, 50, 3), np.uint8)); "
            "print(x[0].shape, seen)")
    assert _python_without("NO_ALBUMENTATIONS_UPDATE", code) == "(3, 32, 32) []"


def test_the_only_environment_writes_at_import_are_the_network_guards():
    """Library modules set two variables, each keeping a value the caller set:
    NO_ALBUMENTATIONS_UPDATE (data/transforms.py, before albumentations' only import) and
    ORT_DISABLE_TELEMETRY (features/runtime.py, which every onnxruntime import follows);
    HF_HUB_OFFLINE is left alone (the weights are found offline without it); other variables
    are set by cli.py only, but for features/runtime.py's CI while OpenVINO imports or converts,
    restored after (``openvino_telemetry_declined``; tests/test_library_telemetry.py)."""
    code = ("import os; before = dict(os.environ); import anomaly_inspect.features.backbone, "
            "anomaly_inspect.data.transforms, anomaly_inspect.screening.model; "
            "print(os.environ.get('NO_ALBUMENTATIONS_UPDATE'), os.environ.get('ORT_DISABLE_TELEMETRY'), "
            "sorted(k for k in ('HF_HUB_OFFLINE', 'NO_ALBUMENTATIONS_UPDATE', 'ORT_DISABLE_TELEMETRY') "
            "if os.environ.get(k) != before.get(k)))")
    base = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={k: v for k, v in base.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
                         | {"PYTHONPATH": str(SRC)}).stdout.strip()
    assert out == "1 1 ['NO_ALBUMENTATIONS_UPDATE', 'ORT_DISABLE_TELEMETRY']"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=base | {"PYTHONPATH": str(SRC), "NO_ALBUMENTATIONS_UPDATE": "true",
                                     "ORT_DISABLE_TELEMETRY": "0"}).stdout.strip()
    assert out == "true 0 []"
    writers = [p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py") if p.name != "cli.py" and
               ("os.environ.setdefault" in p.read_text() or "os.environ[" in p.read_text())]
    assert sorted(writers) == ["anomaly_inspect/data/transforms.py", "anomaly_inspect/features/runtime.py"]
