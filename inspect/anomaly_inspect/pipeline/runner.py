"""The one fit / score loop: images -> features -> scorers, batch by batch, on an engine.

Every workflow (``evaluate``, the long-tailed and OOD benchmarks, screening's ``fit`` and
``screen``) is a configuration of :class:`Runner`: which images, which scorers, what the
scorers need besides features (:class:`~..core.FitContext`). The per-batch work runs as an
engine task (:mod:`.engine`), so where it runs is one switch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..core import Features, FitContext, ScoreResult
from ..data.layout import display_path
from ..data.loader import Batch
from ..features.extractor import FeatureExtractor, raise_first_error
from ..features.views import ViewFeatures
from ..progress import Progress
from ..resources import StageTimes, Timer
from ..scorers import Scorer
from .engine import Engine, LocalEngine

log = logging.getLogger(__name__)

ImageFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class BatchScores:
    """One decoded batch (indices, errors, masks, boxes), each scorer's result on it and the
    seconds each scorer took."""

    batch: Batch
    results: dict[str, ScoreResult]
    seconds: dict[str, float] = field(default_factory=dict)
    features: Features | None = None  # what the scorers scored (an explanation's exact search)


def score_batches(extractor: FeatureExtractor, scorers: Mapping[str, Scorer],
                  paths: Sequence[Path], mask_paths: Sequence[Path | None] | None = None,
                  times: StageTimes | None = None) -> Iterator[tuple[int, BatchScores]]:
    """The per-batch scoring step: ``(paths consumed, scored batch)`` in order; unreadable
    images are in ``batch.errors`` and have no scores."""
    times = times or StageTimes()
    for item in extractor.iter_extract(paths, mask_paths, times=times):
        out = BatchScores(item.batch, {}, features=item.features)
        if item.batch.indices:
            out.results, out.seconds = timed_scores(scorers, item.features, times)
        yield len(item.batch.indices) + len(item.batch.errors), out


def timed_scores(scorers: Mapping[str, Scorer], features: Features,
                 times: StageTimes) -> tuple[dict[str, ScoreResult], dict[str, float]]:
    """Every scorer's result on ``features`` and the seconds each took (stage "search").
    With ``pooled_views`` (``features: views``), an image's score is the mean of its own and
    its views' scores."""
    results: dict[str, ScoreResult] = {}
    seconds: dict[str, float] = {}
    for name, scorer in scorers.items():
        with Timer() as t, times("search"):
            if features.pooled_views is None:
                results[name] = scorer.score(features)
            else:
                views = with_views(features)
                results[name] = ScoreResult(np.mean(
                    [scorer.score(Features(pooled=views[:, i])).image_scores
                     for i in range(views.shape[1])], axis=0))
        seconds[name] = t.seconds
    return results, seconds


def with_views(features: Features) -> np.ndarray:
    """(N, V + 1, D): each image's pooled embedding, then its views' (``pooled_views``)."""
    return np.concatenate([features.pooled[:, None], features.pooled_views], axis=1)


def with_views_as_rows(features: Features, labels: np.ndarray | None
                       ) -> tuple[Features, np.ndarray | None]:
    """What a pooled scorer fits on when ``features`` hold ``pooled_views``: every image's
    pooled embedding and its views' as rows, each with its image's label; else as given."""
    if features.pooled_views is None:
        return features, labels
    rows = with_views(features)
    n, v, d = rows.shape
    return Features(pooled=rows.reshape(n * v, d)), None if labels is None else np.repeat(labels, v)


def skip_unreadable(paths: Sequence[Path], errors: Sequence[tuple[int, str]]) -> list[dict[str, str]]:
    """Unreadable images left out of a fit: each logged, and listed as a model records them."""
    out = []
    for i, reason in errors:
        log.warning("skipping %s: %s", display_path(paths[i]), reason)
        out.append({"path": display_path(paths[i]), "error": reason})
    return out


class _ExtractorTask:
    """An engine task around an in-memory extractor: nothing to set up, its batch size."""

    extractor: FeatureExtractor

    @property
    def batch_size(self) -> int:
        return self.extractor.batch_size

    @property
    def max_pixels(self) -> int:
        return self.extractor.transform.max_pixels

    def setup(self) -> None:
        pass


@dataclass
class ExtractTask(_ExtractorTask):
    """Engine task: features of each batch (readable images only; errors alongside)."""

    extractor: FeatureExtractor
    image_fn: ImageFn | None = None
    times: StageTimes | None = None

    def run(self, paths: Sequence[Path], local_copies: Sequence[Path] | None = None
            ) -> Iterator[tuple[int, tuple[Batch, Features]]]:
        source = paths if local_copies is None else local_copies
        for item in self.extractor.iter_extract(source, times=self.times, image_fn=self.image_fn):
            yield len(item.batch.indices) + len(item.batch.errors), (item.batch, item.features)


@dataclass
class ScoreTask(_ExtractorTask):
    """Engine task: every scorer's results on each batch."""

    extractor: FeatureExtractor
    scorers: Mapping[str, Scorer]
    masks: Mapping[Path, Path | None] | None = None  # image -> mask (None: no mask)
    times: StageTimes | None = None

    def run(self, paths: Sequence[Path], local_copies: Sequence[Path] | None = None
            ) -> Iterator[tuple[int, BatchScores]]:
        """Masks are read by path (an engine ships the images' bytes only)."""
        mask_paths = None if self.masks is None else [self.masks[p] for p in paths]
        source = paths if local_copies is None else local_copies
        return score_batches(self.extractor, self.scorers, source, mask_paths, self.times)


@dataclass
class Fitted:
    """What :meth:`Runner.fit` did: each scorer's :meth:`~..scorers.Scorer.fit_summary` with its
    fit seconds, the readable paths it fitted on (positions) and the ones skipped."""

    info: dict[str, dict]
    indices: list[int]
    skipped: list[dict[str, str]] = field(default_factory=list)


@dataclass
class Extracted:
    """Features of the readable images of a set, and the ones skipped (path, reason)."""

    indices: list[int]
    features: Features
    skipped: list[dict[str, str]] = field(default_factory=list)


def view_kind(scorers: Iterable[Scorer]) -> str | None:
    """The kind of views (:data:`~..choices.VIEW_KINDS`) the scorers read at fit, from their
    ``fit_views`` (TailedCore's ``tail_views``); None when none reads any. Scorers fitted on
    one context share its views, so two different kinds are refused."""
    kinds = {}
    for scorer in scorers:
        if (kind := scorer.fit_views) is not None:
            kinds.setdefault(kind, type(scorer).__name__)
    if len(kinds) > 1:
        raise ValueError(f"scorers fitted together read different tail views: "
                         f"{', '.join(f'{k} ({who})' for k, who in kinds.items())}; fit them "
                         f"separately or give them one tail_views")
    return next(iter(kinds), None)


class Runner:
    """Fits scorers on training images and scores image sets through one feature source.

    ``times`` accumulates per-stage seconds (decode, backbone, embed, search, ...);
    ``engine`` says where the per-batch work runs (default: this process).
    """

    def __init__(self, extractor: FeatureExtractor, engine: Engine | None = None,
                 progress: bool = True, times: StageTimes | None = None):
        self.extractor = extractor
        self.engine = engine or LocalEngine()
        self.progress = progress
        self.times = times if times is not None else StageTimes()

    def iter_readable(self, paths: list[Path], desc: str, image_fn: ImageFn | None = None,
                      bar: Progress | None = None, skipped: list[dict[str, str]] | None = None
                      ) -> Iterator[tuple[list[int], Features]]:
        """The one extraction loop: (indices, features) of each batch's readable images, in
        order. An unreadable image raises, or, given a ``skipped`` list, is logged and listed."""
        task = ExtractTask(self.extractor, image_fn, self.times)
        own = Progress(len(paths), desc, enabled=self.progress and bar is None)
        with own:
            for batch, feats in self.engine.map(task, paths, bar or own):
                if skipped is None:
                    raise_first_error(batch, paths)
                else:
                    skipped.extend(skip_unreadable(paths, batch.errors))
                if batch.indices:
                    yield batch.indices, feats

    def iter_features(self, paths: Sequence[Path], desc: str, image_fn: ImageFn | None = None,
                      bar: Progress | None = None) -> Iterator[Features]:
        """Features of every path in order, batch by batch; raises on the first unreadable image.
        ``bar``: a progress bar the caller shows across several sets (else one of ``desc``)."""
        for _, feats in self.iter_readable(list(paths), desc, image_fn, bar):
            yield feats

    def extract(self, paths: Sequence[Path], desc: str, image_fn: ImageFn | None = None,
                skip_errors: bool = False) -> Extracted:
        """Features of ``paths`` (in arrays allocated once, unless ``skip_errors``). Unreadable
        images raise, or with ``skip_errors`` are left out with a warning (and listed in
        ``skipped``)."""
        paths = list(paths)
        if not skip_errors:
            return Extracted(list(range(len(paths))),
                             Features.collect(self.iter_features(paths, desc, image_fn), len(paths)))
        skipped: list[dict[str, str]] = []
        parts = list(self.iter_readable(paths, desc, image_fn, skipped=skipped))
        return Extracted([i for idx, _ in parts for i in idx], Features.concat([f for _, f in parts]),
                         skipped)

    def fit(self, scorers: Mapping[str, Scorer], paths: Sequence[Path],
            labels: np.ndarray | None = None, context: FitContext | None = None,
            desc: str = "extract train", skip_errors: bool = False) -> Fitted:
        """Fit every scorer on the training images' features (extracted once). Unreadable
        images raise, or with ``skip_errors`` are left out with a warning. Views a scorer
        reads at fit (TailedCore's ``tail_views``) are added to ``context`` when it has none
        (:meth:`fit_context`, over the readable images).

        A single scorer fits while the batches arrive (:meth:`Scorer.fit_batches`: PatchCore's
        coreset streams, so memory stays flat); several, or one that reads views (it gathers
        its batches anyway), share one gathered copy."""
        paths = list(paths)
        self.extractor.calibrate(paths)  # int8 backbones: on training images only
        skipped: list[dict[str, str]] | None = [] if skip_errors else None
        readable: list[int] = []

        def features() -> Iterator[Features]:
            for idx, feats in self.iter_readable(paths, desc, skipped=skipped):
                readable.extend(idx)
                yield feats
            if not readable:
                raise ValueError(f"none of the {len(paths)} training images could be read")

        needs_views = view_kind(scorers.values()) is not None and (context is None
                                                                   or context.views is None)
        if len(scorers) == 1 and labels is None and not needs_views and self.extractor.views == "none":
            (name, scorer), = scorers.items()
            seconds = self._timed_fit(lambda: scorer.fit_batches(features(), len(paths), context))
            info = {name: {"fit_seconds": round(seconds, 2), **scorer.fit_summary()}}
        else:
            gathered = Features.concat(list(features())) if skip_errors else \
                Features.collect(features(), len(paths))
            # the views' image indices are positions among the readable images
            context = self.fit_context(scorers, [paths[i] for i in readable], context)
            info = self.fit_features(scorers, gathered, labels, context)
        return Fitted(info, readable, skipped or [])

    def fit_context(self, scorers: Mapping[str, Scorer] | Iterable[Scorer], paths: Sequence[Path],
                    context: FitContext | None = None) -> FitContext | None:
        """``context`` with the views the scorers read at fit (:func:`view_kind`) added, as
        :class:`~..features.views.ViewFeatures` of ``paths`` (the training images, in the order
        of their features) from this runner's extractor; unchanged when no scorer reads views
        or it holds some already (fit, evaluate, screen and evaluate-lt take their views here)."""
        kind = view_kind(scorers.values() if isinstance(scorers, Mapping) else scorers)
        if kind is None or (context is not None and context.views is not None):
            return context
        return replace(context or FitContext(),
                       views=ViewFeatures(self.extractor, paths, kind, self.progress, self.times))

    def fit_features(self, scorers: Mapping[str, Scorer], features: Features,
                     labels: np.ndarray | None = None,
                     context: FitContext | None = None) -> dict[str, dict]:
        """Fit every scorer on features already extracted (stage "fit", see :meth:`_timed_fit`)
        and return each one's :meth:`~..scorers.Scorer.fit_summary` with its fit seconds."""
        info: dict[str, dict] = {}
        features, labels = with_views_as_rows(features, labels)
        for name, scorer in scorers.items():
            seconds = self._timed_fit(lambda scorer=scorer: scorer.fit(features, labels, context))
            info[name] = {"fit_seconds": round(seconds, 2), **scorer.fit_summary()}
            log.info("%s fitted in %.1f s: %s", name, seconds, info[name])
        return info

    def _timed_fit(self, fit: Callable[[], object]) -> float:
        """Run ``fit`` and return its wall seconds; stage "fit" gets them less the stages timed
        inside it (the training images streamed into the fit, TailedCore's tail views: decode,
        backbone, embed), so the stages still sum to the total."""
        before = sum(self.times.seconds.values())
        with Timer() as t:
            fit()
        self.times.add("fit", t.seconds - (sum(self.times.seconds.values()) - before))
        return t.seconds

    def score_features(self, scorers: Mapping[str, Scorer],
                       features: Features) -> dict[str, ScoreResult]:
        """Every scorer's result on features already extracted (stage "search")."""
        return timed_scores(scorers, features, self.times)[0]

    def score(self, scorers: Mapping[str, Scorer], paths: Sequence[Path], desc: str = "score",
              mask_paths: Sequence[Path | None] | None = None,
              strict: bool = True) -> Iterator[BatchScores]:
        """Every scorer's results, batch by batch, in order. ``strict``: raise on the first
        unreadable image (benchmarks); otherwise errors are left in ``batch.errors``."""
        paths = list(paths)
        masks = None if mask_paths is None else dict(zip(paths, mask_paths, strict=True))
        task = ScoreTask(self.extractor, scorers, masks, self.times)
        with Progress(len(paths), desc, enabled=self.progress) as bar:
            for item in self.engine.map(task, paths, bar):
                if strict:
                    raise_first_error(item.batch, paths)
                yield item

