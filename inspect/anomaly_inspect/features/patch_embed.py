"""PatchCore's locally aware patch features.

Variant (methods.md §2.2): the official code's semantics, sized for narrow
backbones. Each stage's 3x3 neighbourhood is summarised per channel:

* coarser stages: the 3x3 mean (what the official ``MeanMapper`` computes for
  WideResNet's layer3, and what anomalib does with ``avg_pool2d``);
* the finest stage (``finest``): ``"rows"`` keeps the three row means per
  channel (3C values; what ``MeanMapper`` computes when it pools the
  channel-major unfolded 9C vector to 3C), ``"full"`` keeps all nine values
  (9C), ``"mean"`` the 3x3 mean (C, anomalib's form).

Coarser stages are bilinearly upsampled to the finest grid. With
``equal_weights`` each stage is divided by the square root of its width, so
every stage weighs the same in the L2 distance: the official ``Aggregator``
gives each stage the same number of dimensions to the same effect. Without it
EfficientNet-Lite0's 112-channel stride-16 stage outweighs the 40-channel
stride-8 stage (screw image AUROC 0.955 vs 0.984 with rows + equal weights).
A stage wider than ``embed_dim / n_stages`` is reduced to that width by
adaptive average pooling over its channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..choices import check_embedding

# Grid cells embedded at a time: two 320 px images at stride 8. Small chunks keep the
# intermediate maps in cache and out of fresh pages (batch 32 at 320 px, 2 threads: rows
# 125 -> 54 ms, full 150 -> 74 ms, mean 97 -> 50 ms; docs/results/runtime/micro_batch_2026-12-03/).
CHUNK_CELLS = 2 * 40 * 40


@dataclass(frozen=True)
class PatchEmbedding:
    """Maps a backbone's stage maps to one (B, D, H, W) patch-feature grid."""

    aggregate: int = 3
    embed_dim: int | None = 1024
    finest: str = "rows"
    equal_weights: bool = True

    def __post_init__(self):
        check_embedding(self.aggregate, self.finest)

    def __call__(self, maps: list[torch.Tensor], chunk: int | None = None) -> torch.Tensor:
        """The (B, D, H, W) embedding (channels-last in memory), computed ``chunk`` images at a
        time (default: about :data:`CHUNK_CELLS` grid cells) so the intermediate maps stay small
        and in cache."""
        b, h, w = maps[0].shape[0], *maps[0].shape[-2:]
        chunk = chunk or max(1, CHUNK_CELLS // (h * w))
        out = torch.empty((b, h, w, self.output_dim([m.shape[1] for m in maps])), dtype=maps[0].dtype)
        for i in range(0, b, chunk):
            # Every step runs on channels-last maps (the same arithmetic as on NCHW, tested bit
            # for bit), so each stage lands in the (B, h, w, D) output that scorers take as
            # contiguous rows, weighted on the way: no transposing write.
            parts = self._stages([m[i:i + chunk].contiguous(memory_format=torch.channels_last)
                                  for m in maps], h, w)
            start = 0
            for part in parts:
                c = part.shape[-1]
                dst = out[i:i + chunk, ..., start:start + c]
                if self.equal_weights:
                    torch.div(part, c ** 0.5, out=dst)
                else:
                    dst.copy_(part)
                start += c
        return out.permute(0, 3, 1, 2)

    def _stages(self, maps: list[torch.Tensor], h: int, w: int) -> list[torch.Tensor]:
        """Each stage's neighbourhood summary on the (h, w) grid, unweighted, as (B, h, w, C)
        views of channels-last maps."""
        per_stage = None if self.embed_dim is None else max(1, self.embed_dim // len(maps))
        parts = []
        for i, fmap in enumerate(maps):
            fmap = _neighbourhood(fmap, self.aggregate, self.finest if i == 0 else "mean")
            reduced = per_stage is not None and fmap.shape[1] > per_stage
            if reduced:
                fmap = _reduce_channels(fmap, per_stage)
            if fmap.shape[-2:] != (h, w):
                fmap = _upsample(fmap, h, w, nchw_kernel=not reduced)
            parts.append(fmap.permute(0, 2, 3, 1))
        return parts

    def output_dim(self, channels: list[int]) -> int:
        """Width of the embedding for stages with these channel counts."""
        per_stage = None if self.embed_dim is None else max(1, self.embed_dim // len(channels))
        widths = [c * {"mean": 1, "rows": self.aggregate, "full": self.aggregate ** 2}[
            self.finest if i == 0 else "mean"] for i, c in enumerate(channels)]
        return sum(w if per_stage is None else min(w, per_stage) for w in widths)


def _neighbourhood(fmap: torch.Tensor, k: int, mode: str) -> torch.Tensor:
    """Per-channel summary of each k x k neighbourhood (zero padded, stride 1), channels-last
    in memory."""
    if k == 1:
        return fmap.contiguous(memory_format=torch.channels_last)
    if mode == "mean":
        return F.avg_pool2d(fmap, k, stride=1, padding=k // 2)
    # Shifted views of the zero-padded map, in F.unfold's (channel, row, column) order: the
    # shifts are stacked innermost, after the channel, in (B, h, w, C, shifts) memory;
    # equal to unfolding, ~6x faster on the CPU (unfold dominated the embedding).
    b, c, h, w = fmap.shape
    pad = k // 2
    if mode == "rows":
        means = F.avg_pool2d(fmap, (1, k), stride=1, padding=(0, pad))  # zeros count, as in unfold
        rows = F.pad(means.permute(0, 2, 3, 1), (0, 0, 0, 0, pad, pad))  # (B, h + 2 pad, w, C)
        shifted = [rows[:, i:i + h] for i in range(k)]
    else:
        padded = F.pad(fmap.permute(0, 2, 3, 1), (0, 0, pad, pad, pad, pad))
        shifted = [padded[:, i:i + h, j:j + w] for i in range(k) for j in range(k)]
    return torch.stack(shifted, dim=-1).reshape(b, h, w, -1).permute(0, 3, 1, 2)


def _upsample(fmap: torch.Tensor, h: int, w: int, nchw_kernel: bool) -> torch.Tensor:
    """Bilinear upsampling to (h, w), channels-last. For grids with h + w > 128 torch's NCHW
    kernel is a separable one that rounds differently (5e-7) from its channels-last kernel
    (equal below that size). Stages that the embedding interpolated as NCHW maps before it
    went channels-last (``nchw_kernel``: all but channel-reduced ones) keep that kernel there,
    so every embedding stays what it was bit for bit (tested)."""
    if nchw_kernel and h + w > 128:
        fmap = F.interpolate(fmap.contiguous(), size=(h, w), mode="bilinear", align_corners=False)
        return fmap.contiguous(memory_format=torch.channels_last)
    return F.interpolate(fmap, size=(h, w), mode="bilinear", align_corners=False)


def _reduce_channels(fmap: torch.Tensor, width: int) -> torch.Tensor:
    b, c, h, w = fmap.shape
    flat = F.adaptive_avg_pool1d(fmap.permute(0, 2, 3, 1).reshape(-1, 1, c), width)
    return flat.reshape(b, h, w, width).permute(0, 3, 1, 2)

