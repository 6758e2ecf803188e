"""Colour-shifted copies of a normalised image batch, for learning a colour-nuisance subspace.

Each image gets its own random hue rotation, saturation factor and per-channel
offset (drawn from a seeded ``torch.Generator``), applied in [0, 1] RGB and
normalised back. Only colour changes; geometry and texture stay. Ranges are
fixed a priori (wide: any hue, saturation x0.5-1.5, offsets +-0.1), so the
shifted copies cover the colours artefacts can take without looking at any.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ColourShift:
    """Ranges of the random colour change (hue in turns, saturation factor, channel offset)."""

    hue: float = 0.5
    saturation: tuple[float, float] = (0.5, 1.5)
    channel_offset: float = 0.1

    def __post_init__(self):
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"colour shift: hue must be in [0, 0.5], got {self.hue}")
        lo, hi = self.saturation
        if not 0.0 <= lo <= hi:
            raise ValueError(f"colour shift: saturation range must satisfy 0 <= lo <= hi, got {self.saturation}")


def colour_shift(images: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                 generator: torch.Generator, spec: ColourShift = ColourShift()) -> torch.Tensor:
    """Colour-shifted copy of a (B, 3, H, W) batch normalised with ``mean`` / ``std``."""
    import torchvision.transforms.functional as TF  # torchvision: 1 s of import, here only

    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"colour shift: expected a (B, 3, H, W) batch, got shape {tuple(images.shape)}")
    b = len(images)
    m = torch.tensor(mean, dtype=images.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=images.dtype).view(1, 3, 1, 1)
    rgb = (images * s + m).clamp(0.0, 1.0)
    u = torch.rand(b, 5, generator=generator, dtype=images.dtype)
    hue = (2 * u[:, 0] - 1) * spec.hue
    lo, hi = spec.saturation
    sat = lo + u[:, 1] * (hi - lo)
    offset = ((2 * u[:, 2:5] - 1) * spec.channel_offset).view(b, 3, 1, 1)
    out = torch.stack([TF.adjust_saturation(TF.adjust_hue(rgb[i], float(hue[i])), float(sat[i]))
                       for i in range(b)])
    return ((out + offset).clamp(0.0, 1.0) - m) / s
