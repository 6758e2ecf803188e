"""Per-patch-position Local Outlier Factor filter (SoftPatch / TailedCore noise removal).

Training sets can hold defective images. A defective patch is rare *at its
position* among the training images, so for every patch position the N
training vectors there get a LOF score (k = 6 neighbours, on a random 128-d
projection) and the patches above the global 85th percentile of all scores
are discarded before the coreset is built (methods.md §1.6). Padding cells
(``valid`` False) take no part in the LOF at their position. The kNN per
position is one faiss exact search; the LOF arithmetic is vectorised over
all positions.
"""

from __future__ import annotations

import logging
import math

import faiss
import numpy as np
import torch

from ..progress import Progress
from .coreset import random_projection
from .params import check_number

log = logging.getLogger(__name__)


def knn_excluding_self(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distances and indices of each row's k nearest other rows (exact, faiss)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    d2, idx = faiss.knn(x, x, k + 1)
    is_self = idx == np.arange(n)[:, None]
    # duplicates may push the row itself out of the first k+1: then drop the farthest
    no_self = ~is_self.any(axis=1)
    is_self[no_self, -1] = True
    keep = ~is_self
    dist = np.sqrt(np.maximum(d2[keep].reshape(n, k), 0.0))
    return dist, idx[keep].reshape(n, k)


def local_outlier_factor(x: np.ndarray, k: int = 6) -> np.ndarray:
    """LOF of every row of x (n, d), as sklearn's ``-negative_outlier_factor_``.

    lrd(p) = 1 / mean_o reach(p, o), reach(p, o) = max(d(p, o), kdist(o));
    LOF(p) = mean_o lrd(o) / lrd(p), o over p's k nearest neighbours.
    """
    n = len(x)
    if n < 2:
        return np.ones(n, np.float32)
    k = min(k, n - 1)
    dist, idx = knn_excluding_self(x, k)
    kdist = dist[:, -1]
    reach = np.maximum(dist, kdist[idx])
    lrd = 1.0 / (reach.mean(axis=1) + 1e-10)
    return (lrd[idx].mean(axis=1) / lrd).astype(np.float32)


def per_position_lof(
    patches: np.ndarray, k: int = 6, projection_dim: int | None = 128, seed: int = 0,
    progress: bool = False, valid: np.ndarray | None = None,
) -> np.ndarray:
    """LOF score (N, h, w) of every patch among the N images' patches at the same position.

    With ``valid`` (N, h, w; False on padding) the LOF at a position is taken among the
    patches that lie on the image there only: padding vectors are near-identical, so they
    would form a very dense cluster and give the real patches next to them LOFs in the
    hundreds. Padding cells get the neutral score 1 (they are never kept). Positions where
    every row is valid (and ``valid=None``) are computed exactly as without a mask.
    """
    if patches.ndim != 4:
        raise ValueError(f"per-position LOF needs (N, h, w, D) patches, got shape {patches.shape}")
    n, h, w, d = patches.shape
    if valid is not None and valid.shape != (n, h, w):
        raise ValueError(f"valid mask of shape {valid.shape} for patches of shape {patches.shape}")
    on_image = None if valid is None else valid.reshape(n, h * w)
    scores = np.empty((h * w, n), np.float32)
    flat = patches.reshape(n, h * w, d)
    with Progress(h * w, "LOF filter", unit="pos", enabled=progress) as bar:
        for p in range(h * w):  # one exact kNN of n points per position
            rows = None if on_image is None or on_image[:, p].all() else on_image[:, p]
            at_p = flat[:, p] if rows is None else flat[rows, p]
            # float32 whatever the patches' dtype: the projection matrix is float32
            x = random_projection(torch.from_numpy(np.ascontiguousarray(at_p, dtype=np.float32)),
                                  projection_dim, seed)
            if rows is None:
                scores[p] = local_outlier_factor(x.numpy(), k)
            else:  # only the patches on the image: padding takes no part, and scores 1
                scores[p] = 1.0
                scores[p, rows] = local_outlier_factor(x.numpy(), k)
            bar.update(1)
    return scores.T.reshape(n, h, w)


def check_discard(discard: float, owner: str = "LOF filter", name: str = "discard") -> None:
    """Reject a discard ratio outside [0, 1) before any LOF work is done."""
    check_number(owner, name, discard, 0, 1, high_open=True)


def keep_below_quantile(
    scores: np.ndarray, discard: float = 0.15, valid: np.ndarray | None = None,
) -> np.ndarray:
    """Boolean (N, h, w): True for patches whose LOF is below the (1 - discard) quantile, and
    where ties at it would keep fewer than (1 - discard) of them, tied ones up to that share.
    At least one patch is always kept (floor((1 - discard) x n) can be 0, and when every
    score is equal nothing lies below the cut): the coreset needs a row.

    With ``valid`` (patches on the image, not on padding) the quantile is taken over
    those patches only, and padding is never kept.
    """
    check_discard(discard)
    on_image = np.ones(scores.shape, bool) if valid is None else valid
    if discard == 0 or len(scores) <= 1:
        return on_image.copy()
    values = scores[on_image]
    if not len(values):  # no patch on any image: nothing to keep
        return on_image.copy()
    cut = np.quantile(values, 1.0 - discard)
    keep = (scores < cut) & on_image
    # patches tied at the cut (duplicate images: every LOF 1.0) are kept, first ones first, up to
    # the share asked for: ties must not discard more than ``discard`` (or every patch)
    share = max(int(math.floor((1.0 - discard) * len(values))), 1)
    short = share - int(keep.sum())
    if short > 0:
        keep.flat[np.flatnonzero((scores == cut) & on_image)[:short]] = True
    if not keep.any():  # nothing at or below the cut (float rounding): the lowest score
        keep.flat[np.flatnonzero(on_image)[np.argmin(values)]] = True
    log.info("LOF filter: kept %d of %d patches (cut %.3f)", keep.sum(), keep.size, cut)
    return keep


def lof_filter(
    patches: np.ndarray, k: int = 6, discard: float = 0.15, projection_dim: int | None = 128,
    seed: int = 0, progress: bool = False, valid: np.ndarray | None = None,
    scores: np.ndarray | None = None, need_scores: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Keep mask (N, h, w) (LOF below the (1 - discard) quantile, see :func:`keep_below_quantile`)
    and the LOF scores (per position among the patches in ``valid``, see
    :func:`per_position_lof`). ``scores`` computed before for these patches are used as they are;
    otherwise the LOF is computed only when something can be discarded or ``need_scores``. When
    it is not, every patch (in ``valid``) is kept and the scores are None."""
    check_discard(discard)
    if scores is None and (discard > 0 or need_scores) and len(patches) > 1:
        scores = per_position_lof(patches, k, projection_dim, seed, progress, valid)
    ranked = np.ones(patches.shape[:3], np.float32) if scores is None else scores
    return keep_below_quantile(ranked, discard, valid), scores


def lof_keep_mask(
    patches: np.ndarray, k: int = 6, discard: float = 0.15, projection_dim: int | None = 128,
    seed: int = 0, progress: bool = False, valid: np.ndarray | None = None,
) -> np.ndarray:
    """The keep mask of :func:`lof_filter` alone."""
    return lof_filter(patches, k, discard, projection_dim, seed, progress, valid)[0]
