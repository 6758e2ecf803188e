"""A bar without a total is drawn once work arrives, not before: fit's "coreset" bar, made
before the training images are extracted, drew an empty "coreset: 0pt" above "extract train"."""

from __future__ import annotations

import io

import pytest

from anomaly_inspect.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("stream", [io.StringIO, _Terminal], ids=["log", "terminal"])
def test_a_bar_without_a_total_is_drawn_at_its_first_grow_with_that_total(monkeypatch, stream):
    err = stream()
    monkeypatch.setattr("sys.stderr", err)
    with Progress(None, "coreset", unit="pt") as coreset:
        assert err.getvalue() == ""  # nothing yet: the work that feeds it comes later
        with Progress(2, "extract train") as extract:
            extract.update(2)
        drawn = err.getvalue()
        coreset.grow(40)
        coreset.update(40)
    text = err.getvalue()
    assert "coreset" not in drawn and "extract train" in drawn
    first = text[len(drawn):].replace("\r", "\n").strip().splitlines()[0]
    assert first.startswith("coreset:") and "0/40" in first
    assert "40/40" in text[len(drawn):] and "pt/s" in text


@pytest.mark.parametrize("stream", [io.StringIO, _Terminal], ids=["log", "terminal"])
def test_a_bar_without_a_total_is_drawn_at_its_first_update(monkeypatch, stream):
    err = stream()
    monkeypatch.setattr("sys.stderr", err)
    with Progress(None, "coreset", unit="pt") as bar:
        bar.update(7)
    assert "coreset:" in err.getvalue() and "7pt" in err.getvalue()


def test_a_bar_without_a_total_and_no_work_writes_nothing(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    with Progress(None, "coreset", unit="pt") as bar:
        bar.grow(0)
    assert err.getvalue() == ""


def test_a_bar_with_a_total_is_still_drawn_at_once(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    with Progress(3, "score"):
        assert "0/3" in err.getvalue()
