"""One rule for "which patch cells are image content": ``cells_inside`` (a view's content mask)
gives ``valid_grid``'s (a content box's) answer, including its at-least-one-cell rule for
content thinner than a cell, so the views of a very thin image (resize "pad") keep patches."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
import torch

from anomaly_inspect.data.transforms import Box, cell_centres
from anomaly_inspect.features.extractor import valid_grid
from anomaly_inspect.features.views import cells_inside, content_masks, one_view, rotated_views

SIZE = 320
# pad boxes of images of several aspect ratios: ordinary ones, then thinner than a cell (8 px)
ORDINARY = [Box(0, 0, SIZE, 307), Box(80, 0, 160, SIZE), Box(0, 100, SIZE, 13), Box(0, 37, SIZE, 200),
            Box(150, 0, 20, SIZE), Box(2, 0, 316, SIZE), Box(0, 153, SIZE, 9)]
THIN = [Box(157, 0, 6, SIZE), Box(0, 100, SIZE, 3), Box(317, 0, 3, SIZE), Box(0, 0, SIZE, 1),
        Box(158, 0, 4, SIZE), Box(161, 0, 1, SIZE)]
GRIDS = [(40, 40), (28, 28), (20, 20)]


def centre_sampled(mask: torch.Tensor, grid: tuple[int, int]) -> np.ndarray:
    """``cells_inside`` before the thin-content rule: the mask at each cell's centre."""
    ys, xs = (cell_centres(mask.shape[-1], cells).astype(int) for cells in grid)
    return (mask[:, 0][:, ys][:, :, xs] > 0.5).numpy()


def expected_cells(box: Box, grid: tuple[int, int]) -> np.ndarray:
    """``valid_grid``'s cells of one box (None there: every cell)."""
    valid = valid_grid([box], SIZE, grid)
    return np.ones((1, *grid), bool) if valid is None else valid


OBLIQUE = ((45, False), (15, True), (120, False))  # (angle, hflip) views that are no boxes


@cache
def views(boxes: tuple[Box, ...], kind: str) -> list[torch.Tensor]:
    """The rotated content masks of ``boxes``' views of a kind, or of :data:`OBLIQUE` (made
    once: rotating takes seconds)."""
    masks = content_masks(list(boxes), SIZE)
    if kind == "oblique":
        return [one_view(masks, angle, flip) for angle, flip in OBLIQUE]
    return list(rotated_views(masks, kind))


def content_box(mask: np.ndarray) -> Box:
    """The pixel box of an axis-aligned (unrotated or 90-degree) content mask."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return Box(int(rows[0]), int(cols[0]), int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1))


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("box", ORDINARY + THIN, ids=repr)
def test_the_unrotated_mask_gives_valid_grids_cells(box, grid):
    got = cells_inside(content_masks([box], SIZE), grid)
    assert np.array_equal(got, expected_cells(box, grid))
    assert got.any()


def test_a_1000_by_20_image_padded_keeps_a_row_of_cells():
    # the reviewer's case: a 6-px strip between two rows of cell centres kept no cell at all
    box = Box(157, 0, 6, SIZE)
    got = cells_inside(content_masks([box], SIZE), (40, 40))
    assert got.sum() == 40 and got[0, 20].all()  # the row holding the strip's middle, as on_grid


@pytest.mark.parametrize("box", ORDINARY + THIN, ids=repr)
def test_every_rotflip_view_keeps_the_cells_of_its_rotated_box(box):
    # 90-degree views of a square input are boxes again: each view's cells are valid_grid's
    for view in views((box,), "rotflip"):
        expected = expected_cells(content_box(view[0, 0].numpy() > 0.5), (40, 40))
        assert np.array_equal(cells_inside(view, (40, 40)), expected)


def test_oblique_views_change_only_the_images_no_cell_centre_meets():
    # ordinary images keep exactly today's cells; a thin one keeps at least one cell
    for view in views(tuple(ORDINARY + THIN), "oblique"):
        for grid in GRIDS:
            got, before = cells_inside(view, grid), centre_sampled(view, grid)
            met = before.any(axis=(1, 2))
            assert met[:len(ORDINARY)].all() or grid != (40, 40)
            assert np.array_equal(got[met], before[met])
            has_content = (view[:, 0] > 0.5).flatten(1).any(dim=1).numpy()
            assert np.array_equal(got.any(axis=(1, 2)), has_content)  # at least one cell


def test_kept_cells_lie_on_content():
    # each cell the thin rule adds holds content somewhere in its pixels
    for view in views(tuple(ORDINARY + THIN), "oblique"):
        got = cells_inside(view, (40, 40))
        content = (view[:, 0] > 0.5).numpy()
        per_cell = content.reshape(len(content), 40, 8, 40, 8).any(axis=(2, 4))
        assert not (got & ~per_cell).any()


def test_a_mask_without_content_keeps_no_cell():
    assert not cells_inside(torch.zeros(1, 1, 16, 16), (4, 4)).any()
    assert cells_inside(torch.ones(1, 1, 16, 16), (2, 2)).all()
