"""Noise- and tail-robust memory banks: SoftPatch-style LOF filtering and TailedCore.

* :class:`SoftPatch` - PatchCore whose coreset is built only from the patches
  that survive the per-position LOF filter (k = 6, top 15 % discarded), so
  defects injected into the training set stay out of the memory. SoftPatch's
  soft re-weighting of test distances (x sqrt of the matched item's LOF: the
  published squared distance x LOF, in Euclidean units) is the ``soft_weight``
  option, off by default.
* :class:`TailedCore` (Jung et al., CVPR 2025) - memory = head memory (the
  SoftPatch coreset of *all* training patches) union tail memory (a coreset of
  the patches of the images TailSampler finds in rare classes, plus their
  rotated / flipped views, which the LOF filter would otherwise throw away as
  "rare"). Score = 1-NN distance, image score = max over patches (as PatchCore).

Both keep the :class:`~.base.Scorer` interface. TailedCore's ``tail_views`` names the views
(a kind of :data:`~..choices.VIEW_KINDS`); its :attr:`TailedCore.fit_views` tells
:meth:`~..pipeline.runner.Runner.fit_context` to put them in the fit's context
(``FitContext.views``, :class:`~..features.views.ViewFeatures`), so every command's fit
builds the same memory. ``fit(features)`` without a view source still works (no views: see
:meth:`TailedCore.fit`). Neither streams: the LOF filter reads every training patch at once,
so ``fit_batches`` gathers the batches first.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from itertools import chain
from typing import Any

import numpy as np

from ..choices import VIEW_KINDS
from ..core import Features, FitContext, SharedResults, ViewSource
from .base import Scorer
from .coreset import TwoRoundCoreset, coreset_size
from .lof_filter import check_discard, lof_filter
from .params import check_choice, check_flag, check_number
from .patchcore import PatchCore
from .provenance import Provenance
from .tail_sampler import TailSampler, TailSamplerResult, check_tail_settings

log = logging.getLogger(__name__)

EMBEDDINGS = ("pooled", "patch_mean")
#: the shapes of TailSampler's saved result (``Scorer.check_state``): one class size and
#: threshold per training image
TAIL_SHAPES: dict[str, tuple] = {"class_sizes": ("images",), "tail_indices": ("tail",),
                                 "tail_thresholds": ("images",), "tail_histogram": ("bins",),
                                 "tail_max_k": (1,)}
NO_VIEWS = "none"  # the view kind without views (in VIEW_KINDS)


class SoftPatch(PatchCore):
    """PatchCore on LOF-filtered training patches (noise-robust memory).

    ``soft_weight`` adds SoftPatch's soft re-weighting: every memory item keeps its
    LOF score and a test patch's distance is multiplied by the square root of the LOF
    of the item it matched, so a match to an atypical training patch counts as less
    normal. The published code scores squared L2 x LOF; d x sqrt(LOF) is its root, so
    it ranks the same (d x LOF, used before 2026-12-04, squared the weight's effect).
    Off by default: the LOF discard alone is what TailedCore's head memory uses.
    """

    name = "softpatch"
    requires = ("patches",)

    def __init__(
        self,
        coreset_ratio: float = 0.1,
        max_bank_items: int | None = None,
        projection_dim: int | None = 128,
        chunk_size: int | None = 4096,
        first_round_ratio: float | str | None = "auto",
        index: str = "auto",
        num_neighbors: int = 1,
        lof_k: int = 6,
        lof_discard: float = 0.15,
        lof_projection_dim: int | None = 128,
        soft_weight: bool = False,
        seed: int = 0,
        progress: bool = True,
        patch_maps: bool = True,
    ):
        super().__init__(coreset_ratio=coreset_ratio, max_bank_items=max_bank_items,
                         projection_dim=projection_dim, chunk_size=chunk_size,
                         first_round_ratio=first_round_ratio, index=index,
                         num_neighbors=num_neighbors, seed=seed, progress=progress,
                         patch_maps=patch_maps)
        check_number(self.name, "lof_k", lof_k, 1, whole=True)
        check_discard(lof_discard, self.name, "lof_discard")
        check_number(self.name, "lof_projection_dim", lof_projection_dim, 1, whole=True, allowed=(None,))
        check_flag(self.name, "soft_weight", soft_weight)
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
        scores (1 where no LOF was needed). Patches outside ``valid`` (padding) take no part
        in the per-position LOF, are not kept, nor counted in its discard quantile. LOF scores
        found in ``shared`` under :attr:`lof_key` (same features, same LOF parameters) are
        reused, and the ones computed here are put there. Where the items came from is left
        in ``head_provenance_``."""
        return self.head_coreset(patches, *self.lof_keep(patches, valid, shared))

    def lof_keep(self, patches: np.ndarray, valid: np.ndarray | None = None,
                 shared: SharedResults | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The LOF filter's keep mask (N, h, w) and the LOF scores (1 where no LOF was
        needed), as :meth:`head_memory` uses them."""
        cached = None if shared is None else shared.get(self.lof_key)
        if cached is not None and cached.shape != patches.shape[:3]:
            cached = None
        keep, scores = lof_filter(patches, self.lof_k, self.lof_discard, self.lof_projection_dim,
                                  self.seed, self.progress, valid, cached, self.soft_weight)
        if shared is not None and cached is None and scores is not None:
            shared.put(self.lof_key, scores)
        if scores is None:  # nothing was discarded or weighed: weight 1
            scores = np.ones(patches.shape[:3], np.float32)
        return keep, scores

    def head_coreset(self, patches: np.ndarray, keep: np.ndarray, scores: np.ndarray,
                     max_items: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Coreset (at most ``max_items``, default ``max_bank_items``) of the kept patches:
        the items and their LOF scores; their provenance in ``head_provenance_``."""
        kept = patches[keep]
        idx = self.select_bank(kept, max_items=max_items)
        self.head_provenance_ = Provenance.of_cells(keep, idx)
        return kept[idx], scores[keep][idx].astype(np.float32)

    def fit_batches(self, batches: Iterable[Features], n_images: int,
                    context: FitContext | None = None) -> SoftPatch:
        """Gathers the batches and calls :meth:`fit` (the default of :class:`Scorer`): the LOF
        filter (and TailedCore's tail) needs every training patch at once, so these cannot
        stream through the coreset as :meth:`PatchCore.fit_batches` does."""
        return Scorer.fit_batches(self, batches, n_images, context)

    def fit(self, features: Features, labels: np.ndarray | None = None,
            context: FitContext | None = None) -> SoftPatch:
        if features.patches is None:
            raise ValueError(f"{type(self).__name__} needs patch features")
        bank, lof = self.head_memory(features.patches, features.valid,
                                     context.shared if context else None)
        self._set_bank(np.ascontiguousarray(bank), lof if self.soft_weight else None,
                       self.head_provenance_, probes=self.probes(features))
        log.info("SoftPatch: %d memory items%s", len(bank),
                 " (soft weights)" if self.soft_weight else "")
        return self


class TailedCore(SoftPatch):
    """Head memory (LOF-filtered coreset) union tail memory (coreset of tail images + views).

    ``embedding`` picks the global image embedding TailSampler reads:
    ``"pooled"`` (the backbone's pooled last-stage features, default) or
    ``"patch_mean"`` (mean of the patch features; no full network pass).
    ``tail_coreset_ratio`` defaults to ``coreset_ratio``. ``tail_views``: the rotated /
    flipped views of the tail images added to the tail memory, a kind of
    :data:`~..choices.VIEW_KINDS` (default ``rotflip``: the 90-degree rotations x flip, 7
    per image; ``"none"`` adds none); whoever fits it supplies them (:attr:`fit_views`).

    ``max_bank_items`` caps the whole memory (tail + head). When the two parts' targets
    (``tail_coreset_ratio`` of the tail rows, ``coreset_ratio`` of the kept head rows) add
    up to more than the cap, it is split between them in proportion to those targets
    (each part gets at least one item where the cap allows; see :meth:`bank_caps`);
    otherwise each part is its target, as without a cap.
    """

    name = "tailedcore"
    requires = ("patches", "pooled")
    saved_before = {"tail_views": NO_VIEWS}  # fit gave no views before tail_views existed

    def __init__(
        self,
        coreset_ratio: float = 0.1,
        max_bank_items: int | None = None,
        projection_dim: int | None = 128,
        chunk_size: int | None = 4096,
        first_round_ratio: float | str | None = "auto",
        index: str = "auto",
        num_neighbors: int = 1,
        lof_k: int = 6,
        lof_discard: float = 0.15,
        lof_projection_dim: int | None = 128,
        tail_coreset_ratio: float | None = None,
        tail_keep: float = 0.85,
        tail_mass: float = 0.15,
        embedding: str = "pooled",
        tail_views: str = "rotflip",
        seed: int = 0,
        progress: bool = True,
        patch_maps: bool = True,
    ):
        super().__init__(coreset_ratio=coreset_ratio, max_bank_items=max_bank_items,
                         projection_dim=projection_dim, chunk_size=chunk_size,
                         first_round_ratio=first_round_ratio, index=index,
                         num_neighbors=num_neighbors, lof_k=lof_k, lof_discard=lof_discard,
                         lof_projection_dim=lof_projection_dim, seed=seed, progress=progress,
                         patch_maps=patch_maps)
        check_number(self.name, "tail_coreset_ratio", tail_coreset_ratio, 0, 1, low_open=True,
                     allowed=(None,))
        check_tail_settings(tail_keep, tail_mass, self.name, ("tail_keep", "tail_mass"))
        check_choice(self.name, "embedding", embedding, EMBEDDINGS)
        check_choice(self.name, "tail_views", tail_views, tuple(VIEW_KINDS))
        self.tail_coreset_ratio = tail_coreset_ratio
        self.tail_keep = tail_keep
        self.tail_mass = tail_mass
        self.embedding = embedding
        self.tail_views = tail_views
        self.views_used_: str | None = None  # the view kind the last fit added (see fit)
        self.tail_result: TailSamplerResult | None = None
        self.tail_provenance_: Provenance | None = None
        self.head_size = 0
        self.tail_size = 0

    @property
    def fit_views(self) -> str | None:
        """The view kind this scorer reads at fit (``FitContext.views``): ``tail_views``, or
        None for ``"none"``."""
        return None if self.tail_views == NO_VIEWS else self.tail_views

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
        Where the items came from is left in ``tail_provenance_``: a view source with
        ``iter_view_blocks`` (image indices and (angle, flip) of every block, as
        :class:`~..features.views.ViewFeatures` has) gives the views' provenance; other
        sources' view items are marked unknown (image -1).
        """
        return self._finish_tail(*self._stream_tail(patches, tail, valid, views))

    def _stream_tail(self, patches: np.ndarray, tail: np.ndarray, valid: np.ndarray | None,
                     views: ViewSource | None) -> tuple:
        """Round 1 of the tail coreset over the tail images' patches and their views:
        (coreset, tail, the tail images' valid cells, the view blocks' spans)."""
        d = patches.shape[-1]
        tail = np.asarray(tail)
        own = patches[tail].reshape(-1, d) if valid is None else patches[tail][valid[tail]]
        own_valid = (np.ones(patches.shape[:3], bool) if valid is None else valid)[tail]
        coreset = self.coreset(self.tail_coreset_ratio, keep_rows=True)
        #: per view block: (rows, image ids or None, (angle, flip), valid mask)
        spans: list[tuple[int, np.ndarray | None, tuple[int, bool] | None, np.ndarray | None]] = []
        if views is None or not len(tail):
            blocks = [own]
        else:
            blocks = chain([own], self._view_blocks(views, tail, d, spans))
        return self.run_coreset(coreset, blocks), tail, own_valid, spans

    def _finish_tail(self, coreset: TwoRoundCoreset, tail: np.ndarray, own_valid: np.ndarray,
                     spans: list) -> np.ndarray:
        """Round 2 of the streamed tail coreset: its rows, their provenance in
        ``tail_provenance_``."""
        positions, rows = self.finish_coreset(coreset, rows=True)
        self.tail_provenance_ = _view_provenance(positions, own_valid, tail, spans)
        return rows

    def bank_caps(self, head_rows: int, tail_rows: int) -> tuple[int | None, int | None]:
        """(head, tail) item caps that keep the whole memory within ``max_bank_items``.

        Each part's target is its coreset ratio of its rows (``head_rows`` LOF-kept patches,
        ``tail_rows`` tail patches and views). When no cap is set, or the targets fit in it
        together, each part keeps the plain cap (so its target, as before). Otherwise the cap
        is split in proportion to the targets (rounded; each part at least one item when
        the cap is 2 or more; a cap of 1 goes to the head, and the tail is then empty).
        """
        cap = self.max_bank_items
        if cap is None:
            return None, None
        head = coreset_size(head_rows, self.coreset_ratio) if head_rows else 0
        tail_ratio = self.coreset_ratio if self.tail_coreset_ratio is None else self.tail_coreset_ratio
        tail = coreset_size(tail_rows, tail_ratio) if tail_rows else 0
        if head + tail <= cap:
            return cap, cap
        if cap == 1:
            return 1, 0
        head_cap = min(max(int(round(cap * head / (head + tail))), 1), cap - 1)
        return head_cap, cap - head_cap

    def _view_blocks(self, views: ViewSource, tail: np.ndarray, d: int, spans: list):
        """(M, D) blocks of the views' patches, noting in ``spans`` where each came from."""
        indexed = getattr(views, "iter_view_blocks", None)
        items = indexed(tail) if indexed is not None else \
            ((None, None, b) for b in views.iter_views(tail))
        for ids, view, b in items:
            if b.patches is None:
                continue
            rows = self._flat_views(b, d)
            spans.append((len(rows), ids, view, b.valid_mask() if ids is not None else None))
            yield rows

    @staticmethod
    def _flat_views(views: Features, d: int) -> np.ndarray:
        """The view patches that lie on the (rotated) image, as an (M, D) array."""
        patches = views.patches
        if patches.shape[-1] != d:
            raise ValueError(f"view features have dim {patches.shape[-1]}, training {d}")
        return patches.reshape(-1, d) if views.valid is None else patches[views.valid]

    def fit(self, features: Features, labels: np.ndarray | None = None,
            context: FitContext | None = None) -> TailedCore:
        """Head and tail memory. The tail's views come from ``context.views``, which must be of
        the kind ``tail_views`` names (a :class:`~..features.views.ViewFeatures` of another
        kind is refused; ``Runner.fit`` builds the right one). Without a view source (a plain
        ``fit(features)``) the tail memory holds the tail images' own patches only, and
        :meth:`fit_summary` records ``tail_views: "none"``, the views this fit used."""
        if features.patches is None:
            raise ValueError("TailedCore needs patch features")
        context = context or FitContext()
        self.views_used_ = self._check_views(context.views)
        self.tail_result = self.find_tail(features)
        tail = self.tail_result.tail_indices
        log.info("TailSampler: %d of %d images in tail classes (class size <= %d); histogram %s",
                 len(tail), len(features), self.tail_result.max_k, self.tail_result.histogram.tolist())
        keep, lof = self.lof_keep(features.patches, features.valid, context.shared)
        # the tail streams first: its row count (patches and views) splits max_bank_items
        head_cap = tail_cap = self.max_bank_items
        tail_bank = np.zeros((0, features.patches.shape[-1]), np.float32)
        tail_prov = Provenance.unknown(0)
        if len(tail):
            streamed = self._stream_tail(features.patches, tail, features.valid, context.views)
            head_cap, tail_cap = self.bank_caps(int(keep.sum()), streamed[0].n_seen)
            if tail_cap != 0:
                streamed[0].max_items = tail_cap
                tail_bank = self._finish_tail(*streamed)
                tail_prov = self.tail_provenance_
        head, _ = self.head_coreset(features.patches, keep, lof, head_cap)
        self.head_size, self.tail_size = len(head), len(tail_bank)
        self._set_bank(np.ascontiguousarray(np.concatenate([tail_bank, head])),
                       provenance=Provenance.concat([tail_prov, self.head_provenance_]),
                       probes=self.probes(features))
        log.info("TailedCore: memory %d items (tail %d + head %d)", self.bank_size, self.tail_size,
                 self.head_size)
        return self

    def _check_views(self, views: ViewSource | None) -> str:
        """The kind of the fit's ``views`` (``"none"`` without any), refused when it is not
        ``tail_views``: the saved parameters must say what the memory holds."""
        if views is None:
            return NO_VIEWS
        kind = getattr(views, "kind", None)  # ViewFeatures says; other sources cannot
        if kind is None:  # taken to be tail_views', unless that is none
            if self.tail_views == NO_VIEWS:
                raise ValueError("TailedCore(tail_views='none') was given a view source; "
                                 "set tail_views to the kind of its views")
        elif kind != self.tail_views:
            raise ValueError(f"TailedCore(tail_views={self.tail_views!r}) was given views of "
                             f"kind {kind!r}; build the fit context from the scorer's "
                             f"fit_views (Runner.fit_context)")
        return self.tail_views

    def fit_summary(self) -> dict[str, Any]:
        out = super().fit_summary()
        if self.tail_result is not None:
            out.update(tail_items=self.tail_size, head_items=self.head_size,
                       tail_images=int(len(self.tail_result.tail_indices)))
        if self.views_used_ is not None:
            out["tail_views"] = self.views_used_
        return out

    # -- persistence -----------------------------------------------------------
    def get_state(self) -> dict[str, np.ndarray]:
        state = {"memory_bank": self.memory_bank,
                 "sizes": np.array([self.tail_size, self.head_size], np.int64)}
        if self.tail_result is not None:
            r = self.tail_result
            state.update(tail_indices=r.tail_indices.astype(np.int64),
                         class_sizes=r.class_sizes.astype(np.int64),
                         tail_thresholds=r.thresholds.astype(np.float32),
                         tail_histogram=r.histogram.astype(np.int64),
                         tail_max_k=np.array([r.max_k], np.int64))
        return {**state, **self.bank_state()}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Restores the bank and ``tail_result``. States saved before the histogram, thresholds
        and max_k were kept give zero thresholds, an empty histogram and max_k = the largest
        class size among the tail images."""
        tail = [k for k in TAIL_SHAPES if "class_sizes" in state and (
            k in ("class_sizes", "tail_indices") or "tail_max_k" in state)]
        self.check_bank_state(state, sizes=(2,), **{k: TAIL_SHAPES[k] for k in tail})
        self._set_bank(state["memory_bank"],
                       provenance=Provenance.from_state(state, len(state["memory_bank"])),
                       **self.saved_graph(state))
        self.tail_size, self.head_size = (int(v) for v in state["sizes"])
        if "class_sizes" in state:
            sizes, tail = state["class_sizes"], state["tail_indices"]
            if "tail_max_k" in state:
                thresholds, histogram = state["tail_thresholds"], state["tail_histogram"]
                max_k = int(state["tail_max_k"][0])
            else:
                thresholds, histogram = np.zeros(len(sizes), np.float32), np.zeros(0, np.int64)
                max_k = int(sizes[tail].max(initial=0))
            self.tail_result = TailSamplerResult(sizes, thresholds, histogram, max_k, tail)


def _view_provenance(positions: np.ndarray, own_valid: np.ndarray, tail: np.ndarray,
                     spans: list) -> Provenance:
    """Provenance of the tail coreset's ``positions`` among the rows streamed to it: first
    the tail images' own patches (``own_valid``), then the view blocks in ``spans``."""
    views: list[tuple[int, bool]] = [(0, False)]
    for _, ids, view, _ in spans:
        if ids is not None and (int(view[0]), bool(view[1])) not in views:
            views.append((int(view[0]), bool(view[1])))
    table = np.array(views, np.int16)
    bounds = np.cumsum([int(own_valid.sum())] + [n for n, *_ in spans])
    starts = np.concatenate([[0], bounds[:-1]])
    which = np.searchsorted(bounds, positions, side="right")  # 0 = own patches, k = span k - 1
    parts, part_pos = [Provenance.unknown(0, table)], [np.zeros(0, np.int64)]
    for k in np.unique(which):
        mine = np.flatnonzero(which == k)
        local = positions[mine] - starts[k]
        if k == 0:
            parts.append(Provenance.of_cells(own_valid, local, tail, views=table))
        elif spans[k - 1][1] is None:
            parts.append(Provenance.unknown(len(local), table))
        else:
            _, ids, view, valid = spans[k - 1]
            view_id = views.index((int(view[0]), bool(view[1])))
            parts.append(Provenance.of_cells(valid, local, np.asarray(ids), view_id, table))
        part_pos.append(mine)
    return Provenance.concat(parts).take(np.argsort(np.concatenate(part_pos), kind="stable"))
