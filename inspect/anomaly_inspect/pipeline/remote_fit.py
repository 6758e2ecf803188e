"""Distributed fitting: training features extracted on the workers, the coreset in two rounds.

Each worker builds the backbone once (:class:`ExtractTask`), extracts a batch of training
images and runs round 1 of the two-round coreset on that batch's patches
(:func:`~..scorers.coreset.round_one`); only the kept rows (``first_round_ratio`` of them)
travel to the driver, which runs round 2 once over their union
(``TwoRoundCoreset.add_round_one`` / ``finish``): the composable-coreset scheme of
Malkomes et al. (NeurIPS 2015). The same task in ``features`` mode returns the features
themselves (for calibration images). Only memory-bank scorers that build their bank from the
plain coreset (PatchCore) fit this way.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import ModelConfig
from ..features.extractor import Features
from ..progress import Progress
from ..scorers import Scorer
from ..scorers.coreset import round_one
from ..scorers.patchcore import PatchCore, image_patches
from ..scorers.provenance import Provenance
from .build import build
from .engine import Engine

MODES = ("round_one", "features")


@dataclass
class ExtractedPart:
    """One batch's outcome: readable / unreadable positions (in the task's paths) and either
    the round-1 picks (``chunks``, ``rows``, ``n_rows``, and ``valid``: which patch cells of
    the readable images the rows were numbered over, for provenance) or the ``features``."""

    indices: list[int]
    errors: list[tuple[int, str]]
    n_rows: int = 0
    chunks: list[np.ndarray] | None = None
    rows: np.ndarray | None = None
    valid: np.ndarray | None = None
    features: Features | None = None


@dataclass
class ExtractTask:
    """Build the model's backbone once per worker; per batch: features, or round 1 of the
    coreset on them. ``offset`` numbers the paths (and seeds each batch's round 1)."""

    config: dict
    max_pixels: int
    mode: str = "round_one"
    batch_size: int = 32

    def setup(self) -> None:
        if getattr(self, "_extractor", None) is not None:
            return
        cfg = ModelConfig.from_dict(self.config, "engine task config")
        _, extractor, scorer = build(cfg, progress=False)
        extractor.transform = dataclasses.replace(extractor.transform, max_pixels=self.max_pixels)
        extractor.batch_size = self.batch_size
        self._extractor, self._scorer = extractor, scorer

    def run(self, paths: Sequence[Path]) -> Iterator[tuple[int, ExtractedPart]]:
        """Per batch: positions relative to the batch's first path (the caller adds where the
        batch starts: outputs arrive in order); round 1 is seeded by the first path's name."""
        for item in self._extractor.iter_extract(paths):
            b = item.batch
            first = min(b.indices + [i for i, _ in b.errors])
            part = ExtractedPart([i - first for i in b.indices],
                                 [(i - first, r) for i, r in b.errors])
            if b.indices and self.mode == "features":
                part.features = item.features
            elif b.indices:
                patches = image_patches(item.features)
                s = self._scorer
                chunks = round_one(patches, s.coreset_ratio, s.chunk_size, s.first_round_ratio,
                                   s.projection_dim, s.seed,
                                   stream=zlib.crc32(os.fsencode(paths[first])))
                part.n_rows, part.chunks = len(patches), chunks
                part.valid = item.features.valid_mask()
                part.rows = np.ascontiguousarray(patches[np.concatenate(chunks)], np.float32)
            yield len(b.indices) + len(b.errors), part


def check_distributable(scorer: Scorer) -> None:
    if type(scorer).fit_batches is not PatchCore.fit_batches or not isinstance(scorer, PatchCore):
        raise ValueError(f"a distributed fit builds PatchCore memory banks only, not "
                         f"'{scorer.name}'; use --engine local for it")


def extract_parts(engine: Engine, cfg: ModelConfig, paths: Sequence[Path], mode: str,
                  max_pixels: int, progress: Progress | None = None) -> Iterator[ExtractedPart]:
    """:class:`ExtractTask` over ``paths`` on ``engine``, batch by batch, in order; positions
    are ``paths``' indices."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if cfg.backbone.precision == "int8":
        raise ValueError("precision int8 is calibrated where the model is fitted; a distributed "
                         "fit does not ship the calibrated graph to its workers yet")
    task = ExtractTask(cfg.to_dict(), max_pixels, mode, cfg.features.batch_size)
    offset = 0
    for part in engine.map(task, list(paths), progress):
        n = len(part.indices) + len(part.errors)
        part.indices = [offset + i for i in part.indices]
        part.errors = [(offset + i, r) for i, r in part.errors]
        offset += n
        yield part


def fit_bank_remote(scorer: PatchCore, engine: Engine, cfg: ModelConfig, paths: Sequence[Path],
                    max_pixels: int, progress: Progress | None = None
                    ) -> tuple[list[int], list[tuple[int, str]]]:
    """Fit ``scorer``'s memory bank from ``paths``: extraction and round 1 on the workers,
    round 2 here. Returns the readable positions and the (position, reason) of the others."""
    check_distributable(scorer)
    coreset = scorer.coreset(keep_rows=True)
    ok: list[int] = []
    errors: list[tuple[int, str]] = []
    valid: list[np.ndarray] = []
    for part in extract_parts(engine, cfg, paths, "round_one", max_pixels, progress):
        ok += part.indices
        errors += part.errors
        if part.chunks is not None:
            coreset.add_round_one(part.chunks, part.rows, part.n_rows)
            valid.append(part.valid)
    if ok:  # provenance numbers the readable images in order, as the model lists them
        positions, rows = scorer.finish_coreset(coreset, rows=True)
        provenance = Provenance.of_cells(np.concatenate(valid), positions)
        scorer.set_state({"memory_bank": np.ascontiguousarray(rows), **provenance.state()})
    return ok, errors
