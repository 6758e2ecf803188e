"""OOD scorers on a classifier head trained on ID features with ID class labels.

Every scorer here trains its own :class:`~.classifier_head.HeadWeights` in
``fit(features, labels)`` (deterministic from ``seed``, so equal settings give
the same head) and returns the negated confidence of its method:

* ``msp``: max softmax probability (Hendrycks & Gimpel 2017).
* ``energy``: logsumexp of the logits (Liu et al. 2020, T = 1).
* ``max_logit``: largest logit (Hendrycks et al. 2022).
* ``head_nan``: NAN = ||a||_1 / ||a||_0 of the head's hidden layer.
* ``head_feature_norm``: ||a||_2 of the head's hidden layer.
* ``l2norm``: Haas et al. (2023): the head is trained with L2-normalised hidden
  features, and the score is the *un-normalised* ||a||_2 at test time.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp, softmax

from ..core import Features, FitContext
from .base import Scorer, ScoreResult
from .classifier_head import STATE_SHAPES, HeadConfig, HeadWeights, train_head
from .norms import feature_norm, nan_confidence
from .params import check_flag, check_number


class HeadScorer(Scorer):
    """Shared fit / state for classifier-head scorers; subclasses define ``confidence``."""

    requires = ("pooled",)
    needs_labels = True
    default_l2_normalize = False

    def __init__(self, hidden: int = 256, epochs: int = 60, lr: float = 1e-3,
                 weight_decay: float = 1e-4, batch_size: int = 64, dropout: float = 0.0,
                 l2_normalize: bool | None = None, seed: int = 0, standardize: bool = True):
        for key, value in (("hidden", hidden), ("epochs", epochs), ("batch_size", batch_size)):
            check_number(self.name, key, value, 1, whole=True)
        check_number(self.name, "seed", seed, 0, whole=True)
        check_number(self.name, "lr", lr, 0, low_open=True, finite=True)
        check_number(self.name, "weight_decay", weight_decay, 0, finite=True)
        check_number(self.name, "dropout", dropout, 0, 1, high_open=True)
        check_flag(self.name, "l2_normalize", l2_normalize, allow_none=True)
        check_flag(self.name, "standardize", standardize)
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.dropout = dropout
        self.l2_normalize = l2_normalize  # None: the scorer's default (default_l2_normalize)
        self.seed = seed
        self.standardize = standardize
        self.head: HeadWeights | None = None

    def _pooled(self, features: Features) -> np.ndarray:
        if features.pooled is None:
            raise ValueError(f"{self.name} needs pooled features, but they were not extracted")
        return features.pooled

    def head_config(self) -> HeadConfig:
        l2 = self.default_l2_normalize if self.l2_normalize is None else self.l2_normalize
        return HeadConfig(self.hidden, self.epochs, self.lr, self.weight_decay, self.batch_size,
                          self.dropout, l2, self.seed, self.standardize)

    def fit(self, features: Features, labels: np.ndarray | None = None,
            context: FitContext | None = None) -> HeadScorer:
        if labels is None:
            raise ValueError(f"{self.name} trains a classifier head and needs ID class labels")
        previous, self.head = self.head, train_head(self._pooled(features), labels,
                                                    self.head_config())
        try:
            self._after_fit(features, np.asarray(labels))
        except Exception:
            self.head = previous  # a refused fit leaves a fitted scorer's head with its statistics
            raise
        self._fitted = True
        return self

    def _after_fit(self, features: Features, labels: np.ndarray) -> None:
        """Hook for scorers that pre-compute statistics from training data."""

    def confidence(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def score(self, features: Features) -> ScoreResult:
        self._check_fitted()
        return ScoreResult((-self.confidence(self._pooled(features))).astype(np.float32))

    def get_state(self) -> dict[str, np.ndarray]:
        return self.head.to_state()

    def state_shapes(self) -> dict[str, tuple]:
        """The arrays :meth:`set_state` restores and their shapes (``Scorer.check_state``);
        scorers that save statistics beside the head add theirs."""
        return {f"head.{k}": shape for k, shape in STATE_SHAPES.items()}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self.check_state(state, self.state_shapes(), hidden=self.hidden)
        self.head = HeadWeights.from_state(state)


class MSP(HeadScorer):
    name = "msp"

    def confidence(self, x: np.ndarray) -> np.ndarray:
        return softmax(self.head.logits(x), axis=1).max(axis=1)


class Energy(HeadScorer):
    name = "energy"

    def confidence(self, x: np.ndarray) -> np.ndarray:
        return logsumexp(self.head.logits(x), axis=1)


class MaxLogit(HeadScorer):
    name = "max_logit"

    def confidence(self, x: np.ndarray) -> np.ndarray:
        return self.head.logits(x).max(axis=1)


class HeadNAN(HeadScorer):
    name = "head_nan"

    def confidence(self, x: np.ndarray) -> np.ndarray:
        return nan_confidence(self.head.hidden(x))


class HeadFeatureNorm(HeadScorer):
    name = "head_feature_norm"

    def confidence(self, x: np.ndarray) -> np.ndarray:
        return feature_norm(self.head.hidden(x), 2.0)


class L2NormScore(HeadFeatureNorm):
    """Haas et al.: L2-normalised training, un-normalised feature norm at test time."""

    name = "l2norm"
    default_l2_normalize = True
