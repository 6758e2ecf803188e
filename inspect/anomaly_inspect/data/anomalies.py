"""Synthetic anomalies drawn on normal images: the validation recipe of ``anomaly-inspect tune``.

Why: a user with a new product has normal images only, so candidate configurations are ranked on
held-out normal images with anomalies drawn on them. The recipe is fixed (docs/auto_config.md,
seed 0) and must not be changed after seeing a real test result.

Families (one per drawn anomaly; the region covers 0.1 %-5 % of the image, log-uniform):

* ``cutpaste``: a rectangle of the same image, colour-jittered, pasted elsewhere (CutPaste).
* ``scar``: a thin rotated rectangle of the same image, colour-jittered, pasted elsewhere
  (CutPaste-scar); on a very elongated image where it cannot reach the size range, along the
  long side.
* ``texture``: a Perlin-noise blob filled with a foreign procedural texture (the demo's fabric /
  metal, :func:`.synthetic.texture_image`), blended with opacity 0.2-1 (DRAEM-style).
* ``poisson``: a rectangle of *another* normal image, Poisson-blended in (``cv2.seamlessClone``,
  NSA-style).
* ``local``: an ellipse blurred, noised or with its gain changed.

Every family changes pixels inside its mask only (outside the mask the output equals the input
bit for bit); grey images (equal channels) stay grey. Everything is drawn from the numpy
``Generator`` passed in, so a seed reproduces the set.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from ..files import stream_sha256, write_json
from .image_io import DEFAULT_MAX_PIXELS, ImageReadError, read_image
from .synthetic import TEXTURES, texture_image, write_png

FAMILIES = ("cutpaste", "scar", "texture", "poisson", "local")
MANIFEST = "anomalies.json"
MIN_SIDE = 32  # pixels: the shortest side an anomaly is drawn on


class TooSmallForAnomalies(ImageReadError):
    """A readable image under :data:`MIN_SIDE` pixels on a side: no synthetic anomaly is drawn
    on it (a fit still trains on it)."""


@dataclass(frozen=True)
class AnomalyRecipe:
    """What is drawn: ``families``, region sizes as fractions of the image area (log-uniform in
    [``min_area``, ``max_area``]), the ``seed`` of the whole set. Fixed before any real test run."""

    families: tuple[str, ...] = FAMILIES
    min_area: float = 0.001
    max_area: float = 0.05
    seed: int = 0
    version: int = 2

    def __post_init__(self):
        bad = [f for f in self.families if f not in FAMILIES]
        if bad or not self.families:
            raise ValueError(f"unknown or no anomaly families {bad}; choose from {', '.join(FAMILIES)}")
        if not 0 < self.min_area <= self.max_area < 1:
            raise ValueError(f"need 0 < min_area <= max_area < 1, got {self.min_area}, {self.max_area}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["families"] = list(self.families)
        return d

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- masks


def _area_fraction(rng: np.random.Generator, recipe: AnomalyRecipe) -> float:
    return float(np.exp(rng.uniform(np.log(recipe.min_area), np.log(recipe.max_area))))


def _rect(rng: np.random.Generator, shape: tuple[int, int], area: float) -> tuple[int, int]:
    """(height, width) of a rectangle of ``area`` pixels, aspect ratio log-uniform in [0.3, 3.3]."""
    h_img, w_img = shape
    aspect = float(np.exp(rng.uniform(np.log(0.3), np.log(3.3))))
    h = int(round(np.clip(np.sqrt(area * aspect), 1, h_img - 4)))
    w = int(round(np.clip(area / max(h, 1), 1, w_img - 4)))
    return h, w


def _corner(rng: np.random.Generator, shape: tuple[int, int], hw: tuple[int, int]) -> tuple[int, int]:
    """Top-left corner of an ``hw`` box placed uniformly inside ``shape``, 2 px from the border."""
    return (int(rng.integers(2, max(3, shape[0] - hw[0] - 1))),
            int(rng.integers(2, max(3, shape[1] - hw[1] - 1))))


def perlin(rng: np.random.Generator, shape: tuple[int, int], res: tuple[int, int]) -> np.ndarray:
    """2-D Perlin gradient noise in about [-1, 1] with ``res`` periods along each axis."""
    gh, gw = res
    angles = rng.uniform(0, 2 * np.pi, (gh + 1, gw + 1))
    grad = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    y = np.linspace(0, gh, shape[0], endpoint=False)
    x = np.linspace(0, gw, shape[1], endpoint=False)
    yi, xi = np.floor(y).astype(int), np.floor(x).astype(int)
    fy, fx = (y - yi)[:, None], (x - xi)[None, :]

    def dot(dy, dx):
        g = grad[(yi + dy)[:, None], (xi + dx)[None, :]]
        return g[..., 0] * (fy - dy) + g[..., 1] * (fx - dx)

    def fade(t):
        return 6 * t**5 - 15 * t**4 + 10 * t**3

    uy, ux = fade(fy), fade(fx)
    top = dot(0, 0) * (1 - ux) + dot(0, 1) * ux
    bottom = dot(1, 0) * (1 - ux) + dot(1, 1) * ux
    return (top * (1 - uy) + bottom * uy) * np.sqrt(2)


def _jitter(rng: np.random.Generator, patch: np.ndarray, amount: float = 0.1) -> np.ndarray:
    """CutPaste's colour jitter: brightness and contrast by up to ``amount``, per-channel gain."""
    p = patch.astype(np.float32)
    mean = p.mean()
    p = (p - mean) * rng.uniform(1 - amount, 1 + amount) + mean * rng.uniform(1 - amount, 1 + amount)
    p = p * rng.uniform(1 - amount / 2, 1 + amount / 2, 3)
    return np.clip(p + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- families


def _cutpaste(image, rng, area, _donor):
    shape = image.shape[:2]
    h, w = _rect(rng, shape, area)
    sy, sx = _corner(rng, shape, (h, w))
    dy, dx = _corner(rng, shape, (h, w))
    out = image.copy()
    out[dy:dy + h, dx:dx + w] = _jitter(rng, image[sy:sy + h, sx:sx + w])
    mask = np.zeros(shape, bool)
    mask[dy:dy + h, dx:dx + w] = True
    return out, mask


def _scar(image, rng, area, _donor):
    shape = image.shape[:2]
    side = min(shape)
    width = rng.uniform(2, 8) * max(side / 256, 0.5)
    length = float(np.clip(area / width, 4 * width, 0.4 * side))
    angle = rng.uniform(-90, 90)
    half = np.hypot(length, width) / 2 + 2
    cy = rng.uniform(half, max(half + 1, shape[0] - half))
    cx = rng.uniform(half, max(half + 1, shape[1] - half))
    box = cv2.boxPoints(((cx, cy), (length, width), angle))
    sy, sx = rng.uniform(half, max(half + 1, shape[0] - half)), rng.uniform(half, max(half + 1, shape[1] - half))
    return _fill_scar(image, rng, box, (cy, cx), (sy, sx))


def _fill_scar(image, rng, box, centre, source):
    """The scar ``box`` (corners) filled with the same image around the point ``source`` (y, x),
    rotated by U[-45°, 45°], moved onto ``centre`` (y, x) and colour-jittered."""
    shape = image.shape[:2]
    (cy, cx), (sy, sx) = centre, source
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(box).astype(np.int32)], 1)
    warp = cv2.getRotationMatrix2D((sx, sy), rng.uniform(-45, 45), 1.0)
    warp[:, 2] += (cx - sx, cy - sy)
    moved = cv2.warpAffine(image, warp, (shape[1], shape[0]), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT_101)
    mask = mask.astype(bool)
    out = image.copy()
    out[mask] = _jitter(rng, moved[mask][None])[0]
    return out, mask


def _long_scar(image, rng, area, _donor):
    """A scar along the image's long side: drawn only where :func:`_scar` found none within the
    size range in all its draws (an image so elongated, e.g. a 256 x 4096 line-scan strip, that
    a scar 0.4 x the short side long cannot cover 0.1 % of it). The length is capped at 0.4 x
    the long side and the tilt off the long axis kept small enough for the scar to fit across
    the short side."""
    shape = image.shape[:2]
    short, long = min(shape), max(shape)
    width = rng.uniform(2, 8) * max(short / 256, 0.5)
    length = float(np.clip(area / width, 4 * width, 0.4 * long))
    tilt = np.degrees(np.arcsin(np.clip((0.8 * short - width) / length, 0, 1)))
    angle = rng.uniform(-tilt, tilt) + (90 if shape[0] > shape[1] else 0)
    a = np.radians(angle)
    ext_x = abs(length * np.cos(a)) + abs(width * np.sin(a))
    ext_y = abs(length * np.sin(a)) + abs(width * np.cos(a))

    def centre():
        return (rng.uniform(ext_y / 2 + 2, max(ext_y / 2 + 3, shape[0] - ext_y / 2 - 2)),
                rng.uniform(ext_x / 2 + 2, max(ext_x / 2 + 3, shape[1] - ext_x / 2 - 2)))

    cy, cx = centre()
    box = cv2.boxPoints(((cx, cy), (length, width), angle))
    return _fill_scar(image, rng, box, (cy, cx), centre())


def _texture(image, rng, area, _donor):
    shape = image.shape[:2]
    fill = 0.4  # the blob covers this share of its window
    side = int(np.clip(np.sqrt(area / fill), 8, min(shape) - 4))
    res = int(rng.integers(2, 5))
    noise = perlin(rng, (side, side), (res, res))
    n_on = int(round(min(area, fill * side * side)))
    thr = np.partition(noise.ravel(), -n_on)[-n_on]
    top, left = _corner(rng, shape, (side, side))
    mask = np.zeros(shape, bool)
    mask[top:top + side, left:left + side] = noise >= thr
    tex = texture_image(TEXTURES[int(rng.integers(len(TEXTURES)))], rng, side)
    tex = tex * rng.uniform(0.4, 1.4) * 255.0
    keep = rng.uniform(0.0, 0.8)  # DRAEM's beta: share of the image kept under the texture
    out = image.copy()
    region = out[top:top + side, left:left + side]
    blended = np.clip(keep * region + (1 - keep) * tex + 0.5, 0, 255).astype(np.uint8)
    sel = noise >= thr
    region[sel] = blended[sel]
    return out, mask


def _poisson(image, rng, area, donor):
    shape = image.shape[:2]
    if donor is None:
        raise ValueError("the poisson family needs a donor image")
    donor = cv2.resize(donor, (shape[1], shape[0]), interpolation=cv2.INTER_AREA) \
        if donor.shape[:2] != shape else donor
    h, w = _rect(rng, shape, area)
    h, w = max(h, 5), max(w, 5)
    sy, sx = _corner(rng, shape, (h, w))
    dy, dx = _corner(rng, shape, (h, w))
    patch = np.ascontiguousarray(donor[sy:sy + h, sx:sx + w])
    # a 1-pixel unmasked frame: OpenCV fails on a mask that fills its whole source patch
    inner = np.zeros((h, w), np.uint8)
    inner[1:-1, 1:-1] = 255
    centre = (dx + w // 2, dy + h // 2)
    cloned = cv2.seamlessClone(patch, image, inner, centre, cv2.NORMAL_CLONE)
    # the masked (h - 2) x (w - 2) box lands centred on ``centre``
    top, left = centre[1] - (h - 2) // 2, centre[0] - (w - 2) // 2
    mask = np.zeros(shape, bool)
    mask[top:top + h - 2, left:left + w - 2] = True
    out = image.copy()
    out[mask] = cloned[mask]
    return out, mask


def _local(image, rng, area, _donor):
    shape = image.shape[:2]
    aspect = float(np.exp(rng.uniform(np.log(0.4), np.log(2.5))))
    a = np.sqrt(area / np.pi * aspect)
    b = area / (np.pi * a)
    a, b = min(a, shape[1] / 2 - 3), min(b, shape[0] / 2 - 3)
    cy = rng.uniform(b + 2, shape[0] - b - 2)
    cx = rng.uniform(a + 2, shape[1] - a - 2)
    mask = np.zeros(shape, np.uint8)
    cv2.ellipse(mask, (int(round(cx)), int(round(cy))), (max(int(round(a)), 1), max(int(round(b)), 1)),
                rng.uniform(0, 180), 0, 360, 1, -1)
    mask = mask.astype(bool)
    kind = ("blur", "noise", "gain")[int(rng.integers(3))]
    img = image.astype(np.float32)
    if kind == "blur":
        sigma = rng.uniform(1.0, 3.0) * max(min(shape) / 256, 0.5)
        new = cv2.GaussianBlur(img, (0, 0), sigma)
    elif kind == "noise":
        new = img + rng.normal(0, rng.uniform(10, 25), img.shape[:2])[..., None]
    else:
        gain = rng.uniform(0.6, 0.8) if rng.random() < 0.5 else rng.uniform(1.2, 1.5)
        new = img * gain
    out = image.copy()
    out[mask] = np.clip(new[mask] + 0.5, 0, 255).astype(np.uint8)
    return out, mask


_DRAW = {"cutpaste": _cutpaste, "scar": _scar, "texture": _texture, "poisson": _poisson,
         "local": _local}


def draw_anomaly(image: np.ndarray, family: str, rng: np.random.Generator,
                 recipe: AnomalyRecipe = AnomalyRecipe(), donor: np.ndarray | None = None,
                 tries: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """(image with one synthetic anomaly, its (H, W) bool mask) for an (H, W, 3) uint8 RGB image.

    The mask covers ``recipe.min_area``-``recipe.max_area`` of the image (a draw outside that range,
    e.g. from rasterising a thin scar, is redrawn); pixels outside the mask are unchanged.
    ``donor``: another normal image, for ``poisson``.
    """
    if family not in _DRAW:
        raise ValueError(f"unknown anomaly family '{family}'; choose from {', '.join(FAMILIES)}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    if min(image.shape[:2]) < MIN_SIDE:
        raise ValueError(f"image too small for synthetic anomalies: {image.shape[:2]}")
    grey = bool((image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all())
    n_pix = image.shape[0] * image.shape[1]
    # a scar that fails every draw (a very elongated image) is drawn along the long side next,
    # from the same generator: every image where the first draws succeed keeps its anomaly
    draws = [_DRAW[family]] * tries + ([_long_scar] * tries if family == "scar" else [])
    for draw in draws:
        area = _area_fraction(rng, recipe) * n_pix
        out, mask = draw(image, rng, area, donor)
        frac = mask.sum() / n_pix
        if recipe.min_area <= frac <= recipe.max_area:
            break
    else:
        raise RuntimeError(f"{family}: no mask within {recipe.min_area}-{recipe.max_area} of the image "
                           f"in {len(draws)} draws (image {image.shape[:2]})")
    if grey:  # a grey product stays grey: colour alone must not give the anomaly away
        out[mask] = out[mask].mean(axis=1, keepdims=True).round().astype(np.uint8)
    return out, mask


@dataclass(frozen=True)
class SyntheticAnomaly:
    """One written image: where it came from, its family, where it is and its mask."""

    source: str
    family: str
    path: str
    mask_path: str
    area: float


def write_anomalies(sources: Sequence[Path], families: Sequence[str], donors: Sequence[Path | None],
                    out_dir: Path, recipe: AnomalyRecipe, stream: int = 0,
                    max_pixels: int = DEFAULT_MAX_PIXELS,
                    min_side: int | None = None) -> list[SyntheticAnomaly]:
    """Draw ``families[i]`` on ``sources[i]`` (donor ``donors[i]``) and write PNGs into ``out_dir``,
    then the manifest (:func:`read_anomalies` reads the set back).

    Image ``i`` uses the generator seeded ``(recipe.seed, stream, i)``, so each image is
    reproducible on its own. PNG is lossless: pixels outside the mask equal the decoded source.
    ``min_side``: decode a very large JPEG at the reduced size :func:`.image_io.read_image` gives
    for it (the loader's decode for images resized to ``min_side / 2`` pixels), so that the copy
    differs only inside the mask from the source as the model sees it.
    A source that cannot be read is an :class:`ImageReadError` naming it, one under
    :data:`MIN_SIDE` pixels a :class:`TooSmallForAnomalies`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (src, fam, donor) in enumerate(zip(sources, families, donors, strict=True)):
        rng = np.random.default_rng((recipe.seed, stream, i))
        image = read_image(src, max_pixels, min_side)
        if min(image.shape[:2]) < MIN_SIDE:
            raise TooSmallForAnomalies(src, f"too small for synthetic anomalies: {image.shape[1]} x "
                                      f"{image.shape[0]} px (need at least {MIN_SIDE} on each side)")
        donor_img = read_image(donor, max_pixels, min_side) if donor is not None else None
        try:
            out, mask = draw_anomaly(image, fam, rng, recipe, donor_img)
        except RuntimeError as e:
            raise RuntimeError(f"{src}: {e}") from None
        path, mask_path = out_dir / f"{i:05d}_{fam}.png", out_dir / f"{i:05d}_{fam}_mask.png"
        write_png(path, out)
        write_png(mask_path, mask.astype(np.uint8) * 255)
        rows.append(SyntheticAnomaly(str(src), fam, str(path), str(mask_path), float(mask.mean())))
    images = [{**asdict(r), "path": Path(r.path).name, "mask_path": Path(r.mask_path).name} for r in rows]
    files = {name: _file_record(out_dir / name) for r in images for name in (r["path"], r["mask_path"])}
    write_json(out_dir / MANIFEST, {"recipe": recipe.to_dict(), "stream": stream, "images": images,
                                    "files": files}, indent=1)
    return rows


def _file_record(path: Path) -> dict:
    """Size and SHA-256 of the written file ``path``: how :func:`read_anomalies` tells it intact."""
    with open(path, "rb") as f:
        return {"size": os.fstat(f.fileno()).st_size, "sha256": stream_sha256(f)}


def read_anomalies(out_dir: Path) -> list[SyntheticAnomaly] | None:
    """The set :func:`write_anomalies` finished in ``out_dir`` (wherever the folder has moved
    since: the manifest names its files relative to it), or None if there is none (no manifest,
    or one an older version wrote without file checksums: a cache draws such a set again
    without calling it damaged).

    A damaged set is a ``ValueError`` naming the file and what is wrong: an unreadable manifest,
    or a PNG missing or not the size and SHA-256 written (truncated, overwritten), so that a
    cache drops it and draws the set again instead of failing on the PNG at every later run."""
    out_dir = Path(out_dir)
    manifest = out_dir / MANIFEST
    try:
        text = manifest.read_text()
    except FileNotFoundError:
        return None
    try:
        content = json.loads(text)
        rows = [SyntheticAnomaly(**{**r, "path": str(out_dir / r["path"]),
                                    "mask_path": str(out_dir / r["mask_path"])}) for r in content["images"]]
        files = content.get("files")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{manifest}: not a synthetic-anomaly manifest ({e})") from None
    if files is None:  # an older version's set: not damaged, just not checkable
        return None
    if not isinstance(files, dict):
        raise ValueError(f"{manifest}: not a synthetic-anomaly manifest (files is not a mapping)")
    for path in (Path(p) for r in rows for p in (r.path, r.mask_path)):
        _check_file(path, files.get(path.name))
    return rows


def _check_file(path: Path, written: dict | None) -> None:
    """Refuse ``path`` unless it is the file :func:`_file_record` recorded (``written``)."""
    if not isinstance(written, dict):
        raise ValueError(f"{path}: not in the manifest's file checksums")
    try:
        found = _file_record(path)
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e.strerror or e})") from None
    if found["size"] != written.get("size"):
        raise ValueError(f"{path}: {found['size']} bytes, {written.get('size')} written (truncated "
                         f"or overwritten)")
    if found["sha256"] != written.get("sha256"):
        raise ValueError(f"{path}: SHA-256 checksum differs from the one written (damaged or overwritten)")
