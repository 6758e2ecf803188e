"""Extract-once feature cache on disk (``.npz`` without pickle, plus a JSON description).

The key hashes everything the features depend on: backbone name, weights
checksum (:func:`~.weights.state_dict_checksum` via ``Backbone.weight_source``),
layers, image / crop size, any extra settings and the file list (paths, sizes
and modification times). A changed image, weight or setting gives a new key.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..files import replacing, write_json

log = logging.getLogger(__name__)


def file_list_hash(paths: Sequence[Path | str]) -> str:
    """SHA-256 over each path, its size and its modification time, in order."""
    h = hashlib.sha256()
    for p in paths:
        p = Path(p)
        try:
            st = p.stat()
        except OSError as exc:
            raise FileNotFoundError(f"{p}: cannot stat image for the feature cache ({exc})") from None
        h.update(f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cache_key(description: dict) -> str:
    """Stable hash of a JSON-serialisable description."""
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:24]


class FeatureCache:
    """A folder of ``<key>.npz`` arrays with ``<key>.json`` descriptions."""

    def __init__(self, directory: Path | str):
        self.directory = Path(directory)

    def describe(self, backbone, image_size: int, crop_size: int | None, paths: Sequence[Path],
                 extra: dict | None = None) -> dict:
        return {
            "backbone": backbone.name,
            "weights_checksum": backbone.weight_source.checksum,
            "layers": list(backbone.layers),
            "image_size": image_size,
            "crop_size": crop_size,
            "files": file_list_hash(paths),
            "n_files": len(paths),
            "extra": extra or {},
            # f32 on any runtime gives the same features (to 3e-6), so f32 keys stay as they were
            **({"precision": backbone.precision} if getattr(backbone, "precision", "f32") != "f32" else {}),
        }

    def load(self, description: dict) -> dict[str, np.ndarray] | None:
        path = self.directory / f"{cache_key(description)}.npz"
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as exc:
            log.warning("%s: unreadable cache entry (%s); recomputing", path, exc)
            return None
        log.info("feature cache hit: %s", path.name)
        return arrays

    def save(self, description: dict, arrays: dict[str, np.ndarray]) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        key = cache_key(description)
        path = self.directory / f"{key}.npz"
        with replacing(path) as tmp:
            np.savez(tmp, **arrays)
        write_json(self.directory / f"{key}.json", description)
        return path
