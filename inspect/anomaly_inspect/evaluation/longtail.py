"""Long-tailed noisy benchmark: one unified model per method, per-class image AUROC.

Training features (patches and pooled embeddings) are extracted once and
every method is fitted on them; each category's test set is streamed once and
scored by all fitted methods. TailSampler's class-size estimates (those of the
fitted TailedCore, or of one built from the same scorer settings when TailedCore
is not among the methods) are compared with the true class sizes of the
generated split. Nothing sees test labels except the metric.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import ModelConfig
from ..core import FitContext, SharedResults
from ..data.longtail import LongTailSet
from ..data.mvtec import AnomalyDataset
from ..pipeline import Runner, build_backbone, build_extractor
from ..pipeline.builders import scorer_for
from ..resources import Timer, peak_rss_mb
from ..scorers import Scorer, available_scorers, get_scorer_class, scorer_parameters
from ..scorers.tail_sampler import TailSamplerResult
from .evaluate import check_files
from .metrics import auroc

log = logging.getLogger(__name__)

#: TailedCore's tail views per split kind when neither --tail-views nor the config's scorer
#: section gives them (as the TailedCore MVTec configs)
DEFAULT_TAIL_VIEWS = {"step": "rot15flip", "pareto": "rot30flip"}
#: the features extracted from the training images (pooled: TailSampler's, and TailedCore's at
#: fit); the test images give patches only, so a method must score from patches
FIT_FEATURES = ("patches", "pooled")


def runnable(method: str) -> bool:
    """Whether ``method`` can run here: it scores from patches and reads nothing at fit that
    :data:`FIT_FEATURES` lacks (pooled-feature and class-label scorers cannot)."""
    requires = get_scorer_class(method).requires
    return "patches" in requires and set(requires) <= set(FIT_FEATURES)


def check_methods(methods: list[str]) -> None:
    """Refuse, before any work, no method, one named twice (its results would be counted
    twice), an unknown one or one this benchmark cannot run, naming those it can."""
    can = [m for m in available_scorers() if runnable(m)]
    if not methods:
        raise ValueError(f"--methods: no method given; evaluate-lt runs {', '.join(can)}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"--methods lists a method twice: {','.join(methods)}")
    for m in methods:
        if m not in available_scorers():
            raise ValueError(f"unknown method '{m}'; evaluate-lt runs {', '.join(can)}")
        if not runnable(m):
            raise ValueError(f"method '{m}' reads {' and '.join(get_scorer_class(m).requires)} "
                             f"features; evaluate-lt scores test images from patch features "
                             f"and runs {', '.join(can)}")


def check_tail_views(methods: list[str], tail_views: str | None) -> None:
    """Refuse tail views given to a run without TailedCore, the one method that reads them
    (they would be recorded but change nothing)."""
    if tail_views is not None and "tailedcore" not in methods:
        raise ValueError(f"--tail-views {tail_views}: only tailedcore reads tail views, and "
                         f"--methods {','.join(methods)} leaves it out")


def tail_views_of(split: LongTailSet, methods: list[str], params: dict,
                  tail_views: str | None = None) -> str | None:
    """The tail views TailedCore fits with: ``tail_views``, else the ``tail_views`` of the
    scorer settings, else :data:`DEFAULT_TAIL_VIEWS` of the split's kind; None without
    TailedCore."""
    check_tail_views(methods, tail_views)
    if "tailedcore" not in methods:
        return None
    return tail_views or params.get("tail_views") or DEFAULT_TAIL_VIEWS[split.tail]


@dataclass
class LongTailReport:
    results: list[dict]
    class_size_estimates: dict
    methods: dict[str, dict]
    split: dict
    timings: dict[str, float]
    config: dict
    tail_views: str | None  # TailedCore's (None without it)
    peak_rss_mb: float = 0.0

    def to_dict(self) -> dict:
        return {"results": self.results, "mean_image_auroc": self.mean_auroc(),
                "class_size_estimates": self.class_size_estimates, "methods": self.methods,
                "split": self.split, "timings": self.timings, "peak_rss_mb": self.peak_rss_mb,
                "config": self.config, "tail_views": self.tail_views}

    def mean_auroc(self) -> dict[str, float]:
        out: dict[str, list[float]] = {}
        for r in self.results:
            out.setdefault(r["method"], []).append(r["image_auroc"])
        return {m: float(np.mean(v)) for m, v in out.items()}


def class_size_report(result: TailSamplerResult, categories: list[str], split: LongTailSet) -> dict:
    """Per category: true size, predicted sizes of its images, how many were flagged tail."""
    per = {}
    for c in split.categories:
        idx = np.flatnonzero(np.asarray(categories) == c)
        pred = result.class_sizes[idx]
        flagged = int(result.is_tail[idx].sum())
        per[c] = {"true_size": split.class_sizes[c], "true_tail": c in split.tail_classes,
                  "predicted_median": float(np.median(pred)), "predicted_mean": float(pred.mean()),
                  "flagged_tail": flagged, "flagged_fraction": flagged / len(idx)}
    true_tail = [c for c in split.categories if c in split.tail_classes]
    tail_imgs = np.isin(categories, true_tail)
    flagged = result.is_tail
    return {
        "per_class": per,
        "histogram": result.histogram.tolist(),
        "true_histogram": sorted(split.class_sizes.values(), reverse=True),
        "max_k": result.max_k,
        "n_tail_images_flagged": int(flagged.sum()),
        "tail_image_recall": float(flagged[tail_imgs].mean()) if tail_imgs.any() else None,
        "tail_image_precision": float(tail_imgs[flagged].mean()) if flagged.any() else None,
        # a true tail class counts as detected when most of its images are flagged
        "tail_classes_detected": {c: per[c]["flagged_fraction"] > 0.5 for c in true_tail},
    }


def evaluate_longtail(
    split: LongTailSet,
    datasets: dict[str, AnomalyDataset],
    category_dirs: dict[str, Path],
    cfg: ModelConfig,
    methods: list[str],
    scorer_params: dict | None = None,
    tail_views: str | None = None,
    progress: bool = True,
    manifest: Path | None = None,
    save_manifest: bool = False,
) -> LongTailReport:
    """Fit every method on the split's training features (one extraction, one set of
    shared LOF scores), score each category's test set once for all of them. TailedCore's
    ``tail_views`` (refused without it) is its parameter, see :func:`tail_views_of`.
    ``manifest``: the split's file, recorded in the report's ``split``; with ``save_manifest``
    the split is written there once every category's test set has both labels and every
    image is readable (before any extraction)."""
    check_methods(methods)
    params = dict(scorer_params or {})
    tail_views = tail_views_of(split, methods, params, tail_views)
    if tail_views is not None:
        params["tail_views"] = tail_views  # TailedCore's parameter: what it records is what ran
    tests = {c: split.test_samples(c, datasets[c], Path(category_dirs[c])) for c in split.categories}
    for c, test in tests.items():  # before any extraction: every category needs both labels
        labels = [s.label for s in test]
        if 0 not in labels or 1 not in labels:
            # the injection took its last anomaly (the normal images are never moved)
            injected = 0 in labels and any(s.label for s in datasets[c].test)
            why = ("--noise moves anomalies into training: lower it, or change --seed" if injected
                   else f"{category_dirs[c]}/test needs both normal and anomalous images")
            raise ValueError(f"{c}: the long-tailed split leaves its test set {sum(labels)} "
                             f"anomalous and {len(labels) - sum(labels)} normal images, so it has "
                             f"no AUROC ({why})")
    train = split.train_samples(category_dirs)
    for c, test in tests.items():  # and readable images (masks are not read here)
        check_files(c, [*(s for s in train if s.group == c), *test], masks=False)
    if save_manifest:  # only now: a refused split leaves no manifest to refuse the corrected data
        split.save(manifest)
        log.info("wrote split manifest %s", manifest)
    scorers = build_scorers(methods, params, cfg.seed, progress)
    backbone = build_backbone(cfg)
    extractor = build_extractor(cfg, backbone, outputs=FIT_FEATURES)
    runner = Runner(extractor, progress=progress)
    train_paths = [s.path for s in train]
    train_cats = [s.group for s in train]
    extractor.calibrate(train_paths)  # int8: on the training images (the fit is not runner.fit)
    timings: dict[str, float] = {}
    with Timer() as t:
        feats = runner.extract(train_paths, "extract train").features
    timings["extract_train_s"] = round(t.seconds, 2)

    context = runner.fit_context(scorers, train_paths, FitContext(shared=SharedResults()))
    fitted = runner.fit_features(scorers, feats, context=context)
    if "tailedcore" in scorers:  # its fit ran TailSampler
        tail_result = scorers["tailedcore"].tail_result
    else:  # TailSampler as a TailedCore of the same settings would run it (never fitted)
        finder = build_scorers(["tailedcore"], params, cfg.seed, progress=False)["tailedcore"]
        with Timer() as t:
            tail_result = finder.find_tail(feats)
        timings["tail_sampler_s"] = round(t.seconds, 3)
    sizes = class_size_report(tail_result, train_cats, split)
    method_info = {m: {"fit_seconds": fitted[m]["fit_seconds"], **_report_keys(fitted[m]),
                       "params": scorer.get_params()} for m, scorer in scorers.items()}
    del feats, context

    results = []
    score_time = dict.fromkeys(methods, 0.0)
    scoring = build_extractor(cfg, backbone, outputs=("patches",))  # scores read patches only
    with Timer() as t_all:
        for c, test in tests.items():
            scores = {m: [] for m in methods}
            for item in Runner(scoring, progress=progress).score(scorers, [s.path for s in test],
                                                                 f"score {c}"):
                for m in methods:
                    scores[m].append(item.results[m].image_scores)
                    score_time[m] += item.seconds[m]
            labels = np.array([s.label for s in test])
            for m in methods:
                results.append({"method": m, "category": c,
                                "image_auroc": float(auroc(labels, np.concatenate(scores[m]))),
                                "n_test": len(test), "n_test_anomalous": int(labels.sum())})
    timings["test_total_s"] = round(t_all.seconds, 2)
    for m in methods:
        method_info[m]["score_seconds"] = round(score_time[m], 2)
    split_info = {"tail": split.tail, "k": split.k, "noise": split.noise, "seed": split.seed,
                  "overlap": split.overlap, "tail_classes": split.tail_classes, "counts": split.counts,
                  "n_train": len(train), "manifest": None if manifest is None else str(manifest)}
    # the config's single ``method`` is not what ran here: the methods are
    config = {k: v for k, v in cfg.to_dict().items() if k != "method"} | {"methods": list(methods)}
    return LongTailReport(results, sizes, method_info, split_info, timings, config,
                          tail_views, round(peak_rss_mb(), 1))


def _report_keys(summary: dict) -> dict:
    """The fit-summary entries this report has always carried."""
    return {k: v for k, v in summary.items() if k in ("memory_bank_items", "tail_items",
                                                     "head_items", "tail_images")}


def build_scorers(methods: list[str], params: dict, seed: int, progress: bool = True) -> dict[str, Scorer]:
    """Each method's scorer from ``params`` (the merged ``scorer`` settings, see
    :func:`~anomaly_inspect.scorers.merge_scorer_params`), for image scores only (AUROC): a
    setting it refuses is a ``ValueError``. Each takes the settings of ``params`` it accepts,
    None included (``chunk_size: null`` is the exact greedy); unset flags were left out by
    ``merge_scorer_params``."""
    return {m: scorer_for(m, {k: v for k, v in params.items() if k in scorer_parameters(m)}, seed,
                          progress=progress, patch_maps=False) for m in methods}
