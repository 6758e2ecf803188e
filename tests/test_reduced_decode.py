"""A JPEG over 16 MP is decoded at a reduced size that keeps what the resize to image_size
needs, with or without a centre crop (a crop under half the image size was decoded too small
and upsampled)."""

import cv2
import numpy as np
import pytest

from anomaly_inspect.data.loader import decode_factor, iter_batches, reduced_side
from anomaly_inspect.data.transforms import TransformConfig


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory):
    path = tmp_path_factory.mktemp("big") / "big.jpg"
    image = np.zeros((3000, 6000, 3), np.uint8)
    image[:, ::2] = 255
    cv2.imwrite(str(path), image)
    return path


@pytest.mark.parametrize("crop", [None, 320, 160])
def test_a_reduced_decode_keeps_twice_the_resize_side_whatever_the_crop(big_jpeg, crop):
    cfg = TransformConfig(640, crop)
    factor = decode_factor(big_jpeg, cfg.image_size)
    assert factor == 2  # 3000 / 2 = 1500 >= 2 x 640; a factor 4 would leave 750
    batch = next(iter(iter_batches([big_jpeg], cfg, prefetch=False)))
    assert batch.originals == [(1500, 3000)]
    assert min(batch.originals[0]) >= reduced_side(cfg.image_size)


def test_without_a_crop_the_decode_is_the_one_before(big_jpeg):
    # before, the side was the model input's (output_size); without a crop it is image_size,
    # so every decode (and every recorded figure) without a crop is unchanged
    for size in (256, 320, 448, 640):
        cfg = TransformConfig(size)
        assert cfg.output_size == cfg.image_size
        assert decode_factor(big_jpeg, cfg.image_size) == decode_factor(big_jpeg, cfg.output_size)
    assert decode_factor(big_jpeg, 256) == 4  # 3000 / 4 = 750 >= 512
