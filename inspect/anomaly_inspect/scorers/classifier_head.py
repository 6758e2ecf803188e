"""A small seeded classifier head on frozen pooled features, for classifier-based OOD scorers.

Architecture: z-scored input (optional; a channel constant in training is only centred) ->
Linear(D, hidden) -> ReLU -> [dropout] -> Linear(hidden, K). The hidden activations ``a`` are
the "last hidden layer" that NAN, the feature norm and LINe read. With ``l2_normalize=True`` the
head is trained as in Haas et al. (2023): logits = W (a / ||a||_2) + b, so
that at test time the un-normalised ||a||_2 is free to act as a confidence.
Training: Adam, class-balanced cross-entropy, full determinism from ``seed``;
about a second on CPU for a thousand images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

EPS = 1e-6


@dataclass
class HeadConfig:
    hidden: int = 256
    epochs: int = 60
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    dropout: float = 0.0
    l2_normalize: bool = False
    seed: int = 0
    standardize: bool = True  # z-score inputs with the training mean / std


#: the shapes of a saved head's arrays (``Scorer.check_state``), without the key prefix
STATE_SHAPES: dict[str, tuple] = {
    "in_mean": ("pooled",), "in_std": ("pooled",), "w1": ("hidden", "pooled"), "b1": ("hidden",),
    "w2": ("classes", "hidden"), "b2": ("classes",), "classes": ("classes",), "l2_normalize": (1,),
}


@dataclass
class HeadWeights:
    """Trained head as plain arrays (saved with the scorer's state)."""

    in_mean: np.ndarray  # (D,)
    in_std: np.ndarray  # (D,)
    w1: np.ndarray  # (H, D)
    b1: np.ndarray  # (H,)
    w2: np.ndarray  # (K, H)
    b2: np.ndarray  # (K,)
    classes: np.ndarray  # (K,) original label values
    l2_normalize: bool = False

    def hidden(self, x: np.ndarray) -> np.ndarray:
        """Post-ReLU hidden activations (N, H)."""
        z = (np.asarray(x, np.float64) - self.in_mean) / self.in_std
        return np.maximum(z @ self.w1.T + self.b1, 0.0)

    def logits_from_hidden(self, a: np.ndarray) -> np.ndarray:
        if self.l2_normalize:
            a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), EPS)
        return a @ self.w2.T + self.b2

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.logits_from_hidden(self.hidden(x))

    def to_state(self, prefix: str = "head.") -> dict[str, np.ndarray]:
        return {
            prefix + k: np.asarray(getattr(self, k))
            for k in ("in_mean", "in_std", "w1", "b1", "w2", "b2", "classes")
        } | {prefix + "l2_normalize": np.array([int(self.l2_normalize)], np.uint8)}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], prefix: str = "head.") -> HeadWeights:
        get = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        flag = bool(int(get.pop("l2_normalize")[0]))
        return cls(**get, l2_normalize=flag)


class _Net(nn.Module):
    def __init__(self, d: int, cfg: HeadConfig, k: int):
        super().__init__()
        self.fc1 = nn.Linear(d, cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)
        self.fc2 = nn.Linear(cfg.hidden, k)
        self.l2 = cfg.l2_normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.fc1(x))
        if self.l2:
            a = a / a.norm(dim=1, keepdim=True).clamp_min(EPS)
        return self.fc2(self.drop(a))


def _train_loop(net, z, yt, loss_fn, opt, cfg: HeadConfig, gen: torch.Generator) -> None:
    for _ in range(cfg.epochs):
        order = torch.randperm(len(z), generator=gen)
        for s in range(0, len(z), cfg.batch_size):
            idx = order[s:s + cfg.batch_size]
            opt.zero_grad()
            loss_fn(net(z[idx]), yt[idx]).backward()
            opt.step()


def _check_integer_labels(labels: np.ndarray) -> None:
    """Refuse labels that are not whole numbers (class names, fractions, NaN): the head saves its
    class values with its weights, as numbers."""
    if labels.dtype.kind in "biu":
        return
    if labels.dtype.kind == "f":
        whole = np.isfinite(labels) & (labels == np.round(labels))
        if whole.all():
            return
        example = labels[~whole][:1]
    else:
        example = labels.ravel()[:1]
    raise ValueError(f"classifier head: ID class labels must be whole numbers, got {labels.dtype} "
                     f"labels{f' such as {example.tolist()[0]!r}' if example.size else ''}; "
                     f"map class names to 0..K-1 first")


def train_head(x: np.ndarray, labels: np.ndarray, cfg: HeadConfig) -> HeadWeights:
    """Train the head on ID features ``x`` (N, D) with ID class ``labels`` (N,)."""
    x = np.asarray(x, np.float32)
    labels = np.asarray(labels)
    if x.ndim != 2 or len(x) != len(labels):
        raise ValueError(f"classifier head: need (N, D) features and N labels, got {x.shape} and {labels.shape}")
    _check_integer_labels(labels)
    classes, y = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"classifier head: needs at least 2 ID classes, got {classes.tolist()}")
    if cfg.standardize:
        # StandardScaler's rule: a channel constant on every training image keeps std 1 (a std
        # + 1e-4 blew such a channel's test values up 1e4-fold into first-layer weights it never
        # trained: 250 of 1280 pill channels, head AUROCs moved by up to 0.06). Heads saved
        # before keep their own in_std.
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler().fit(x)
        mean, std = scaler.mean_, scaler.scale_
    else:
        mean, std = np.zeros(x.shape[1]), np.ones(x.shape[1])
    z = torch.from_numpy(((x - mean) / std).astype(np.float32))
    yt = torch.from_numpy(y.astype(np.int64))
    gen = torch.Generator().manual_seed(cfg.seed)
    counts = np.bincount(y, minlength=len(classes)).astype(np.float32)
    weight = torch.from_numpy(counts.sum() / (len(classes) * counts))
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: extra threads only add synchronisation cost
    # Initial weights and dropout masks both draw from torch's global RNG: seed it for the
    # whole training, so a head does not depend on what ran before it, and give the caller
    # its RNG back untouched.
    try:
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)
            net = _Net(x.shape[1], cfg, len(classes))
            opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
            net.train()
            _train_loop(net, z, yt, loss_fn, opt, cfg, gen)
    finally:
        torch.set_num_threads(threads)
    if not all(bool(torch.isfinite(p).all()) for p in net.parameters()):
        # refused now: such a head scores NaN, and its saved state is refused as damaged on load
        raise ValueError(f"classifier head: training diverged (its weights hold NaN or Inf); "
                         f"lr {cfg.lr:g} or weight_decay {cfg.weight_decay:g} is likely too large")
    net.eval()
    with torch.no_grad():
        acc = float((net(z).argmax(1) == yt).float().mean())
    log.info("classifier head: %d images, %d classes, train accuracy %.3f", len(x), len(classes), acc)
    as_np = lambda t: t.detach().double().numpy()  # noqa: E731
    return HeadWeights(
        in_mean=mean.astype(np.float64), in_std=std.astype(np.float64),
        w1=as_np(net.fc1.weight), b1=as_np(net.fc1.bias),
        w2=as_np(net.fc2.weight), b2=as_np(net.fc2.bias),
        classes=classes, l2_normalize=cfg.l2_normalize,
    )
