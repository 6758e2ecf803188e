"""Extract-once feature cache on disk (``.npz`` without pickle, plus a JSON description).

The key hashes everything the features depend on: backbone name, weights
checksum (:func:`~.weights.state_dict_checksum` via ``Backbone.weight_source``),
layers, precision (:func:`precision_key`), image / crop size, any extra settings
and the file list (:func:`file_fingerprints`). A changed image, weight or setting
gives a new key.

Limit: like ``make``, the cache knows an image by its path, size and modification time, not
its pixels. An image rewritten in place with the same size whose modification time is then
put back (``cp -p``, ``rsync -a``, ``touch -r``, an archive extracted over it) keeps its key,
and its stale features are served. After such a copy, delete the cache folder (or ``touch``
the images).

The cache only saves work: a folder that cannot be read is a miss, one that cannot be written
(read-only, full) a warning, and the run goes on without it. A file a run killed while writing
it left is removed by the next run that opens the folder, once an hour old.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data.image_io import ImageReadError
from ..files import make_folder, remove_stale_temp_files, replacing, write_json
from .runtime import CalibrationError

log = logging.getLogger(__name__)

#: parts of the package that compute no cached array (front ends, the screening and tuning
#: tools; their caches' keys name what they decide themselves)
UNFINGERPRINTED = ("cli.py", "commands", "screening", "tuning")


def code_fingerprint(include: Sequence[str] = ()) -> str:
    """A hash of the package's source but ``UNFINGERPRINTED`` (save the files ``include``
    names, relative to the package, e.g. the tuning module that extracts): cached features, stage maps,
    scores and synthetic drawings depend on more than the feature and scorer code (image
    decoding, transforms, synthetic anomalies, pseudo-OOD, colour shifts, artefact drawing,
    fusion, the runner), so every module that can compute them keys them, and a run after a
    code change (an upgrade) recomputes them instead of serving the old arrays
    (ood-benchmark's features and scores, tune's stage maps and synthetic sets)."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] not in UNFINGERPRINTED or rel.as_posix() in include:
            digest.update(rel.as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def file_fingerprints(paths: Sequence[Path | str]) -> list[list]:
    """[resolved path, size, mtime in ns] of each file, in order: a cache key that changes
    when a file does, as far as size and mtime tell (not when its pixels are rewritten and its
    mtime restored: see the module's note). A file that cannot be looked at is an
    :class:`ImageReadError` naming it."""
    out = []
    for p in paths:
        try:
            st = Path(p).stat()
        except OSError as e:
            raise ImageReadError(p, e.strerror or str(e)) from None
        out.append([str(Path(p).resolve()), st.st_size, st.st_mtime_ns])
    return out


def file_list_hash(paths: Sequence[Path | str]) -> str:
    """SHA-256 over :func:`file_fingerprints` of ``paths``."""
    h = hashlib.sha256()
    for path, size, mtime in file_fingerprints(paths):
        h.update(f"{path}\0{size}\0{mtime}\n".encode())
    return h.hexdigest()


def precision_key(backbone) -> dict:
    """What a backbone's precision adds to a cache key: nothing at f32 (every runtime gives
    the same features there, to 3e-6, so f32 keys stay as they were), else the precision and,
    at int8, the digest of the images its graphs are calibrated on."""
    precision = getattr(backbone, "precision", "f32")
    if precision == "f32":
        return {}
    if precision != "int8":
        return {"precision": precision}
    if backbone.calibration_digest is None:
        raise CalibrationError(f"precision int8: {backbone.name} is not calibrated; calibrate it "
                               "on the training images before its features are cached")
    return {"precision": precision, "calibration": backbone.calibration_digest}


def cache_key(description: dict) -> str:
    """Stable hash of a JSON-serialisable description."""
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:24]


class FeatureCache:
    """A folder of ``<key>.npz`` arrays with ``<key>.json`` descriptions."""

    def __init__(self, directory: Path | str):
        self.directory = Path(directory)
        self._tidied = False
        self._unwritable: str | None = None  # why saving failed (said once, then not tried)

    def _tidy(self) -> None:
        """Once per cache: remove the temporary files of writes a killed run left."""
        if not self._tidied:
            self._tidied = True
            remove_stale_temp_files(self.directory)

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
            **precision_key(backbone),
        }

    def load(self, description: dict) -> dict[str, np.ndarray] | None:
        """The arrays saved under ``description``; None where there are none, or they (or the
        folder) cannot be read."""
        path = self.directory / f"{cache_key(description)}.npz"
        self._tidy()
        try:
            if not path.is_file():
                return None
        except OSError as exc:  # a folder that cannot be read: a miss
            log.debug("%s: cannot look in the feature cache (%s)", path, exc)
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # damaged / truncated
            log.warning("%s: unreadable cache entry (%s: %s); recomputing", path,
                        type(exc).__name__, exc)
            return None
        log.info("feature cache hit: %s", path.name)
        return arrays

    def save(self, description: dict, arrays: dict[str, np.ndarray]) -> Path | None:
        """Save ``arrays`` under ``description``; the path written, or None where the folder
        cannot be written (read-only, full): said in one warning, and the run goes on without
        caching (nothing more is tried)."""
        if self._unwritable is not None:
            return None
        key = cache_key(description)
        path = self.directory / f"{key}.npz"
        try:
            make_folder(self.directory)
            self._tidy()
            with replacing(path) as tmp:
                np.savez(tmp, **arrays)
            write_json(self.directory / f"{key}.json", description)
        except OSError as exc:
            self._unwritable = exc.strerror or str(exc)
            log.warning("%s: cannot write the feature cache (%s); going on without caching "
                        "features in this run", self.directory, self._unwritable)
            return None
        return path
