"""Noise- and tail-robust memory banks: SoftPatch-style LOF filtering and TailedCore.

* :class:`SoftPatch` - PatchCore whose coreset is built only from the patches
  that survive the per-position LOF filter (k = 6, top 15 % discarded), so
  defects injected into the training set stay out of the memory. (SoftPatch's
  soft re-weighting of test distances is not implemented.)
* :class:`TailedCore` (Jung et al., CVPR 2025) - memory = head memory (the
  SoftPatch coreset of *all* training patches) union tail memory (a coreset of
  the patches of the images TailSampler finds in rare classes, plus their
  rotated / flipped views, which the LOF filter would otherwise throw away as
  "rare"). Score = 1-NN distance, image score = max over patches (as PatchCore).

Both keep the :class:`~.base.Scorer` interface; ``fit(features)`` works on its
own, and TailedCore uses extra views only when given a view source (see
:meth:`TailedCore.set_view_source` and :class:`~..features.views.ViewFeatures`).
"""

from __future__ import annotations

import logging
from itertools import chain
from typing import Any

import numpy as np

from ..core import Features, FitContext, SharedResults, ViewSource
from .lof_filter import check_discard, keep_below_quantile, per_position_lof
from .patchcore import PatchCore
from .tail_sampler import TailSampler, TailSamplerResult

log = logging.getLogger(__name__)

EMBEDDINGS = ("pooled", "patch_mean")


class SoftPatch(PatchCore):
    """PatchCore on LOF-filtered training patches (noise-robust memory).

    ``soft_weight`` adds SoftPatch's soft re-weighting: every memory item keeps its
    LOF score and a test patch's distance is multiplied by the LOF of the item it
    matched, so a match to an atypical training patch counts as less normal. Off by
    default: the LOF discard alone is what TailedCore's head memory uses.
    """

    name = "softpatch"
    requires = ("patches",)

    def __init__(
        self,
        coreset_ratio: float = 0.1,
        max_bank_items: int | None = None,
        projection_dim: int | None = 128,
        chunk_size: int | None = 4096,
        first_round_ratio: float | None = 0.1,
        index: str = "auto",
        num_neighbors: int = 1,
        lof_k: int = 6,
        lof_discard: float = 0.15,
        lof_projection_dim: int | None = 128,
        soft_weight: bool = False,
        seed: int = 0,
        progress: bool = True,
    ):
        super().__init__(coreset_ratio, max_bank_items, projection_dim, chunk_size,
                         first_round_ratio, index, num_neighbors, seed, progress)
        self.lof_k = lof_k
        self.lof_discard = lof_discard
        self.lof_projection_dim = lof_projection_dim
        self.soft_weight = soft_weight

    @property
    def lof_key(self) -> tuple:
        """Parameters that determine the LOF scores (scorers with equal keys share them)."""
        return (self.lof_k, self.lof_projection_dim, self.seed)

    def head_memory(self, patches: np.ndarray, valid: np.ndarray | None = None,
                    shared: SharedResults | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Coreset of the LOF-filtered (N, h, w, D) patches: the (M, D) items and their LOF
        scores (1 where no LOF was needed). Patches outside ``valid`` (padding) take part in
        the per-position LOF but are not kept, nor counted in its discard quantile. LOF scores
        found in ``shared`` under :attr:`lof_key` (same features, same LOF parameters) are
        reused, and the ones computed here are put there."""
        check_discard(self.lof_discard)
        scores = None if shared is None else shared.get(self.lof_key)
        if scores is not None and scores.shape != patches.shape[:3]:
            scores = None
        if scores is None and (self.lof_discard > 0 or self.soft_weight):
            scores = per_position_lof(patches, self.lof_k, self.lof_projection_dim, self.seed,
                                      self.progress)
            if shared is not None:
                shared.put(self.lof_key, scores)
        if scores is None:  # nothing to discard or weigh: every image patch is kept, weight 1
            scores = np.ones(patches.shape[:3], np.float32)
        keep = keep_below_quantile(scores, self.lof_discard, valid)
        kept = patches[keep]
        idx = self.select_bank(kept)
        return kept[idx], scores[keep][idx].astype(np.float32)


    def fit(self, features: Features, labels: np.ndarray | None = None,
            context: FitContext | None = None) -> SoftPatch:
        if features.patches is None:
            raise ValueError(f"{type(self).__name__} needs patch features")
        bank, lof = self.head_memory(features.patches, features.valid,
                                     context.shared if context else None)
        self._set_bank(np.ascontiguousarray(bank), lof if self.soft_weight else None)
        log.info("SoftPatch: %d memory items%s", len(bank),
                 " (soft weights)" if self.soft_weight else "")
        return self


class TailedCore(SoftPatch):
    """Head memory (LOF-filtered coreset) union tail memory (coreset of tail images + views).

    ``embedding`` picks the global image embedding TailSampler reads:
    ``"pooled"`` (the backbone's pooled last-stage features, default) or
    ``"patch_mean"`` (mean of the patch features; no full network pass).
    ``tail_coreset_ratio`` defaults to ``coreset_ratio``.
    """

    name = "tailedcore"
    requires = ("patches", "pooled")

    def __init__(
        self,
        coreset_ratio: float = 0.1,
        max_bank_items: int | None = None,
        projection_dim: int | None = 128,
        chunk_size: int | None = 4096,
        first_round_ratio: float | None = 0.1,
        index: str = "auto",
        num_neighbors: int = 1,
        lof_k: int = 6,
        lof_discard: float = 0.15,
        lof_projection_dim: int | None = 128,
        tail_coreset_ratio: float | None = None,
        tail_keep: float = 0.85,
        tail_mass: float = 0.15,
        embedding: str = "pooled",
        seed: int = 0,
        progress: bool = True,
    ):
        super().__init__(coreset_ratio, max_bank_items, projection_dim, chunk_size,
                         first_round_ratio, index, num_neighbors, lof_k, lof_discard,
                         lof_projection_dim, seed=seed, progress=progress)
        if embedding not in EMBEDDINGS:
            raise ValueError(f"unknown embedding '{embedding}'; choose from {', '.join(EMBEDDINGS)}")
        self.tail_coreset_ratio = tail_coreset_ratio
        self.tail_keep = tail_keep
        self.tail_mass = tail_mass
        self.embedding = embedding
        self.tail_result: TailSamplerResult | None = None
        self.head_size = 0
        self.tail_size = 0

    def global_embeddings(self, features: Features) -> np.ndarray:
        if self.embedding == "pooled":
            if features.pooled is None:
                raise ValueError("TailedCore(embedding='pooled') needs pooled features; extract "
                                 "with pooled=True or use embedding='patch_mean'")
            return features.pooled
        if features.valid is None:
            return features.patches.mean(axis=(1, 2))
        w = features.valid[..., None].astype(np.float32)
        return (features.patches * w).sum(axis=(1, 2)) / w.sum(axis=(1, 2))

    def find_tail(self, features: Features) -> TailSamplerResult:
        """Run TailSampler on the training images' global embeddings."""
        return TailSampler(self.tail_keep, self.tail_mass).run(self.global_embeddings(features))

    def tail_memory(self, patches: np.ndarray, tail: np.ndarray,
                    valid: np.ndarray | None = None, views: ViewSource | None = None) -> np.ndarray:
        """Coreset of the tail images' patches (those in ``valid``) plus the patches of their
        ``views``. Views reach the coreset batch by batch: round 1 reduces each batch as it
        arrives, so memory holds one batch of views plus the kept rows, not all views.
        """
        d = patches.shape[-1]
        own = patches[tail].reshape(-1, d) if valid is None else patches[tail][valid[tail]]
        coreset = self.coreset(self.tail_coreset_ratio, keep_rows=True)
        if views is None or not len(tail):
            blocks = [own]
        else:
            blocks = chain([own], (self._flat_views(b, d) for b in views.iter_views(tail)
                                   if b.patches is not None))
        return self.finish_coreset(self.run_coreset(coreset, blocks), rows=True)

    @staticmethod
    def _flat_views(views: Features, d: int) -> np.ndarray:
        """The view patches that lie on the (rotated) image, as an (M, D) array."""
        patches = views.patches
        if patches.shape[-1] != d:
            raise ValueError(f"view features have dim {patches.shape[-1]}, training {d}")
        return patches.reshape(-1, d) if views.valid is None else patches[views.valid]

    def fit(self, features: Features, labels: np.ndarray | None = None,
            context: FitContext | None = None) -> TailedCore:
        if features.patches is None:
            raise ValueError("TailedCore needs patch features")
        self.tail_result = self.find_tail(features)
        tail = self.tail_result.tail_indices
        log.info("TailSampler: %d of %d images in tail classes (class size <= %d); histogram %s",
                 len(tail), len(features), self.tail_result.max_k, self.tail_result.histogram.tolist())
        context = context or FitContext()
        head, _ = self.head_memory(features.patches, features.valid, context.shared)
        tail_bank = (self.tail_memory(features.patches, tail, features.valid, context.views) if len(tail)
                     else np.zeros((0, head.shape[1]), np.float32))
        self.head_size, self.tail_size = len(head), len(tail_bank)
        self._set_bank(np.ascontiguousarray(np.concatenate([tail_bank, head])))
        log.info("TailedCore: memory %d items (tail %d + head %d)", self.bank_size, self.tail_size,
                 self.head_size)
        return self

    def fit_summary(self) -> dict[str, Any]:
        out = super().fit_summary()
        if self.tail_result is not None:
            out.update(tail_items=self.tail_size, head_items=self.head_size,
                       tail_images=int(len(self.tail_result.tail_indices)))
        return out

    # -- persistence -----------------------------------------------------------
    def get_state(self) -> dict[str, np.ndarray]:
        state = {"memory_bank": self.memory_bank,
                 "sizes": np.array([self.tail_size, self.head_size], np.int64)}
        if self.tail_result is not None:
            state["tail_indices"] = self.tail_result.tail_indices.astype(np.int64)
            state["class_sizes"] = self.tail_result.class_sizes.astype(np.int64)
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self._set_bank(state["memory_bank"])
        self.tail_size, self.head_size = (int(v) for v in state["sizes"])
        if "class_sizes" in state:
            sizes = state["class_sizes"]
            self.tail_result = TailSamplerResult(sizes, np.zeros(len(sizes), np.float32),
                                                 np.zeros(0, np.int64),
                                                 int(sizes[state["tail_indices"]].max(initial=0)),
                                                 state["tail_indices"])
