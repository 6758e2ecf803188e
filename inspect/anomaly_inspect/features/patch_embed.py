"""PatchCore's locally aware patch features.

Variant (methods.md §2.2): anomalib's form. Each stage map is averaged over
its 3x3 neighbourhood (``avg_pool2d``, stride 1), coarser stages are
bilinearly upsampled to the finest grid and all are concatenated along
channels. If the result is wider than ``embed_dim`` it is reduced to
``embed_dim`` by adaptive average pooling over channels (the official
code's "MeanMapper" reduction). With EfficientNet-Lite0's stride-8/16 stages
the concatenation is only 40 + 112 = 152-d, so no reduction is needed, and
the official per-stage unfold-and-pool to 1024-d would only repeat values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def patch_embed(
    maps: list[torch.Tensor], aggregate: int = 3, embed_dim: int | None = None
) -> torch.Tensor:
    """(B, D, H, W) patch features on the grid of the first (finest) map."""
    h, w = maps[0].shape[-2:]
    parts = []
    for fmap in maps:
        if aggregate > 1:
            fmap = F.avg_pool2d(fmap, aggregate, stride=1, padding=aggregate // 2)
        if fmap.shape[-2:] != (h, w):
            fmap = F.interpolate(fmap, size=(h, w), mode="bilinear", align_corners=False)
        parts.append(fmap)
    feats = torch.cat(parts, dim=1)
    if embed_dim is not None and feats.shape[1] > embed_dim:
        b, c = feats.shape[:2]
        flat = feats.permute(0, 2, 3, 1).reshape(-1, 1, c)
        flat = F.adaptive_avg_pool1d(flat, embed_dim)
        feats = flat.reshape(b, h, w, embed_dim).permute(0, 3, 1, 2)
    return feats
