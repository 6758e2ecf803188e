"""ood-benchmark's data section: a null ``folds``, ``fold`` or ``id_groups`` (accepted by the
config check) is the default (5 folds, fold 0, no ID group beyond good), not a TypeError."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from anomaly_inspect.evaluation.ood_benchmark import OODBenchmarkConfig, build_data
from ood_helpers import heldout_config


def _names(samples) -> list[str]:
    return [s.path.name for s in samples]


def _same_split(a, b) -> None:
    assert _names(a.id_train) == _names(b.id_train)
    assert _names(a.id_test) == _names(b.id_test)
    assert a.notes == b.notes


def test_null_folds_and_fold_of_mvtec_heldout_are_the_defaults(ood_tiny, tmp_path):
    nulls, _ = build_data(heldout_config(ood_tiny, tmp_path, ["nan"], folds=None, fold=None))
    defaults, _ = build_data(heldout_config(ood_tiny, tmp_path, ["nan"], folds=5, fold=0))
    _same_split(nulls, defaults)
    assert "5-fold" in nulls.notes["id_rule"] and "fold 0 held out" in nulls.notes["id_rule"]


def test_null_id_groups_of_mvtec_heldout_is_good_only(ood_tiny, tmp_path):
    nulls, _ = build_data(heldout_config(ood_tiny, tmp_path, ["nan"], id_groups=None))
    empty, _ = build_data(heldout_config(ood_tiny, tmp_path, ["nan"], id_groups=[]))
    _same_split(nulls, empty)
    assert nulls.notes["id_groups"] == ["good"]


def _archive(tmp_path: Path) -> Path:
    """An ISIC-archive layout: 10 labelled ID images (5 benign, 5 malignant), 2 OOD ones."""
    ids = [f"ISIC_{i:07d}" for i in range(12)]
    for n, i in enumerate(ids):
        (tmp_path / "img").mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / "img" / f"{i}.jpg"), np.full((32, 32, 3), 20 * n, np.uint8))
    (tmp_path / "meta.csv").write_text("isic_id,benign_malignant\n" + "".join(
        f"{i},{'malignant' if n % 2 else 'benign'}\n" for n, i in enumerate(ids)))
    (tmp_path / "id.txt").write_text("\n".join(ids[:10]) + "\n")
    (tmp_path / "ink.txt").write_text("\n".join(ids[10:]) + "\n")
    return tmp_path


def _archive_config(root: Path, **data) -> OODBenchmarkConfig:
    return OODBenchmarkConfig.from_dict({
        "benchmark": "isic_archive", "splits": ["ink"], "scorers": ["nan"],
        "data": {"image_dir": str(root / "img"), "metadata_csv": str(root / "meta.csv"),
                 "id_list": str(root / "id.txt"), "ood_lists": {"ink": str(root / "ink.txt")},
                 **data},
        "cache_dir": str(root / "cache")}, "c.yaml")


def test_null_folds_and_fold_of_isic_archive_are_the_defaults(tmp_path):
    root = _archive(tmp_path)
    nulls, _ = build_data(_archive_config(root, folds=None, fold=None))
    defaults, _ = build_data(_archive_config(root, folds=5, fold=0))
    _same_split(nulls, defaults)
    assert len(nulls.id_test) == 2
    assert _names(nulls.ood["ink"]) == ["ISIC_0000010.jpg", "ISIC_0000011.jpg"]
