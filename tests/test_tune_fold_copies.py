"""Tune's folds keep byte-identical copies together (no held-out image validated against its own
copy in its fold's bank); without copies the folds are the plain seeded ones."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly_inspect import files
from anomaly_inspect.tuning.tune import TooFewImagesError, TuneSettings, fold_plan


def _files(folder, distinct: int, copies: int) -> list:
    """``distinct`` files of their own bytes, then ``copies`` of one more (same size for all)."""
    paths = []
    for i in range(distinct + copies):
        paths.append(folder / f"{i:03d}.bin")
        paths[-1].write_bytes(b"%03d" % min(i, distinct))
    return paths


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_copies_share_a_fold_and_the_rest_is_unchanged(tmp_path, seed):
    settings = TuneSettings(seed=seed)
    plain = fold_plan(100, settings)
    paths = _files(tmp_path, 40, 60)  # one frame 60 times (a review's case: it was in every fold)
    chosen, folds, families = fold_plan(100, settings, paths)
    np.testing.assert_array_equal(chosen, plain[0])
    np.testing.assert_array_equal(families, plain[2])
    assert len(set(folds[40:100])) == 1 and folds[40] == plain[1][40]
    np.testing.assert_array_equal(folds[:40], plain[1][:40])


def test_too_few_distinct_images_for_the_folds_are_refused(tmp_path):
    settings = TuneSettings()
    with pytest.raises(TooFewImagesError, match="too few distinct ones"):
        fold_plan(12, settings, _files(tmp_path, 0, 12))


def test_only_the_chosen_images_are_read(tmp_path, monkeypatch):
    """With more images than ``max_images``, the copy check hashes the chosen ones only."""
    read = []
    real = files.file_sha256
    monkeypatch.setattr(files, "file_sha256", lambda p: read.append(p) or real(p))
    paths = []
    for i in range(100):  # 50 pairs of copies, every file the same size: all would be hashed
        paths.append(tmp_path / f"{i:03d}.bin")
        paths[-1].write_bytes(b"%03d" % (i // 2))
    chosen, _, _ = fold_plan(100, TuneSettings(max_images=30), paths)
    assert len(chosen) == 30
    assert sorted(map(str, read)) == sorted(str(paths[i]) for i in chosen)
