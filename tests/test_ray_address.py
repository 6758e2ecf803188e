"""--address checks before anything runs or is written: a port that accepts TCP connections
but where no Ray answers (ray.init retried it for ever), and forms Ray does not read (screen
wrote --out before Ray refused them). Only the GCS test uses the shared local Ray instance."""

from __future__ import annotations

import socket
import threading
import time

import pytest

pytest.importorskip("ray")

from anomaly_inspect.cli import main  # noqa: E402
from anomaly_inspect.pipeline import make_engine  # noqa: E402
from anomaly_inspect.pipeline.ray_engine import (  # noqa: E402
    PROBE_S,
    EngineFailed,
    RayEngine,
    check_reachable,
)


@pytest.fixture
def silent_port():
    """A port that accepts connections and never sends a byte (not a Ray GCS)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


@pytest.fixture
def http1_port():
    """A port that answers, but not as a gRPC server does (an HTTP/1 server)."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.recv(64)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


@pytest.mark.parametrize("form", ["{port}", "ray://127.0.0.1:{port}"])
def test_a_port_where_no_ray_answers_is_refused_in_seconds(silent_port, form):
    """ray.init retried a silent port for ever (the repro was killed after 255 s)."""
    address = form.format(port=silent_port)
    address = address if "://" in address else f"127.0.0.1:{address}"
    start = time.monotonic()
    with pytest.raises(EngineFailed) as err:
        make_engine("ray", address=address)
    assert str(err.value) == (f"cannot connect to the Ray cluster at {address}: no Ray answered "
                              f"within {PROBE_S:g} s")
    assert time.monotonic() - start < PROBE_S + 2


def test_a_port_answering_another_protocol_is_refused(http1_port):
    address = f"127.0.0.1:{http1_port}"
    with pytest.raises(EngineFailed, match=rf"^cannot connect to the Ray cluster at {address}: "
                                           r"what answers there is not Ray \(no gRPC handshake\)$"):
        check_reachable(address)


def test_start_probes_for_ray_before_ray_init(silent_port):
    """The engine made earlier may meet a cluster gone silent since: start checks again."""
    class NotInitialized:
        def is_initialized(self):
            return False

        def init(self, **kwargs):
            raise AssertionError("ray.init reached")

    engine = RayEngine.__new__(RayEngine)
    engine.ray, engine.address = NotInitialized(), f"127.0.0.1:{silent_port}"
    with pytest.raises(EngineFailed, match="no Ray answered"):
        engine.start()


def test_a_ray_gcs_passes_the_probe_at_once(ray_session):
    """Ray's GCS opens an HTTP/2 session (it is a gRPC server) well within the probe's time."""
    address = ray_session.get_runtime_context().gcs_address
    start = time.monotonic()
    check_reachable(address)
    assert time.monotonic() - start < 0.5


@pytest.mark.parametrize("address", ["garbage", "localhost", "head:port", "ray://head", ":6379"])
def test_an_address_of_no_known_form_is_refused_naming_the_forms(address):
    with pytest.raises(EngineFailed) as err:
        make_engine("ray", address=address)
    assert str(err.value) == (f"--address {address}: not a Ray address (auto, host:port, "
                              f"ray://host:port)")


@pytest.mark.parametrize("address", ["garbage", "silent"])
def test_screen_refuses_a_bad_address_before_writing_out(tmp_path, capsys, silent_port, address):
    """screen wrote results.csv and screen.json in --out before Ray refused ``garbage``."""
    address = f"127.0.0.1:{silent_port}" if address == "silent" else address
    model = tmp_path / "model"
    model.mkdir()
    (tmp_path / "a.png").write_bytes(b"")
    out = tmp_path / "out"
    code = main(["screen", str(model), str(tmp_path / "a.png"), "--out", str(out),
                 "--engine", "ray", "--address", address, "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert err[0].startswith("error: ") and address in err[0]
    assert not out.exists()


def test_address_auto_answering_as_grpc_is_accepted(monkeypatch):
    """The address Ray finds for auto is probed: one that answers the HTTP/2 preface with a
    SETTINGS frame, as Ray's GCS does, makes the engine (Ray connects when the first map
    starts). A port that only listens is refused (above)."""
    import ray._private.services as services

    with socket.create_server(("127.0.0.1", 0)) as server:
        def answer():
            conn, _ = server.accept()
            with conn:
                conn.recv(64)
                conn.sendall(bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))  # an empty SETTINGS frame

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        found = f"127.0.0.1:{server.getsockname()[1]}"
        monkeypatch.setattr(services, "get_ray_address_from_environment", lambda a, t: found)
        engine = make_engine("ray", address="auto")
        thread.join(5)
    assert engine.address == "auto"  # ray.init still resolves it itself


def test_ray_address_from_the_environment_is_probed(silent_port, monkeypatch):
    """Without --address ray.init joins RAY_ADDRESS: a silent one hung screen after it had
    written --out. It is probed as --address is, and the refusal says where it came from."""
    address = f"127.0.0.1:{silent_port}"
    monkeypatch.setenv("RAY_ADDRESS", address)
    start = time.monotonic()
    with pytest.raises(EngineFailed) as err:
        make_engine("ray")
    assert str(err.value) == (f"cannot connect to the Ray cluster at {address} (from RAY_ADDRESS): "
                              f"no Ray answered within {PROBE_S:g} s")
    assert time.monotonic() - start < PROBE_S + 2
    monkeypatch.setenv("RAY_ADDRESS", "garbage")
    with pytest.raises(EngineFailed, match=r"^RAY_ADDRESS=garbage: not a Ray address \(auto, "):
        make_engine("ray")


def test_screen_refuses_a_silent_ray_address_env_before_writing_out(tmp_path, capsys, silent_port,
                                                                    monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{silent_port}")
    model = tmp_path / "model"
    model.mkdir()
    (tmp_path / "a.png").write_bytes(b"")
    out = tmp_path / "out"
    start = time.monotonic()
    code = main(["screen", str(model), str(tmp_path / "a.png"), "--out", str(out),
                 "--engine", "ray", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert time.monotonic() - start < 10
    assert code == 1 and len(err) == 1
    assert err[0].startswith("error: ") and "(from RAY_ADDRESS): no Ray answered" in err[0]
    assert not out.exists()
