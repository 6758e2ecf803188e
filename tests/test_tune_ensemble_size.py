"""An ensemble smaller than the K asked (fewer distinct model inputs among the candidates: a
``pad`` twin on square images is its ``stretch`` twin's input) is said, not fused silently."""

from __future__ import annotations

import importlib
import logging

import numpy as np

from anomaly_inspect.cli import build_parser
from anomaly_inspect.tuning.candidates import Candidate
from anomaly_inspect.tuning.rank import Decision
from anomaly_inspect.tuning.tune import (
    CandidateScores,
    TuneSettings,
    TuningResult,
    ensemble_members,
)

NAMES = ("lite0-320-8+16-rows-stretch", "lite0-256-8+16-rows-stretch", "lite0-320-8+16-rows-pad")


def _result(asked: int) -> TuningResult:
    """The repro's three candidates on square images: the pad one the default's twin."""
    scores = [CandidateScores(Candidate.parse(n), {"f0/cutpaste": 0.9}, [0.9]) for n in NAMES]
    scores[2].same_as = NAMES[0]
    borda = np.array([2.0, 1.0, 2.0])
    members = ensemble_members(scores, borda, asked)
    return TuningResult(TuneSettings(ensemble=asked), scores, Decision(0, 0, 0, 0.0, 0.0, "kept"),
                        members, {"f0/cutpaste": 0.9}, 12, 1.0, {})


def test_a_short_ensemble_records_the_size_asked_and_why():
    tuning = _result(5).to_dict()
    assert tuning["ensemble"] == [NAMES[0], NAMES[1]]
    assert tuning["ensemble_requested"] == 5
    note = tuning["ensemble_note"]
    assert "2" in note and "5" in note and "3 candidates" in note and "twin" in note


def test_a_full_ensemble_records_nothing_more():
    tuning = _result(2).to_dict()
    assert len(tuning["ensemble"]) == 2
    assert "ensemble_requested" not in tuning and "ensemble_note" not in tuning


def _run_tune(monkeypatch, caplog, flags: list[str], asked: int):
    from anomaly_inspect.commands.tune import run_tune

    tune_mod = importlib.import_module("anomaly_inspect.tuning.tune")  # the package has tune()
    monkeypatch.setattr(tune_mod, "tune", lambda *a, **k: _result(asked))
    args = build_parser().parse_args(["tune", "--train", "x", *flags])
    with caplog.at_level(logging.WARNING):
        run_tune([], args, None)
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_ensemble_k_warns_once_naming_k_the_members_and_why(monkeypatch, caplog, capsys):
    warnings = _run_tune(monkeypatch, caplog, ["--ensemble", "5"], 5)
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "--ensemble 5" in warnings[0] and "ensemble of 2" in warnings[0]
    assert "twin" in warnings[0]


def test_no_warning_where_no_ensemble_was_asked(monkeypatch, caplog, capsys):
    """Without --ensemble the default size (3) is tune's own choice, recorded in the JSON only
    (evaluate --auto with --candidates A: two candidates, nothing fused)."""
    assert _run_tune(monkeypatch, caplog, [], 3) == []
