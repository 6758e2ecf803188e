"""A frozen timm backbone that returns chosen stages and stops after the last one."""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

# Never let timm / huggingface_hub reach the network: weights must be local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import timm  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from ..data.transforms import TransformConfig  # noqa: E402
from .weights import WeightSource, load_weights  # noqa: E402

log = logging.getLogger(__name__)

DEFAULT_BACKBONE = "tf_efficientnet_lite0"


class UnknownBackboneError(ValueError):
    """The backbone name is not a timm model."""


def _create(name: str) -> nn.Module:
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownBackboneError(f"unknown backbone '{name}': not a timm model name.{hint}")
    return timm.create_model(name, pretrained=False)


def default_layers(feature_info: list[dict]) -> tuple[int, ...]:
    """Indices of the stride-8 and stride-16 stages (the PatchCore choice)."""
    reductions = [f["reduction"] for f in feature_info]
    picked = tuple(i for i, r in enumerate(reductions) if r in (8, 16))
    return picked if len(picked) == 2 else tuple(range(len(reductions)))[-3:-1]


class Backbone(nn.Module):
    """Frozen timm model in eval mode.

    ``forward`` returns the feature maps of ``layers`` (indices into timm's
    ``feature_info``), running the network only up to the deepest of them.
    ``forward_pooled`` runs the whole network and returns the globally pooled
    pre-logit embedding (e.g. 1280-d for EfficientNet-Lite0).
    """

    def __init__(
        self,
        name: str = DEFAULT_BACKBONE,
        layers: Sequence[int] | None = None,
        weights: str | Path | None = None,
        seed: int = 0,
    ):
        super().__init__()
        torch.manual_seed(seed)  # only matters for weights="random"
        self.name = name
        self.model = _create(name)
        self.weight_source: WeightSource = load_weights(self.model, name, weights)
        info = [dict(f) for f in self.model.feature_info]
        self.feature_info = info
        self.layers = tuple(int(i) for i in (layers if layers is not None else default_layers(info)))
        bad = [i for i in self.layers if not 0 <= i < len(info)]
        if bad:
            raise ValueError(f"{name}: layer indices {bad} out of range 0..{len(info) - 1}")
        self._has_intermediates = hasattr(self.model, "forward_intermediates")
        self.model.eval().requires_grad_(False)
        cfg = self.model.pretrained_cfg
        self.mean = tuple(float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406)))
        self.std = tuple(float(v) for v in cfg.get("std", (0.229, 0.224, 0.225)))

    @property
    def channels(self) -> list[int]:
        return [self.feature_info[i]["num_chs"] for i in self.layers]

    @property
    def strides(self) -> list[int]:
        return [self.feature_info[i]["reduction"] for i in self.layers]

    def transform_config(self, image_size: int = 256, crop_size: int | None = None,
                         resize: str = "stretch") -> TransformConfig:
        """Input transform with this model's own normalisation (from timm's pretrained_cfg)."""
        return TransformConfig(image_size, crop_size, self.mean, self.std, resize)  # type: ignore[arg-type]

    def train(self, mode: bool = True) -> Backbone:  # always frozen in eval mode
        return super().train(False)

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self._has_intermediates:
            return self.model.forward_intermediates(
                x, indices=list(self.layers), stop_early=True, intermediates_only=True
            )
        raise NotImplementedError(f"{self.name}: timm model lacks forward_intermediates")

    @torch.inference_mode()
    def forward_with_pooled(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Stage maps and the pooled pre-logit embedding from one full pass."""
        final, inter = self.model.forward_intermediates(
            x, indices=list(self.layers), intermediates_only=False
        )
        return inter, self.model.forward_head(final, pre_logits=True)

    @torch.inference_mode()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (used to check that mapped weights are real)."""
        return self.model(x)
