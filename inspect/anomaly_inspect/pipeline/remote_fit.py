"""Distributed fitting: training features extracted on the workers, the coreset in two rounds.

Each worker builds the backbone once (:class:`RemoteFitTask`), extracts a batch of training
images and runs round 1 of the two-round coreset on that batch's patches
(:func:`~..scorers.coreset.round_one`); only the kept rows (``first_round_ratio`` of them)
travel to the driver, which runs round 2 once over their union
(``TwoRoundCoreset.add_round_one`` / ``finish``): the composable-coreset scheme of
Malkomes et al. (NeurIPS 2015). Each batch also sends its share of the probe sample an HNSW
bank is checked on (a :class:`~..scorers.nn_index.ProbeSample` on the batch's own stream;
the driver merges them), and the bank is installed as the one-machine fit installs it
(``PatchCore.install_coreset``). Round 1 and the probes are seeded by
``(seed, batch number)``, so the bank depends on the images, their order and the batch
size only: not on the number of workers, nor on where the files live. Images listed after
the training set (``then``: a fit's calibration images) go through the same pass and actor
pool; their features come back whole, once the bank is finished. Only memory-bank scorers
that build their bank from the plain coreset (PatchCore) fit this way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import ModelConfig
from ..features.extractor import Features
from ..features.weights import RANDOM
from ..progress import Progress
from ..resources import StageTimes
from ..scorers import Scorer
from ..scorers.coreset import round_one
from ..scorers.nn_index import ProbeSample
from ..scorers.patchcore import PatchCore, image_patches
from .builders import build
from .engine import Engine


@dataclass
class ExtractedPart:
    """One batch's outcome: readable / unreadable positions (in the task's paths); the round-1
    picks of its training images (``chunks``, ``rows``, ``n_rows``, and ``valid``: which patch
    cells of those images the rows were numbered over, for provenance), their share of the
    probe sample (``probes``) and the ``features`` of its other images (positions
    ``featured``)."""

    indices: list[int]
    errors: list[tuple[int, str]]
    n_rows: int = 0
    chunks: list[np.ndarray] | None = None
    rows: np.ndarray | None = None
    valid: np.ndarray | None = None
    probes: ProbeSample | None = None
    featured: list[int] = dataclasses.field(default_factory=list)
    features: Features | None = None


@dataclass
class RemoteFitTask:
    """Build the model's backbone once per worker; per batch: round 1 of the coreset and the
    probe share of the training images' features, and the features themselves of the images
    in ``features_for`` (paths as ``os.fsencode`` gives them)."""

    config: dict
    max_pixels: int
    features_for: frozenset[bytes] = frozenset()
    batch_size: int = 32

    def setup(self) -> None:
        if getattr(self, "_extractor", None) is not None:
            return
        cfg = ModelConfig.from_dict(self.config, "engine task config")
        _, extractor, scorer = build(cfg, progress=False, max_pixels=self.max_pixels,
                                     batch_size=self.batch_size)
        self._extractor, self._scorer = extractor, scorer

    def run(self, paths: Sequence[Path], local_copies: Sequence[Path] | None = None,
            first: int = 0) -> Iterator[tuple[int, ExtractedPart]]:
        """Per batch: positions relative to the batch's first path (the caller adds where the
        batch starts: outputs arrive in order); round 1 and the probes are seeded by the
        batch's number in the map (``first``: the position of ``paths[0]`` there)."""
        number = first // self.batch_size
        for item in self._extractor.iter_extract(paths if local_copies is None else local_copies):
            b = item.batch
            start = min(b.indices + [i for i, _ in b.errors])
            part = ExtractedPart([i - start for i in b.indices],
                                 [(i - start, r) for i, r in b.errors])
            wanted = [os.fsencode(paths[i]) in self.features_for for i in b.indices]
            if any(wanted):
                keep = np.flatnonzero(wanted)
                part.featured = [b.indices[k] - start for k in keep]
                part.features = item.features.subset(keep)
            if not all(wanted):
                keep = np.flatnonzero(np.logical_not(wanted))
                feats = item.features if len(keep) == len(wanted) else item.features.subset(keep)
                check_finite_images(feats, [paths[b.indices[k]] for k in keep])
                patches = image_patches(feats)
                s = self._scorer
                chunks = round_one(patches, s.coreset_ratio, s.chunk_size, s.first_round_ratio,
                                   s.projection_dim, s.seed, stream=number)
                part.n_rows, part.chunks = len(patches), chunks
                part.valid = feats.valid_mask()
                part.rows = np.ascontiguousarray(patches[np.concatenate(chunks)], np.float32)
                part.probes = ProbeSample(seed=s.seed, stream=number).add(patches)
            number += 1
            yield len(b.indices) + len(b.errors), part


def check_finite_images(features: Features, paths: Sequence[Path]) -> None:
    """Refuse training features holding NaN or Inf, naming their images (``paths``, one per
    image), before round 1: the one-machine fit refuses them in ``Scorer.check_input``, and
    one such row breaks the greedy."""
    bad = [os.fsdecode(p) for p, patches in zip(paths, features.patches, strict=True)
           if not np.isfinite(patches).all()]
    if bad:
        raise ValueError(f"patch features of {len(bad)} training images hold NaN or Inf values: "
                         f"{', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}")


def check_distributable(scorer: Scorer) -> None:
    if type(scorer).fit_batches is not PatchCore.fit_batches or not isinstance(scorer, PatchCore):
        raise ValueError(f"a distributed fit builds PatchCore memory banks only, not "
                         f"'{scorer.name}'; use --engine local for it")


def check_distributed_precision(cfg: ModelConfig) -> None:
    """The refusal of precision int8 for a distributed fit (every distributed fit passes it;
    a caller with work to do before the fit calls it first)."""
    if cfg.backbone.precision == "int8":
        raise ValueError("precision int8 cannot run on a distributed engine: it is calibrated "
                         "where the model is fitted, and a distributed fit does not ship the "
                         "calibrated graph to its workers; use --engine local or precision f32")


def check_weights_reach_workers(cfg: ModelConfig, engine: Engine) -> None:
    """Refuse a backbone weights file (``--weights FILE``) on workers without shared storage:
    they build the backbone from the file's path here, and only the model's own files travel."""
    weights = cfg.backbone.weights
    if not engine.shared_storage and weights is not None and weights != RANDOM:
        raise ValueError(f"backbone weights {weights}: a weights file is read by its path on "
                         f"every worker, and --no-shared-storage says they cannot see this "
                         f"machine's files; use shared storage (the file at this path on every "
                         f"worker), the default weights, or --engine local")


def extract_parts(engine: Engine, cfg: ModelConfig, paths: Sequence[Path],
                  features_for: frozenset[bytes], max_pixels: int,
                  progress: Progress | None = None) -> Iterator[ExtractedPart]:
    """:class:`RemoteFitTask` over ``paths`` on ``engine``, batch by batch, in order; positions
    are ``paths``' indices."""
    check_distributed_precision(cfg)
    check_weights_reach_workers(cfg, engine)
    task = RemoteFitTask(cfg.to_dict(), max_pixels, features_for, cfg.features.batch_size)
    offset = 0
    for part in engine.map(task, list(paths), progress):
        part.indices = [offset + i for i in part.indices]
        part.errors = [(offset + i, r) for i, r in part.errors]
        part.featured = [offset + i for i in part.featured]
        offset += len(part.indices) + len(part.errors)
        yield part


def fit_bank_remote(scorer: PatchCore, engine: Engine, cfg: ModelConfig, paths: Sequence[Path],
                    max_pixels: int, progress: Progress | None = None,
                    then: Sequence[Path] = (),
                    on_then: Callable[[ExtractedPart], None] | None = None,
                    times: StageTimes | None = None
                    ) -> tuple[list[int], list[tuple[int, str]]]:
    """Fit ``scorer``'s memory bank from ``paths``: extraction and round 1 on the workers,
    round 2 here (timed as the ``fit`` stage of ``times``, where given, as a local fit's
    coreset is). Returns the readable positions and the (position, reason) of the others.

    ``then``: images extracted in the same pass (one actor pool) once the training images
    are done; ``on_then`` gets each batch of them (features, positions in ``then``) after
    the bank is finished. They must not be training paths too: the workers tell the two
    apart by path (a fit refuses copies and links as well, before any work:
    ``screening.distributed_fit.check_disjoint``)."""
    check_distributable(scorer)
    then_keys = frozenset(map(os.fsencode, then))
    both = then_keys.intersection(map(os.fsencode, paths))
    if both:
        raise ValueError(f"{len(both)} calibration images are also training images (e.g. "
                         f"{os.fsdecode(min(both))}); a distributed fit needs the two disjoint")
    coreset = scorer.coreset(keep_rows=True)
    n = len(paths)
    ok: list[int] = []
    errors: list[tuple[int, str]] = []
    valid: list[np.ndarray] = []
    probes = ProbeSample()  # the batches' shares, merged
    finished = False
    for part in extract_parts(engine, cfg, [*paths, *then], then_keys, max_pixels, progress):
        ok += [i for i in part.indices if i < n]
        errors += [(i, r) for i, r in part.errors if i < n]
        if part.chunks is not None:
            coreset.add_round_one(part.chunks, part.rows, part.n_rows)
            valid.append(part.valid)
            probes.merge(part.probes)
        then_errors = [(i - n, r) for i, r in part.errors if i >= n]
        if part.featured or then_errors:  # training images done: outputs arrive in order
            if not finished:
                _finish(scorer, coreset, ok, valid, probes, n, times)
                finished = True
            if on_then is not None:
                featured = [i - n for i in part.featured]
                on_then(ExtractedPart(featured, then_errors, featured=featured,
                                      features=part.features))
    if not finished:
        _finish(scorer, coreset, ok, valid, probes, n, times)
    return ok, errors


def _finish(scorer: PatchCore, coreset, ok: list[int], valid: list[np.ndarray],
            probes: ProbeSample, n: int, times: StageTimes | None = None) -> None:
    """Round 2, and the bank with its provenance (numbering the readable images in order,
    as the model lists them) and its search index checked on the merged probe sample."""
    if not ok:
        raise ValueError(f"none of the {n} training images could be read")
    with times("fit") if times is not None else contextlib.nullcontext():
        scorer.install_coreset(coreset, valid, probes.rows)
