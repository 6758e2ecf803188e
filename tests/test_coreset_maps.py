"""Anomaly maps (scorers.maps): where the patch cells lie when the stride does not divide the
input, and evaluate's maps agreeing with the screening overlays on padding."""

from __future__ import annotations

import cv2
import numpy as np

from anomaly_inspect.core import Features
from anomaly_inspect.data.transforms import Box, TransformConfig
from anomaly_inspect.scorers.maps import anomaly_map
from anomaly_inspect.scorers.patchcore import PatchCore
from anomaly_inspect.screening.overlays import image_map


def test_maps_spread_cells_as_the_cell_boxes_do_when_the_stride_does_not_divide_the_input():
    """100 px, 13 cells: the map's peak for cell 6 lies in the box the explanations draw for
    it (``transforms.cell_centres``' geometry: cells spread evenly over the input). A map that
    placed cells on the stride-8 grid instead put the peak beside the box."""
    scores = np.zeros((13, 13), np.float32)
    scores[6, 12] = 1.0
    m = anomaly_map(scores, (100, 100), sigma=0)
    np.testing.assert_array_equal(m, cv2.resize(scores, (100, 100)))
    y, x = np.unravel_index(int(np.argmax(m)), m.shape)
    cell = 100 / 13
    assert 6 * cell <= y < 7 * cell and 12 * cell <= x < 13 * cell


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


def test_patch_mahalanobis_maps_fill_padding_as_patchcore_and_the_overlays_do():
    """patch_mahalanobis returned raw scores on padding cells (mirror-padded content), which
    the blur spread into the image's border: its evaluate maps differed from its overlays."""
    from anomaly_inspect.scorers.patch_gaussian import PatchMahalanobis

    rng = np.random.default_rng(2)
    patches = rng.normal(size=(1, 8, 8, 2)).astype(np.float32)
    patches[0, :2] = patches[0, 6:] = 5.0  # padding rows, far from the training mean
    valid = np.zeros((1, 8, 8), bool)
    valid[0, 2:6] = True
    pm = PatchMahalanobis()
    pm.fit(Features(patches=rng.normal(size=(4, 8, 8, 2)).astype(np.float32)))
    scores = pm.score(Features(patches=patches, valid=valid)).patch_scores[0]
    on_image = scores[2:6]
    np.testing.assert_array_equal(scores[:2], np.repeat(on_image[:1], 2, axis=0))
    np.testing.assert_array_equal(scores[6:], np.repeat(on_image[-1:], 2, axis=0))
    pad = TransformConfig(image_size=64, resize="pad")
    overlay, _ = image_map(on_image, Box(2, 0, 4, 8), (8, 8), pad, (32, 64), (32, 64))
    np.testing.assert_allclose(overlay, anomaly_map(scores, (64, 64))[16:48], atol=1e-5)
