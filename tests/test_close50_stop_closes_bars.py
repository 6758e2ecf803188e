"""A command stopped (Ctrl-C, SIGTERM) or failing while a generator's bar is open: the bar's
closing line comes before the one-line "interrupted" / "terminated" / "error: ..." line, not
after it (evaluate's "extract train" bar, left open by the training images' generator while
the coreset consumed a batch, closed only when that generator was collected)."""

from __future__ import annotations

import argparse
import io

import pytest

from anomaly_inspect import cli
from anomaly_inspect.progress import Progress, close_drawn


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
    bar = Progress(4, "extract train")
    bar.update(2)
    close_drawn()
    closed = log.getvalue()
    assert closed.splitlines()[-1].startswith("extract train") and "2/4" in closed
    bar.update()
    bar.close()
    close_drawn()
    assert log.getvalue() == closed  # nothing more: no line after the stop's
