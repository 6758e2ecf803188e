"""Progress: a terminal gets tqdm's redrawn bar; a log file or a pipe gets plain lines."""

from __future__ import annotations

import io

from anomaly_inspect.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_newline_terminated_lines_with_count_rate_and_eta(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr("sys.stderr", log)
    with Progress(50, "extract") as bar:
        for _ in range(50):
            bar.update()
            bar.grow(0)
    text = log.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    # one line at the start, one at close: 50 quick updates do not write a line each
    assert len(lines) == 2, lines
    assert lines[0].startswith("extract:") and "0/50" in lines[0]
    assert "50/50" in lines[-1] and "img/s" in lines[-1] and "<00:00" in lines[-1]


def test_a_log_gets_a_line_each_interval(monkeypatch):
    import time

    import anomaly_inspect.progress as progress

    log = io.StringIO()
    monkeypatch.setattr("sys.stderr", log)
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.02)
    with Progress(3, "extract") as bar:
        for _ in range(3):
            time.sleep(0.03)
            bar.update()
    lines = log.getvalue().splitlines()
    assert [line.split("|")[-1].split(" ")[1] for line in lines] == ["0/3", "1/3", "2/3", "3/3"]


def test_a_log_gets_no_line_for_a_grown_total_between_intervals(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr("sys.stderr", log)
    with Progress(None, "coreset", unit="pt") as bar:
        for _ in range(20):
            bar.grow(10)
            bar.update(10)
    lines = log.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert "200/200" in lines[-1] and "pt/s" in lines[-1]


def test_a_terminal_keeps_the_redrawn_bar(monkeypatch):
    tty = _Terminal()
    monkeypatch.setattr("sys.stderr", tty)
    with Progress(3, "score") as bar:
        bar.update(3)
    assert "\r" in tty.getvalue() and "3/3" in tty.getvalue()


def test_quiet_writes_nothing_to_a_log_or_a_terminal(monkeypatch):
    for stream in (io.StringIO(), _Terminal()):
        monkeypatch.setattr("sys.stderr", stream)
        with Progress(3, "score", enabled=False) as bar:
            bar.update(3)
            bar.grow(2)
        assert stream.getvalue() == ""
