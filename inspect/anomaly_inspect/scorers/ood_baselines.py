"""Post-hoc OOD baselines on the classifier head: ReAct, DICE, ViM and ODIN (feature space).

All four read the same seeded head as the other head scorers
(:class:`~.classifier_scorers.HeadScorer`): its post-ReLU hidden layer ``a``
plays the penultimate features and ``logits = W a + b`` the last linear layer.
Statistics come from the ID training features only; defaults are the papers'
(or OpenOOD's) settings, fixed before any result was seen.

* ``react`` (Sun et al., NeurIPS 2021): clip ``a`` at the ``percentile``-th
  percentile of the training activations (default 90), score = energy.
* ``dice`` (Sun & Li, ECCV 2022): contribution V = mean over training images of
  W * a (K x H); keep the weights whose V lies above its ``sparsity`` percentile
  (default 90, i.e. 10 % of the weights), score = energy with the masked W.
* ``vim`` (Wang et al., CVPR 2022): origin o = -pinv(W) b; principal subspace
  (top ``dim`` eigenvectors, default H / 2 as OpenOOD's 256 of 512) of the
  training ``a - o``; virtual logit = alpha * ||residual||, alpha = mean training
  max-logit / mean training residual norm; confidence = energy - virtual logit.
* ``odin_feature``: ODIN's temperature (T = 1000) and input perturbation
  (epsilon = 0.0014, OpenOOD's default, not tuned here) applied to the head's
  z-scored **input features**, not to pixels. True ODIN perturbs the image,
  which needs a backward pass through the backbone for every scored image.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from scipy.special import logsumexp, softmax

from ..core import Features
from .classifier_scorers import HeadScorer


def clip_threshold(a: np.ndarray, percentile: float) -> float:
    """ReAct's clip value: the percentile of the training activations; if that is 0 (mostly
    inactive ReLU units), the percentile of the active ones (as LINe does)."""
    c = float(np.percentile(a, percentile))
    if c <= 0 and (a > 0).any():
        c = float(np.percentile(a[a > 0], percentile))
    return c


def react_energy(a: np.ndarray, w: np.ndarray, b: np.ndarray, clip: float) -> np.ndarray:
    """Energy logsumexp(W min(a, c) + b) of hidden activations ``a`` (N, H)."""
    return logsumexp(np.minimum(a, clip) @ w.T + b, axis=1)


def dice_mask(a_train: np.ndarray, w: np.ndarray, sparsity: float) -> np.ndarray:
    """(K, H) bool: the weights whose mean contribution W[k, j] * a_j exceeds the percentile."""
    contrib = a_train.mean(axis=0)[None, :] * w
    return contrib > np.percentile(contrib, sparsity)


def vim_fit(a_train: np.ndarray, w: np.ndarray, b: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray, float]:
    """ViM statistics: origin (H,), residual basis (H, H - dim) and alpha."""
    origin = -np.linalg.pinv(w) @ b
    x = a_train - origin
    vals, vecs = np.linalg.eigh(x.T @ x / len(x))
    residual = vecs[:, np.argsort(-vals)[dim:]]
    vnorm = np.linalg.norm(x @ residual, axis=1)
    max_logit = (a_train @ w.T + b).max(axis=1)
    alpha = float(max_logit.mean() / max(vnorm.mean(), 1e-12))
    return origin, residual, alpha


def vim_confidence(a: np.ndarray, w: np.ndarray, b: np.ndarray, origin: np.ndarray,
                   residual: np.ndarray, alpha: float) -> np.ndarray:
    """Energy minus the virtual logit alpha * ||(a - o) R||; higher = ID."""
    energy = logsumexp(a @ w.T + b, axis=1)
    return energy - alpha * np.linalg.norm((a - origin) @ residual, axis=1)


def odin_feature_confidence(z: np.ndarray, w1: np.ndarray, b1: np.ndarray, w2: np.ndarray,
                            b2: np.ndarray, temperature: float, epsilon: float) -> np.ndarray:
    """ODIN on the head's (z-scored) input: z~ = z - eps * sign(grad_z of -log S_yhat(z; T)),
    confidence = max softmax(logits(z~) / T). The gradient is exact (analytic backprop)."""
    pre = z @ w1.T + b1
    logits = np.maximum(pre, 0.0) @ w2.T + b2
    p = softmax(logits / temperature, axis=1)
    g = p.copy()
    g[np.arange(len(z)), logits.argmax(axis=1)] -= 1.0  # d(-log S_yhat)/d logits * T
    grad = ((g @ w2) * (pre > 0)) @ w1 / temperature
    zt = z - epsilon * np.sign(grad)
    logits_t = np.maximum(zt @ w1.T + b1, 0.0) @ w2.T + b2
    return softmax(logits_t / temperature, axis=1).max(axis=1)


class PostHocHeadScorer(HeadScorer):
    """A post-hoc score on the classifier head (its input not L2-normalised). ``stats``: the
    statistics ``_after_fit`` learns from the ID training activations (attribute -> ``float``,
    ``bool`` (a mask) or ``np.ndarray``), saved beside the head's weights."""

    stats: ClassVar[dict[str, type]] = {}

    def __init__(self, hidden: int = 256, epochs: int = 60, lr: float = 1e-3, weight_decay: float = 1e-4,
                 batch_size: int = 64, dropout: float = 0.0, seed: int = 0, standardize: bool = True):
        super().__init__(hidden, epochs, lr, weight_decay, batch_size, dropout, False, seed, standardize)
        for key in self.stats:
            setattr(self, key, None)

    def _require(self, ok: bool, rule: str, got: object) -> None:
        if not ok:
            raise ValueError(f"{self.name}: {rule}, got {got}")

    def get_state(self) -> dict[str, np.ndarray]:
        state = super().get_state()
        for key, kind in self.stats.items():
            value = getattr(self, key)
            state[key] = np.array([value]) if kind is float else value.astype(np.uint8) if kind is bool else value
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        super().set_state(state)
        for key, kind in self.stats.items():
            value = state[key]
            setattr(self, key, float(value[0]) if kind is float else value.astype(bool) if kind is bool else value)


class ReAct(PostHocHeadScorer):
    """Energy on hidden activations clipped at a training percentile."""

    name = "react"
    stats: ClassVar[dict[str, type]] = {"clip": float}

    def __init__(self, percentile: float = 90.0, hidden: int = 256, epochs: int = 60, lr: float = 1e-3,
                 weight_decay: float = 1e-4, batch_size: int = 64, dropout: float = 0.0, seed: int = 0,
                 standardize: bool = True):
        super().__init__(hidden, epochs, lr, weight_decay, batch_size, dropout, seed, standardize)
        self._require(0.0 < percentile <= 100.0, "percentile must be in (0, 100]", percentile)
        self.percentile = percentile

    def _after_fit(self, features: Features, labels: np.ndarray) -> None:
        self.clip = clip_threshold(self.head.hidden(self._pooled(features)), self.percentile)

    def confidence(self, x: np.ndarray) -> np.ndarray:
        return react_energy(self.head.hidden(x), self.head.w2, self.head.b2, self.clip)


class DICE(PostHocHeadScorer):
    """Energy with the last layer sparsified to its largest mean contributions."""

    name = "dice"
    stats: ClassVar[dict[str, type]] = {"mask": bool}

    def __init__(self, sparsity: float = 90.0, hidden: int = 256, epochs: int = 60, lr: float = 1e-3,
                 weight_decay: float = 1e-4, batch_size: int = 64, dropout: float = 0.0, seed: int = 0,
                 standardize: bool = True):
        super().__init__(hidden, epochs, lr, weight_decay, batch_size, dropout, seed, standardize)
        self._require(0.0 <= sparsity < 100.0, "sparsity must be in [0, 100)", sparsity)
        self.sparsity = sparsity

    def _after_fit(self, features: Features, labels: np.ndarray) -> None:
        self.mask = dice_mask(self.head.hidden(self._pooled(features)), self.head.w2, self.sparsity)

    def confidence(self, x: np.ndarray) -> np.ndarray:
        return logsumexp(self.head.hidden(x) @ (self.head.w2 * self.mask).T + self.head.b2, axis=1)


class ViM(PostHocHeadScorer):
    """Virtual-logit matching on the head's hidden layer."""

    name = "vim"
    stats: ClassVar[dict[str, type]] = {"origin": np.ndarray, "residual": np.ndarray, "alpha": float}

    def __init__(self, dim: int | None = None, hidden: int = 256, epochs: int = 60, lr: float = 1e-3,
                 weight_decay: float = 1e-4, batch_size: int = 64, dropout: float = 0.0, seed: int = 0,
                 standardize: bool = True):
        super().__init__(hidden, epochs, lr, weight_decay, batch_size, dropout, seed, standardize)
        self._require(dim is None or 0 < dim < hidden, f"dim must be in (0, hidden={hidden})", dim)
        self.dim = dim

    def _after_fit(self, features: Features, labels: np.ndarray) -> None:
        dim = self.dim if self.dim is not None else self.hidden // 2
        self.origin, self.residual, self.alpha = vim_fit(
            self.head.hidden(self._pooled(features)), self.head.w2, self.head.b2, dim)

    def confidence(self, x: np.ndarray) -> np.ndarray:
        return vim_confidence(self.head.hidden(x), self.head.w2, self.head.b2, self.origin,
                              self.residual, self.alpha)


class ODINFeature(PostHocHeadScorer):
    """ODIN's temperature and input perturbation on the head's input features (not pixels)."""

    name = "odin_feature"

    def __init__(self, temperature: float = 1000.0, epsilon: float = 0.0014, hidden: int = 256,
                 epochs: int = 60, lr: float = 1e-3, weight_decay: float = 1e-4, batch_size: int = 64,
                 dropout: float = 0.0, seed: int = 0, standardize: bool = True):
        super().__init__(hidden, epochs, lr, weight_decay, batch_size, dropout, seed, standardize)
        self._require(temperature > 0 and epsilon >= 0, "need temperature > 0 and epsilon >= 0",
                      f"{temperature}, {epsilon}")
        self.temperature = temperature
        self.epsilon = epsilon

    def confidence(self, x: np.ndarray) -> np.ndarray:
        h = self.head
        z = (np.asarray(x, np.float64) - h.in_mean) / h.in_std
        return odin_feature_confidence(z, h.w1, h.b1, h.w2, h.b2, self.temperature, self.epsilon)
