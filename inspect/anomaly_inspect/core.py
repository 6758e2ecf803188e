"""Core types every layer shares, numpy only (no torch, no timm): cheap to import.

* :class:`Features`: what a feature source produces and a scorer consumes.
* :class:`ScoreResult`: what a scorer returns (higher = more anomalous).
* :class:`FitContext`: what some scorers need at fit time beyond the features (augmented
  views of the training images, results shared between scorers fitted on the same
  features), passed explicitly instead of being probed for.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass
class Features:
    """Features of a set of images, as scorers consume them.

    ``patches``: (N, h, w, D) float32 patch embeddings, for memory-bank scorers.
    ``pooled``: (N, D) float32 global embedding, for image-level scorers.
    ``valid``: (N, h, w) bool, the patches that lie on the image rather than on
    the padding of an aspect-preserving resize; None when all do.
    ``blocks``: block name ("final" or a stage index) -> (N, C) per-channel L2 norms of
    that feature map, for block-norm scorers.
    ``pooled_views``: (N, V, D) the pooled embeddings of each image's V rotated / flipped
    views (``features: views``): a pooled scorer is fitted on them too and scores an image by
    the mean over it and its views (:mod:`.pipeline.runner`).
    """

    patches: np.ndarray | None = None
    pooled: np.ndarray | None = None
    valid: np.ndarray | None = None
    blocks: dict[str, np.ndarray] | None = None
    pooled_views: np.ndarray | None = None

    def __post_init__(self):
        shapes = {"patches": (4, "(N, h, w, D)"), "pooled": (2, "(N, D)"), "valid": (3, "(N, h, w)"),
                  "pooled_views": (3, "(N, V, D)")}
        arrays = {k: getattr(self, k) for k in shapes}
        arrays.update({f"blocks[{k!r}]": v for k, v in (self.blocks or {}).items()})
        n = None
        for name, arr in arrays.items():
            if arr is None:
                continue
            ndim, what = shapes.get(name, (2, "(N, C)"))
            if getattr(arr, "ndim", None) != ndim:
                raise ValueError(f"Features.{name} must be a {what} array, got shape "
                                 f"{getattr(arr, 'shape', type(arr).__name__)}")
            if n is not None and len(arr) != n:
                raise ValueError(f"Features.{name} has {len(arr)} images, another field {n}")
            n = len(arr)

    def __len__(self) -> int:
        for arr in (self.patches, self.pooled, *(self.blocks or {}).values()):
            if arr is not None:
                return len(arr)
        return 0

    def subset(self, idx: np.ndarray | Sequence[int]) -> Features:
        idx = np.asarray(idx)
        return Features(
            None if self.patches is None else self.patches[idx],
            None if self.pooled is None else self.pooled[idx],
            None if self.valid is None else self.valid[idx],
            None if self.blocks is None else {k: v[idx] for k, v in self.blocks.items()},
            None if self.pooled_views is None else self.pooled_views[idx],
        )

    def valid_mask(self) -> np.ndarray:
        """(N, h, w) bool: ``valid``, or all True."""
        if self.valid is not None:
            return self.valid
        return np.ones(self.patches.shape[:3], dtype=bool)

    @staticmethod
    def collect(parts: Iterable[Features], n: int, at_most: bool = False) -> Features:
        """Features arriving part by part, written into arrays allocated once for ``n`` rows
        (the peak is one copy of the features, not a list plus its concatenation). ``n`` is
        exact, or with ``at_most`` an upper bound (images skipped as unreadable): the arrays
        are then cut to the rows that came."""
        out: dict[str, np.ndarray] = {}
        start = 0
        # ``valid`` is kept only once a part has padding; earlier parts were all valid.
        for part in parts:
            m = len(part)
            if start + m > n:
                raise ValueError(f"expected features of {'at most ' if at_most else ''}{n} "
                                 f"images, got more")
            arrays = {"patches": part.patches, "pooled": part.pooled, "valid": part.valid,
                      "pooled_views": part.pooled_views,
                      **{f"block:{k}": v for k, v in (part.blocks or {}).items()}}
            for name, arr in arrays.items():
                if arr is None:
                    continue
                if name not in out:
                    fill = np.ones if name == "valid" else np.empty
                    out[name] = fill((n, *arr.shape[1:]), dtype=arr.dtype)
                out[name][start:start + m] = arr
            start += m
        if start != n and not at_most:
            raise ValueError(f"expected features of {n} images, got {start}")
        if start != n:
            out = {k: v[:start] for k, v in out.items()}
        blocks = {k[6:]: v for k, v in out.items() if k.startswith("block:")} or None
        return Features(out.get("patches"), out.get("pooled"), out.get("valid"), blocks,
                        out.get("pooled_views"))

    @staticmethod
    def concat(parts: list[Features]) -> Features:
        return Features.collect(parts, sum(len(p) for p in parts))


@dataclass
class ScoreResult:
    """Scores of N images; ``patch_scores`` (N, h, w) only for patch-level scorers;
    ``nearest`` (N, h, w) int64, for memory-bank scorers: the memory item each patch was
    matched with (-1 on padding), which explains its score."""

    image_scores: np.ndarray
    patch_scores: np.ndarray | None = None
    nearest: np.ndarray | None = None

    @staticmethod
    def concat(parts: list[ScoreResult]) -> ScoreResult:
        def cat(name):
            arrs = [getattr(p, name) for p in parts]
            return np.concatenate(arrs) if parts and all(a is not None for a in arrs) else None

        img = np.concatenate([p.image_scores for p in parts]) if parts else np.zeros(0)
        return ScoreResult(img, cat("patch_scores"), cat("nearest"))


class ViewSource(Protocol):
    """Patch features of augmented views (rotations / flips) of training images."""

    @property
    def views_per_image(self) -> int: ...

    def iter_views(self, indices: Sequence[int]) -> Iterator[Features]:
        """The views' patch features of the training images at ``indices``, batch by batch."""


@dataclass
class SharedResults:
    """Results that scorers fitted on the same training features may share, keyed by what
    determines them (e.g. SoftPatch's and TailedCore's per-position LOF scores, keyed by
    the LOF parameters)."""

    values: dict[tuple, Any] = field(default_factory=dict)

    def get(self, key: tuple) -> Any:
        return self.values.get(key)

    def put(self, key: tuple, value: Any) -> None:
        self.values[key] = value


@dataclass(frozen=True)
class FitContext:
    """What a scorer may use at fit time besides the features and labels; each scorer reads
    the fields it needs and ignores the rest."""

    views: ViewSource | None = None  # augmented training views (TailedCore's tail memory)
    shared: SharedResults | None = None  # results shared across scorers on the same features
