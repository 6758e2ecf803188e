"""SIGTERM after the command returned (the process exiting) stops it like Ctrl-C does: the exit
handlers (temporary copies removed, Ray's run folders) still run, then "terminated" and 143."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

EXITING = textwrap.dedent("""
    import atexit, sys, threading, time
    from anomaly_inspect import cli

    def joined_at_exit():  # says so once the main thread has finished (main has returned)
        while threading.main_thread().is_alive():
            time.sleep(0.01)
        print("waiting", flush=True)
        time.sleep(60)

    def slow_handler():  # e.g. Ray's shutdown, stopped while it runs: it finishes, once
        print("handler start", flush=True)
        time.sleep(2)
        print("handler end", flush=True)

    def done_then_slow_shutdown(argv):
        atexit.register(print, "cleaned up", flush=True)
        threading.Thread(target=joined_at_exit).start()
        return 0

    def done_then_slow_exit_handler(argv):
        atexit.register(slow_handler)
        return 0

    cli._main = done_then_slow_shutdown if sys.argv[1] == "threads" else done_then_slow_exit_handler
    sys.exit(cli.main())
""")


def _stopped(when: str, first_line: str) -> tuple[int, str, str]:
    proc = subprocess.Popen([sys.executable, "-c", EXITING, when], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == first_line
    os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, err.strip(), out


def test_sigterm_while_waiting_for_threads_at_exit_runs_the_handlers_then_143():
    """Before, the default SIGTERM action ended the process here (-15), handlers skipped."""
    code, err, out = _stopped("threads", "waiting")
    assert (code, err, out.strip()) == (143, "terminated", "cleaned up")


def test_sigterm_while_an_exit_handler_runs_lets_it_finish_once_then_143():
    code, err, out = _stopped("exit-handler", "handler start")
    assert (code, err, out.split()) == (143, "terminated", ["handler", "end"])


def test_a_library_caller_gets_its_sigterm_handler_back():
    from anomaly_inspect import cli

    previous = signal.getsignal(signal.SIGTERM)
    assert cli.main([]) == 2  # no command: the help
    assert signal.getsignal(signal.SIGTERM) is previous


def test_torch_info_is_off_before_torch_loads():
    """A command stopped while torch loaded printed torch's INFO (its FakeTensor cache stats)
    after "interrupted": torch's own setup, which keeps it at WARNING, had not run yet."""
    probe = ("import logging, sys\n"
             "from anomaly_inspect import cli\n"
             "cli._setup_logging(quiet=False)\n"
             "assert 'torch' not in sys.modules\n"
             "print(logging.getLogger('torch._subclasses.fake_tensor').isEnabledFor(logging.INFO),"
             " logging.getLogger('anomaly_inspect.cli').isEnabledFor(logging.INFO))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["False", "True"]


def test_a_library_callers_torch_log_level_is_kept(monkeypatch):
    """``cli.main([...])`` from Python leaves a level the caller set on the "torch" logger."""
    import logging

    from anomaly_inspect import cli

    torch_log = logging.getLogger("torch")
    monkeypatch.setattr(torch_log, "level", logging.DEBUG)
    cli._setup_logging(quiet=True)
    assert torch_log.level == logging.DEBUG
