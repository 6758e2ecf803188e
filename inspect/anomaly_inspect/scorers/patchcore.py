"""PatchCore (Roth et al., CVPR 2022): a coreset memory bank of normal patch features.

Patch score = Euclidean distance to the nearest memory item; image score =
the maximum patch score, optionally re-weighted as in the paper with the
``num_neighbors`` (b) memory items nearest to the matched item.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..choices import SEED_LIMIT, SEED_RANGE
from ..core import Features, FitContext
from ..progress import Progress
from .base import Scorer, ScoreResult
from .coreset import TwoRoundCoreset, check_first_round_ratio
from .maps import fill_padding
from .nn_index import INDEX_KINDS, NearestNeighbours, ProbeSample
from .params import check_choice, check_number
from .provenance import Provenance

log = logging.getLogger(__name__)

GRAPH_PREFIX = "search_links_"  # a saved bank's HNSW graph: search_links_neighbors, ...
#: the shapes of a saved bank's arrays (``Scorer.check_state``); provenance and the graph links
#: are checked where they are read (damaged, they are dropped or built again)
BANK_SHAPES: dict[str, tuple] = {"memory_bank": ("items", "patches"), "item_weights": ("items",),
                                 "search_graph_m": (1,)}
BANK_OPTIONAL = ("item_weights", "search_graph_m")  # no soft weights; saved before the M was kept

# efSearch of an HNSW bank when only image scores are read (``patch_maps=False``): the search
# then only bounds each patch's distance from above and the exact image maxima do the rest.
# Bottle, a tune fold bank of 2,224 items, 140 held-out images: efSearch 16 / 8 / 4 / 2 / 1
# score in 0.64 / 0.48 / 0.39 / 0.39 / 0.55 s, every image score identical.
BOUNDS_EF_SEARCH = 4


def reweight_image_scores(
    patches: np.ndarray, patch_scores: np.ndarray, nn_idx: np.ndarray, bank: np.ndarray,
    bank_index: NearestNeighbours, b: int,
) -> np.ndarray:
    """Paper re-weighting: s = (1 - exp(d*) / sum_{m in N_b(m*)} exp(||m_test* - m||)) * d*.

    patches: (N, P, D) test patches; patch_scores / nn_idx: (N, P). ``b`` is capped at the
    bank's size, and with b = 1 the image score is s*: N_1(m*) is m* alone, whose weight
    1 - exp(d*) / exp(d*) would score every image 0.
    """
    n = len(patches)
    worst = patch_scores.argmax(1)
    s_star = patch_scores[np.arange(n), worst]
    b = min(b, len(bank))
    if b <= 1:
        return s_star
    m_test = patches[np.arange(n), worst]  # (N, D)
    m_star = bank[nn_idx[np.arange(n), worst]]  # (N, D)
    # exact, as the image maxima are (an approximate index gave another N_b, and -1 labels)
    _, support = bank_index.search_exact(m_star, b)  # (N, b), m* itself first
    d = np.linalg.norm(bank[support] - m_test[:, None, :], axis=-1).astype(np.float64)
    d[support < 0] = np.inf  # a neighbour the index did not return (label -1): none
    d_star = d.min(axis=1, keepdims=True)
    softmax_first = 1.0 / np.exp(d - d_star).sum(axis=1)  # exp(d*) / sum exp(d), stable
    return ((1.0 - softmax_first) * s_star).astype(np.float32)


def weighted_scores(dist: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Soft-weighted patch scores: Euclidean distance x sqrt(weight of the matched item).

    SoftPatch's code (as PatchCore's) scores with the *squared* L2 distance times the
    weight; d x sqrt(w) is the root of that, so it ranks test patches (and images) as the
    published score does while keeping Euclidean units. (d x w, used before 2026-12-04,
    ranked as d^2 x w^2: it squared the weight's effect.)
    """
    return dist * np.sqrt(weights)


def exact_image_maxima(
    patches: np.ndarray, dist: np.ndarray, nn_idx: np.ndarray, nn: NearestNeighbours,
    weights: np.ndarray | None = None, per_round: int = 8,
) -> None:
    """Make each image's maximum patch score exact after an approximate search (in place).

    An approximate index returns a real memory item, so its distance is never
    below the exact nearest-neighbour distance. Checking patches in order of
    decreasing approximate distance with an exact search, an image is done once
    no unchecked patch's approximate distance exceeds the largest exact one
    found: the true maximum is then known. Usually a handful of patches per
    image are re-searched, so image scores equal exact search at the cost of
    the approximate one; the other patch scores stay approximate.

    With ``weights`` (one per memory item; a patch's score is its distance times
    the square root of its nearest item's weight, see :func:`weighted_scores`) the
    approximate distance times the root of the largest weight bounds a patch's
    exact score, and the same search runs on the bounds. ``dist`` and ``nn_idx``
    are updated; the caller applies the weights.
    """
    n, p = dist.shape
    scale = 1.0 if weights is None else max(float(np.sqrt(weights.max())), 1e-12)
    checked = np.zeros((n, p), dtype=bool)
    best = np.full(n, -np.inf, dtype=np.float64)
    rows_all = np.arange(n)[:, None]
    while True:
        pending = np.where(checked, -np.inf, dist * scale)
        top = np.argpartition(-pending, min(per_round, p) - 1, axis=1)[:, :per_round]
        need = pending[rows_all, top] > best[:, None]
        if not need.any():
            return
        rows, cols = np.nonzero(need)
        cols = top[rows, cols]
        d, i = nn.search_exact(patches[rows, cols], 1)
        dist[rows, cols] = d[:, 0]
        nn_idx[rows, cols] = i[:, 0]
        checked[rows, cols] = True
        exact = d[:, 0] if weights is None else weighted_scores(d[:, 0], weights[i[:, 0]])
        np.maximum.at(best, rows, exact.astype(np.float64))


def check_bank(bank: np.ndarray) -> None:
    """Refuse a memory bank that is not a non-empty (items, width) array (an empty one ended in
    faiss's bare AssertionError at the first search)."""
    if np.ndim(bank) != 2 or len(bank) == 0:
        raise ValueError(f"memory bank must be a non-empty (items, width) array, got shape "
                         f"{np.shape(bank)}")


def image_patches(features: Features) -> np.ndarray:
    """The (M, D) patches of ``features`` that lie on the images (padding never enters a bank)."""
    patches = features.patches
    if patches is None:
        raise ValueError("memory-bank scorers need patch features")
    return patches.reshape(-1, patches.shape[-1]) if features.valid is None else patches[features.valid]


class PatchCore(Scorer):
    """Greedy-coreset memory bank + faiss nearest-neighbour search.

    Parameters mirror ``configs/patchcore.yaml``: ``coreset_ratio`` of the
    training patches is kept (at most ``max_bank_items``), selected on a
    ``projection_dim`` random projection by the two-round greedy of
    :class:`~.coreset.TwoRoundCoreset`: chunks of ``chunk_size`` patches (None =
    exact greedy), each first reduced to ``first_round_ratio`` of itself (``auto``: 0.3 at
    small ratios, less from 1 % up), then one greedy over the union (in k-means cells
    where one pass would be costly);
    ``index`` is the faiss index kind; ``num_neighbors`` > 1 turns on the
    paper's image-score re-weighting. ``patch_maps=False`` (a runtime switch, for callers
    that read image scores only) searches an HNSW bank at ``BOUNDS_EF_SEARCH``: image scores
    are the same, patch scores only upper bounds.
    """

    name = "patchcore"
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
        seed: int = 0,
        progress: bool = True,
        patch_maps: bool = True,
    ):
        check_number(self.name, "coreset_ratio", coreset_ratio, 0, 1, low_open=True)
        check_number(self.name, "num_neighbors", num_neighbors, 1, whole=True)
        for name, value in (("projection_dim", projection_dim), ("max_bank_items", max_bank_items),
                            ("chunk_size", chunk_size)):
            check_number(self.name, name, value, 1, whole=True, allowed=(None,))
        check_first_round_ratio(first_round_ratio, self.name)
        check_choice(self.name, "index", index, INDEX_KINDS)
        check_number(self.name, "seed", seed, 0, whole=True)
        if seed >= SEED_LIMIT:  # refused now, not by faiss's IVF clustering after the coreset
            raise ValueError(f"{self.name}: seed {SEED_RANGE}, got {seed}")
        self.coreset_ratio = coreset_ratio
        self.max_bank_items = max_bank_items
        self.projection_dim = projection_dim
        self.chunk_size = chunk_size
        self.first_round_ratio = first_round_ratio
        self.index = index
        self.num_neighbors = num_neighbors
        self.seed = seed
        self.progress = progress
        self.patch_maps = patch_maps
        self.memory_bank: np.ndarray | None = None
        self.item_weights: np.ndarray | None = None
        #: where each memory item came from (None for models saved before it was kept)
        self.provenance: Provenance | None = None
        self._nn: NearestNeighbours | None = None
        #: the seconds the search index of a bank fitted in this process took to build
        #: (``fit_summary``'s ``index_seconds``); None for a loaded bank
        self._index_seconds: float | None = None

    # -- fitting ---------------------------------------------------------------
    def coreset(self, ratio: float | None = None, keep_rows: bool = False,
                max_items: int | None = None) -> TwoRoundCoreset:
        """An empty coreset builder with this scorer's settings (``ratio`` overrides
        ``coreset_ratio``, e.g. for TailedCore's tail memory, and ``max_items``
        ``max_bank_items``, e.g. for TailedCore's share of the cap)."""
        return TwoRoundCoreset(self.coreset_ratio if ratio is None else ratio,
                               self.max_bank_items if max_items is None else max_items,
                               self.chunk_size, self.first_round_ratio,
                               self.projection_dim, self.seed, keep_rows)

    def run_coreset(self, coreset: TwoRoundCoreset, blocks: Iterable[np.ndarray],
                    bar: Progress | None = None) -> TwoRoundCoreset:
        """Feed (M, D) blocks of patches to ``coreset`` (round 1), with a progress bar (``bar``,
        or one without a total)."""
        with bar or Progress(None, "coreset", unit="pt", enabled=self.progress) as bar:
            for block in blocks:
                coreset.add(block, bar)
            coreset.flush(bar)
        return coreset

    def finish_coreset(self, coreset: TwoRoundCoreset, rows: bool = False):
        """Round 2: the positions of the final coreset; with ``rows``, (positions, rows)."""
        with Progress(coreset.target, "coreset round 2", unit="pt",
                      enabled=self.progress and coreset.greedy_round_two) as bar:
            return coreset.finish_positions_rows(bar) if rows else coreset.finish(bar)

    def select_bank(self, patches: np.ndarray, ratio: float | None = None,
                    max_items: int | None = None) -> np.ndarray:
        """Coreset indices of the flattened (M, D) training patches (``ratio`` and ``max_items``
        as in :meth:`coreset`)."""
        bar = Progress(len(patches), "coreset", unit="pt", enabled=self.progress)
        return self.finish_coreset(self.run_coreset(self.coreset(ratio, max_items=max_items),
                                                    [patches], bar))

    def fit(self, features: Features, labels: np.ndarray | None = None,
            context: FitContext | None = None) -> PatchCore:
        return self.fit_batches([features], len(features))

    def fit_batches(self, batches: Iterable[Features], n_images: int,
                    context: FitContext | None = None) -> PatchCore:
        """Stream the training patches through the coreset: only its kept rows stay in memory
        (and one bool per training patch, to say where each kept row came from)."""
        valid: list[np.ndarray] = []
        probes = ProbeSample(seed=self.seed)
        bar = Progress(None, "coreset", unit="pt", enabled=self.progress)

        def blocks():
            images = patches = total = 0
            for b in batches:
                rows = image_patches(b)
                valid.append(b.valid_mask())
                probes.add(rows)
                # the bar's total: the patches so far and as many per image for those to come
                images, patches = images + len(b), patches + len(rows)
                estimate = patches + round(max(n_images - images, 0) * patches / max(images, 1))
                bar.grow(estimate - total)
                total = estimate
                yield rows
            bar.grow(patches - total)  # fewer images than n_images came (unreadable ones)

        coreset = self.run_coreset(self.coreset(keep_rows=True), blocks(), bar)
        self.install_coreset(coreset, valid, probes.rows)
        return self

    def install_coreset(self, coreset: TwoRoundCoreset, valid: list[np.ndarray],
                        probes: np.ndarray | None) -> None:
        """Round 2 and the bank it gives, as every fit (one machine or distributed) installs
        it: the kept rows, where they came from (``valid``: each training image's patch
        cells, in order) and, for an HNSW index, the graph checked on ``probes`` (a sample of
        the training patches)."""
        positions, rows = self.finish_coreset(coreset, rows=True)
        self._input_widths = {"patches": rows.shape[1]}  # a distributed fit sees no Features
        self._set_bank(np.ascontiguousarray(rows),
                       provenance=Provenance.of_cells(np.concatenate(valid), positions),
                       probes=probes)
        log.info("PatchCore: %d of %d patches in the memory bank", self.bank_size, coreset.n_seen)

    def probes(self, features: Features) -> np.ndarray:
        """The sample of training patches an HNSW index is checked on (see ``_set_bank``)."""
        return ProbeSample(seed=self.seed).add(image_patches(features)).rows

    def _set_bank(self, bank: np.ndarray, weights: np.ndarray | None = None,
                  provenance: Provenance | None = None, probes: np.ndarray | None = None,
                  graph_m: int | None = None, graph: dict[str, np.ndarray] | None = None) -> None:
        """Install the memory bank; ``weights`` (one per item) weigh the distances to it
        (score = distance x sqrt(weight), see :func:`weighted_scores`);
        ``provenance`` says where each item came from. ``probes`` (a sample of training
        patches) check an HNSW index at fit, and come with a fit only: the index's build
        seconds are then kept for :meth:`fit_summary`; ``graph`` is a saved model's graph (its
        links), ``graph_m`` the M that check chose, to rebuild a graph saved without its links."""
        check_bank(bank)
        if weights is not None and len(weights) != len(bank):
            raise ValueError(f"{len(weights)} item weights for a bank of {len(bank)} items")
        if provenance is not None and len(provenance) != len(bank):
            raise ValueError(f"provenance of {len(provenance)} items for a bank of {len(bank)}")
        self.provenance = provenance
        self.memory_bank = bank.astype(np.float32, copy=False)
        self.item_weights = None if weights is None else np.asarray(weights, np.float32)
        params = {"seed": self.seed} if graph_m is None else {"seed": self.seed, "hnsw_m": graph_m}
        self._nn = NearestNeighbours(self.index, **params).fit(self.memory_bank, probes, graph)
        self._index_seconds = None if probes is None else self._nn.build_seconds
        self._fitted = True

    # -- scoring ---------------------------------------------------------------
    def score(self, features: Features) -> ScoreResult:
        self._check_fitted()
        patches = features.patches
        if patches is None:
            raise ValueError(f"{type(self).__name__}.score: needs patch features; these have none")
        n, h, w, d = patches.shape
        if d != self.memory_bank.shape[1]:
            raise ValueError(f"{type(self).__name__}.score: patch features have width {d}, the "
                             f"memory bank holds items of width {self.memory_bank.shape[1]}")
        flat = patches.reshape(n, h * w, d)
        padding = None if features.valid is None else ~features.valid.reshape(n, h * w)
        ef = None if self.patch_maps else BOUNDS_EF_SEARCH
        if padding is None:
            dist, nn_idx = self._nn.search(flat.reshape(-1, d), 1, ef)
            patch_scores = dist[:, 0].reshape(n, h * w)
            nn_idx = nn_idx[:, 0].reshape(n, h * w)
        else:  # only the image is searched; the image score is its maximum, not the padding's
            patch_scores = np.full((n, h * w), -np.inf, np.float32)
            nn_idx = np.full((n, h * w), -1, np.int64)
            dist, idx = self._nn.search(flat[~padding], 1, ef)
            patch_scores[~padding], nn_idx[~padding] = dist[:, 0], idx[:, 0]
        if not self._nn.is_exact:
            exact_image_maxima(flat, patch_scores, nn_idx, self._nn, self.item_weights)
        if self.item_weights is not None:
            patch_scores = np.where(np.isneginf(patch_scores), -np.inf,
                                    weighted_scores(patch_scores, self.item_weights[nn_idx]))
        image = reweight_image_scores(flat, patch_scores, nn_idx,
                                      self.memory_bank, self._nn, self.num_neighbors)
        patch_scores = fill_padding(patch_scores.reshape(n, h, w), features.valid)
        return ScoreResult(image, patch_scores, nn_idx.reshape(n, h, w))

    # -- persistence -----------------------------------------------------------
    @property
    def bank_size(self) -> int:
        return 0 if self.memory_bank is None else len(self.memory_bank)

    @property
    def bank_megabytes(self) -> float:
        return 0.0 if self.memory_bank is None else self.memory_bank.nbytes / 2**20

    @property
    def search_index(self) -> str | None:
        """The faiss index kind in use ("auto" resolved by bank size)."""
        return None if self._nn is None else self._nn.resolved_kind

    def fit_summary(self) -> dict[str, Any]:
        """The bank's size and search index; for a bank fitted in this process also
        ``index_seconds``, the part of the fit that built the index (an HNSW graph's check and
        rebuilds included; the rest is mostly the coreset)."""
        out = {"memory_bank_items": self.bank_size,
               "memory_bank_mb": round(self.bank_megabytes, 3),
               "search_index": self.search_index}
        if self._nn is not None and getattr(self._nn, "graph_checks", None):
            out.update(search_graph_m=self._nn.graph_m, search_graph_excess=self._nn.graph_checks)
        if self._index_seconds is not None:
            out["index_seconds"] = round(self._index_seconds, 3)
        return out

    def get_state(self) -> dict[str, np.ndarray]:
        state = {"memory_bank": self.memory_bank}
        if self.item_weights is not None:
            state["item_weights"] = self.item_weights
        return {**state, **self.bank_state()}

    def bank_state(self) -> dict[str, np.ndarray]:
        """What a saved bank needs besides its items: where they came from, and its checked
        search graph (the M, and the links: see ``NearestNeighbours.graph_state``)."""
        state = {} if self.provenance is None else self.provenance.state()
        if self._nn is not None and getattr(self._nn, "graph_m", None) is not None:
            state["search_graph_m"] = np.array([self._nn.graph_m], np.int64)
        if self._nn is not None:
            state.update({f"{GRAPH_PREFIX}{k}": v for k, v in self._nn.graph_state().items()})
        return state

    @staticmethod
    def saved_graph(state: dict[str, np.ndarray]) -> dict:
        """``_set_bank``'s graph arguments from a saved state: the links where they were saved
        (models saved before 2026-12-03 have the M only, and their graph is built again)."""
        links = {k[len(GRAPH_PREFIX):]: v for k, v in state.items() if k.startswith(GRAPH_PREFIX)}
        m = int(state["search_graph_m"][0]) if "search_graph_m" in state else None
        return {"graph_m": m, "graph": links or None}

    def check_bank_state(self, state: dict[str, np.ndarray], **shapes: tuple) -> None:
        """Refuse a saved bank :meth:`_set_bank` cannot install, or whose arrays (those of
        ``BANK_SHAPES`` and ``shapes``) have other shapes (``Scorer.check_state``)."""
        if "memory_bank" in state:
            check_bank(state["memory_bank"])
        self.check_state(state, {**BANK_SHAPES, **shapes}, BANK_OPTIONAL)

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self.check_bank_state(state)
        self._set_bank(state["memory_bank"], state.get("item_weights"),
                       Provenance.from_state(state, len(state["memory_bank"])),
                       **self.saved_graph(state))
