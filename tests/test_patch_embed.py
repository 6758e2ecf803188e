"""PatchEmbedding on hand-checked maps: neighbourhood summaries, stage weighting, reduction."""

import math

import pytest
import torch

from anomaly_inspect.config import ConfigError, FeatureConfig
from anomaly_inspect.features.patch_embed import PatchEmbedding

GRID = torch.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # [[1,2,3],[4,5,6],[7,8,9]]


def at(emb: torch.Tensor, y: int, x: int) -> list[float]:
    return [round(v, 6) for v in emb[0, :, y, x].tolist()]


def test_finest_stage_summaries_by_hand():
    rows = PatchEmbedding(finest="rows", equal_weights=False)([GRID])
    assert at(rows, 1, 1) == [2.0, 5.0, 8.0]       # row means of the full neighbourhood
    assert at(rows, 0, 0) == [0.0, 1.0, 3.0]       # zero padding: (0+0+0)/3, (0+1+2)/3, (0+4+5)/3
    full = PatchEmbedding(finest="full", equal_weights=False)([GRID])
    assert at(full, 1, 1) == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    mean = PatchEmbedding(finest="mean", equal_weights=False)([GRID])
    assert at(mean, 1, 1) == [5.0]
    assert at(mean, 0, 0) == [round(12 / 9, 6)]    # (1+2+4+5)/9


def test_channel_major_order_with_two_channels():
    two = torch.cat([GRID, 10 * GRID], dim=1)
    rows = PatchEmbedding(finest="rows", equal_weights=False)([two])
    assert at(rows, 1, 1) == [2.0, 5.0, 8.0, 20.0, 50.0, 80.0]


def test_equal_weights_divide_each_stage_by_sqrt_width():
    fine = torch.ones(1, 1, 2, 2)
    coarse = torch.full((1, 4, 1, 1), 2.0)
    emb = PatchEmbedding(aggregate=1, finest="rows", equal_weights=True)([fine, coarse])
    # aggregate 1: no neighbourhood; stage widths 1 and 4; coarse upsampled to 2x2
    assert emb.shape == (1, 5, 2, 2)
    assert at(emb, 1, 0) == [1.0] + [2.0 / 2.0] * 4
    # each stage's squared norm: 1 and 4 * (2/2)^2 = 4 -> per-dimension mean is equal
    plain = PatchEmbedding(aggregate=1, equal_weights=False)([fine, coarse])
    assert at(plain, 0, 0) == [1.0, 2.0, 2.0, 2.0, 2.0]


def test_wide_stage_is_pooled_to_embed_dim_per_stage():
    fine = torch.arange(8.0).reshape(1, 8, 1, 1)
    coarse = torch.ones(1, 2, 1, 1)
    emb = PatchEmbedding(aggregate=1, embed_dim=8, equal_weights=False)([fine, coarse])
    # 8 // 2 stages = 4 per stage: the 8 fine channels are averaged in pairs
    assert at(emb, 0, 0) == [0.5, 2.5, 4.5, 6.5, 1.0, 1.0]
    assert PatchEmbedding(aggregate=1, embed_dim=8).output_dim([8, 2]) == 6
    assert PatchEmbedding(finest="rows").output_dim([40, 112]) == 120 + 112
    assert PatchEmbedding(finest="full").output_dim([40, 112]) == 360 + 112


def test_distance_weight_of_equal_stages():
    torch.manual_seed(0)
    a = [torch.randn(1, 40, 4, 4), torch.randn(1, 112, 2, 2)]
    emb = PatchEmbedding(finest="mean", equal_weights=True)(a)
    assert emb.shape[1] == 152
    fine, coarse = emb[:, :40], emb[:, 40:]
    ref = PatchEmbedding(finest="mean", equal_weights=False)(a)
    assert torch.allclose(fine, ref[:, :40] / math.sqrt(40))
    assert torch.allclose(coarse, ref[:, 40:] / math.sqrt(112))


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="finest_stage"):
        FeatureConfig(finest_stage="diagonal").embedding()
    with pytest.raises(ValueError, match="aggregate"):
        PatchEmbedding(aggregate=0)
    for even in (2, 4):  # an even window is off centre (and made wider-than-grid row maps)
        with pytest.raises(ValueError, match="odd"):
            PatchEmbedding(aggregate=even)


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("finest", ["rows", "full"])
def test_neighbourhood_equals_unfold_reference(k, finest):
    """The shifted-view neighbourhood equals the F.unfold definition (channel, row, column order)."""
    import torch.nn.functional as F

    from anomaly_inspect.features.patch_embed import _neighbourhood

    torch.manual_seed(0)
    fmap = torch.randn(2, 3, 6, 7)
    cols = F.unfold(fmap, k, padding=k // 2).reshape(2, 3, k, k, 6, 7)
    ref = cols.mean(dim=3).reshape(2, 3 * k, 6, 7) if finest == "rows" else cols.reshape(2, 3 * k * k, 6, 7)
    assert torch.allclose(_neighbourhood(fmap, k, finest), ref, atol=1e-6)


@pytest.mark.parametrize("finest", ["rows", "full", "mean"])
def test_chunks_of_images_give_the_whole_batch_embedding(finest):
    g = torch.Generator().manual_seed(0)
    maps = [torch.randn(5, 4, 6, 6, generator=g), torch.randn(5, 7, 3, 3, generator=g)]
    emb = PatchEmbedding(finest=finest, embed_dim=8)
    whole = emb(maps, chunk=5)
    assert whole.shape == (5, emb.output_dim([4, 7]), 6, 6)
    for chunk in (1, 2, 3):
        assert torch.equal(emb(maps, chunk=chunk), whole)
    assert torch.equal(emb(maps), whole)  # default: CHUNK_CELLS cells, all 5 images here


def _nchw_reference(emb: PatchEmbedding, maps: list[torch.Tensor]) -> torch.Tensor:
    """The embedding as computed on NCHW maps (before it went channels-last)."""
    import torch.nn.functional as F

    h, w = maps[0].shape[-2:]
    per_stage = None if emb.embed_dim is None else max(1, emb.embed_dim // len(maps))
    parts = []
    for i, fmap in enumerate(maps):
        mode, k = (emb.finest if i == 0 else "mean"), emb.aggregate
        b, c = fmap.shape[:2]
        if mode == "mean":
            fmap = F.avg_pool2d(fmap, k, stride=1, padding=k // 2)
        elif mode == "rows":
            means = F.pad(F.avg_pool2d(fmap, (1, k), stride=1, padding=(0, k // 2)), (0, 0, k // 2, k // 2))
            fmap = torch.stack([means[:, :, j:j + h] for j in range(k)], dim=2).reshape(b, c * k, h, w)
        else:
            fmap = F.unfold(fmap, k, padding=k // 2).reshape(b, c * k * k, h, w)
        if per_stage is not None and fmap.shape[1] > per_stage:
            n, c, hh, ww = fmap.shape
            flat = F.adaptive_avg_pool1d(fmap.permute(0, 2, 3, 1).reshape(-1, 1, c), per_stage)
            fmap = flat.reshape(n, hh, ww, per_stage).permute(0, 3, 1, 2)
        if fmap.shape[-2:] != (h, w):
            fmap = F.interpolate(fmap, size=(h, w), mode="bilinear", align_corners=False)
        parts.append(fmap / fmap.shape[1] ** 0.5 if emb.equal_weights else fmap)
    return torch.cat(parts, dim=1)


@pytest.mark.parametrize("finest", ["rows", "full", "mean"])
@pytest.mark.parametrize("grid", [(40, 40), (80, 80)])  # torch's NCHW bilinear kernel changes past h + w = 128
@pytest.mark.parametrize("embed_dim", [None, 96])
def test_channels_last_embedding_equals_the_nchw_computation_bit_for_bit(finest, grid, embed_dim):
    g = torch.Generator().manual_seed(1)
    h, w = grid
    maps = [torch.randn(2, 24, h, w, generator=g), torch.randn(2, 40, h // 2, w // 2, generator=g),
            torch.randn(2, 112, h // 4, w // 4, generator=g)]
    emb = PatchEmbedding(finest=finest, embed_dim=embed_dim)
    got = emb(maps)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(got, _nchw_reference(emb, maps))
