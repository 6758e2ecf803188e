"""SIGTERM stops a command like Ctrl-C: cleanups run, the exit code says what happened."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

SLOW_COMMAND = textwrap.dedent("""
    import sys, time
    from anomaly_inspect import cli, files

    def slow(argv):
        with files.replacing(sys.argv[1]) as tmp:
            tmp.write_text("half of a record")
            print("writing", flush=True)
            time.sleep(60)
        return 0

    cli._main = slow
    sys.exit(cli.main([]))
""")


def test_sigterm_removes_the_temporary_and_exits_143(tmp_path):
    target = tmp_path / "record.json"
    target.write_text("the old record")
    proc = subprocess.Popen([sys.executable, "-c", SLOW_COMMAND, str(target)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    assert len(list(tmp_path.iterdir())) == 2  # the record and the temporary beside it
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143 and err.strip() == "terminated"
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]
    assert target.read_text() == "the old record"


def test_library_info_on_the_root_logger_is_dropped_ours_kept():
    import logging

    from anomaly_inspect.cli import _quiet_root_info

    def record(name, level):
        return logging.LogRecord(name, level, __file__, 1, "msg", None, None)

    assert not _quiet_root_info(record("root", logging.INFO))  # onnxruntime's quantiser
    assert _quiet_root_info(record("root", logging.WARNING))
    assert _quiet_root_info(record("anomaly_inspect.features.runtime", logging.INFO))


STARTING = textwrap.dedent("""
    import sys, threading, time
    from anomaly_inspect import cli

    def slow_imports():
        print("importing", flush=True)
        time.sleep(60)

    def joined_at_exit():  # says so once main has returned (its Ctrl-C handling is set up)
        time.sleep(0.5)
        print("summary", flush=True)
        time.sleep(60)

    def done_then_slow_shutdown(argv):
        import atexit
        atexit.register(print, "cleaned up", flush=True)  # e.g. Ray's shutdown: still runs
        threading.Thread(target=joined_at_exit).start()
        return 0

    def done_then_slow_exit_handler(argv):
        import atexit

        def slow():  # e.g. Ray's shutdown, interrupted while it runs: it finishes, once
            print("handler start", flush=True)
            time.sleep(2)
            print("handler end", flush=True)

        atexit.register(slow)
        print("summary", flush=True)
        return 0

    if sys.argv[1] == "start-up":
        cli.build_parser = slow_imports
    elif sys.argv[1] == "shutdown":
        cli._main = done_then_slow_shutdown
    else:
        cli._main = done_then_slow_exit_handler
    sys.exit(cli.main())
""")


def test_ctrl_c_during_start_up_or_shutdown_is_interrupted_and_130():
    for when in ("start-up", "shutdown"):
        proc = subprocess.Popen([sys.executable, "-c", STARTING, when], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() in ("importing", "summary")
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert (proc.returncode, err.strip()) == (130, "interrupted"), when
        assert ("cleaned up" in out) == (when == "shutdown")


def test_ctrl_c_while_an_exit_handler_runs_lets_it_finish_once_then_130():
    """Before, the handlers were run again from inside the interrupted one (Ray's shutdown
    re-entered half-way), and the outer run never finished."""
    proc = subprocess.Popen([sys.executable, "-c", STARTING, "exit-handler"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "summary"
    assert proc.stdout.readline().strip() == "handler start"
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, err.strip(), out.split()) == (130, "interrupted", ["handler", "end"])
