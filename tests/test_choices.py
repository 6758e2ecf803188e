"""The values an option takes are defined once, in ``choices``: the command line offers the
tuple the library checks against (a value added to one is offered by the other)."""

from __future__ import annotations

import argparse

from anomaly_inspect import choices
from anomaly_inspect.cli import build_parser
from anomaly_inspect.scorers import nn_index
from anomaly_inspect.screening import deploy, runner


def _choices(command: str, flag: str):
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return next(a for a in sub.choices[command]._actions if flag in a.option_strings).choices


def test_screen_overlays_offers_the_runners_choices():
    assert _choices("screen", "--overlays") is runner.OVERLAY_CHOICES is choices.OVERLAY_CHOICES


def test_export_format_offers_the_deploy_formats():
    assert _choices("export", "--format") is deploy.FORMATS is choices.EXPORT_FORMATS


def test_nn_index_kinds_are_the_choices_ones():
    assert nn_index.INDEX_KINDS is choices.INDEX_KINDS


def test_evaluate_lt_index_offers_the_index_kinds():
    assert _choices("evaluate-lt", "--index") is choices.INDEX_KINDS
