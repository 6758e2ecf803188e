"""Post-hoc OOD baselines on the classifier head: ReAct, DICE, ViM and ODIN (pixels and features).

All of them read the same seeded head as the other head scorers
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
* ``odin`` (Liang et al., ICLR 2018): temperature T = 1000 and an input
  perturbation of epsilon = 0.0014 (OpenOOD's defaults, fixed a priori, not tuned
  on OOD data) on the **pixels**: x~ = x - epsilon * sign(grad_x of -log S_yhat(x; T)),
  the step divided by the normalisation std per channel as in OpenOOD (so epsilon is
  in [0, 1] pixel units); confidence = max softmax(logits(x~) / T). The gradient runs
  through the frozen backbone in torch (:meth:`ODIN.perturb`), so the caller extracts
  the features of the perturbed images; ``score`` on unperturbed features is ODIN's
  temperature scaling alone.
* ``odin_feature``: the same temperature and perturbation applied to the head's
  z-scored **input features** instead of pixels (no backward pass through the backbone).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import logsumexp, softmax

from ..core import Features, FitContext
from .classifier_scorers import HeadScorer
from .params import check_number

PERTURB_BATCH = 8  # images per backward pass in ODIN.perturb (bounds its activation memory)
#: ViM refuses a mean training residual norm below this share of the mean principal-space
#: norm: activations of float32 features (~1e-7 precision) leave residuals that small only
#: when the principal subspace holds every training feature (rounding noise, not a residual)
MIN_RELATIVE_RESIDUAL = 1e-6


def clip_threshold(a: np.ndarray, percentile: float) -> float:
    """ReAct's clip value: the percentile of the training activations; if that is 0 (mostly
    inactive ReLU units), the percentile of the active ones. With no active unit at all it is 0
    (every activation is clipped to 0, leaving the energy of the bias). LINe uses it too."""
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
    """ViM statistics: origin (H,), residual basis (H, H - dim) and alpha. Refuses training
    activations with no residual beyond the top ``dim`` directions (rank at most ``dim``, e.g.
    few distinct images): alpha would divide by rounding noise."""
    origin = -np.linalg.pinv(w) @ b
    x = a_train - origin
    vals, vecs = np.linalg.eigh(x.T @ x / len(x))
    order = np.argsort(-vals)
    residual = vecs[:, order[dim:]]
    vnorm = np.linalg.norm(x @ residual, axis=1)
    pnorm = np.linalg.norm(x @ vecs[:, order[:dim]], axis=1)
    if not vnorm.mean() > MIN_RELATIVE_RESIDUAL * pnorm.mean():
        raise ValueError(f"vim: the training features span no residual space beyond the "
                         f"principal subspace of dim={dim} (mean residual norm {vnorm.mean():.3g}, "
                         f"mean principal-space norm {pnorm.mean():.3g}): train on more distinct "
                         f"images or lower dim")
    max_logit = (a_train @ w.T + b).max(axis=1)
    alpha = float(max_logit.mean() / vnorm.mean())
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
        super().__init__(hidden=hidden, epochs=epochs, lr=lr, weight_decay=weight_decay,
                         batch_size=batch_size, dropout=dropout, l2_normalize=False, seed=seed,
                         standardize=standardize)
        for key in self.stats:
            setattr(self, key, None)

    def get_state(self) -> dict[str, np.ndarray]:
        state = super().get_state()
        for key, kind in self.stats.items():
            value = getattr(self, key)
            state[key] = np.array([value]) if kind is float else value.astype(np.uint8) if kind is bool else value
        return state

    def state_shapes(self) -> dict[str, tuple]:
        """The head's arrays and a float statistic's one value; scorers with array statistics
        add their shapes."""
        return super().state_shapes() | {k: (1,) for k, kind in self.stats.items() if kind is float}

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
        super().__init__(hidden=hidden, epochs=epochs, lr=lr, weight_decay=weight_decay,
                         batch_size=batch_size, dropout=dropout, seed=seed, standardize=standardize)
        check_number(self.name, "percentile", percentile, 0, 100, low_open=True)
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
        super().__init__(hidden=hidden, epochs=epochs, lr=lr, weight_decay=weight_decay,
                         batch_size=batch_size, dropout=dropout, seed=seed, standardize=standardize)
        check_number(self.name, "sparsity", sparsity, 0, 100, high_open=True)
        self.sparsity = sparsity

    def state_shapes(self) -> dict[str, tuple]:
        return super().state_shapes() | {"mask": ("classes", "hidden")}

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
        super().__init__(hidden=hidden, epochs=epochs, lr=lr, weight_decay=weight_decay,
                         batch_size=batch_size, dropout=dropout, seed=seed, standardize=standardize)
        check_number(self.name, "dim", dim, 1, hidden - 1, whole=True, allowed=(None,))
        self.dim = dim

    @property
    def principal_dim(self) -> int:
        """The principal subspace's dimension: ``dim``, or hidden / 2 when None."""
        return self.dim if self.dim is not None else self.hidden // 2

    def check_train_count(self, n: int) -> None:
        """Refuse fitting on at most ``principal_dim`` training images: the principal subspace
        would then hold them all, leaving residuals of ~0 and alpha ~1e12 (:func:`vim_fit`
        refuses the same after training, for repeated images). Callers that know the count
        before extracting (the OOD benchmark) check it early."""
        if n <= self.principal_dim:
            raise ValueError(f"{self.name} needs more training images than dim="
                             f"{self.principal_dim}, got {n}")

    def fit(self, features: Features, labels: np.ndarray | None = None,
            context: FitContext | None = None) -> ViM:
        """As :meth:`HeadScorer.fit`, after :meth:`check_train_count`."""
        self.check_train_count(len(self._pooled(features)))
        return super().fit(features, labels, context)

    def state_shapes(self) -> dict[str, tuple]:
        """The residual basis spans the hidden directions beyond the principal ones."""
        return super().state_shapes() | {"origin": ("hidden",),
                                         "residual": ("hidden", self.hidden - self.principal_dim)}

    def _after_fit(self, features: Features, labels: np.ndarray) -> None:
        self.origin, self.residual, self.alpha = vim_fit(
            self.head.hidden(self._pooled(features)), self.head.w2, self.head.b2, self.principal_dim)

    def confidence(self, x: np.ndarray) -> np.ndarray:
        return vim_confidence(self.head.hidden(x), self.head.w2, self.head.b2, self.origin,
                              self.residual, self.alpha)


class _ODINSettings(PostHocHeadScorer):
    """ODIN's temperature and perturbation size, shared by the pixel and feature variants."""

    def __init__(self, temperature: float = 1000.0, epsilon: float = 0.0014, hidden: int = 256,
                 epochs: int = 60, lr: float = 1e-3, weight_decay: float = 1e-4, batch_size: int = 64,
                 dropout: float = 0.0, seed: int = 0, standardize: bool = True):
        super().__init__(hidden=hidden, epochs=epochs, lr=lr, weight_decay=weight_decay,
                         batch_size=batch_size, dropout=dropout, seed=seed, standardize=standardize)
        check_number(self.name, "temperature", temperature, 0, low_open=True, finite=True)
        check_number(self.name, "epsilon", epsilon, 0, finite=True)
        self.temperature = temperature
        self.epsilon = epsilon


class ODINFeature(_ODINSettings):
    """ODIN's temperature and input perturbation on the head's input features (not pixels)."""

    name = "odin_feature"

    def confidence(self, x: np.ndarray) -> np.ndarray:
        h = self.head
        z = (np.asarray(x, np.float64) - h.in_mean) / h.in_std
        return odin_feature_confidence(z, h.w1, h.b1, h.w2, h.b2, self.temperature, self.epsilon)


class ODIN(_ODINSettings):
    """ODIN on pixels: :meth:`perturb` moves each image against the gradient of its predicted
    class's tempered log-softmax; ``score`` on the perturbed images' features is the
    temperature-scaled MSP."""

    name = "odin"

    def confidence(self, x: np.ndarray) -> np.ndarray:
        return softmax(self.head.logits(x) / self.temperature, axis=1).max(axis=1)

    def perturb(self, model: torch.nn.Module, images: torch.Tensor, std: Sequence[float]) -> torch.Tensor:
        """ODIN's perturbed copy of a batch of normalised ``images`` (B, 3, H, W). ``model`` is
        the frozen timm backbone whose pooled pre-logit embedding the head reads; ``std`` its
        per-channel normalisation std."""
        self._check_fitted()
        h = self.head
        t = {k: torch.as_tensor(getattr(h, k), dtype=torch.float32)
             for k in ("in_mean", "in_std", "w1", "b1", "w2", "b2")}
        grads = []
        # a few images at a time: the backward pass holds every activation of the batch (the
        # model is in eval mode, so each image's gradient is its own and slicing changes nothing)
        for part in images.detach().split(PERTURB_BATCH):
            x = part.clone().requires_grad_(True)
            with torch.enable_grad():
                pooled = model.forward_head(model.forward_features(x), pre_logits=True)
                z = (pooled - t["in_mean"]) / t["in_std"]
                logits = F.relu(z @ t["w1"].T + t["b1"]) @ t["w2"].T + t["b2"]
                loss = F.cross_entropy(logits / self.temperature, logits.argmax(1), reduction="sum")
                grads.append(torch.autograd.grad(loss, x)[0])
        step = torch.sign(torch.cat(grads)) / torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        return (images - self.epsilon * step).detach()
