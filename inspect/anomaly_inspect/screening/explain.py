"""Why was an image flagged? The nearest normal patch behind each suspicious one.

Every memory item of a memory-bank scorer (PatchCore, SoftPatch, TailedCore)
keeps its provenance (:mod:`..scorers.provenance`): training image, patch cell
and view. Scoring already finds, for every patch of a new image, the memory item
it was matched with (``ScoredImage.nearest``): the ``top`` most anomalous,
non-overlapping patches are picked from the patch-score map, and each one's
memory item is resolved to a training image path and box. The first patch is the
image's maximum, so its distance is the image score itself (with
``num_neighbors`` = 1, the default; with an approximate index it is the exactly
re-searched maximum, as the score is). An approximate index overstates the other
cells' distances where its graph failed, so with one, scoring for an explanation
(``Model.iter_score(explain_top=...)``) chooses and matches the patches by exact
search on the features it has just scored (:func:`exact_top_patches`,
``ScoredImage.exact_top``): no second backbone pass. A scored image without them
keeps the memory items the index returned: a real normal patch at the stated
distance, not always the very nearest.

A patch is its 3 x 3 neighbourhood of grid cells (what a patch feature
summarises), clipped to the image's cells at its border, so that the boxes of the
chosen patches never overlap; boxes are in the screened image's own pixels
(resize, stretch or pad, and crop undone, as is the reduced decode the loader
scores a JPEG over 16 MP from, :func:`..data.loader.decode_factor`). A training
image that has moved, or whose content differs from the sha256 recorded at
``fit``, gets a note instead of a crop.

:func:`render_strip` draws one strip per image: the image's score against the
threshold, then for each patch (at most ``MAX_STRIP_ROWS``) the full image with
the box, the suspicious crop, the matched normal crop at the same scale (the
same extent of model input), the full training image with its box, and the
patch's distance.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..data import image_io
from ..data.explanations import EXPLANATIONS_JSON, JOURNAL, entry_key, merged_entries, replaced_by
from ..data.explanations import listed_strips as listed_strips  # runner takes it here
from ..data.explanations import read_explanations as read_explanations
from ..data.image_io import ImageReadError, read_image
from ..data.loader import decode_factor, reduced_side
from ..data.transforms import Box, ImageTransform, TransformConfig
from ..files import write_json
from ..scorers.params import check_number
from ..scorers.patchcore import weighted_scores
from .lock import LOCK_NAME
from .model_dir import file_sha256
from .overlays import denormalise, fit_within

if TYPE_CHECKING:
    from .model import Model, ScoredImage

log = logging.getLogger(__name__)

PATCH_CELLS = 3  # a patch box spans (up to, at the border) 3 x 3 grid cells
CROP_CELLS = 9  # the crops shown span 9 x 9 cells of model input around the patch
MAX_STRIP_ROWS = 50  # patches drawn in a strip (JPEG stops at 65,535 px); the JSON keeps all
OUTPUTS = (EXPLANATIONS_JSON, JOURNAL, LOCK_NAME)  # besides the strips
REFIT = "refit the model with this version (anomaly-inspect fit) to explain its scores"

Rect = tuple[float, float, float, float]  # (top, left, bottom, right) in model-input pixels


class ExplainUnavailable(ValueError):
    """The model cannot explain its scores (no memory bank, or no provenance saved)."""


@dataclass
class Match:
    """The normal training patch a suspicious patch was compared with.

    ``box`` is in the training image's own pixels, or, for an augmented view
    (``view`` = (angle, flip)), in the pixels of that view of the model input.
    ``note`` says why no crop can be shown (file moved or changed; origin unknown).
    """

    item: int
    image_index: int
    path: str | None
    cell: tuple[int, int]
    box: Box | None
    view: tuple[int, bool] | None = None
    note: str = ""


@dataclass
class PatchExplanation:
    """One suspicious patch: its cell on the patch grid, its box in the image's own pixels,
    its distance (the patch score) and its :class:`Match`."""

    cell: tuple[int, int]
    box: Box
    distance: float
    match: Match


@dataclass
class Explanation:
    path: str
    score: float
    threshold: float
    flagged: bool
    image_size: tuple[int, int]  # (height, width) of the screened image
    grid: tuple[int, int]  # the patch grid over the model input
    cells: Box  # the grid cells on the image (not on padding)
    patches: list[PatchExplanation] = field(default_factory=list)
    #: the loader decoded the image this many times smaller (a JPEG over 16 MP); the model
    #: input, and so the strip, is made from that decode (:func:`decoded_size`)
    decode_factor: int = 1

    def to_dict(self) -> dict:
        """The explanation as JSON data, its image named as results.csv names it
        (:func:`path_fields`)."""
        return {**asdict(self), **path_fields(self.path)}


def path_fields(path: str) -> dict[str, str]:
    """How a JSON entry names the image at ``path`` (as the file system spells it): ``path``
    as text and ``raw_path`` as results.csv's columns have them (a non-UTF-8 name's bytes
    escaped in the one, percent-encoded in the other, which is empty for a UTF-8 name)."""
    from ..data.layout import display_path
    from .runner import raw_path_field

    return {"path": display_path(path), "raw_path": raw_path_field(path)}


def decoded_size(size: tuple[int, int], factor: int) -> tuple[int, int]:
    """(height, width) of an image of ``size`` decoded ``factor`` times smaller: libjpeg's
    reduced decode rounds each side up."""
    return -(-size[0] // factor), -(-size[1] // factor)


def input_to_file(t: TransformConfig, size: tuple[int, int], factor: int, rect: Rect) -> Box:
    """A model-input rectangle in the pixels of the file of ``size`` (height, width) that the
    loader decoded ``factor`` times smaller: undone on that decode
    (:meth:`TransformConfig.input_to_image`), then scaled to the file's pixels."""
    box = t.input_to_image(*decoded_size(size, factor), *rect)
    top, left = box.top * factor, box.left * factor
    return Box(top, left, min((box.top + box.height) * factor, size[0]) - top,
               min((box.left + box.width) * factor, size[1]) - left)


def check_explainable(model: Model) -> None:
    """Raise :class:`ExplainUnavailable` unless ``model``'s scorer keeps bank provenance."""
    scorer = model.scorer
    if not hasattr(scorer, "provenance"):
        raise ExplainUnavailable(f"the {scorer.name} scorer has no memory bank to explain its "
                                 f"scores with (patchcore, softpatch and tailedcore do)")
    if scorer.provenance is None:
        raise ExplainUnavailable(f"this model was saved without memory-bank provenance (before "
                                 f"explanations existed); {REFIT}")


def top_patches(scores: np.ndarray, top: int, size: int = PATCH_CELLS) -> list[tuple[int, int]]:
    """(row, col) of the ``top`` highest cells of a patch-score map whose ``size`` x ``size``
    neighbourhoods do not overlap, highest first (the first is the map's maximum). Their boxes
    (:func:`cell_rect`, clipped to the map) are within these neighbourhoods: no overlap either."""
    order = np.argsort(-scores, axis=None, kind="stable")
    rows, cols = np.unravel_index(order, scores.shape)
    chosen: list[tuple[int, int]] = []
    for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
        if all(max(abs(r - a), abs(c - b)) >= size for a, b in chosen):
            chosen.append((r, c))
            if len(chosen) == top:
                break
    return chosen


def map_top_patches(scores: np.ndarray, nearest: np.ndarray, top: int, size: int = PATCH_CELLS
                    ) -> list[tuple[int, int, float, int]]:
    """(row, col, score, memory item) of the :func:`top_patches` of a scored map, as scored."""
    return [(r, c, float(scores[r, c]), int(nearest[r, c])) for r, c in top_patches(scores, top, size)]


def exact_top_patches(scorer, scores: np.ndarray, nearest: np.ndarray, patches: np.ndarray,
                      top: int, size: int = PATCH_CELLS) -> list[tuple[int, int, float, int]]:
    """(row, col, score, memory item) of the :func:`top_patches` of the exact patch-score map,
    from an approximate one (``scores``, ``nearest``) and the patches' features (``patches``,
    (h, w, D)), searching as few cells exactly as it takes.

    An approximate index returns a real memory item, so a cell's approximate distance is never
    below its exact one (with item weights, see ``patchcore.exact_image_maxima``, that distance
    times the root of the largest weight bounds its exact score). Cells are searched exactly in
    decreasing order of that bound until ``top`` non-overlapping ones score at least the bound
    of every cell left: none of those can change the selection. The map's maximum is exact
    already (the image score is) and is kept as scored. With an exact index, the scored map."""
    nn, weights = scorer._nn, scorer.item_weights
    if nn.is_exact:
        return map_top_patches(scores, nearest, top, size)
    flat_scores, flat_items = scores.ravel().astype(np.float64), nearest.ravel()
    bound = flat_scores.copy()
    if weights is not None:  # the approximate distance, times the root of the largest weight
        bound *= np.sqrt(float(weights.max()) / np.maximum(weights[flat_items], 1e-30))
    order = np.argsort(-bound, kind="stable")
    exact = np.full(len(bound), -np.inf)
    items = flat_items.copy()
    first = int(np.argmax(flat_scores))
    exact[first] = flat_scores[first]
    rest = order[order != first]
    done, step = 0, max(8, 2 * top)
    while True:
        cells = rest[done:done + step]
        if len(cells):
            d, i = nn.search_exact(patches.reshape(len(bound), -1)[cells], 1)
            exact[cells] = d[:, 0] if weights is None else weighted_scores(d[:, 0], weights[i[:, 0]])
            items[cells] = i[:, 0]
            done, step = done + len(cells), 2 * step
        chosen = top_patches(exact.reshape(scores.shape), top, size)
        chosen = [(r, c) for r, c in chosen if np.isfinite(exact[r * scores.shape[1] + c])]
        left = bound[rest[done]] if done < len(rest) else -np.inf
        if done >= len(rest) or (len(chosen) == top and
                                 min(exact[r * scores.shape[1] + c] for r, c in chosen) >= left):
            return [(r, c, float(exact[k]), int(items[k]))
                    for r, c in chosen for k in [r * scores.shape[1] + c]]


def cell_rect(r: int, c: int, grid: tuple[int, int], input_size: int, cells: int,
              limit: Box | None = None, shift: bool = False) -> Rect:
    """(top, left, bottom, right) in model-input pixels of the ``cells`` x ``cells`` cells
    centred on cell (r, c), clipped to the ``limit`` cells (default: the grid); with ``shift``,
    a window of that size (at most ``limit``'s) moved inside them instead."""
    limit = limit or Box(0, 0, *grid)
    ch, cw = input_size / grid[0], input_size / grid[1]

    def span(centre: int, lo: int, n: int) -> tuple[int, int]:
        start = centre - cells // 2
        if not shift:
            return max(start, lo), min(start + cells, lo + n)
        k = min(cells, n)
        start = int(np.clip(start, lo, lo + n - k))
        return start, start + k

    r0, r1 = span(r, limit.top, limit.height)
    c0, c1 = span(c, limit.left, limit.width)
    return r0 * ch, c0 * cw, r1 * ch, c1 * cw


def patch_rects(cell: tuple[int, int], grid: tuple[int, int], input_size: int,
                limit: Box | None) -> tuple[Rect, Rect]:
    """The box of the patch at grid ``cell`` (clipped to the ``limit`` cells) and the crop shown
    around it (9 x 9 cells kept inside them), in model-input pixels."""
    return (cell_rect(*cell, grid, input_size, PATCH_CELLS, limit),
            cell_rect(*cell, grid, input_size, CROP_CELLS, limit, shift=True))


def match_rects(match: Match, grid: tuple[int, int], input_size: int,
                content: Box) -> tuple[Rect, Rect, Box]:
    """:func:`patch_rects` of a match in its training image's model input (``content``: where
    the image lies in it), and what they are drawn on: that content for the image's own view
    (the rectangles stay on it), the whole input for an augmented view."""
    if match.view is None:
        return (*patch_rects(match.cell, grid, input_size, content.on_grid(input_size, grid)),
                content)
    return (*patch_rects(match.cell, grid, input_size, None), Box(0, 0, input_size, input_size))


UNLIMITED = sys.maxsize  # no pixel budget: training images are the files fitted on (sha256 checked)


class TrainingImages:
    """Training images of a model, by index: verified once against the sha256 recorded at
    fit, decoded into model input on demand (a small LRU cache: matches often repeat).
    ``paths`` are their names as text (for notes and explanations), ``files`` as the file
    system spells them (opened; the text of an older model that did not record them)."""

    def __init__(self, model: Model, cache: int = 32):
        from .runner import row_key

        self.model = model
        self.paths = list(model.info.train_images)
        raw = model.info.train_images_raw or [""] * len(self.paths)
        self.files = [row_key({"path": p, "raw_path": r})
                      for p, r in zip(self.paths, raw, strict=True)]
        self.hashes = list(model.info.train_image_sha256)
        self._checked: dict[int, str] = {}
        self._inputs: OrderedDict[int, tuple[np.ndarray, Box, tuple[int, int], int]] = \
            OrderedDict()
        self._cache = cache
        self._transform = ImageTransform(model.extractor.transform)

    def note(self, index: int) -> str:
        """Empty if training image ``index`` is the file the model learnt from, else why not."""
        if index not in self._checked:
            self._checked[index] = self._check(index)
        return self._checked[index]

    def _check(self, index: int) -> str:
        if not 0 <= index < len(self.paths):
            return "origin unknown (augmented view from an unrecorded source)" if index < 0 else \
                f"training image #{index} is not in the model's training list"
        path = Path(self.files[index])
        if not path.is_file():
            return f"training image moved or deleted since fit: {self.paths[index]}"
        if index < len(self.hashes):
            try:
                same = file_sha256(path) == self.hashes[index]
            except OSError as exc:
                return f"training image unreadable: {self.paths[index]} ({exc})"
            if not same:
                return f"training image changed since fit (sha256 differs): {self.paths[index]}"
        return ""

    def model_input(self, index: int) -> tuple[np.ndarray, Box, tuple[int, int], int]:
        """(RGB uint8 model input (S, S, 3), content box, (height, width) on disk, the factor
        it was decoded smaller by), decoded as fit decoded it (a JPEG over 16 MP reduced) and
        read without this run's pixel budget (``--max-pixels`` is for the screened images)."""
        if index in self._inputs:
            self._inputs.move_to_end(index)
            return self._inputs[index]
        t, path = self.model.extractor.transform, self.files[index]
        factor = decode_factor(path, t.image_size, UNLIMITED)
        image = read_image(path, UNLIMITED, min_side=reduced_side(t.image_size))
        size = image.shape[:2] if factor == 1 else image_io.image_size(path, UNLIMITED)[::-1]
        chw, _, box = self._transform(image)
        entry = (denormalise(chw, t.mean, t.std), box, tuple(size), factor)
        self._inputs[index] = entry
        if len(self._inputs) > self._cache:
            self._inputs.popitem(last=False)
        return entry


def _check_top(top: int) -> None:
    """Refuse a ``top`` that is not a whole number >= 1 (2.5 listed every patch, True one)."""
    check_number("explain", "top", top, 1, whole=True)


def error_reason(exc: Exception, path: Path | str) -> str:
    """Why ``exc`` was raised, less ``path`` where an :class:`ImageReadError` names it (the
    caller names it once)."""
    return exc.reason if isinstance(exc, ImageReadError) and exc.path == Path(path) else str(exc)


def explain_scored(model: Model, scored: ScoredImage, top: int = 3,
                   train: TrainingImages | None = None,
                   image_size: tuple[int, int] | None = None) -> Explanation:
    """Explain an image already scored with ``keep_maps`` (its patch scores and nearest memory
    items). ``image_size``: (height, width) of an image the loader decoded whole; when not
    given, the file's header gives it and whether the loader decoded it reduced (no decode).
    The patches are ``scored.exact_top`` where it was scored for at least ``top`` (an
    approximate index: chosen and matched by exact search), else the map's. Errors do not name
    the image (callers do)."""
    check_explainable(model)
    if scored.error or scored.patch_scores is None or scored.nearest is None:
        raise ValueError("no patch scores to explain" + (f" ({scored.error})" if scored.error
                                                         else ""))
    _check_top(top)
    train = train or TrainingImages(model)
    t = model.extractor.transform
    factor = 1
    if image_size is None:
        width, height = image_io.image_size(scored.path, t.max_pixels)
        image_size = (height, width)
        factor = decode_factor(scored.path, t.image_size, t.max_pixels)
    prov = model.scorer.provenance
    cells, grid = scored.cells, scored.grid
    out = Explanation(scored.path, scored.score, model.threshold, bool(scored.flagged),
                      tuple(int(v) for v in image_size), tuple(grid), cells, [], factor)
    if scored.exact_top is not None and scored.exact_top[0] >= top:
        chosen = scored.exact_top[1][:top]  # the first top of a greedy top-k are its top
    else:
        chosen = map_top_patches(scored.patch_scores, scored.nearest, top)
    for r, c, distance, item in chosen:
        cell = (r + cells.top, c + cells.left)
        patch, _ = patch_rects(cell, grid, t.output_size, cells)
        out.patches.append(PatchExplanation(cell, input_to_file(t, out.image_size, factor, patch),
                                            distance, _match(model, prov, item, grid, train)))
    return out


def _match(model: Model, prov, item: int, grid: tuple[int, int], train: TrainingImages) -> Match:
    index = int(prov.image[item])
    mr, mc, view_id = (int(v) for v in prov.cell[item])
    view = None if view_id == 0 else (int(prov.views[view_id][0]), bool(prov.views[view_id][1]))
    path = train.paths[index] if 0 <= index < len(train.paths) else None
    match = Match(item, index, path, (mr, mc), None, view, train.note(index))
    if match.note:
        return match
    t = model.extractor.transform
    try:
        _, content, size, factor = train.model_input(index)
    except OSError as exc:
        match.note = f"training image unreadable: {path} ({error_reason(exc, path)})"
        return match
    rect = match_rects(match, grid, t.output_size, content)[0]
    top, left, bottom, right = rect
    match.box = input_to_file(t, size, factor, rect) if view is None else \
        Box(int(top), int(left), int(bottom - top), int(right - left))
    return match


def explain_image(model: Model, image: Path | str, top: int = 3) -> Explanation:
    """Score one image file and explain it (what :meth:`Model.explain` does)."""
    explanation, _ = next(iter_explain(model, [Path(image)], top))
    if isinstance(explanation, str):
        raise ValueError(f"{image}: {explanation}")
    return explanation


def iter_explain(model: Model, paths, top: int = 3, progress=None,
                 train: TrainingImages | None = None):
    """Score and explain ``paths`` batch by batch: (:class:`Explanation`, the image as the
    model saw it, RGB uint8) per image, or (error text, None) for one that cannot be read or
    explained (the text does not name the image: callers do, once)."""
    check_explainable(model)
    _check_top(top)
    train = train or TrainingImages(model)
    t = model.extractor.transform
    for batch in model.iter_score([Path(p) for p in paths], progress, keep_maps=True,
                                  explain_top=top, explain_all=True, expand=False):
        for k, scored in enumerate(batch.images):
            if scored.error:
                yield scored.error, None
                continue
            try:
                explanation = explain_scored(model, scored, top, train)
            except (OSError, ValueError) as exc:  # e.g. the file changed since it was scored
                yield error_reason(exc, scored.path), None
                continue
            yield explanation, denormalise(batch.inputs[k], t.mean, t.std)


# -- the strip ------------------------------------------------------------------------------
PANEL = 160  # side of each panel of a strip, in pixels
GAP = 6  # between panels
BAND = 22  # height of a line of text (the head's, and the caption under each row)
RED, GREEN, GREY = (220, 40, 40), (40, 170, 60), (120, 120, 120)
TITLES = ("image", "suspicious patch", "nearest normal patch", "training image")


def render_strip(model: Model, explanation: Explanation, image_input: np.ndarray,
                 train: TrainingImages) -> np.ndarray:
    """RGB uint8 strip (see the module docstring), in red for a flagged image, green otherwise.

    ``image_input``: the screened image as the model saw it, content only (RGB uint8, or the
    normalised (3, h, w) model input); an image of another size (a thumbnail) is refused (the
    error does not name the image: callers do).
    """
    t = model.extractor.transform
    if image_input.ndim == 3 and image_input.shape[0] == 3 and image_input.shape[-1] != 3:
        image_input = denormalise(image_input, t.mean, t.std)
    offset = t.content_box(*decoded_size(explanation.image_size, explanation.decode_factor))
    if image_input.shape[:2] != (offset.height, offset.width):
        raise ValueError(f"a strip is drawn on the model input's content ({offset.width}x"
                         f"{offset.height} px), got a {image_input.shape[1]}x"
                         f"{image_input.shape[0]} px image")
    shown = explanation.patches[:MAX_STRIP_ROWS]
    rects = [[_local(r, offset) for r in patch_rects(p.cell, explanation.grid, t.output_size,
                                                      explanation.cells)] for p in shown]
    boxes = [patch for patch, _ in rects]
    colour = RED if explanation.flagged else GREEN
    rows = []
    for k, p in enumerate(shown):
        full = _boxed(image_input, boxes, highlight=k)
        left = [_panel(full), _panel(_crop_with_box(image_input, rects[k][1], boxes[k]))]
        right, caption = _match_panels(model, p.match, explanation.grid, train)
        row = np.concatenate(_spaced(left + right), axis=1)
        band = _band(row.shape[1])
        _text(band, f"#{k + 1} patch distance {p.distance:.3f}   {caption}", 4, BAND - 7, colour)
        rows.append(np.concatenate([row, band], axis=0))
    width = 4 * PANEL + 3 * GAP
    verdict, titles = _band(width), _band(width)
    _text(verdict, f"score {explanation.score:.3f} {'>' if explanation.flagged else '<='} "
                   f"threshold {explanation.threshold:.3f}: "
                   f"{'anomalous' if explanation.flagged else 'normal'}"
                   + (f"   (first {len(shown)} of {len(explanation.patches)} patches; all in "
                      f"the JSON)" if len(shown) < len(explanation.patches) else ""),
          4, BAND - 7, colour)
    for k, title in enumerate(TITLES):
        _text(titles, title, 4 + k * (PANEL + GAP), BAND - 7, (60, 60, 60))
    return np.concatenate([verdict, titles, *rows], axis=0)


def _ascii(text: str) -> str:
    """``text`` as OpenCV's font can draw it: non-ASCII characters escaped (``\\xfc``)."""
    return text.encode("ascii", "backslashreplace").decode("ascii")


def _text(image: np.ndarray, text: str, x: int, y: int, colour) -> None:
    """Draw ``text`` (escaped to ASCII, cut with "..." to fit) with its baseline at ``y``."""
    text, room = _ascii(text), image.shape[1] - x - 4

    def width(s: str) -> int:
        return cv2.getTextSize(s, cv2.FONT_HERSHEY_SIMPLEX, 0.42, 1)[0][0]

    if width(text) > room:
        text = text[:max(1, len(text) * room // width(text))]
        while len(text) > 1 and width(text + "...") > room:
            text = text[:-1]
        text += "..."
    cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.42, colour, 1, cv2.LINE_AA)


def _band(width: int) -> np.ndarray:
    return np.full((BAND, width, 3), 255, np.uint8)


def _local(rect: Rect, offset: Box) -> tuple[int, int, int, int]:
    """A model-input rectangle relative to the content box (the image as shown)."""
    top, left, bottom, right = rect
    return (int(round(top)) - offset.top, int(round(left)) - offset.left,
            int(round(bottom)) - offset.top, int(round(right)) - offset.left)


def _crop_with_box(image: np.ndarray, crop, rect) -> np.ndarray:
    """The ``crop`` rectangle of ``image`` (padded white outside it) with ``rect`` outlined."""
    top, left, bottom, right = crop
    h, w = image.shape[:2]
    canvas = np.full((bottom - top, right - left, 3), 255, np.uint8)
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(bottom, h), min(right, w)
    if y1 > y0 and x1 > x0:
        canvas[y0 - top:y1 - top, x0 - left:x1 - left] = image[y0:y1, x0:x1]
    scale = PANEL / max(canvas.shape[:2])
    out = cv2.resize(canvas, (max(1, round(canvas.shape[1] * scale)),
                              max(1, round(canvas.shape[0] * scale))), interpolation=cv2.INTER_CUBIC)
    r = [round((v - o) * scale) for v, o in zip(rect, (top, left, top, left), strict=True)]
    cv2.rectangle(out, (r[1], r[0]), (r[3] - 1, r[2] - 1), RED, 2)
    return out


def _boxed(image: np.ndarray, rects, highlight: int) -> np.ndarray:
    out = fit_within(image, PANEL * 2).copy()
    s = out.shape[0] / image.shape[0]
    for k, (top, left, bottom, right) in enumerate(rects):
        cv2.rectangle(out, (round(left * s), round(top * s)), (round(right * s) - 1,
                      round(bottom * s) - 1), RED if k == highlight else GREY, 2 if k == highlight else 1)
    return out


def _panel(image: np.ndarray) -> np.ndarray:
    """``image`` fitted into a PANEL x PANEL white square."""
    img = fit_within(image, PANEL)
    if max(img.shape[:2]) < PANEL:
        scale = PANEL / max(img.shape[:2])
        img = cv2.resize(img, (max(1, round(img.shape[1] * scale)), max(1, round(img.shape[0] * scale))),
                         interpolation=cv2.INTER_CUBIC)
    out = np.full((PANEL, PANEL, 3), 255, np.uint8)
    y, x = (PANEL - img.shape[0]) // 2, (PANEL - img.shape[1]) // 2
    out[y:y + img.shape[0], x:x + img.shape[1]] = img
    return out


def _spaced(panels: list[np.ndarray]) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    for k, p in enumerate(panels):
        if k:
            out.append(np.full((PANEL, GAP, 3), 255, np.uint8))
        out.append(p)
    return out


def _match_panels(model: Model, match: Match, grid, train: TrainingImages):
    """The matched crop and the full training image with its box (or, without a crop, one
    note across both), and a caption naming the file."""
    if match.note:
        note = np.full((PANEL, 2 * PANEL + GAP, 3), 245, np.uint8)
        for i, line in enumerate(_wrap(_ascii(match.note), 38)[:6]):
            _text(note, line, 6, 22 + 20 * i, GREY)
        return [note], "no training crop"
    from ..features.views import one_view  # torch: only for augmented views

    size = model.extractor.transform.output_size
    image, content, _, _ = train.model_input(match.image_index)
    patch, crop, origin = match_rects(match, grid, size, content)
    if match.view is not None:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
        image = one_view(x, *match.view)[0].numpy().transpose(1, 2, 0).copy()
    else:
        rows, cols = content.slices()
        image = image[rows, cols]
    rect = _local(patch, origin)
    panels = [_panel(_crop_with_box(image, _local(crop, origin), rect)),
              _panel(_boxed(image, [rect], 0))]
    return panels, f"matched: {Path(match.path).name}{view_text(match.view)}"


def view_text(view: tuple[int, bool] | None) -> str:
    """`` (rotated 90, flipped)`` for an augmented view, empty for the image's own."""
    return "" if view is None else f" (rotated {view[0]}{', flipped' if view[1] else ''})"


def _wrap(text: str, width: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for w in words:
        while len(w) > width:
            if line:
                lines.append(line)
                line = ""
            lines.append(w[:width])
            w = w[width:]
        if len(line) + len(w) + 1 > width and line:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    return lines + ([line] if line else [])


def explain_to_dir(model: Model, inputs, out_dir: Path | str, top: int = 3,
                   progress: bool = False) -> list[tuple[str, Explanation | None, str]]:
    """Explain every image of ``inputs`` (files / folders / globs) into ``out_dir``: a strip
    per image (``<name>.jpg``, named as ``screen --explain`` names them) and all explanations
    in ``explanations.json`` (each with the ``model_id`` of the model that explained it, and
    its strip's name), which keeps the entries of earlier runs into the same folder (an image
    explained again replaces its entry). Every finished batch is appended to a journal
    (``explanations.journal.jsonl``, one line per batch), folded into ``explanations.json`` when
    the run stops (its end, an error, Ctrl-C, SIGTERM), so finished work is kept; a journal a
    ``kill -9`` left is folded in by the next run (:func:`read_explanations` reads both). An
    image that cannot be read or explained gets an entry with its ``error``; one whose strip
    cannot be drawn keeps its explanation, with a ``strip_error`` (either keeps naming the
    ``strip`` an earlier run drew for it, whose file stays). The folder is locked against
    other runs while this one writes. Returns (path as text, :class:`Explanation` or None,
    error text or "") per image; the error text does not name the image."""

    from ..data.layout import display_path
    from ..progress import Progress
    from .lock import OutputLock
    from .model import input_images
    from .overlays import write_rgb
    from .runner import check_out_dir, explain_relpath, model_identity

    out_dir = Path(out_dir)
    check_out_dir(out_dir, f"explain writes {EXPLANATIONS_JSON} and its strips")
    check_explainable(model)
    _check_top(top)
    # out_dir inside an input folder is no input, nor where it is one are the strips an
    # earlier run listed in explanations.json (input_images)
    paths = input_images(inputs, exclude=[out_dir], twins="keep")
    if not paths:
        raise ValueError(f"no images found in {', '.join(map(str, inputs))}")
    out_dir.mkdir(parents=True, exist_ok=True)
    with OutputLock(out_dir, "explain"):
        record = ExplanationsRecord(out_dir)  # as it is now that no other run writes
        train = TrainingImages(model)
        ident = model_identity(model)
        results: list[tuple[str, Explanation | None, str]] = []
        try:
            with Progress(len(paths), "explain", enabled=progress) as bar:
                for n, (path, (e, image)) in enumerate(
                        zip(paths, iter_explain(model, paths, top, bar, train), strict=True), 1):
                    if isinstance(e, str):
                        results.append((display_path(path), None, e))
                        entry = {**path_fields(str(path)), "error": e, "model_id": ident}
                        record.add({**entry, **record.earlier_strip(entry)})
                    else:
                        strip = Path(explain_relpath(str(path))).name
                        try:
                            write_rgb(out_dir / strip, render_strip(model, e, image, train))
                            drawn, error = {"strip": strip}, ""
                        except (OSError, ValueError, cv2.error) as exc:
                            drawn = {**record.earlier_strip(path_fields(str(path))),
                                     "strip_error": str(exc)}
                            error = f"no strip: {drawn['strip_error']}"
                        results.append((display_path(path), e, error))
                        record.add({**e.to_dict(), **drawn, "model_id": ident})
                    if n % model.extractor.batch_size == 0:
                        record.append_batch()
        finally:
            record.close()
    return results


class ExplanationsRecord:
    """``explanations.json`` of a folder while one (locked) run adds to it: each finished batch
    is one line appended to the journal (a write the size of the batch, where rewriting the
    file cost the size of everything explained so far); :meth:`close` folds all into
    ``explanations.json`` (written whole, atomically) and removes the journal. A ``kill -9``
    loses at most the batch in flight: the journal keeps the rest, and the next run folds it
    in when it starts (so that its appends begin on a fresh journal)."""

    def __init__(self, folder: Path):
        self.path, self.journal = folder / EXPLANATIONS_JSON, folder / JOURNAL
        self.earlier = read_explanations(folder)  # a damaged file is refused before any work
        self.entries: dict[str, dict] = {}  # this run's, by image (entry_key)
        self.pending: list[dict] = []  # not in the journal yet
        if self.journal.exists():
            self._fold()

    def add(self, entry: dict) -> None:
        self.entries[entry_key(entry)] = entry
        self.pending.append(entry)

    def earlier_strip(self, entry: dict) -> dict:
        """``{"strip": name}`` of the entry ``entry`` replaces, where it named one (else
        empty): an entry without a new strip keeps naming the file an earlier run left, so
        that it stays out of the inputs (:func:`listed_strips`) when this folder is one."""
        replaced = replaced_by([entry])
        strips = [d["strip"] for d in (*self.earlier, *self.entries.values())
                  if replaced(d) and isinstance(d.get("strip"), str)]
        return {"strip": strips[-1]} if strips else {}

    def append_batch(self) -> None:
        """Append the entries added since the last call to the journal, as one line."""
        if self.pending:
            line = json.dumps(self.pending, default=str) + "\n"
            with open(self.journal, "a", encoding="utf-8") as fh:
                fh.write(line)
            self.pending = []

    def close(self) -> None:
        """Fold this run's entries into ``explanations.json``; the journal goes."""
        if self.entries:
            self._fold()

    def _fold(self) -> None:
        # explanations.json first, then the journal goes: a reader in between sees both
        write_json(self.path, merged_entries(self.earlier, self.entries.values()), indent=1,
                   default=str)
        self.journal.unlink(missing_ok=True)
        self.pending = []
