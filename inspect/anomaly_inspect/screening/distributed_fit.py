"""``fit`` on a distributed engine: the workers extract, the driver keeps only the coreset.

The training images are extracted on the workers, each batch reduced by round 1 of the
two-round coreset there (:func:`..pipeline.remote_fit.fit_bank_remote`); the driver runs
round 2 once. The calibration images follow in the same pass (one actor pool); their
features are scored here batch by batch, so the driver holds the bank plus one batch of
features. The held-out calibration split is the one-machine fit's (drawn over the readable
training paths ``fit`` passes here, in :func:`.model.calibration_split`'s listing order
whatever order they come in). Differences from the one-machine fit, by design: calibration images must not
also be training images, nor copies of them (:func:`check_disjoint`; the local fit warns); round 1 chunks each batch's patches rather
than windows of 16 chunks, so the bank differs slightly (covering radius and AUROC:
docs/scaling.md), and an HNSW graph is checked on a probe sample drawn per batch. Neither
depends on the number of workers or on where the images live.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..config import ModelConfig
from ..pipeline import Engine, build
from ..pipeline.remote_fit import ExtractedPart, check_distributable, fit_bank_remote
from ..pipeline.runner import skip_unreadable
from ..progress import Progress
from .model import (
    Model,
    _same_files,
    calibrated_model,
    calibration_split,
    input_images,
    on_image,
)


def fit_on_engine(train_paths: list[Path], cfg: ModelConfig, engine: Engine,
                  calibration: Sequence[Path | str] | None, target_fpr: float,
                  calibration_fraction: float, progress: bool, max_pixels: int) -> Model:
    """:func:`.model.fit` with extraction and round 1 of the coreset on ``engine``'s workers."""
    check_disjoint(train_paths, calibration)
    backbone, extractor, scorer = build(cfg, progress=progress, max_pixels=max_pixels)
    check_distributable(scorer)
    fit_all, cal_all, source = calibration_split(train_paths, calibration, calibration_fraction,
                                                 cfg.seed)
    scores, patch_scores, cal_ok, cal_skipped = [], [], [], []

    def on_calibration(part: ExtractedPart) -> None:
        cal_skipped.extend(skip_unreadable(cal_all, part.errors))
        if part.features is None:
            return
        cal_ok.extend(part.indices)
        result = scorer.score(part.features)
        scores.append(result.image_scores)
        if result.patch_scores is not None:
            patch_scores.append(on_image(result.patch_scores, part.features))

    # one pass, one actor pool: the training images, then the calibration images
    with Progress(len(fit_all) + len(cal_all), "extract train + calibration",
                  enabled=progress) as bar:
        ok, errors = fit_bank_remote(scorer, engine, cfg, fit_all, max_pixels, bar,
                                     then=cal_all, on_then=on_calibration)
    skipped = skip_unreadable(fit_all, errors) + cal_skipped
    if not cal_ok:
        raise ValueError(f"none of the {len(cal_all)} calibration images could be read")
    size = cfg.features.input_size  # run the driver's backbone once, so that the saved
    extractor.features_of(torch.zeros(1, 3, size, size))  # model keeps its export as a local fit does
    return calibrated_model(cfg, backbone, extractor, scorer, np.concatenate(scores),
                            np.concatenate(patch_scores) if patch_scores else None, target_fpr,
                            source, [fit_all[i] for i in ok], [cal_all[i] for i in cal_ok],
                            skipped)


def check_disjoint(train_paths: Sequence[Path], calibration: Sequence[Path | str] | None) -> None:
    """Refuse calibration images that are training images, in every form the local fit warns
    about (:func:`.model._same_files`: the same file, by any path, or a byte-identical copy),
    before any work: their scores are too low, so the threshold would be too low, and the
    workers tell the two sets apart by path. Checked before :func:`.model.calibration_split`,
    so that its warning (``fit`` gave it already) is not repeated."""
    if calibration is None:
        return
    both = _same_files(input_images(calibration, twins="once"), train_paths)
    if both:
        raise ValueError(f"{both} calibration images are also training images (the same files "
                         f"or copies of them, in {', '.join(map(str, calibration))}); a "
                         f"distributed fit needs the two disjoint: give other calibration "
                         f"images, or none to hold out a share of the training images")

