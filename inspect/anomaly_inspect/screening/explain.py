"""Why was an image flagged? The nearest normal patch behind each suspicious one.

Every memory item of a memory-bank scorer (PatchCore, SoftPatch, TailedCore)
keeps its provenance (:mod:`..scorers.provenance`): training image, patch cell
and view. Scoring already finds, for every patch of a new image, the memory item
it was matched with (``ScoredImage.nearest``), so an explanation costs no extra
search: the ``top`` most anomalous, non-overlapping patches are picked from the
patch-score map, and each one's memory item is resolved to a training image path
and box. The first patch is the image's maximum, so its distance is the image
score itself (with ``num_neighbors`` = 1, the default; with an approximate index
it is the exactly re-searched maximum, as the score is). The other patches keep
the memory item the index returned: a real normal patch at the stated distance,
with an approximate index not always the very nearest.

A patch is its 3 x 3 neighbourhood of grid cells (what a patch feature
summarises); boxes are in the screened image's own pixels (resize, stretch or
pad, undone). A training image that has moved, or whose content differs from
the sha256 recorded at ``fit``, gets a note instead of a crop.

:func:`render_strip` draws one strip per image: for each patch, the full image
with the box, the suspicious crop, the matched normal crop at the same scale
(the same extent of model input), the full training image with its box, and the
distance against the threshold.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..data.image_io import read_image
from ..data.transforms import Box, ImageTransform
from ..files import write_json
from .lock import LOCK_NAME
from .model_dir import file_sha256
from .overlays import denormalise, fit_within

if TYPE_CHECKING:
    from .model import Model, ScoredImage

log = logging.getLogger(__name__)

PATCH_CELLS = 3  # a patch box spans 3 x 3 grid cells; boxes of chosen patches do not overlap
CROP_CELLS = 9  # the crops shown span 9 x 9 cells of model input around the patch
EXPLANATIONS_JSON = "explanations.json"
OUTPUTS = (EXPLANATIONS_JSON, EXPLANATIONS_JSON + ".tmp", LOCK_NAME)  # besides the strips
REFIT = "refit the model with this version (anomaly-inspect fit) to explain its scores"


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

    def to_dict(self) -> dict:
        return asdict(self)


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
    boxes do not overlap, highest first (the first is the map's maximum)."""
    order = np.argsort(-scores, axis=None, kind="stable")
    rows, cols = np.unravel_index(order, scores.shape)
    chosen: list[tuple[int, int]] = []
    for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
        if all(max(abs(r - a), abs(c - b)) >= size for a, b in chosen):
            chosen.append((r, c))
            if len(chosen) == top:
                break
    return chosen


def cell_rect(r: int, c: int, grid: tuple[int, int], input_size: int, cells: int,
              limit: Box | None = None) -> tuple[float, float, float, float]:
    """(top, left, bottom, right) in model-input pixels of the ``cells`` x ``cells`` cells
    centred on cell (r, c), shifted / clipped to lie within ``limit`` cells (default: the grid)."""
    limit = limit or Box(0, 0, *grid)
    ch, cw = input_size / grid[0], input_size / grid[1]

    def span(centre: int, lo: int, n: int) -> tuple[int, int]:
        k = min(cells, n)
        start = int(np.clip(centre - k // 2, lo, lo + n - k))
        return start, start + k

    r0, r1 = span(r, limit.top, limit.height)
    c0, c1 = span(c, limit.left, limit.width)
    return r0 * ch, c0 * cw, r1 * ch, c1 * cw


class TrainingImages:
    """Training images of a model, by index: verified once against the sha256 recorded at
    fit, decoded into model input on demand (a small LRU cache: matches often repeat)."""

    def __init__(self, model: Model, cache: int = 32):
        self.model = model
        self.paths = list(model.info.train_images)
        self.hashes = list(model.info.train_image_sha256)
        self._checked: dict[int, str] = {}
        self._inputs: OrderedDict[int, tuple[np.ndarray, Box, tuple[int, int]]] = OrderedDict()
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
        path = Path(self.paths[index])
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

    def size(self, index: int) -> tuple[int, int]:
        return self.model_input(index)[2]

    def model_input(self, index: int) -> tuple[np.ndarray, Box, tuple[int, int]]:
        """(RGB uint8 model input (S, S, 3), content box, (height, width) on disk)."""
        if index in self._inputs:
            self._inputs.move_to_end(index)
            return self._inputs[index]
        t = self.model.extractor.transform
        image = read_image(self.paths[index], t.max_pixels)
        chw, _, box = self._transform(image)
        entry = (denormalise(chw, t.mean, t.std), box, image.shape[:2])
        self._inputs[index] = entry
        if len(self._inputs) > self._cache:
            self._inputs.popitem(last=False)
        return entry


def explain_scored(model: Model, scored: ScoredImage, top: int = 3,
                   train: TrainingImages | None = None,
                   image_size: tuple[int, int] | None = None) -> Explanation:
    """Explain an image already scored with ``keep_maps`` (its patch scores and nearest memory
    items); ``image_size`` (height, width) on disk, read from the file when not given."""
    check_explainable(model)
    if scored.error or scored.patch_scores is None or scored.nearest is None:
        raise ValueError(f"{scored.path}: no patch scores to explain"
                         + (f" ({scored.error})" if scored.error else ""))
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    train = train or TrainingImages(model)
    t = model.extractor.transform
    size = t.output_size
    if image_size is None:
        image_size = read_image(scored.path, t.max_pixels).shape[:2]
    prov = model.scorer.provenance
    cells, grid = scored.cells, scored.grid
    out = Explanation(scored.path, scored.score, model.threshold, bool(scored.flagged),
                      tuple(int(v) for v in image_size), tuple(grid), cells)
    for r, c in top_patches(scored.patch_scores, top):
        gr, gc = r + cells.top, c + cells.left
        box = t.input_to_image(*image_size, *cell_rect(gr, gc, grid, size, PATCH_CELLS, cells))
        item = int(scored.nearest[r, c])
        out.patches.append(PatchExplanation((gr, gc), box, float(scored.patch_scores[r, c]),
                                            _match(model, prov, item, grid, train)))
    return out


def _match(model: Model, prov, item: int, grid: tuple[int, int], train: TrainingImages) -> Match:
    index = int(prov.image[item])
    mr, mc, view_id = (int(v) for v in prov.cell[item])
    view = None if view_id == 0 else (int(prov.views[view_id][0]), bool(prov.views[view_id][1]))
    note = train.note(index)
    path = train.paths[index] if 0 <= index < len(train.paths) else None
    box = None
    if not note:
        size = model.extractor.transform.output_size
        try:
            _, content, (h, w) = train.model_input(index)
        except OSError as exc:
            note = f"training image unreadable: {path} ({exc})"
        else:
            if view is None:
                limit = content.on_grid(size, grid)
                box = model.extractor.transform.input_to_image(
                    h, w, *cell_rect(mr, mc, grid, size, PATCH_CELLS, limit))
            else:
                top, left, bottom, right = cell_rect(mr, mc, grid, size, PATCH_CELLS)
                box = Box(int(top), int(left), int(bottom - top), int(right - left))
    return Match(item, index, path, (mr, mc), box, view, note)


def explain_image(model: Model, image: Path | str, top: int = 3) -> Explanation:
    """Score one image file and explain it (what :meth:`Model.explain` does)."""
    explanation, _ = next(iter_explain(model, [Path(image)], top))
    if isinstance(explanation, str):
        raise ValueError(f"{image}: {explanation}")
    return explanation


def iter_explain(model: Model, paths, top: int = 3, progress=None,
                 train: TrainingImages | None = None):
    """Score and explain ``paths`` batch by batch: (:class:`Explanation`, the image as the
    model saw it, RGB uint8) per image, or (error text, None) for an unreadable one."""
    check_explainable(model)
    train = train or TrainingImages(model)
    t = model.extractor.transform
    for batch in model.iter_score([Path(p) for p in paths], progress, keep_maps=True):
        for k, scored in enumerate(batch.images):
            if scored.error:
                yield scored.error, None
                continue
            yield (explain_scored(model, scored, top, train),
                   denormalise(batch.inputs[k], t.mean, t.std))


# -- the strip ------------------------------------------------------------------------------
PANEL = 160  # side of each panel of a strip, in pixels
BAND = 22  # height of the caption under each row
RED, GREEN, GREY = (220, 40, 40), (40, 170, 60), (120, 120, 120)


def render_strip(model: Model, explanation: Explanation, image_input: np.ndarray,
                 train: TrainingImages) -> np.ndarray:
    """RGB uint8 strip: one row per explained patch (see the module docstring).

    ``image_input``: the screened image as the model saw it, content only (RGB uint8, or the
    normalised (3, h, w) model input).
    """
    t = model.extractor.transform
    if image_input.ndim == 3 and image_input.shape[0] == 3 and image_input.shape[-1] != 3:
        image_input = denormalise(image_input, t.mean, t.std)
    size = t.output_size
    grid, cells = explanation.grid, explanation.cells
    content = Box(0, 0, *image_input.shape[:2])
    offset = t.content_box(*explanation.image_size)
    boxes = [_local(cell_rect(*q.cell, grid, size, PATCH_CELLS, cells), offset)
             for q in explanation.patches]
    rows = []
    for k, p in enumerate(explanation.patches):
        rect = boxes[k]
        crop = _local(cell_rect(*p.cell, grid, size, CROP_CELLS, cells), offset)
        full = _boxed(image_input, boxes, highlight=k)
        left = [_panel(full), _panel(_crop_with_box(image_input, crop, rect, content))]
        right, caption = _match_panels(model, p.match, grid, train)
        colour = RED if p.distance > explanation.threshold else GREEN
        text = (f"#{k + 1} distance {p.distance:.3f} {'>' if colour == RED else '<='} "
                f"threshold {explanation.threshold:.3f}   {caption}")
        row = np.concatenate(_spaced(left + right), axis=1)
        band = np.full((BAND, row.shape[1], 3), 255, np.uint8)
        cv2.putText(band, text[:110], (4, BAND - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.42, colour, 1,
                    cv2.LINE_AA)
        rows.append(np.concatenate([row, band], axis=0))
    if not rows:
        return np.full((PANEL, 4 * PANEL, 3), 255, np.uint8)
    head = np.full((BAND, rows[0].shape[1], 3), 255, np.uint8)
    for k, title in enumerate(("image", "suspicious patch", "nearest normal patch",
                               "training image")):
        cv2.putText(head, title, (4 + k * (PANEL + 6), BAND - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                    (60, 60, 60), 1, cv2.LINE_AA)
    return np.concatenate([head, *rows], axis=0)


def _local(rect, offset: Box) -> tuple[int, int, int, int]:
    """A model-input rectangle relative to the content box (the image as shown)."""
    top, left, bottom, right = rect
    return (int(round(top)) - offset.top, int(round(left)) - offset.left,
            int(round(bottom)) - offset.top, int(round(right)) - offset.left)


def _crop_with_box(image: np.ndarray, crop, rect, content: Box) -> np.ndarray:
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


def _spaced(panels: list[np.ndarray], gap: int = 6) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    for k, p in enumerate(panels):
        if k:
            out.append(np.full((PANEL, gap, 3), 255, np.uint8))
        out.append(p)
    return out


def _match_panels(model: Model, match: Match, grid, train: TrainingImages):
    """(matched crop panel, full training image panel) and a caption naming the file."""
    if match.note:
        note = np.full((PANEL, 2 * PANEL, 3), 245, np.uint8)
        for i, line in enumerate(_wrap(match.note, 34)[:6]):
            cv2.putText(note, line, (6, 22 + 20 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.42, GREY, 1,
                        cv2.LINE_AA)
        return [note[:, :PANEL], note[:, PANEL:]], "no training crop"
    from ..features.views import one_view  # torch: only for augmented views

    t = model.extractor.transform
    size = t.output_size
    image, content, _ = train.model_input(match.image_index)
    offset, limit = Box(0, 0, size, size), None
    if match.view is not None:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
        image = one_view(x, *match.view)[0].numpy().transpose(1, 2, 0).copy()
    else:
        offset, limit = content, content.on_grid(size, grid)
        rows, cols = content.slices()
        image = image[rows, cols]
    rect = _local(cell_rect(*match.cell, grid, size, PATCH_CELLS, limit), offset)
    crop = _local(cell_rect(*match.cell, grid, size, CROP_CELLS, limit), offset)
    panels = [_panel(_crop_with_box(image, crop, rect, Box(0, 0, *image.shape[:2]))),
              _panel(_boxed(image, [rect], 0))]
    name = Path(match.path).name
    view = "" if match.view is None else f" (rotated {match.view[0]}{', flipped' if match.view[1] else ''})"
    return panels, f"matched: {name}{view}"


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
                   progress: bool = False) -> list[tuple[str, Explanation | str]]:
    """Explain every image of ``inputs`` (files / folders / globs) into ``out_dir``: a strip
    per image (``<name>.jpg``, named as ``screen --explain`` names them) and all explanations
    in ``explanations.json`` (each with the ``model_id`` of the model that explained it), which
    keeps the entries of earlier runs into the same folder (an image explained again replaces
    its entry). The folder is locked against other runs while this one writes. Returns (path,
    :class:`Explanation` or error text) per image."""

    from ..data.layout import canonical_path, display_path, expand_inputs
    from ..progress import Progress
    from .lock import OutputLock
    from .overlays import write_rgb
    from .runner import explain_relpath, model_identity, without_earlier_outputs, written_folders

    check_explainable(model)
    out_dir = Path(out_dir)
    record = out_dir / EXPLANATIONS_JSON
    found = without_earlier_outputs(expand_inputs(list(inputs), exclude=written_folders(out_dir)),
                                    inputs)
    # the inputs' strips are not inputs where out_dir is an input folder (also the strips of
    # a run that was cut off before it wrote explanations.json)
    strips = {Path(explain_relpath(str(p))).name for p in found}
    here = canonical_path(out_dir) if out_dir.is_dir() else None
    paths = [p for p in found if not (p.parent == here and p.name in strips)]
    if not paths:
        raise ValueError(f"no images found in {', '.join(map(str, inputs))}")
    out_dir.mkdir(parents=True, exist_ok=True)
    with OutputLock(out_dir, "explain"):
        earlier = _earlier_explanations(record)  # as it is now that no other run writes
        train = TrainingImages(model)
        results: list[tuple[str, Explanation | str]] = []
        strip_names: list[str] = []
        with Progress(len(paths), "explain", enabled=progress) as bar:
            for path, (e, image) in zip(paths, iter_explain(model, paths, top, bar, train),
                                        strict=True):
                results.append((display_path(path), e))
                strip_names.append(Path(explain_relpath(str(path))).name)
                if isinstance(e, Explanation):
                    write_rgb(out_dir / strip_names[-1], render_strip(model, e, image, train))
        ident = model_identity(model)
        doc = [{"path": p, "error": e, "model_id": ident} if isinstance(e, str) else
               {**e.to_dict(), "path": p, "strip": strip, "model_id": ident}
               for (p, e), strip in zip(results, strip_names, strict=True)]
        now = {d["path"] for d in doc}
        doc = [d for d in earlier if d["path"] not in now] + doc
        write_json(record, doc, indent=1, default=str)
    return results


def _earlier_explanations(path: Path) -> list[dict]:
    """The entries an earlier run wrote to ``path`` (none if it does not exist); anything else
    there is refused before any work, so that no file of another kind is replaced."""
    import json

    if not path.exists():
        return []
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not an explanations file of this tool ({exc}); give another "
                         f"--out folder or remove it") from None
    if not isinstance(doc, list) or not all(isinstance(d, dict) and "path" in d for d in doc):
        raise ValueError(f"{path}: not an explanations file of this tool (a list of entries "
                         f"with a path); give another --out folder or remove it")
    return doc
