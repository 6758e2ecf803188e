"""Where every memory item came from: training image, patch row / column, and view.

A memory bank is a subset of the training patches. Keeping, for each item,
the index of its training image (in the order the scorer was fitted on), its
cell on the patch grid and the view it was taken from (0 = the image itself;
otherwise one of TailedCore's rotated / flipped tail views) lets an inspector
see the normal patch that a suspicious patch was compared with. Stored as
plain integer arrays beside the bank: 10 bytes per item (int32 + 3 x int16).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

STATE_KEYS = ("provenance_image", "provenance_cell", "provenance_views")


@dataclass(frozen=True)
class Provenance:
    """``image`` (M,) int32: training-image index, -1 when unknown; ``cell`` (M, 3) int16:
    patch row, column and view id; ``views`` (V, 2) int16: (angle in degrees, horizontal flip)
    of each view id, row 0 being the image itself (0, 0)."""

    image: np.ndarray
    cell: np.ndarray
    views: np.ndarray

    def __post_init__(self):
        if self.image.ndim != 1 or self.cell.shape != (len(self.image), 3):
            raise ValueError(f"provenance arrays disagree: image {self.image.shape}, "
                             f"cell {self.cell.shape}")
        if self.views.ndim != 2 or self.views.shape[1] != 2 or len(self.views) < 1:
            raise ValueError(f"provenance views must be (V >= 1, 2), got {self.views.shape}")
        if len(self.cell) and int(self.cell[:, 2].max()) >= len(self.views):
            raise ValueError("provenance names a view id outside its view table")

    def __len__(self) -> int:
        return len(self.image)

    @staticmethod
    def of_cells(valid: np.ndarray, positions: np.ndarray, image_ids: np.ndarray | None = None,
                 view: int = 0, views: np.ndarray | None = None) -> Provenance:
        """Provenance of rows picked at ``positions`` from ``patches[valid]`` of (N, h, w)
        patches (row-major, as boolean indexing and ``reshape(-1, D)`` flatten them).
        ``image_ids`` (N,) maps the N images to training-image indices (default 0..N-1)."""
        flat = np.flatnonzero(valid.reshape(-1))[np.asarray(positions, np.int64)]
        n, r, c = np.unravel_index(flat, valid.shape)
        image = n if image_ids is None else np.asarray(image_ids)[n]
        cell = np.stack([r, c, np.full_like(r, view)], axis=1)
        return Provenance(image.astype(np.int32), cell.astype(np.int16),
                          np.zeros((1, 2), np.int16) if views is None else views)

    @staticmethod
    def unknown(m: int, views: np.ndarray | None = None) -> Provenance:
        """``m`` items whose origin is not known (image -1)."""
        return Provenance(np.full(m, -1, np.int32), np.zeros((m, 3), np.int16),
                          np.zeros((1, 2), np.int16) if views is None else views)

    def take(self, idx: np.ndarray) -> Provenance:
        return Provenance(self.image[idx], self.cell[idx], self.views)

    @staticmethod
    def concat(parts: list[Provenance]) -> Provenance:
        """Items of ``parts`` in order; they must share one view table (the longest wins,
        as tables only ever grow by appending views)."""
        views = max((p.views for p in parts), key=len)
        for p in parts:
            if not np.array_equal(views[:len(p.views)], p.views):
                raise ValueError("provenance parts use different view tables")
        return Provenance(np.concatenate([p.image for p in parts]),
                          np.concatenate([p.cell for p in parts]), views)

    def state(self) -> dict[str, np.ndarray]:
        return dict(zip(STATE_KEYS, (self.image, self.cell, self.views), strict=True))

    @staticmethod
    def from_state(state: dict[str, np.ndarray], n_items: int) -> Provenance | None:
        """The saved provenance, or None for a model saved before provenance existed. Damaged
        provenance (a model without checksums) is dropped with a warning: the bank still
        scores, only explanations need a refit."""
        if not all(k in state for k in STATE_KEYS):
            return None
        try:
            prov = Provenance(*(np.asarray(state[k]) for k in STATE_KEYS))
            if len(prov) != n_items:
                raise ValueError(f"provenance of {len(prov)} items for a bank of {n_items}")
            if prov.views.min() < 0 or prov.cell.min() < 0 or prov.image.min() < -1:
                raise ValueError("negative provenance indices")
        except ValueError as exc:
            log.warning("memory-bank provenance is damaged (%s): scores are unaffected, "
                        "explanations need a refit", exc)
            return None
        return prov

    def nbytes(self) -> int:
        return self.image.nbytes + self.cell.nbytes + self.views.nbytes
