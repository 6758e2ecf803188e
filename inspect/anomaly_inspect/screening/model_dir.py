"""The saved-model directory: ``model.json`` plus the scorer's safetensors state.

Layout::

    MODEL_DIR/model.json                    format + toolkit + library versions, config,
                                            backbone and weight checksum, calibration,
                                            training / calibration image lists
    MODEL_DIR/scorer/scorer.json            scorer name and constructor parameters
    MODEL_DIR/scorer/scorer_state.safetensors
    MODEL_DIR/backbone/*.onnx               the backbone's ONNX export(s), when a non-torch
                                            runtime ran it (a cache: rebuilt if absent)

Saving writes everything into a temporary folder beside the target and moves
it into place with one ``os.replace``: a crash leaves either the old model or
the new one, never a half-written directory that loads. Nothing is pickled.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__

log = logging.getLogger(__name__)

MODEL_FORMAT_VERSION = 2
MODEL_JSON = "model.json"
SCORER_DIR = "scorer"
BACKBONE_DIR = "backbone"


class ModelFormatError(ValueError):
    """A model directory that this version cannot (or must not) load."""


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose behaviour a saved model depends on."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in ("torch", "timm", "faiss-cpu", "numpy", "opencv-python-headless",
                 "albumentations", "safetensors", "scipy"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out


@dataclass
class ModelInfo:
    """Everything in ``model.json``."""

    config: dict[str, Any]
    backbone: dict[str, Any]  # name, layers, weight source {kind, location, checksum}
    calibration: dict[str, Any]
    train_images: list[str]
    calibration_images: list[str]
    skipped_images: list[dict[str, str]] = field(default_factory=list)
    display: dict[str, float] = field(default_factory=dict)
    created: str = ""
    format_version: int = MODEL_FORMAT_VERSION
    toolkit_version: str = __version__
    libraries: dict[str, str] = field(default_factory=library_versions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "toolkit_version": self.toolkit_version,
            "created": self.created,
            "libraries": self.libraries,
            "config": self.config,
            "backbone": self.backbone,
            "calibration": self.calibration,
            "display": self.display,
            "train_images": self.train_images,
            "calibration_images": self.calibration_images,
            "skipped_images": self.skipped_images,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str) -> ModelInfo:
        try:
            return cls(**{k: d[k] for k in (
                "config", "backbone", "calibration", "train_images", "calibration_images",
                "skipped_images", "display", "created", "format_version", "toolkit_version",
                "libraries")})
        except KeyError as exc:
            raise ModelFormatError(f"{source}: missing field {exc} in {MODEL_JSON}") from None


def save_model_dir(target: Path | str, info: ModelInfo, scorer, overwrite: bool = False,
                   extra_files: dict[str, Path] | None = None) -> Path:
    """Write ``info`` and ``scorer`` (and ``extra_files``: relative name -> file to copy, e.g.
    the backbone's ONNX exports) to ``target`` atomically; refuse to overwrite unless asked."""
    target = Path(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target}: already exists; pass --overwrite (overwrite=True) to replace it")
    if target.exists() and not (target.is_dir() and ((target / MODEL_JSON).is_file()
                                                     or not any(target.iterdir()))):
        # Never delete something that is not a model directory, --overwrite or not.
        raise FileExistsError(f"{target}: exists and is not a model directory; refusing to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it owner-only
    try:
        scorer.save(tmp / SCORER_DIR)
        for name, src in (extra_files or {}).items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, tmp / name)
        (tmp / MODEL_JSON).write_text(json.dumps(info.to_dict(), indent=2, ensure_ascii=False),
                                      encoding="utf-8")
        _fsync_tree(tmp)
        if target.exists():
            # os.replace cannot replace a non-empty directory: move the old one aside first.
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "model")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("saved model to %s", target)
    return target


def _fsync_tree(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())


def read_model_info(directory: Path | str) -> ModelInfo:
    """Read and check ``model.json`` (format version first); nothing else is touched."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: model directory not found")
    path = directory / MODEL_JSON
    if not path.is_file():
        raise ModelFormatError(f"{directory}: not a model directory (no {MODEL_JSON}); "
                               f"create one with 'anomaly-inspect fit'")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{path}: unreadable model description ({exc})") from None
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path}: expected a JSON object")
    version = data.get("format_version")
    if version != MODEL_FORMAT_VERSION:
        raise ModelFormatError(
            f"{path}: model format version {version!r} is not supported by anomaly-inspect "
            f"{__version__} (reads version {MODEL_FORMAT_VERSION}); re-fit the model with this version"
        )
    info = ModelInfo.from_dict(data, str(path))
    if info.toolkit_version != __version__:
        log.warning("%s: saved by anomaly-inspect %s, loading with %s", path, info.toolkit_version,
                    __version__)
    return info


def check_backbone_checksum(directory: Path | str, info: ModelInfo, checksum: str) -> None:
    """Refuse a backbone whose weights differ from the ones the model was fitted with."""
    saved = info.backbone.get("weights", {}).get("checksum")
    if saved != checksum:
        src = info.backbone.get("weights", {})
        raise ModelFormatError(
            f"{directory}: backbone weights differ from the ones this model was fitted with "
            f"(backbone {info.backbone.get('name')}, weights {src.get('kind')} {src.get('location')}: "
            f"saved checksum {str(saved)[:16]}..., loaded {checksum[:16]}...); scores would be "
            f"meaningless; install the same weights or re-fit"
        )
