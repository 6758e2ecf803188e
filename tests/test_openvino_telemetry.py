"""OpenVINO's usage telemetry stays off in anomaly-inspect's process (``load_openvino``):
``import openvino`` alone, in a shell without ``CI``, writes a client id under ``~/intel`` and
sends an event from a process forked on a worker thread."""

import os
import subprocess
import sys

import pytest

from anomaly_inspect.features.runtime import runtime_available

pytestmark = pytest.mark.skipif(not runtime_available("openvino") and not os.environ.get("CI"),
                                reason="openvino (in the dev / openvino extras) not installed")

CODE = """
import os, sys, time
seen = set()
sys.addaudithook(lambda e, a: seen.add(e) if e in (
    "os.fork", "socket.getaddrinfo", "socket.connect", "urllib.Request") else None)
from anomaly_inspect.features.runtime import load_openvino
load_openvino()
time.sleep(1)  # the telemetry sends from a worker thread
import openvino_telemetry as tm
print(tm.Telemetry().consent, os.environ.get("CI"), sorted(seen))
"""


@pytest.mark.parametrize("ci", [None, "false"])
def test_openvino_loads_with_its_telemetry_declined_and_the_environment_as_it_was(tmp_path, ci):
    env = {k: v for k, v in os.environ.items() if k != "CI"}  # a user's shell
    env["HOME"] = str(tmp_path)
    if ci is not None:
        env["CI"] = ci
    out = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == f"False {ci} []"  # no fork, no name look-up, no request
    assert list(tmp_path.iterdir()) == []  # no ~/intel: no client id, no usage count
