"""Anomaly maps (scorers.maps): where the patch cells lie when the stride does not divide the
input, and evaluate's maps agreeing with the screening overlays on padding."""

from __future__ import annotations

import cv2
import numpy as np

from anomaly_inspect.core import Features
from anomaly_inspect.data.transforms import Box, TransformConfig
from anomaly_inspect.scorers.maps import anomaly_map, grid_stride
from anomaly_inspect.scorers.patchcore import PatchCore
from anomaly_inspect.screening.overlays import image_map


def test_cells_cover_their_stride_from_the_top_left_when_it_does_not_divide_the_input():
    """100 px at stride 8 gives 13 cells over 104 px; stretching them over 100 px put cell 6's
    centre at 49.5 instead of 51.5 (and the last cell 4 px off)."""
    assert grid_stride(100, 13) == 8 and grid_stride(96, 12) == 8 and grid_stride(9, 2) == 8
    assert grid_stride(3, 4) is None  # no stride gives 4 cells over 3 px: stretched
    scores = np.zeros((13, 13), np.float32)
    scores[6, 6] = 1.0
    m = anomaly_map(scores, (100, 100), sigma=0)
    assert m.shape == (100, 100)
    # cell 6 covers pixels 48..56: the bilinear peak sits at its centre, 51.5
    assert m[51, 51] == m[52, 52] == m.max() and m[51, 51] > m[50, 50]
    np.testing.assert_array_equal(m, cv2.resize(scores, (104, 104))[:100, :100])
    last = np.zeros((13, 13), np.float32)
    last[:, 12] = 1.0  # cell 12 covers pixels 96..104, centre at 100: pixel 99 (centre 99.5)
    #                    is 0.5 px short of it, 1 - 0.5 / 8 (stretched: past its centre, 1.0)
    assert (anomaly_map(last, (100, 100), sigma=0)[:, 99] == 0.9375).all()


def test_maps_at_multiples_of_the_stride_are_the_plain_stretch():
    rng = np.random.default_rng(0)
    for g, size in ((40, 320), (8, 64), (12, 96)):
        p = rng.random((g, g)).astype(np.float32)
        up = cv2.resize(p, (size, size), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(anomaly_map(p, (size, size), sigma=0), up)
        blurred = cv2.GaussianBlur(up, (33, 33), sigmaX=4, sigmaY=4, borderType=cv2.BORDER_REFLECT)
        np.testing.assert_array_equal(anomaly_map(p, (size, size)), blurred)


def test_evaluate_maps_and_overlays_agree_on_a_padded_image():
    """Pad mode: a 32 x 64 image in rows 16..48 of the 64 px input (grid rows 2..5 of 8).
    evaluate's map of PatchCore's patch scores, cut to the image, is the overlay's map; the
    padding took the image's lowest score in the one and the nearest image cell's in the
    other, so a high score at the image's border differed."""
    rng = np.random.default_rng(1)
    on_image = rng.random((4, 8)).astype(np.float32) + 1
    on_image[0, 3] = 9.0  # at the image's top border
    patches = np.zeros((1, 8, 8, 1), np.float32)
    patches[0, 2:6, :, 0] = on_image
    valid = np.zeros((1, 8, 8), bool)
    valid[0, 2:6] = True
    pc = PatchCore(progress=False)
    pc.set_state({"memory_bank": np.zeros((1, 1), np.float32)})
    scores = pc.score(Features(patches=patches, valid=valid)).patch_scores[0]
    evaluate = anomaly_map(scores, (64, 64))[16:48]
    pad = TransformConfig(image_size=64, resize="pad")
    overlay, covered = image_map(on_image, Box(2, 0, 4, 8), (8, 8), pad, (32, 64), (32, 64))
    assert covered.all()
    np.testing.assert_allclose(overlay, evaluate, atol=1e-5)
