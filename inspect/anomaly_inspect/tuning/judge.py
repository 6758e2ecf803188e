"""Real-test scores of tuned candidates: normal-calibrated ensembles, and judging the selector.

Test labels are used here only to *report* how good a choice was (per-candidate test AUROC,
rank correlation with the synthetic validation, regret); nothing computed here feeds back into
:func:`.tune.tune`. Each candidate is fitted on all training images (features from the same
stage-map cache as tuning) and scores the test split exactly as ``evaluate`` would.
"""

from __future__ import annotations

import time
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.stats import ConstantInputWarning, spearmanr

from ..config import ModelConfig
from ..data.image_io import DEFAULT_MAX_PIXELS
from ..data.layout import listing_order
from ..data.mvtec import AnomalyDataset
from ..evaluation.fusion import NormalCalibration, fuse
from ..evaluation.metrics import auroc
from ..pipeline import build_backbone
from ..pipeline.builders import scorer_for
from ..progress import Progress
from .candidates import Candidate
from .stage_cache import calibrate, stage_maps
from .tune import (
    TuningResult,
    check_method,
    extraction_of,
    fold_plan,
    normal_calibrations,
    tune_cache,
)


def test_scores(dataset: AnomalyDataset, result: TuningResult, cands: Sequence[Candidate],
                base: ModelConfig, cache_dir: Path | str | None = None,
                progress: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict[str, np.ndarray]:
    """Image scores of ``dataset.test`` for each candidate fitted on all of ``dataset.train``
    that can be read (unreadable training images are skipped with a warning, as ``fit`` skips
    them, also those outside the tuning subset; those too small for synthetic anomalies, left
    out of validation, are fitted on as ``fit`` fits on them). An int8 backbone is calibrated on those
    training images, as ``fit`` and :func:`.tune.normal_calibrations` calibrate it. Where those
    images are the tuning subset, each candidate is extracted as its validation was (its
    recorded ``extraction``, as :func:`.tune.normal_calibrations` does), so that the training
    images' stage maps are read from validation's cache entry, not extracted again for a
    subset of the candidates (``evaluate --auto --ensemble K``'s members)."""
    check_method(base)
    cache_dir = tune_cache(cache_dir)
    train = listing_order(result.readable([s.path for s in dataset.train]))
    test = [s.path for s in dataset.test]
    tuned_on_all = len(fold_plan(len(train), result.settings)[0]) == len(train)
    validated = {v.candidate: v.extraction for v in result.candidates} if tuned_on_all else {}
    groups: dict[Candidate, list[Candidate]] = defaultdict(list)
    by_own: dict[tuple, list[Candidate]] = defaultdict(list)
    for c in cands:
        ext = validated.get(c)
        if ext is not None and ext.extraction == c.extraction:  # not a pad twin's stretch one
            groups[ext].append(c)
        else:
            by_own[c.extraction].append(c)
    for members in by_own.values():
        groups[extraction_of(members)] += members
    out = {}
    bs, crop = base.features.batch_size, base.features.crop_size
    with Progress(len(cands), "score test per candidate", unit="cand", enabled=progress) as bar:
        for ext, members in groups.items():
            name, size, resize = ext.extraction
            backbone = build_backbone(ext.config(base))
            calibrate(backbone, train, size, resize, crop, max_pixels)  # int8: on the training images
            tr = stage_maps(backbone, train, size, resize, cache_dir / "maps", bs, progress,
                            f"extract train {name} {size} {resize}", max_pixels, crop, skip_unreadable=True)
            te = stage_maps(backbone, test, size, resize, cache_dir / "maps", bs, progress,
                            "extract test", max_pixels, crop)
            for c in members:
                emb = c.config(base).features.embedding()
                scorer = scorer_for(base.method, base.scorer, base.seed, progress=False, patch_maps=False)
                scorer.fit_batches(tr.iter_features(np.arange(len(tr)), c.strides, emb, bs), len(tr))
                out[c.name] = np.concatenate([scorer.score(x).image_scores for x in
                                              te.iter_features(np.arange(len(te)), c.strides, emb, bs)])
                bar.update()
    return out


def ensemble_test_auroc(dataset: AnomalyDataset, result: TuningResult, base: ModelConfig,
                        scores: dict[str, np.ndarray], cache_dir: Path | str | None = None,
                        progress: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS
                        ) -> tuple[float, list[NormalCalibration]]:
    """Test AUROC of the tuned ensemble: each member's test scores standardised by its held-out
    normal training scores at the deployed scorer settings, then averaged."""
    labels = np.array([s.label for s in dataset.test])
    members = [result.candidates[i] for i in result.ensemble]
    cands = [m.candidate for m in members]
    every = [s.path for s in dataset.train]
    cals = normal_calibrations(result.tuned(every), base, members, result.settings, cache_dir,
                               progress, max_pixels, calibrate_on=result.readable(every))
    fused = fuse([scores[c.name] for c in cands], cals)
    return float(auroc(labels, fused)), cals


def rank_correlation(x: Sequence[float], y: Sequence[float]) -> tuple[float | None, str | None]:
    """Spearman's rho of ``x`` and ``y`` (rounded to 3 digits), or None and why where it is
    undefined: two candidates or fewer, or one side constant (where scipy gives NaN, no valid
    JSON, and a warning that would print under --quiet)."""
    if len(x) <= 2:
        return None, f"undefined with {len(x)} candidates (needs 3)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)  # its NaN is said in the note
        rho = float(spearmanr(x, y).statistic)
    if np.isnan(rho):
        same = [side for values, side in ((x, "validation"), (y, "test")) if np.ptp(values) == 0]
        return None, f"undefined: every candidate has the same {' and '.join(same) or 'NaN'} score"
    return round(rho, 3), None


def judge_selector(dataset: AnomalyDataset, result: TuningResult, base: ModelConfig,
                   cache_dir: Path | str | None = None, progress: bool = True,
                   max_pixels: int = DEFAULT_MAX_PIXELS) -> dict:
    """Per candidate: synthetic-validation score next to real test AUROC; Spearman correlation;
    regret of the choice against the default and against the best candidate in hindsight."""
    t0 = time.perf_counter()
    cands = [c.candidate for c in result.candidates]
    scores = test_scores(dataset, result, cands, base, cache_dir, progress, max_pixels)
    labels = np.array([s.label for s in dataset.test])
    test = {name: float(auroc(labels, s)) for name, s in scores.items()}
    val_mean = [c.mean_auroc for c in result.candidates]
    borda = [c.borda for c in result.candidates]
    real = [test[c.name] for c in cands]
    best = int(np.argmax(real))
    chosen, default, winner = (result.decision.chosen, result.decision.default, result.decision.winner)
    rho_borda, why_borda = rank_correlation(borda, real)
    rho_mean, why_mean = rank_correlation(val_mean, real)
    notes = {key: why for key, why in (("spearman_borda_test", why_borda),
                                        ("spearman_validation_auroc_test", why_mean)) if why}
    ens, cals = ensemble_test_auroc(dataset, result, base, scores, cache_dir, progress, max_pixels)
    return {
        "category": dataset.name,
        "candidates": [{"name": c.name, "validation_mean_auroc": round(v, 4), "borda": round(b, 3),
                        "test_auroc": round(t, 4)}
                       for c, v, b, t in zip(cands, val_mean, borda, real, strict=True)],
        "spearman_borda_test": rho_borda,
        "spearman_validation_auroc_test": rho_mean,
        **({"spearman_note": notes} if notes else {}),  # why a rho is null
        "chosen": cands[chosen].name, "chosen_test_auroc": round(real[chosen], 4),
        "winner": cands[winner].name, "winner_test_auroc": round(real[winner], 4),
        "default": cands[default].name, "default_test_auroc": round(real[default], 4),
        "best_in_hindsight": cands[best].name, "best_test_auroc": round(real[best], 4),
        "regret_chosen": round(real[best] - real[chosen], 4),
        "regret_default": round(real[best] - real[default], 4),
        "chosen_minus_default": round(real[chosen] - real[default], 4),
        "ensemble": [cands[i].name for i in result.ensemble],
        "ensemble_test_auroc": round(ens, 4),
        "ensemble_normal_calibration": [c.to_dict() for c in cals],
        "seconds": round(time.perf_counter() - t0, 1),
    }


def evaluate_ensemble(dataset: AnomalyDataset, result: TuningResult, base: ModelConfig,
                      cache_dir: Path | str | None = None, progress: bool = True,
                      max_pixels: int = DEFAULT_MAX_PIXELS) -> dict:
    """``evaluate --auto --ensemble K``: image AUROC of the normal-calibrated fusion of the tuned
    ensemble (each member fitted on all training images, standardised by held-out normal scores)."""
    t0 = time.perf_counter()
    cands = [result.candidates[i].candidate for i in result.ensemble]
    scores = test_scores(dataset, result, cands, base, cache_dir, progress, max_pixels)
    value, cals = ensemble_test_auroc(dataset, result, base, scores, cache_dir, progress, max_pixels)
    labels = np.array([s.label for s in dataset.test])
    return {"members": [c.name for c in cands], "image_auroc": round(value, 6),
            "member_image_auroc": {c.name: round(float(auroc(labels, scores[c.name])), 6) for c in cands},
            "normal_calibration": [c.to_dict() for c in cals],
            "seconds": round(time.perf_counter() - t0, 1)}
