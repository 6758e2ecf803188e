"""Label-free pseudo-OOD images: jigsaw-shuffled training images.

Yu et al. (CVPR 2023, block selection for the feature norm) use jigsaw-puzzle
versions of the ID training images as pseudo-OOD: same colours and textures,
broken object structure. The OOD benchmark uses them to check which direction
a norm-type score runs for a given model, without any real OOD image.
"""

from __future__ import annotations

import torch


def jigsaw(images: torch.Tensor, grid: int = 3, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each (C, H, W) image of the batch with its grid x grid tiles in a random, non-identity order.

    The border rows / columns that do not fill a whole tile stay in place.
    """
    if images.ndim != 4:
        raise ValueError(f"jigsaw: expected a (B, C, H, W) batch, got shape {tuple(images.shape)}")
    if grid < 2:
        raise ValueError(f"jigsaw: grid must be >= 2, got {grid}")
    b, c, h, w = images.shape
    th, tw = h // grid, w // grid
    if th == 0 or tw == 0:
        raise ValueError(f"jigsaw: {h}x{w} images are too small for a {grid}x{grid} grid")
    n = grid * grid
    core = images[:, :, :th * grid, :tw * grid]
    tiles = core.reshape(b, c, grid, th, grid, tw).permute(0, 2, 4, 1, 3, 5).reshape(b, n, c, th, tw)
    perms = torch.stack([torch.randperm(n, generator=generator) for _ in range(b)])
    identity = (perms == torch.arange(n)).all(dim=1)
    perms[identity] = perms[identity].roll(1, dims=1)  # never leave an image unshuffled
    tiles = tiles[torch.arange(b)[:, None], perms]
    out = images.clone()
    out[:, :, :th * grid, :tw * grid] = (
        tiles.reshape(b, grid, grid, c, th, tw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, th * grid, tw * grid))
    return out
