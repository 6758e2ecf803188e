"""Seeded synthetic MVTec-layout dataset: procedural textures with defects and exact masks.

Why: a fresh install needs a dataset to run the main job on (``anomaly-inspect demo``) and the
tests need one without licensed data. Everything is pure numpy/OpenCV and deterministic in
``seed``.

Rendering model (per image)::

    reflectance = texture(rng)                    # woven fabric or brushed metal, random phase
    reflectance = defect(reflectance) where mask  # scratch / stain / hole / crack
    image = reflectance * lighting + sensor noise # gain, gradient, vignette / specular band

The defect only changes pixels inside its binary mask, and changes every one of them by a
clear margin, so the written mask is exactly where the image differs from its defect-free twin
(:func:`render_sample` returns both). Layout written (what :mod:`.mvtec` reads)::

    ROOT/CATEGORY/train/good/000.png
    ROOT/CATEGORY/test/good/000.png
    ROOT/CATEGORY/test/<defect>/000.png
    ROOT/CATEGORY/ground_truth/<defect>/000_mask.png   (0/255, one per defect image)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from ..files import discard_entry, work_folder, write_json
from ..progress import Progress

log = logging.getLogger(__name__)

TEXTURES = ("fabric", "metal")
DEFECTS = ("scratch", "stain", "hole", "crack")
MANIFEST = "synthetic.json"

# A defect must move every masked reflectance value by at least this much (0..1 scale).
MIN_DEFECT_CONTRAST = 0.12


@dataclass(frozen=True)
class SyntheticSpec:
    """What :func:`generate_dataset` wrote; saved as ``CATEGORY/synthetic.json``."""

    category: str
    texture: str
    defects: tuple[str, ...]
    n_train: int
    n_test_good: int
    n_test_per_defect: int
    image_size: int
    seed: int

    def to_dict(self) -> dict:
        d = asdict(self)
        d["defects"] = list(self.defects)
        return d


@dataclass
class RenderedSample:
    """One rendered image: the defect-free twin, the final image and the defect mask."""

    clean: np.ndarray  # (H, W, 3) uint8 RGB, no defect
    image: np.ndarray  # (H, W, 3) uint8 RGB, with the defect (== clean when defect is None)
    mask: np.ndarray  # (H, W) uint8 {0, 1}


# --------------------------------------------------------------------------- textures


def _grid(size: int, angle_deg: float, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates rotated by ``angle_deg`` and shifted (texture-space u, v)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    c, s = np.cos(np.deg2rad(angle_deg)), np.sin(np.deg2rad(angle_deg))
    u = c * x + s * y + shift[0]
    v = -s * x + c * y + shift[1]
    return u, v


def _fabric(rng: np.random.Generator, size: int, style: dict) -> np.ndarray:
    """Plain weave: rounded warp/weft threads alternating over/under, per-thread shade jitter."""
    period = style["period"] * rng.uniform(0.985, 1.015)
    u, v = _grid(size, rng.uniform(-2.0, 2.0), rng.uniform(0, 1000, 2))
    u, v = u / period, v / period
    iu, iv = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    fu, fv = u - iu, v - iv
    prof_u = np.sqrt(np.sin(np.pi * fu))  # across a warp thread
    prof_v = np.sqrt(np.sin(np.pi * fv))  # across a weft thread
    warp = prof_u * (0.72 + 0.28 * np.sin(np.pi * fv))
    weft = prof_v * (0.72 + 0.28 * np.sin(np.pi * fu))
    warp_on_top = (iu + iv) % 2 == 0
    # Threads are not identical: a shade per thread (looked up by thread index).
    shade_warp = rng.normal(1.0, 0.035, 512).astype(np.float32)
    shade_weft = rng.normal(1.0, 0.035, 512).astype(np.float32)
    sw = shade_warp[iu % 512]
    sf = shade_weft[iv % 512]
    lum = np.where(warp_on_top, warp * sw, weft * sf)
    # Fibre noise: streaks along each thread's direction.
    noise = rng.normal(0, 1, (size, size)).astype(np.float32)
    along_v = cv2.blur(noise, (1, 7))
    along_u = cv2.blur(noise, (7, 1))
    lum = lum + 0.04 * np.where(warp_on_top, along_v, along_u)
    lum = 0.3 + 0.62 * lum  # 0.3 in the gaps between threads .. ~0.92 on thread crowns
    warp_col, weft_col = np.asarray(style["warp"]), np.asarray(style["weft"])
    col = np.where(warp_on_top[..., None], warp_col, weft_col)
    return (lum[..., None] * col).astype(np.float32)


def _metal(rng: np.random.Generator, size: int, style: dict) -> np.ndarray:
    """Brushed metal: noise smeared along the brushing direction, a few deeper grooves."""
    pad = size // 4
    big = size + 2 * pad
    fine = cv2.blur(rng.normal(0, 1, (big, big)).astype(np.float32), (41, 1))
    coarse = cv2.blur(rng.normal(0, 1, (big, big)).astype(np.float32), (121, 3))
    lum = 0.6 + 0.045 * fine / (fine.std() + 1e-6) + 0.02 * coarse / (coarse.std() + 1e-6)
    rot = cv2.getRotationMatrix2D((big / 2, big / 2), rng.uniform(-3.0, 3.0), 1.0)
    lum = cv2.warpAffine(lum, rot, (big, big), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    lum = lum[pad:pad + size, pad:pad + size]
    return (lum[..., None] * np.asarray(style["tint"])).astype(np.float32)


TEXTURE_STYLES = {
    "fabric": {"period": 8.0, "warp": (0.36, 0.47, 0.72), "weft": (0.55, 0.62, 0.78)},
    "metal": {"tint": (0.97, 0.99, 1.03)},
}
_TEXTURE_FUNCS = {"fabric": _fabric, "metal": _metal}


def texture_image(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """A (size, size, 3) float32 reflectance texture in [0, 1] ("fabric" or "metal"), unlit;
    also the foreign texture of the synthetic-anomaly recipe (data/anomalies.py)."""
    if kind not in _TEXTURE_FUNCS:
        raise ValueError(f"unknown texture '{kind}'; choose from {', '.join(TEXTURES)}")
    return _TEXTURE_FUNCS[kind](rng, size, TEXTURE_STYLES[kind])


def _lighting(rng: np.random.Generator, size: int, texture: str) -> np.ndarray:
    """Multiplicative illumination field: gain, linear gradient, vignette (metal: specular band)."""
    y, x = (np.mgrid[0:size, 0:size].astype(np.float32) / size) - 0.5
    theta = rng.uniform(0, 2 * np.pi)
    field = rng.uniform(0.92, 1.08) + rng.uniform(0.0, 0.12) * (np.cos(theta) * x + np.sin(theta) * y)
    field = field - rng.uniform(0.05, 0.12) * (x**2 + y**2)
    if texture == "metal":
        centre, width = rng.uniform(-0.3, 0.3), rng.uniform(0.15, 0.3)
        field = field + rng.uniform(0.05, 0.12) * np.exp(-(((y - centre) / width) ** 2))
    return field.astype(np.float32)[..., None]


# --------------------------------------------------------------------------- defects


def _bezier(rng: np.random.Generator, size: int, length: float) -> np.ndarray:
    """Integer points along a random quadratic Bezier curve of roughly ``length`` pixels."""
    margin = size * 0.15
    p0 = rng.uniform(margin, size - margin, 2)
    ang = rng.uniform(0, 2 * np.pi)
    p2 = np.clip(p0 + length * np.array([np.cos(ang), np.sin(ang)]), 2, size - 3)
    mid = (p0 + p2) / 2 + rng.normal(0, length * 0.2, 2)
    t = np.linspace(0, 1, 48)[:, None]
    pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * mid + t**2 * p2
    return np.round(pts).astype(np.int32)


def _crack_polylines(rng: np.random.Generator, size: int) -> list[np.ndarray]:
    """A jagged random walk with one or two branches."""
    margin = size * 0.2
    start = rng.uniform(margin, size - margin, 2)
    heading = rng.uniform(0, 2 * np.pi)
    lines = []
    for branch in range(int(rng.integers(2, 4))):
        steps = int(rng.integers(7, 12)) if branch == 0 else int(rng.integers(3, 6))
        pts = [start]
        h = heading if branch == 0 else heading + rng.choice([-1, 1]) * rng.uniform(0.5, 1.2)
        p = start
        for _ in range(steps):
            h += rng.normal(0, 0.45)
            p = np.clip(p + rng.uniform(5, 10) * np.array([np.cos(h), np.sin(h)]), 1, size - 2)
            pts.append(p)
        lines.append(np.round(np.array(pts)).astype(np.int32))
        start = lines[0][int(rng.integers(2, len(lines[0])))].astype(np.float64)
    return lines


def _blob_mask(rng: np.random.Generator, size: int, radius: float, roughness: float) -> np.ndarray:
    """An irregular filled blob: a polygon whose radius wobbles with angle."""
    margin = radius * 1.6 + 4
    c = rng.uniform(margin, size - margin, 2)
    n = 40
    ang = np.linspace(0, 2 * np.pi, n, endpoint=False)
    wobble = np.zeros(n)
    for k in (2, 3, 5):
        wobble += rng.normal(0, roughness / k) * np.cos(k * ang + rng.uniform(0, 2 * np.pi))
    aspect = rng.uniform(0.7, 1.0)
    r = radius * np.clip(1 + wobble, 0.5, 1.6)
    pts = np.stack([c[0] + r * np.cos(ang), c[1] + aspect * r * np.sin(ang)], axis=1)
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1, lineType=cv2.LINE_8)
    return mask


def _defect(
    rng: np.random.Generator, kind: str, refl: np.ndarray, texture: str
) -> tuple[np.ndarray, np.ndarray]:
    """Return (new reflectance, mask); pixels outside the mask are left untouched."""
    size = refl.shape[0]
    mask = np.zeros((size, size), np.uint8)
    out = refl.copy()
    lum = refl.mean(axis=2, keepdims=True)
    if kind == "scratch":
        pts = _bezier(rng, size, rng.uniform(0.2, 0.4) * size)
        cv2.polylines(mask, [pts], False, 1, thickness=int(rng.integers(2, 4)), lineType=cv2.LINE_8)
        # Bright on fabric (abraded fibres), bright or dark on metal (exposed / dirty groove).
        sign = 1.0 if texture == "fabric" or rng.random() < 0.6 else -1.0
        target = np.clip(lum + sign * rng.uniform(0.3, 0.4), 0.05, 0.98) * np.ones(3, np.float32)
        new = target
    elif kind == "stain":
        mask = _blob_mask(rng, size, rng.uniform(0.05, 0.1) * size, 0.35)
        tint = np.array(rng.choice([(0.55, 0.42, 0.25), (0.35, 0.33, 0.3), (0.6, 0.5, 0.2)]),
                        np.float32)
        strength = rng.uniform(0.45, 0.65)
        new = refl * (1 - strength) + strength * tint * lum * 1.2
    elif kind == "hole":
        mask = _blob_mask(rng, size, rng.uniform(0.035, 0.06) * size, 0.2)
        # Dark backing seen through the hole, slightly shaded.
        new = rng.uniform(0.02, 0.08) + 0.03 * rng.random((size, size, 1)).astype(np.float32)
        new = new * np.ones(3, np.float32)
    elif kind == "crack":
        for line in _crack_polylines(rng, size):
            cv2.polylines(mask, [line], False, 1, thickness=2, lineType=cv2.LINE_8)
        new = lum * rng.uniform(0.15, 0.3) * np.ones(3, np.float32)
    else:
        raise ValueError(f"unknown defect '{kind}'; choose from {', '.join(DEFECTS)}")
    new = np.broadcast_to(new, refl.shape).astype(np.float32)
    # Guarantee a visible change on every masked pixel (so the mask is exact).
    delta = new - refl
    mag = np.abs(delta).max(axis=2, keepdims=True)
    weak = mag < MIN_DEFECT_CONTRAST
    if weak.any():
        direction = np.where(lum < 0.5, 1.0, -1.0).astype(np.float32)
        new = np.where(weak, refl + direction * MIN_DEFECT_CONTRAST, new)
    sel = mask.astype(bool)
    out[sel] = new[sel]
    return out, mask


# --------------------------------------------------------------------------- rendering


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def render_sample(
    texture: str, defect: str | None, seed: int | Sequence[int], size: int = 256
) -> RenderedSample:
    """Render one image (and its defect-free twin) deterministically from ``seed``."""
    if texture not in _TEXTURE_FUNCS:
        raise ValueError(f"unknown texture '{texture}'; choose from {', '.join(TEXTURES)}")
    if size < 64:
        raise ValueError(f"image_size must be at least 64 pixels, got {size}")
    rng = np.random.default_rng(seed)
    refl = _TEXTURE_FUNCS[texture](rng, size, TEXTURE_STYLES[texture])
    light = _lighting(rng, size, texture)
    noise = rng.normal(0, 0.008, refl.shape).astype(np.float32)
    clean = _to_uint8(refl * light + noise)
    if defect is None:
        return RenderedSample(clean, clean.copy(), np.zeros((size, size), np.uint8))
    defective, mask = _defect(rng, defect, refl, texture)
    image = _to_uint8(defective * light + noise)
    # Clipping could in principle erase a change; the mask is what actually changed
    # within the drawn region (an exactness guard, normally a no-op).
    changed = (image != clean).any(axis=2)
    return RenderedSample(clean, image, (mask.astype(bool) & changed).astype(np.uint8))


def write_png(path: Path, array: np.ndarray) -> None:
    """Write ``array`` (RGB, or one channel) to ``path`` as PNG, the bytes ``cv2.imwrite``
    writes: encoded in memory, then written by Python, so a failed write raises the
    ``OSError`` of its reason (a full disk: ``ENOSPC``, naming ``path``), which ``imwrite``
    only reports as False (printing libpng's own error)."""
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise OSError(f"{path}: could not encode image")
    Path(path).write_bytes(buf.tobytes())


def generate_dataset(
    root: Path | str,
    category: str | None = None,
    texture: str = "fabric",
    n_train: int = 40,
    n_test_good: int = 12,
    n_test_per_defect: int = 5,
    image_size: int = 256,
    seed: int = 0,
    defects: Sequence[str] = DEFECTS,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write a synthetic MVTec-layout category under ``root`` and return its folder.

    An existing category folder is replaced only with ``overwrite=True`` and only if it was
    written by this function (it holds ``synthetic.json``); anything else raises. The dataset
    is written into a work folder beside it and renamed into place when complete, so a run
    that is interrupted leaves the earlier dataset (or none), never a half-written one.
    """
    if texture not in _TEXTURE_FUNCS:
        raise ValueError(f"unknown texture '{texture}'; choose from {', '.join(TEXTURES)}")
    bad = [d for d in defects if d not in DEFECTS]
    if bad or not defects:
        raise ValueError(f"unknown or no defects {bad}; choose from {', '.join(DEFECTS)}")
    if len(set(defects)) != len(defects):  # its images would be written twice, counted once
        raise ValueError(f"defects {list(defects)} name a defect type twice; name each once")
    if n_train < 1 or n_test_good < 1 or n_test_per_defect < 1:
        raise ValueError("n_train, n_test_good and n_test_per_defect must all be >= 1")
    if image_size < 64:
        raise ValueError(f"image_size must be at least 64 pixels, got {image_size}")
    category = category or f"synthetic_{texture}"
    cat_dir = Path(root) / category
    replace = cat_dir.exists() and any(cat_dir.iterdir())
    if replace:
        if not overwrite:
            raise FileExistsError(f"{cat_dir}: already exists and is not empty; pass "
                                  f"overwrite=True to replace it")
        if not (cat_dir / MANIFEST).is_file():
            raise FileExistsError(f"{cat_dir}: not a generated synthetic dataset; refusing to replace it")
    spec = SyntheticSpec(category, texture, tuple(defects), n_train, n_test_good,
                         n_test_per_defect, image_size, seed)
    jobs: list[tuple[str, str | None, int]] = [("train/good", None, i) for i in range(n_train)]
    jobs += [("test/good", None, i) for i in range(n_test_good)]
    jobs += [(f"test/{d}", d, i) for d in defects for i in range(n_test_per_defect)]
    with work_folder(cat_dir) as tmp:
        for folder in {j[0] for j in jobs}:
            (tmp / folder).mkdir(parents=True, exist_ok=True)
        for d in defects:
            (tmp / "ground_truth" / d).mkdir(parents=True, exist_ok=True)
        with Progress(len(jobs), "generate synthetic", enabled=progress) as bar:
            for k, (folder, defect, i) in enumerate(jobs):
                # Stream k of this seed: every image independent and reproducible.
                sample = render_sample(texture, defect, (seed, k), image_size)
                write_png(tmp / folder / f"{i:03d}.png", sample.image)
                if defect is not None:
                    write_png(tmp / "ground_truth" / defect / f"{i:03d}_mask.png", sample.mask * 255)
                bar.update()
        write_json(tmp / MANIFEST, spec.to_dict())
        if replace:
            discard_entry(cat_dir)
        os.rename(tmp, cat_dir)  # onto a missing or empty folder
    log.info("synthetic %s dataset: %d train, %d test images in %s", texture, n_train,
             n_test_good + n_test_per_defect * len(defects), cat_dir)
    return cat_dir
