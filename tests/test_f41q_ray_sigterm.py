"""SIGTERM while the Ray engine starts: Ray's own handler (installed by ``ray.init``) exits
15; the engine stops what Ray started and raises the CLI's termination (143, "terminated")."""

from __future__ import annotations

import signal
import types

import pytest


class _TermDuringInit:
    """A ``ray`` whose ``init`` is cut by SIGTERM under Ray's handler (``sys.exit(signum)``)."""

    def __init__(self):
        self.shutdowns = 0

    def is_initialized(self):
        return False

    def init(self, **kwargs):
        signal.signal(signal.SIGTERM, lambda signum, frame: None)  # Ray's, replacing ours
        raise SystemExit(signal.SIGTERM)

    def shutdown(self):
        self.shutdowns += 1


def _engine(ray):
    from anomaly_inspect.pipeline.ray_engine import RayEngine

    engine = RayEngine.__new__(RayEngine)
    engine.ray, engine.address = ray, None
    return engine


def test_sigterm_while_ray_starts_is_the_clis_termination_and_ray_is_stopped():
    from anomaly_inspect.cli import Terminated, _raise_terminated

    ray = _TermDuringInit()
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        with pytest.raises(Terminated):
            _engine(ray).start()
        assert ray.shutdowns == 1
        assert signal.getsignal(signal.SIGTERM) is _raise_terminated
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_the_cli_says_terminated_and_exits_143(monkeypatch, capsys):
    from anomaly_inspect import cli

    ray = _TermDuringInit()

    def run(args):
        _engine(ray).start()

    monkeypatch.setattr(cli, "_main", lambda argv: run(argv))
    assert cli.main(["screen"]) == 143
    assert capsys.readouterr().err == "terminated\n"
    assert ray.shutdowns == 1


def test_without_a_handler_of_ours_ray_s_exit_stands():
    ray = _TermDuringInit()
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with pytest.raises(SystemExit) as caught:
            _engine(ray).start()
        assert caught.value.code == signal.SIGTERM and ray.shutdowns == 1
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_another_failure_of_ray_init_is_raised_as_it_was():
    ray = types.SimpleNamespace(is_initialized=lambda: False, shutdown=lambda: None)

    def init(**kwargs):
        raise ConnectionError("no cluster")

    ray.init = init
    with pytest.raises(ConnectionError, match="no cluster"):
        _engine(ray).start()
