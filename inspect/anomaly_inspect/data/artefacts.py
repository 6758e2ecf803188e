"""Synthetic skin-marker ink strokes and colour-chart stickers with controlled colours.

Artefacts are drawn onto in-distribution test images to build OOD sets whose
only difference from ID is the artefact and its colour. Similar vs dissimilar
follows the rule of "The Invisible Gorilla Effect" (CVPR 2026): the Euclidean
RGB distance between the artefact's mean colour *as drawn* (measured on the
output pixels under the artefact mask) and the region-of-interest mean colour
(ISIC lesions: about (176, 116, 77)) is below ``threshold`` -> similar. A
drawing whose measured colour falls on the wrong side is redrawn (new colour
jitter and shape) up to ``max_tries`` times; every image's colour, distance
and verdict, with the seed and rule it was drawn under, is recorded in the
manifest written beside the images.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..files import cached_entry, write_text
from .image_io import read_image

log = logging.getLogger(__name__)

ISIC_ROI_RGB = (176.0, 116.0, 77.0)

# nominal RGB colours; similar / dissimilar is decided by the rule, not by the name
INK_COLOURS = {
    "red": (165, 30, 40), "brown": (125, 55, 35), "maroon": (140, 35, 50),
    "black": (25, 25, 30), "green": (30, 125, 60), "purple": (85, 30, 130),
}
CHART_COLOURS = {
    "red": (215, 60, 55), "orange": (235, 130, 40), "yellow": (230, 190, 50),
    "green": (60, 170, 80), "blue": (40, 110, 210), "black": (20, 20, 22),
    "grey": (205, 205, 210),
}
PALETTES = {
    ("ink", "similar"): ("red", "brown", "maroon"),
    ("ink", "dissimilar"): ("black", "green", "purple"),
    ("chart", "similar"): ("red", "orange", "yellow"),
    ("chart", "dissimilar"): ("green", "blue", "black", "grey"),
}


@dataclass(frozen=True)
class ColourRule:
    """Similar iff ||mean artefact RGB - ROI RGB||_2 < threshold."""

    roi_rgb: tuple[float, float, float] = ISIC_ROI_RGB
    threshold: float = 115.0

    def distance(self, rgb: Sequence[float]) -> float:
        return float(np.linalg.norm(np.asarray(rgb, float) - np.asarray(self.roi_rgb, float)))

    def is_similar(self, rgb: Sequence[float]) -> bool:
        return self.distance(rgb) < self.threshold

    def describe(self) -> str:
        return (f"similar iff Euclidean RGB distance between the artefact's measured mean colour and "
                f"the ROI mean colour {tuple(self.roi_rgb)} is < {self.threshold}")


def _jitter(rgb: Sequence[int], rng: np.random.Generator, amount: float = 12.0) -> np.ndarray:
    return np.clip(np.asarray(rgb, float) + rng.uniform(-amount, amount, 3), 0, 255)


def _blend(image: np.ndarray, alpha: np.ndarray, colour_img: np.ndarray) -> np.ndarray:
    a = alpha[..., None]
    return np.clip(image.astype(np.float32) * (1 - a) + colour_img * a, 0, 255).astype(np.uint8)


def draw_ink(image: np.ndarray, rgb: Sequence[float], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A marker ring / arc around the lesion centre, or a few dashes and dots near it.

    Returns the new image and the artefact mask (bool). Lines are anti-aliased,
    slightly blurred and keep a little of the skin texture under them.
    """
    h, w = image.shape[:2]
    scale = min(h, w) / 256.0
    alpha = np.zeros((h, w), np.float32)
    thickness = max(1, int(round(rng.uniform(2.0, 4.5) * scale)))
    centre = np.array([w / 2, h / 2]) + rng.uniform(-0.08, 0.08, 2) * [w, h]
    if rng.random() < 0.65:  # ring or arc drawn freehand around the lesion
        rx, ry = rng.uniform(0.30, 0.44, 2) * [w, h]
        start = rng.uniform(0, 2 * np.pi)
        span = rng.uniform(0.5, 1.0) * 2 * np.pi
        t = np.linspace(start, start + span, 120)
        wobble = 1 + 0.04 * np.sin(3 * t + rng.uniform(0, 6)) + rng.normal(0, 0.006, t.size)
        pts = np.stack([centre[0] + rx * wobble * np.cos(t), centre[1] + ry * wobble * np.sin(t)], 1)
        cv2.polylines(alpha, [np.round(pts * 16).astype(np.int32)], False, 1.0, thickness,
                      cv2.LINE_AA, shift=4)
    else:  # dashes and dots marking the lesion margin
        for _ in range(rng.integers(3, 7)):
            ang = rng.uniform(0, 2 * np.pi)
            r = rng.uniform(0.28, 0.42) * min(h, w)
            p = centre + r * np.array([np.cos(ang), np.sin(ang)])
            if rng.random() < 0.5:
                d = rng.uniform(8, 20) * scale * np.array([-np.sin(ang), np.cos(ang)])
                cv2.line(alpha, tuple(np.round((p - d) * 16).astype(int)),
                         tuple(np.round((p + d) * 16).astype(int)), 1.0, thickness, cv2.LINE_AA, 4)
            else:
                cv2.circle(alpha, tuple(np.round(p * 16).astype(int)), int(thickness * 16 * 1.2),
                           1.0, -1, cv2.LINE_AA, 4)
    alpha = cv2.GaussianBlur(alpha, (3, 3), 0.6) * rng.uniform(0.85, 0.95)
    luma = image.astype(np.float32).mean(axis=2, keepdims=True)
    texture = (luma / max(float(luma.mean()), 1.0)) ** 0.25
    colour_img = np.asarray(rgb, np.float32)[None, None] * texture
    return _blend(image, alpha, colour_img), alpha > 0.5


def draw_chart(image: np.ndarray, rgb: Sequence[float], rng: np.random.Generator,
               inner_rgb: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A round colour sticker near the image border, optionally two-tone, with soft shading."""
    h, w = image.shape[:2]
    side = min(h, w)
    radius = rng.uniform(0.06, 0.11) * side
    corner = rng.integers(4)
    margin = radius * rng.uniform(0.3, 1.1)
    cx = margin if corner in (0, 2) else w - margin
    cy = margin if corner in (0, 1) else h - margin
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dist = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    alpha = np.clip(radius - dist + 0.5, 0, 1).astype(np.float32)  # anti-aliased disc
    colour_img = np.broadcast_to(np.asarray(rgb, np.float32), (h, w, 3)).copy()
    if inner_rgb is not None:
        inner = dist < radius * rng.uniform(0.4, 0.6)
        colour_img[inner] = np.asarray(inner_rgb, np.float32)
    # gentle lighting gradient and print noise so the sticker is not a flat disc
    direction = rng.uniform(-1, 1, 2)
    shade = 1 + 0.08 * ((xx - cx) * direction[0] + (yy - cy) * direction[1]) / max(radius, 1)
    colour_img = colour_img * np.clip(shade, 0.85, 1.15)[..., None] + rng.normal(0, 3, (h, w, 1))
    out = _blend(image, alpha * 0.97, colour_img)
    rim = (np.abs(dist - radius) < 1.0).astype(np.float32) * 0.25  # thin dark edge
    out = _blend(out, rim, np.zeros((h, w, 3), np.float32))
    return out, alpha > 0.5


@dataclass
class SyntheticRecord:
    source: str
    path: str
    kind: str
    group: str
    colour: str
    mean_r: float
    mean_g: float
    mean_b: float
    distance: float
    rule_similar: bool
    tries: int
    seed: int  # of the spec it was drawn under, with its rule:
    roi_r: float
    roi_g: float
    roi_b: float
    threshold: float


@dataclass
class SyntheticSpec:
    """What to draw: ``kind`` in {ink, chart}; ``group`` in {similar, dissimilar}."""

    kind: str
    group: str
    rule: ColourRule = field(default_factory=ColourRule)
    seed: int = 0
    max_tries: int = 10

    def __post_init__(self):
        if (self.kind, self.group) not in PALETTES:
            raise ValueError(f"synthetic artefacts: unknown kind/group {self.kind}/{self.group}; "
                             f"choose kind in (ink, chart) and group in (similar, dissimilar)")


def draw_artefact(image: np.ndarray, spec: SyntheticSpec, rng: np.random.Generator):
    """Draw one artefact that satisfies the colour rule; returns (image, colour name, mean rgb, tries)."""
    colours = INK_COLOURS if spec.kind == "ink" else CHART_COLOURS
    palette = PALETTES[(spec.kind, spec.group)]
    want_similar = spec.group == "similar"
    for attempt in range(1, spec.max_tries + 1):
        name = palette[rng.integers(len(palette))]
        rgb = _jitter(colours[name], rng)
        if spec.kind == "ink":
            out, mask = draw_ink(image, rgb, rng)
        else:
            inner = None
            if rng.random() < 0.3:  # two-tone sticker from the same group
                other = palette[rng.integers(len(palette))]
                inner = _jitter(colours[other], rng)
                name = f"{name}+{other}"
            out, mask = draw_chart(image, rgb, rng, inner)
        if not mask.any():
            continue
        mean = out[mask].reshape(-1, 3).mean(axis=0)
        if spec.rule.is_similar(mean) == want_similar:
            return out, name, mean, attempt
    raise RuntimeError(f"could not draw a {spec.group} {spec.kind} artefact satisfying "
                       f"'{spec.rule.describe()}' in {spec.max_tries} tries")


#: the file of a synthetic set that lists its images, written last
MANIFEST = "manifest.csv"


def make_synthetic_set(sources: Sequence[Path], spec: SyntheticSpec, out_dir: Path) -> list[SyntheticRecord]:
    """Draw one artefact on each source image; PNGs and ``manifest.csv`` go to ``out_dir``.

    Deterministic: image i uses ``seed`` and i. An existing manifest is reused only when it
    lists these sources in order, with this kind, group, seed and rule, and its images exist;
    otherwise the folder is removed and the set drawn again. Each output is named by its
    source's file stem, so sources that share a stem (``a/001.png``, ``b/001.jpg``; compared
    ignoring case, as some file systems do) are refused: one drawing would overwrite the other.

    ``out_dir`` is a cache entry (``files.cached_entry``): the set is drawn in a
    temporary folder beside it and renamed into place once its manifest is written, so a
    concurrent run never rewrites an image another run's manifest lists, and a killed drawing
    leaves no image that a later run trusts (its folder is removed by the next drawing).
    """

    if not sources:
        raise ValueError(f"{out_dir}: no source images to draw synthetic {spec.group} "
                         f"{spec.kind} artefacts on")
    _check_distinct_stems(sources)
    out_dir = Path(out_dir)
    rule = _rule(spec)

    def draw(tmp: Path) -> None:
        log.info("synthetic %s %s: drawing %d images into %s", spec.group, spec.kind,
                 len(sources), out_dir)
        records = []
        for i, src in enumerate(sources):
            rng = np.random.default_rng([spec.seed, i, len(spec.kind), len(spec.group)])
            img = read_image(src)
            out, name, mean, tries = draw_artefact(img, spec, rng)
            png = f"{Path(src).stem}_{spec.kind}_{spec.group}.png"
            if not cv2.imwrite(str(tmp / png), cv2.cvtColor(out, cv2.COLOR_RGB2BGR)):
                raise OSError(f"{out_dir / png}: the synthetic image could not be written")
            records.append(SyntheticRecord(
                str(src), str(out_dir / png), spec.kind, spec.group, name,
                *(round(float(v), 2) for v in mean), round(spec.rule.distance(mean), 2),
                spec.rule.is_similar(mean), tries, *rule))
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(asdict(records[0]).keys()))
        writer.writeheader()
        writer.writerows(asdict(r) for r in records)
        write_text(tmp / MANIFEST, text.getvalue())

    return cached_entry(out_dir, lambda d: _reusable(d / MANIFEST, sources, spec), draw,
                        f"the synthetic {spec.group} {spec.kind} set")


def _reusable(manifest: Path, sources: Sequence[Path], spec: SyntheticSpec) -> list[SyntheticRecord] | None:
    """The records of ``manifest`` where it is the drawing of ``spec`` on ``sources``, else None."""
    if not manifest.is_file():
        return None
    records = read_synthetic_manifest(manifest)
    return records if records is not None and _matches(records, sources, spec) else None


def _check_distinct_stems(sources: Sequence[Path]) -> None:
    """Refuse sources whose outputs would share a name (``<stem>_<kind>_<group>.png``)."""
    first: dict[str, Path] = {}
    clashes: list[str] = []
    for src in sources:
        stem = Path(src).stem.casefold()
        if stem in first:
            clashes.append(f"{src} and {first[stem]}")
        else:
            first[stem] = Path(src)
    if clashes:
        raise ValueError(f"synthetic artefacts are named by their source's file stem, and "
                         f"{len(clashes)} source(s) share one with another: "
                         f"{'; '.join(clashes[:5])}{' ...' if len(clashes) > 5 else ''}; "
                         f"rename them or draw on sources with distinct names")


def _rule(spec: SyntheticSpec) -> tuple[float, ...]:
    """What a manifest records of ``spec`` besides kind and group: seed, ROI colour, threshold."""
    return (spec.seed, *(float(v) for v in spec.rule.roi_rgb), float(spec.rule.threshold))


def _matches(records: list[SyntheticRecord], sources: Sequence[Path], spec: SyntheticSpec) -> bool:
    """Whether ``records`` are the drawing of ``spec`` on ``sources`` (and their images exist)."""
    rule = _rule(spec)
    return len(records) == len(sources) and all(
        (r.source, r.kind, r.group, (r.seed, r.roi_r, r.roi_g, r.roi_b, r.threshold))
        == (str(src), spec.kind, spec.group, rule) and Path(r.path).is_file()
        for r, src in zip(records, sources, strict=True))


def read_synthetic_manifest(path: Path) -> list[SyntheticRecord] | None:
    """The records of a manifest written by :func:`make_synthetic_set`; None for one of an
    older version (no seed / rule columns) or one that cannot be read."""
    try:
        with Path(path).open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        return [SyntheticRecord(
            r["source"], r["path"], r["kind"], r["group"], r["colour"], float(r["mean_r"]),
            float(r["mean_g"]), float(r["mean_b"]), float(r["distance"]),
            r["rule_similar"] == "True", int(r["tries"]), int(r["seed"]), float(r["roi_r"]),
            float(r["roi_g"]), float(r["roi_b"]), float(r["threshold"])) for r in rows]
    except (OSError, csv.Error, KeyError, TypeError, ValueError):  # UnicodeDecodeError too
        return None
