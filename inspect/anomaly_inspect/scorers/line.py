"""LINe (Ahn, Park & Kim, CVPR 2023): important neurons of the last hidden layer.

From ID training data: the class-wise mean first-order Taylor contribution
C[c, j] = mean_{x in c} a_j(x) W[c, j] (for a linear last layer). At test:
clip a at c_clip, predict c^ with the original weights, keep the neurons whose
C[c^, j] exceeds its ``p_a`` percentile, keep the weights whose
|C[c^, j]| W[k, j] exceeds the ``p_w`` percentile over all K x H entries, and
score with the energy logsumexp(W' a' + b). Defaults follow the official
CIFAR-10 setting (p_w = p_a = 90); c_clip is the ``clip_percentile`` of the
training hidden activations (ReAct's rule) unless ``clip_value`` (> 0) is given.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from ..core import Features
from .classifier_scorers import HeadScorer
from .ood_baselines import clip_threshold
from .params import check_number


def contribution_matrix(a: np.ndarray, labels: np.ndarray, w: np.ndarray) -> np.ndarray:
    """C[c, j] = mean over training images of class c of a_j(x) * W[c, j]; labels are 0..K-1."""
    k = w.shape[0]
    c = np.zeros_like(w, dtype=np.float64)
    for cls in range(k):
        sel = labels == cls
        if sel.any():
            c[cls] = a[sel].mean(axis=0) * w[cls]
    return c


def line_masks(contrib: np.ndarray, w: np.ndarray, p_a: float, p_w: float) -> tuple[np.ndarray, np.ndarray]:
    """Per predicted class c^: neuron masks (K, H) and weight masks (K, K, H)."""
    act = contrib > np.percentile(contrib, p_a, axis=1, keepdims=True)
    m = np.abs(contrib)[:, None, :] * w[None, :, :]  # (c^, k, j)
    thr = np.percentile(m.reshape(len(m), -1), p_w, axis=1)[:, None, None]
    return act, m > thr


def line_energy(a: np.ndarray, w: np.ndarray, b: np.ndarray, contrib: np.ndarray,
                clip: float, p_a: float, p_w: float) -> np.ndarray:
    """LINe confidence (energy) of hidden activations ``a`` (N, H); higher = ID."""
    a = np.minimum(a, clip)
    pred = (a @ w.T + b).argmax(axis=1)
    act, wmask = line_masks(contrib, w, p_a, p_w)
    a_kept = a * act[pred]  # (N, H)
    w_kept = w[None] * wmask[pred]  # (N, K, H)
    logits = np.einsum("nkh,nh->nk", w_kept, a_kept) + b
    return logsumexp(logits, axis=1)


class LINe(HeadScorer):
    """LINe on the classifier head's hidden layer (trained without L2 normalisation)."""

    name = "line"

    def __init__(self, p_a: float = 90.0, p_w: float = 90.0, clip_percentile: float = 90.0,
                 clip_value: float | None = None, hidden: int = 256, epochs: int = 60,
                 lr: float = 1e-3, weight_decay: float = 1e-4, batch_size: int = 64,
                 dropout: float = 0.0, seed: int = 0, standardize: bool = True):
        super().__init__(hidden=hidden, epochs=epochs, lr=lr, weight_decay=weight_decay,
                         batch_size=batch_size, dropout=dropout, l2_normalize=False, seed=seed,
                         standardize=standardize)
        # p_a / p_w = 100 would keep no neuron / weight (a constant score), as DICE's sparsity
        for key, value in (("p_a", p_a), ("p_w", p_w)):
            check_number(self.name, key, value, 0, 100, high_open=True)
        check_number(self.name, "clip_percentile", clip_percentile, 0, 100)
        check_number(self.name, "clip_value", clip_value, 0, low_open=True, allowed=(None,))
        self.p_a = p_a
        self.p_w = p_w
        self.clip_percentile = clip_percentile
        self.clip_value = clip_value
        self.contrib: np.ndarray | None = None
        self.clip: float | None = None

    def _after_fit(self, features: Features, labels: np.ndarray) -> None:
        a = self.head.hidden(self._pooled(features))
        y = np.searchsorted(self.head.classes, labels)
        self.contrib = contribution_matrix(a, y, self.head.w2)
        if self.clip_value is not None:
            self.clip = float(self.clip_value)
        else:  # ReAct's rule (the percentile of the active units where most are inactive)
            self.clip = clip_threshold(a, self.clip_percentile)

    def confidence(self, x: np.ndarray) -> np.ndarray:
        return line_energy(self.head.hidden(x), self.head.w2, self.head.b2, self.contrib,
                           self.clip, self.p_a, self.p_w)

    def get_state(self) -> dict[str, np.ndarray]:
        return super().get_state() | {"contrib": self.contrib, "clip": np.array([self.clip])}

    def state_shapes(self) -> dict[str, tuple]:
        return super().state_shapes() | {"contrib": ("classes", "hidden"), "clip": (1,)}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        super().set_state(state)
        self.contrib = state["contrib"]
        self.clip = float(state["clip"][0])
