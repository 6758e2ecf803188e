"""The runtimes' usage telemetry stays off in anomaly-inspect's process. ONNX Runtime's Linux
builds write a device id under ``~/.cache/Microsoft`` and a session file in the temporary folder
at the first session (``ORT_DISABLE_TELEMETRY``, set by features/runtime.py); OpenVINO's Python
tools, at ``import openvino`` and at every ``convert_model``, write a client id under ``~/intel``
and send from a process forked on a worker thread (``openvino_telemetry_declined``)."""

import os
import subprocess
import sys

import pytest

from anomaly_inspect.features.runtime import runtime_available

needs_openvino = pytest.mark.skipif(not runtime_available("openvino") and not os.environ.get("CI"),
                                    reason="openvino (in the dev / openvino extras) not installed")

TINY_GRAPH = """
import onnx
from onnx import TensorProto, helper
def tiny_graph(path):
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3, 4, 4]) for n in "xy"]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", io[:1], io[1:])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
"""

AUDIT = """
import sys
seen = set()
sys.addaudithook(lambda e, a: seen.add(e) if e in (
    "os.fork", "socket.getaddrinfo", "socket.connect", "urllib.Request") else None)
"""


def _fresh(code: str, home, **env: str) -> str:
    """stdout of ``code`` in a new interpreter, as from a user's shell (no ``CI``), with a
    scratch home and temporary folder, which the caller then checks are still empty."""
    (home / "tmp").mkdir()
    base = {k: v for k, v in os.environ.items() if k not in ("CI", "ORT_DISABLE_TELEMETRY")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=120, env={**base, "HOME": str(home), "TMPDIR": str(home / "tmp"),
                                           **env})
    return out.stdout.strip()


def _left(home) -> list[str]:
    return sorted(p.relative_to(home).as_posix() for p in home.rglob("*") if p.name != "tmp")


def test_onnxruntime_sessions_leave_nothing_in_home_or_tmp(tmp_path):
    code = TINY_GRAPH + """
import os
import anomaly_inspect.features.runtime
import onnxruntime as ort
tiny_graph(os.environ["TMPDIR"] + "/g.onnx")
ort.InferenceSession(os.environ["TMPDIR"] + "/g.onnx", providers=["CPUExecutionProvider"])
os.remove(os.environ["TMPDIR"] + "/g.onnx")
print(os.environ["ORT_DISABLE_TELEMETRY"])
"""
    assert _fresh(code, tmp_path) == "1"
    assert _left(tmp_path) == []  # no .cache/Microsoft/..., no tmp/.ses
    (tmp_path / "kept").mkdir()
    assert _fresh(code, tmp_path / "kept", ORT_DISABLE_TELEMETRY="0") == "0"  # the caller's is kept


@needs_openvino
@pytest.mark.parametrize("ci", [None, "false"])
def test_openvino_loads_with_its_telemetry_declined_and_the_environment_as_it_was(tmp_path, ci):
    code = AUDIT + """
import os, time
from anomaly_inspect.features.runtime import load_openvino
load_openvino()
time.sleep(1)  # the telemetry sends from a worker thread
import openvino_telemetry as tm
print(tm.Telemetry().consent, os.environ.get("CI"), sorted(seen))
"""
    env = {} if ci is None else {"CI": ci}
    assert _fresh(code, tmp_path, **env) == f"False {ci} []"  # no fork, look-up or request
    assert _left(tmp_path) == []  # no ~/intel: no client id, no usage count


@needs_openvino
def test_an_openvino_export_sends_nothing(tmp_path):
    """``convert_model`` starts the telemetry again (export --format openvino)."""
    code = TINY_GRAPH + AUDIT + """
import os, time
from pathlib import Path
from anomaly_inspect.screening.deploy import _to_openvino
tmp = Path(os.environ["TMPDIR"])
tiny_graph(str(tmp / "g.onnx"))
print(_to_openvino(tmp / "g.onnx", tmp / "g.xml", 4, 4, tmp / "g.onnx"), end=" ")
time.sleep(1)
for p in tmp.iterdir():
    p.unlink()
print(os.environ.get("CI"), sorted(seen))
"""
    assert _fresh(code, tmp_path) == "0.0 None []"
    assert _left(tmp_path) == []
