"""TailSampler (TailedCore, CVPR 2025): which training images belong to rare ("tail") classes.

No class labels are used. From the cosine self-similarity of global image
embeddings each image gets a neighbour set (its "same-class candidates",
threshold from the symmetric half-angle rule, trimmed by 15 %), every image's
class size is the mode of the neighbour-set sizes that vote for it, the sizes
are peeled into a class-size histogram, and images whose predicted class size
is at most the tail cut-off (min of the histogram's elbow and the 15 %-mass
rule) are the tail. Exact algorithm: methods.md §1.4 (``ada_trim_min-mode``).
Everything is vectorised over the N x N similarity matrix (no per-row loops).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .params import check_number


@dataclass
class TailSamplerResult:
    """Outcome of :meth:`TailSampler.run` for N images."""

    class_sizes: np.ndarray  # (N,) predicted class size of each image
    thresholds: np.ndarray  # (N,) per-image similarity threshold tau_i
    histogram: np.ndarray  # (K,) estimated class sizes, descending
    max_k: int  # tail cut-off: images with class size <= max_k are tail
    tail_indices: np.ndarray  # indices of tail images, ascending

    @property
    def is_tail(self) -> np.ndarray:
        mask = np.zeros(len(self.class_sizes), bool)
        mask[self.tail_indices] = True
        return mask


def cosine_self_similarity(embeddings: np.ndarray) -> np.ndarray:
    """S = X^ X^T of the L2-normalised rows, clipped to [-1, 1], diagonal exactly 1."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"TailSampler needs a non-empty (N, D) embedding matrix, got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.maximum(norms, 1e-12)
    # rounding makes duplicates exactly 1 (float noise would otherwise flip quantisation bins)
    s = np.clip(np.round(x @ x.T, 10), -1.0, 1.0)
    np.fill_diagonal(s, 1.0)
    return s


def trim_min_thresholds(sim: np.ndarray, keep: float = 0.85) -> np.ndarray:
    """Per-row threshold tau_i of the "trim_min" rule, for all rows at once.

    Row values are quantised to 1/N steps and sorted; h = cos(arccos(min)/2)
    (half the angle to the farthest image); U = values above h; tau = the
    value ``floor(keep*|U|)`` places below the top of U (the lowest 15 % of U
    is trimmed), or min(U) when that count is 0.
    """
    n = len(sim)
    q = np.sort(np.trunc(sim * n) / n, axis=1)
    h = np.cos(np.arccos(np.clip(q[:, 0], -1.0, 1.0)) / 2.0)
    n_above = (q > h[:, None]).sum(axis=1)
    drop = np.floor(keep * n_above).astype(np.int64)
    pos = np.where(drop > 0, n - drop, n - n_above)
    # no value above h (all images identical): fall back to the row maximum
    pos = np.where(n_above == 0, n - 1, pos)
    return q[np.arange(n), pos]


def mode_vote(neighbours: np.ndarray) -> np.ndarray:
    """Class size of each image j: the mode of n_i over the rows i whose set holds j.

    ``neighbours`` is the (N, N) boolean matrix B_ij = [S_ij >= tau_i]; ties go
    to the smallest size (as scipy.stats.mode). One matrix product, no loops.
    """
    n_i = neighbours.sum(axis=1)
    values, inverse = np.unique(n_i, return_inverse=True)
    onehot = np.zeros((len(n_i), len(values)), np.float32)
    onehot[np.arange(len(n_i)), inverse] = 1.0
    votes = neighbours.T.astype(np.float32) @ onehot  # (N, distinct sizes)
    return values[votes.argmax(axis=1)]


def class_size_histogram(class_sizes: np.ndarray) -> np.ndarray:
    """Peel per-image class sizes into a list of class sizes (descending).

    Sorted ascending (clamped >= 1): the smallest remaining size v says "v
    images form a class"; that class gets round(mean of the first v sizes)
    images (capped by what remains), which are removed; leftovers smaller than
    the smallest size join the last class.
    """
    sizes = np.maximum(np.sort(np.rint(np.asarray(class_sizes)).astype(np.int64)), 1)
    prefix = np.concatenate([[0], np.cumsum(sizes)])
    out: list[int] = []
    start, n = 0, len(sizes)
    while start < n:
        remaining = n - start
        v = int(sizes[start])
        if remaining < v and out:
            out[-1] += remaining
            break
        v = min(v, remaining)
        c = int(np.rint((prefix[start + v] - prefix[start]) / v))  # half to even, as torch.round
        c = max(1, min(c, remaining))
        out.append(c)
        start += c
    return np.sort(np.array(out, np.int64))[::-1]


def elbow(histogram: np.ndarray) -> int:
    """Class size at the point of (rank, size) farthest from the line through the end points."""
    k = np.sort(np.asarray(histogram, np.float64))[::-1]
    if len(k) < 3:
        return int(k[0])
    x = np.arange(len(k), dtype=np.float64)
    dx, dy = x[-1] - x[0], k[-1] - k[0]
    dist = np.abs(dy * x - dx * k + x[-1] * k[0] - k[-1] * x[0]) / np.hypot(dx, dy)
    return int(k[int(dist.argmax())])


def mass_cut(histogram: np.ndarray, mass: float = 0.15) -> int:
    """Largest class size among the smallest classes that together hold at most ``mass`` of the
    images; when not even the smallest class fits in that budget, the smallest class size (as
    the spec and the official code: the cut is never below the smallest class, so the tail
    can then hold more than ``mass`` of the images)."""
    k = np.sort(np.asarray(histogram, np.int64))[::-1]
    budget = int(k.sum() * mass)
    cum_from_small = np.cumsum(k[::-1])
    fits = int((cum_from_small <= budget).sum())  # cum is increasing: a prefix fits
    return int(k[min(len(k) - fits, len(k) - 1)])


def check_tail_settings(keep: float, tail_mass: float, owner: str = "TailSampler",
                        names: tuple[str, str] = ("keep", "tail_mass")) -> None:
    """Raise unless ``keep`` is in (0, 1] and ``tail_mass`` in (0, 1) (``names``: theirs in the
    error)."""
    check_number(owner, names[0], keep, 0, 1, low_open=True)
    check_number(owner, names[1], tail_mass, 0, 1, low_open=True, high_open=True)


class TailSampler:
    """Label-free tail-class detector over global image embeddings.

    ``keep`` is the trim fraction of the same-class candidates (0.85), and
    ``tail_mass`` the share of images the smallest classes may hold together to set the
    mass cut (0.15): the cut-off is the largest class size among the smallest classes
    that fit in that share. It is not a hard bound on the tail: when not even the
    smallest class fits, the cut falls back to the smallest class size (as the spec and
    the official code), and every image predicted to be in a class that small (or
    smaller) is tail, whatever their share (e.g. all of them when every predicted size
    is 1). The elbow of the class-size histogram can only lower the cut-off further.
    """

    def __init__(self, keep: float = 0.85, tail_mass: float = 0.15):
        check_tail_settings(keep, tail_mass)
        self.keep = keep
        self.tail_mass = tail_mass

    def run(self, embeddings: np.ndarray) -> TailSamplerResult:
        sim = cosine_self_similarity(embeddings)
        tau = trim_min_thresholds(sim, self.keep)
        neighbours = sim >= tau[:, None]
        sizes = mode_vote(neighbours)
        hist = class_size_histogram(sizes)
        max_k = min(elbow(hist), mass_cut(hist, self.tail_mass))
        tail = np.flatnonzero(sizes <= max_k)
        return TailSamplerResult(sizes.astype(np.int64), tau.astype(np.float32), hist, int(max_k), tail)
