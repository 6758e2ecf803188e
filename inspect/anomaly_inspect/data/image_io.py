"""Robust image and mask decoding.

Every image comes back as an RGB ``uint8`` array whatever is on disk:
grayscale, RGBA (alpha dropped), 16-bit (scaled to 8 bit) or palette images.
Anything that cannot be decoded raises :class:`ImageReadError` naming the
file and the reason, so a caller can record it and carry on.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(OSError):
    """An image file that exists but cannot be used; ``str()`` names path and reason."""

    def __init__(self, path: Path | str, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a directory, not an image file") from None
    except OSError as exc:
        raise ImageReadError(path, f"cannot read file ({exc.strerror or exc})") from None
    if not data:
        raise ImageReadError(path, "file is empty (0 bytes)")
    return data


def _check_complete(path: Path, data: bytes) -> None:
    """Reject truncated JPEG/PNG files that OpenCV would decode partially."""
    if data[:3] == b"\xff\xd8\xff":
        # the end-of-image marker must follow the last start-of-scan (trailing padding is fine;
        # 0xFF bytes inside entropy-coded data are stuffed, so FFD9 cannot occur there)
        if data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
            raise ImageReadError(path, "truncated JPEG (no end-of-image marker)")
    elif data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-32:]:
        raise ImageReadError(path, "truncated PNG (no IEND chunk)")


def _decode(path: Path, flags: int) -> np.ndarray:
    data = _read_bytes(path)
    _check_complete(path, data)
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        img = cv2.imdecode(buf, flags)
    except cv2.error as exc:
        raise ImageReadError(path, f"cannot decode image ({exc.err})") from None
    if img is None or img.size == 0:
        raise ImageReadError(path, "not a decodable image (corrupt or unsupported format)")
    return img


def _to_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return (img.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    if np.issubdtype(img.dtype, np.floating):
        hi = float(np.nanmax(img)) if img.size else 1.0
        scale = 255.0 if hi <= 1.0 else 1.0
        return np.clip(np.nan_to_num(img) * scale, 0, 255).astype(np.uint8)
    return np.clip(img, 0, 255).astype(np.uint8)


def read_image(path: Path | str) -> np.ndarray:
    """Read any supported image as an (H, W, 3) RGB ``uint8`` array."""
    path = Path(path)
    img = _to_uint8(_decode(path, cv2.IMREAD_UNCHANGED))
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    channels = img.shape[2]
    if channels == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2RGB)
    if channels == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    raise ImageReadError(path, f"unsupported number of channels: {channels}")


def read_mask(path: Path | str) -> np.ndarray:
    """Read a ground-truth mask as an (H, W) ``uint8`` array of {0, 1}."""
    path = Path(path)
    img = _to_uint8(_decode(path, cv2.IMREAD_UNCHANGED))
    if img.ndim == 3:
        img = img[:, :, :3].max(axis=2)
    return (img > 127).astype(np.uint8)
