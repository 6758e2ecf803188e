"""How the command line reports what went wrong, and where its caches go by default."""

from __future__ import annotations

import subprocess
import sys

import pytest

from anomaly_inspect.cli import main


def test_an_unknown_option_after_a_command_points_to_that_commands_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["screen", "m", "i", "--out", "o", "--frob", "1"])
    assert info.value.code == 2
    assert capsys.readouterr().err == ("anomaly-inspect screen: error: unrecognized arguments: "
                                       "--frob 1 (see 'anomaly-inspect screen --help')\n")
    with pytest.raises(SystemExit):  # before any command: the tool's own help
        main(["--frob"])
    assert capsys.readouterr().err == ("anomaly-inspect: error: unrecognized arguments: --frob "
                                       "(see 'anomaly-inspect --help')\n")


def test_debug_environment_variable_gives_the_traceback(tmp_path, monkeypatch, capsys):
    args = ["fit", "--train", str(tmp_path / "missing"), "--out", str(tmp_path / "m"), "--quiet"]
    assert main(args) == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'missing'}: no such file or folder\n"
    monkeypatch.setenv("ANOMALY_INSPECT_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        main(args)


def test_the_tune_cache_defaults_to_the_user_cache_the_variable_moves(tmp_path):
    code = "from anomaly_inspect.tuning.tune import tune_cache; print(tune_cache())"
    env = {"ANOMALY_INSPECT_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == str(tmp_path / "tune")  # before: /tmp/anomaly_inspect_tune, whatever was set
