"""A command stopped (Ctrl-C, SIGTERM) or failing while a generator's bar is open: the bar's
closing line comes before the one-line "interrupted" / "terminated" / "error: ..." line, not
after it (evaluate's "extract train" bar, left open by the training images' generator while
the coreset consumed a batch, closed only when that generator was collected)."""

from __future__ import annotations

import argparse
import io
import threading

import pytest

from anomaly_inspect import cli
from anomaly_inspect.progress import Progress, close_drawn, drawn_mark


def _batches():
    """The extraction loop's shape: a bar in a generator, suspended at each yield."""
    with Progress(10, "extract train") as bar:
        for _ in range(10):
            bar.update()
            yield


@pytest.mark.parametrize(("stop", "said"), [(KeyboardInterrupt, "interrupted"),
                                            (cli.Terminated, "terminated"),
                                            (OSError("disk full"), "error: disk full")])
def test_the_bar_closes_before_the_stop_line(monkeypatch, stop, said):
    log = io.StringIO()
    monkeypatch.setattr("sys.stderr", log)

    def command(args):
        batches = _batches()  # held by the stopped frame, as fit_batches holds its argument
        for i, _ in enumerate(batches):
            if i == 2:
                raise stop

    monkeypatch.setattr(cli, "_parse", lambda parser, argv: argparse.Namespace(func=command,
                                                                                quiet=True))
    cli.main(["evaluate"])
    lines = log.getvalue().splitlines()
    assert lines[-1] == said, lines
    assert "extract train" in lines[-2] and "3/10" in lines[-2], lines


def test_a_closed_bar_stays_closed(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr("sys.stderr", log)
    mark = drawn_mark()
    bar = Progress(4, "extract train")
    bar.update(2)
    close_drawn(mark)
    closed = log.getvalue()
    assert closed.splitlines()[-1].startswith("extract train") and "2/4" in closed
    bar.update()
    bar.close()
    close_drawn(mark)
    assert log.getvalue() == closed  # nothing more: no line after the stop's


def test_a_failing_command_leaves_the_callers_and_other_threads_bars_open(monkeypatch):
    """A library caller's bar, drawn before the command, and a bar another thread holds are
    not the command's: its error closes neither."""
    monkeypatch.setattr("sys.stderr", io.StringIO())
    before = Progress(10, "caller")
    before.update(3)
    drawn, release = threading.Event(), threading.Event()
    other: list[Progress] = []

    def elsewhere():
        other.append(Progress(5, "other thread"))
        other[0].update()
        drawn.set()
        release.wait(5)

    worker = threading.Thread(target=elsewhere)
    worker.start()
    drawn.wait(5)

    def command(args):
        for _ in _batches():
            raise OSError("disk full")

    monkeypatch.setattr(cli, "_parse", lambda parser, argv: argparse.Namespace(func=command,
                                                                                quiet=True))
    assert cli.main(["evaluate"]) == 1
    release.set()
    worker.join()
    before.update(7)
    other[0].update(4)
    assert before._bar.n == 10 and other[0]._bar.n == 5
    before.close()
    other[0].close()
