"""``anomaly-inspect demo``: generate a synthetic MVTec-layout dataset and evaluate PatchCore on it."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the main job on a generated synthetic dataset", description=__doc__)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError("demo: synthetic dataset generator not written yet")
