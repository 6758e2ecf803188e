"""Python API of the screening workflow: ``fit`` -> :class:`Model` -> ``save`` / ``load_model`` -> ``screen``.

>>> model = fit(["bottle/train/good"], target_fpr=0.01)      # doctest: +SKIP
>>> model.save("models/bottle")                              # doctest: +SKIP
>>> model = load_model("models/bottle")                      # doctest: +SKIP
>>> rows = model.score(["new/001.png"])                      # doctest: +SKIP
>>> summary = model.screen(["new/"], "results/")            # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..config import ConfigError, ModelConfig, config_for_fit
from ..core import Features
from ..data import layout
from ..data.folder import path_list
from ..data.image_io import DEFAULT_MAX_PIXELS, ImageReadError, image_size, read_image
from ..data.layout import OUTPUT_SUBDIRS as OUTPUT_SUBDIRS  # screen's; runner takes them here
from ..data.layout import RESULTS_CSV as RESULTS_CSV
from ..data.layout import RUN_JSON as RUN_JSON
from ..data.layout import display_path, expand_inputs, holds_screen_run, listing_order
from ..data.transforms import Box
from ..features.backbone import Backbone, LayerRangeError
from ..features.extractor import FeatureExtractor
from ..files import content_sha256, copies_across, same_bytes
from ..pipeline import (
    Engine,
    LocalEngine,
    Runner,
    build,
    build_backbone,
    build_extractor,
    score_batches,
)
from ..pipeline.engine import Shared, check_engine
from ..pipeline.runner import skip_unreadable
from ..progress import Progress
from ..scorers import Scorer
from ..scorers.params import check_number
from .calibration import Calibration, calibrate, check_target_fpr, holdout_split
from .explain import EXPLANATIONS_JSON, JOURNAL
from .model_dir import (
    BACKBONE_DIR,
    MODEL_JSON,
    SCORER_DIR,
    ModelFormatError,
    ModelInfo,
    check_backbone_checksum,
    checked_model_info,
    loaded_whole,
    save_model_dir,
    saved_graphs,
)

log = logging.getLogger(__name__)

#: the share of the training images held out to calibrate the threshold when no calibration
#: images are given
DEFAULT_CALIBRATION_FRACTION = 0.2


def earlier_runs(folder: Path) -> set[str]:
    """The runs whose records ``folder`` holds: "screen" (a ``results.csv`` beside its
    ``screen.json``), "explain" (an ``explanations.json`` or its journal)."""
    runs = set()
    if holds_screen_run(folder):
        runs.add("screen")
    if (folder / EXPLANATIONS_JSON).is_file() or (folder / JOURNAL).is_file():
        runs.add("explain")
    return runs


def without_earlier_outputs(paths: Sequence[Path], inputs: Sequence[Path | str]) -> list[Path]:
    """``paths`` less the images an earlier screen / explain wrote that a folder or glob of
    ``inputs`` brought in: :func:`data.layout.without_earlier_outputs`'s rule (a screen's
    ``overlays/``, ``thumbs/``, ``explain/``, ``maps/`` beside its ``results.csv`` +
    ``screen.json``, and the strips an ``explanations.json`` or its journal lists beside it:
    explain writes no folder of its own). A file named itself stays, and so do a user's
    images in such subfolders where no screen wrote them."""
    named = [i for i in inputs if os.path.isfile(i)]
    return layout.without_earlier_outputs(paths, keep=named)


def input_images(inputs: Sequence[Path | str], exclude: Sequence[Path] = (), *,
                 twins: str) -> list[Path]:
    """The images of files / folders / globs as fit, tune, screen and explain take them
    (``data.layout.expand_inputs``, which leaves out ``exclude``), less the outputs of earlier
    runs (:func:`without_earlier_outputs`): overlays of a results folder inside a training
    folder are no training or calibration images either. ``twins``, named by every caller:
    ``"once"`` for training and calibration images (a hard-linked twin counted once, so none
    is both fitted on and held out); ``"keep"`` for screen, explain, :meth:`Model.score` and
    bench-scale: a row per canonical path, each hard link under its own name."""
    return without_earlier_outputs(expand_inputs(list(inputs), exclude=exclude, twins=twins),
                                   inputs)


def scored_paths(inputs: Sequence[Path | str] | Path | str) -> list[Path]:
    """The images :meth:`Model.iter_score` scores for ``inputs``: a folder or glob pattern
    expanded by :func:`input_images`, as ``score`` and ``screen`` expand it (a row per hard
    link); a named file kept as given, in order, one row each (callers pass the images they
    listed, e.g. results.csv's rows: one gone since is an error row, not a refused run)."""
    out: list[Path] = []
    for item in path_list(inputs, "paths"):
        if os.path.isdir(item) or (not os.path.lexists(item)
                                   and any(ch in str(item) for ch in "*?[")):
            out += input_images([item], twins="keep")
        else:
            out.append(Path(item))
    return out


@dataclass
class ScoredImage:
    """One screened image. ``error`` is set (and the numbers are NaN) when it could not be read;
    ``p_value`` is also NaN for a model saved without its calibration scores."""

    path: str
    score: float
    p_value: float
    flagged: bool | None
    error: str = ""
    patch_scores: np.ndarray | None = None
    #: memory item matched by each patch of ``patch_scores`` (memory-bank scorers), and where
    #: those cells lie on the full patch grid of the model input (see ``screening.explain``)
    nearest: np.ndarray | None = None
    cells: Box | None = None
    grid: tuple[int, int] | None = None
    #: (k, [(row, col, distance, memory item), ...]): the k patches an explanation lists, chosen
    #: and matched by exact search where the index is approximate (``Model.iter_score``'s
    #: ``explain_top``; :func:`.explain.exact_top_patches`); None: the map's own
    exact_top: tuple[int, list[tuple[int, int, float, int]]] | None = None

    @property
    def decision(self) -> str:
        if self.error:
            return "error"
        return "anomalous" if self.flagged else "normal"


@dataclass
class ScoredBatch:
    """A batch from :meth:`Model.iter_score`: the scored images plus the decoded model inputs."""

    images: list[ScoredImage]
    inputs: dict[int, np.ndarray]  # position in ``images`` -> (3, H, W) normalised model input


class Model:
    """A fitted, calibrated pipeline: backbone + feature extractor + scorer + threshold."""

    def __init__(self, cfg: ModelConfig, extractor: FeatureExtractor, scorer: Scorer,
                 calibration: Calibration, info: ModelInfo):
        self.cfg = cfg
        self.extractor = extractor
        self.scorer = scorer
        self.calibration = calibration
        self.info = info
        self.directory: Path | None = None  # where it was loaded from (remote engines load it there)

    @property
    def threshold(self) -> float:
        return self.calibration.threshold

    def save(self, directory: Path | str, overwrite: bool = False) -> Path:
        """Save to ``directory`` with the backbone graphs this run exported (made again where
        they left the cache meanwhile: :meth:`.Backbone.present_exports`) and, for a loaded
        model, those its own directory holds (an int8 graph cannot be remade without the
        training images); they are copied before a model at ``directory`` is replaced."""
        graphs = saved_graphs(self.directory) if self.directory is not None else {}
        ran = self.extractor.backbone.exports
        if not all(p.is_file() for p in ran):  # the cache cleared since they ran
            ran = self.extractor.backbone.present_exports()
        exports = {**graphs, **{f"{BACKBONE_DIR}/{p.name}": p for p in ran}}
        return save_model_dir(directory, self.info, self.scorer, overwrite=overwrite,
                              extra_files=exports)

    def iter_score(self, paths: Sequence[Path | str] | Path | str, progress: Progress | None = None,
                   keep_maps: bool = True, engine: Engine | None = None,
                   thumb_size: int | None = None, flagged_inputs: bool = False,
                   explain_top: int = 0, explain_all: bool = False,
                   expand: bool = True) -> Iterator[ScoredBatch]:
        """Score ``paths`` (files / folders / globs, one or a list: :func:`scored_paths`) batch
        by batch (bounded memory); unreadable images become error rows. ``expand=False`` takes
        ``paths`` as image files already listed (screen's and explain's rows): one gone since,
        or named like a glob (``scan[9].png``), is an error row, never expanded.
        ``engine`` says where the batches run (default: this process); with a remote engine and
        ``thumb_size``, ``inputs`` come back as uint8 (H, W, 3) thumbnails of at most that side
        (about 49 kB an image instead of the 1.2 MB model input at 320 px), and with
        ``flagged_inputs`` a flagged image's as its whole model input in uint8 (for its
        explanation strip). ``explain_top``: each flagged image's (every image's with
        ``explain_all``) ``explain_top`` explanation patches are found where its features are
        (:meth:`score_batches`)."""
        check_engine(engine)
        engine = engine or LocalEngine()
        paths = scored_paths(paths) if expand else [Path(p) for p in path_list(paths, "paths")]
        task = ScoreTask(keep_maps=keep_maps, batch_size=self.extractor.batch_size,
                         explain_top=explain_top if keep_maps else 0, explain_all=explain_all,
                         **({"model": self} if engine.in_process else
                            {**self.remote_source(engine), "thumb_size": thumb_size,
                             "flagged_inputs": flagged_inputs}))
        return engine.map(task, paths, progress)

    def remote_source(self, engine: Engine) -> dict:
        """How workers get this model: its directory's path (shared storage), or the
        directory's files sent once through the engine (:func:`.remote.model_source`)."""
        from .remote import model_source

        return model_source(self, engine)

    def score_batches(self, paths: Sequence[Path], keep_maps: bool = True, explain_top: int = 0,
                      explain_all: bool = False) -> Iterator[tuple[int, ScoredBatch]]:
        """The per-batch screening step: ``(paths consumed, scored batch)`` in order. With
        ``explain_top`` and an approximate index, each flagged image's (every image's with
        ``explain_all``) explanation patches are chosen and matched by exact search on the
        features just scored (``ScoredImage.exact_top``): the index overstates the distances of
        cells its graph failed on, and the features are gone once the batch is."""
        from .explain import exact_top_patches

        nn = getattr(self.scorer, "_nn", None)
        exact_top = explain_top > 0 and keep_maps and nn is not None and not nn.is_exact
        for n, item in score_batches(self.extractor, {"model": self.scorer}, paths):
            batch = item.batch
            rows: dict[int, ScoredImage] = {}
            inputs: dict[int, np.ndarray] = {}
            if batch.indices:
                result = item.results["model"]
                scores = result.image_scores.astype(np.float64)
                pvals = self.calibration.p_values(scores)
                flags = self.calibration.decide(scores)
                for j, i in enumerate(batch.indices):
                    maps = nearest = cells = grid = None
                    if keep_maps and result.patch_scores is not None:  # the image's cells, no padding
                        grid = result.patch_scores.shape[1:]
                        cells = batch.boxes[j].on_grid(batch.images.shape[-1], grid)
                        maps = result.patch_scores[j][cells.slices()]
                        if result.nearest is not None:
                            nearest = result.nearest[j][cells.slices()]
                    top = None
                    if exact_top and nearest is not None and (explain_all or flags[j]):
                        top = (explain_top, exact_top_patches(
                            self.scorer, maps, nearest,
                            item.features.patches[j][cells.slices()], explain_top))
                    rows[i] = ScoredImage(str(paths[i]), float(scores[j]), float(pvals[j]),
                                          bool(flags[j]), "", maps, nearest, cells, grid, top)
                    rows_, cols_ = batch.boxes[j].slices()
                    inputs[i] = batch.images[j][:, rows_, cols_]  # thumbnails without the padding
            for i, reason in batch.errors:
                rows[i] = ScoredImage(str(paths[i]), float("nan"), float("nan"), None, reason)
            order = sorted(rows)
            pos = {i: k for k, i in enumerate(order)}
            yield n, ScoredBatch([rows[i] for i in order], {pos[i]: x for i, x in inputs.items()})

    def score(self, inputs: Sequence[Path | str] | Path | str, progress: bool = False
              ) -> list[ScoredImage]:
        """Score files / folders / globs (one, or a list) and return one :class:`ScoredImage`
        per image."""
        paths = input_images(path_list(inputs, "inputs"), twins="keep")
        out: list[ScoredImage] = []
        with Progress(len(paths), "score", enabled=progress) as bar:
            for b in self.iter_score(paths, bar, expand=False):
                out.extend(b.images)
        return out

    def screen(self, inputs: Sequence[Path | str] | Path | str, out_dir: Path | str, **kwargs):
        """Screen files / folders / globs (one, or a list) into ``out_dir`` (results.csv,
        overlays, report.html).

        Keyword arguments are those of :func:`screening.runner.screen`.
        """
        from .runner import screen

        return screen(self, inputs, out_dir, **kwargs)

    def explain(self, image: Path | str, top: int = 3):
        """Why ``image`` scored as it did: its ``top`` most anomalous non-overlapping patches,
        each with its box, distance and the training patch it was compared with (an
        :class:`~.explain.Explanation`; see :mod:`.explain`)."""
        from .explain import explain_image

        if not isinstance(image, (str, os.PathLike)):
            raise TypeError(f"image: expected the path of one image (a str or os.PathLike), got "
                            f"a {type(image).__name__}; explain one image per call")
        return explain_image(self, image, top)


@dataclass
class ScoreTask:
    """The screening step as an engine task: a model (in memory, or a directory each worker
    loads once) scoring batches of image paths."""

    keep_maps: bool = True
    batch_size: int = 32
    model_dir: Path | None = None
    model: Model | None = None
    model_files: Shared | None = None  # {relative path: bytes} of a model directory
    overrides: dict | None = None  # batch_size / max_pixels set on the driver's model
    model_origin: str | None = None  # where model_files came from, for errors
    model_fingerprint: str | None = None  # the driver's model's (model_dir.fingerprint)
    explain_top: int = 0  # explanation patches by exact search (Model.score_batches)
    explain_all: bool = False  # ... for every image, not only the flagged ones
    thumb_size: int | None = None  # send thumbnails, not model inputs (see Model.iter_score)
    flagged_inputs: bool = False  # ... except for flagged images (uint8 model inputs)

    @property
    def max_pixels(self) -> int | None:
        """The pixel budget the workers read with: the driver model's (``overrides``), or the
        in-memory model's own; None = the default."""
        if self.overrides and self.overrides.get("max_pixels") is not None:
            return int(self.overrides["max_pixels"])
        return None if self.model is None else self.model.extractor.transform.max_pixels

    def setup(self) -> None:
        if self.model is None:
            from .remote import load_remote_model

            self.model = load_remote_model(self.model_dir, self.model_files, self.overrides,
                                            self.model_origin, self.model_fingerprint)

    def run(self, paths: Sequence[Path], local_copies: Sequence[Path] | None = None
            ) -> Iterator[tuple[int, ScoredBatch]]:
        """Score ``paths`` (read from ``local_copies`` when the engine shipped their bytes)."""
        from .remote import renamed, thumbnailed

        batches = self.model.score_batches(paths if local_copies is None else local_copies,
                                           self.keep_maps, self.explain_top, self.explain_all)
        if local_copies is not None:
            batches = renamed(batches, paths)
        if self.thumb_size:
            batches = thumbnailed(batches, self.model.extractor.transform, self.thumb_size,
                                  self.flagged_inputs)
        return batches

    def __getstate__(self):  # a live model never travels; workers rebuild it in setup()
        return {**self.__dict__, "model": None} if self.model_dir or self.model_files \
            else self.__dict__


def calibration_split(train_paths: list[Path], calibration: Sequence[Path | str] | None,
                      calibration_fraction: float, seed: int) -> tuple[list[Path], list[Path], str]:
    """The images the scorer fits on, the normal images its threshold is calibrated on, and a
    description of the latter: a seeded held-out ``calibration_fraction`` of the training
    images, or the images of ``calibration`` (then the scorer fits on every training image).
    Both come in :func:`~..data.layout.listing_order` whatever order they were given in: every
    fit (local, ``--auto``, distributed) draws here, so the hold-out and the coreset's seeded
    draws depend on the set of images and the seed only, and a single folder's are unchanged."""
    return _split(listing_order(train_paths), calibration, calibration_fraction, seed)


def _split(train_paths: list[Path], calibration: Sequence[Path | str] | None,
           calibration_fraction: float, seed: int) -> tuple[list[Path], list[Path], str]:
    """:func:`calibration_split` of ``train_paths`` already in its order."""
    if calibration is None:
        return _held_out(train_paths, calibration_fraction, seed)
    cal_all = listing_order(input_images(calibration, twins="once"))
    if not cal_all:
        raise ValueError(f"no calibration images found in {', '.join(map(str, calibration))}")
    overlap = _same_files(cal_all, train_paths)
    if overlap:
        log.warning("%d calibration images are also training images (the same files or copies "
                    "of them): their scores are too low, so the threshold is too low and the "
                    "real FPR higher than stated", overlap)
    return train_paths, cal_all, f"calibration images from {', '.join(map(str, calibration))}"


def _held_out(train_paths: list[Path], fraction: float, seed: int
              ) -> tuple[list[Path], list[Path], str]:
    """:func:`_split` without calibration images: the seeded hold-out of ``fraction`` of the
    images, drawn from those without a byte-identical copy among them (:func:`~..files.
    same_bytes`), so that no held-out image is scored against its own copy in the fit part (its
    score too low, the threshold too low); every copied image is fitted on. Without copies this
    is the plain seeded split of the images. Where fewer than that share have no copy, as many
    are held out as there are; where none has, whole sets of copies are held out (their other
    copies left out of both sides, so each calibration score is one distinct image)."""
    n = len(train_paths)
    groups = same_bytes(train_paths)
    if not groups:
        fit_idx, cal_idx = holdout_split(n, fraction, seed)
        # the count held out (the share rounds: 0.2 of 3 images holds out one, a third)
        return ([train_paths[i] for i in fit_idx], [train_paths[i] for i in cal_idx],
                f"held-out {len(cal_idx)} of {n} training images (calibration fraction "
                f"{fraction:g}, seed {seed})")
    copied = {i for g in groups for i in g}
    singles = [i for i in range(n) if i not in copied]
    left_out: list[int] = []
    n_cal = min(int(round(n * fraction)), len(singles))
    if n_cal >= 1:  # as holdout_split draws, over the copy-free images
        perm = np.random.default_rng(seed).permutation(len(singles))
        cal_idx = sorted(singles[k] for k in perm[:n_cal])
        how = (f"drawn from the {len(singles)} without a byte-identical copy; the {len(copied)} "
               f"copied images are fitted on")
    else:  # every image has a copy: whole sets held out, one image of each calibrates
        sets = [[i] for i in singles] + groups
        sets.sort()
        try:
            _, cal_units = holdout_split(len(sets), fraction, seed)
        except ValueError as exc:
            raise ValueError(f"{exc}; the {n} training images are {len(sets)} distinct ones and "
                             f"byte-identical copies of them, held out together") from None
        cal_idx = sorted(sets[u][0] for u in cal_units)
        left_out = sorted(i for u in cal_units for i in sets[u][1:])
        how = (f"every image has a byte-identical copy: {len(cal_units)} sets held out, one "
               f"image of each calibrating, {len(left_out)} copies left out of both sides")
    out = set(cal_idx) | set(left_out)
    fit_idx = [i for i in range(n) if i not in out]  # never empty: copied images, or a set left
    return ([train_paths[i] for i in fit_idx], [train_paths[i] for i in cal_idx],
            f"held-out {len(cal_idx)} of {n} training images (calibration fraction {fraction:g}, "
            f"seed {seed}; {how})")


def _same_files(these: Sequence[Path], those: Sequence[Path]) -> int:
    """How many of ``these`` are one of ``those``: the same file, or a byte-identical copy
    (:func:`~..files.copies_across`: hashed only where the sizes agree, each file once per
    process; an unreadable file is none: the fit names it)."""
    resolved = {p.resolve() for p in those}
    copies = {i for i, _ in copies_across(these, those)}
    return sum(i in copies or p.resolve() in resolved for i, p in enumerate(these))


def _held_out_fraction(calibration: Sequence[Path | str] | None,
                       calibration_fraction: float | None) -> float:
    """``calibration_fraction``, or the default where None; refused with ``calibration``."""
    if calibration is not None and calibration_fraction is not None:
        raise ValueError("calibration_fraction applies only without calibration=DIR (it is the "
                         "share of the training images held out); drop one of them")
    return DEFAULT_CALIBRATION_FRACTION if calibration_fraction is None else calibration_fraction


def fit_split(train_paths: list[Path], calibration: Sequence[Path | str] | None,
              calibration_fraction: float | None, seed: int,
              max_pixels: int = DEFAULT_MAX_PIXELS
              ) -> tuple[list[Path], list[Path], str, list[dict[str, str]]]:
    """:func:`calibration_split` as ``fit`` draws it, and the training images left out unread:
    without ``calibration``, the headers are checked first (``image_io.image_size``) and the
    hold-out is drawn over the readable images only; the few images it draws are then decoded,
    and one that cannot be leaves the pool and the hold-out is drawn again (same seed), until
    every calibration image decodes. So no unreadable image takes a calibration place, and the
    split is :func:`calibration_split`'s over the images kept (as a distributed fit draws it
    again); where every image reads, over all of them. The images left out are skipped with
    fit's warning. ``calibration_fraction`` None = the default
    (:data:`DEFAULT_CALIBRATION_FRACTION`); it is refused with ``calibration``, which it
    does not apply to. ``fit --auto`` tunes on the fit part. The images are taken in
    :func:`calibration_split`'s order, so the skipped ones are named in it too."""
    fraction = _held_out_fraction(calibration, calibration_fraction)
    train_paths = listing_order(train_paths)
    if calibration is not None:
        return (*_split(train_paths, calibration, fraction, seed), [])
    reasons: dict[int, str] = {}
    for i, p in enumerate(train_paths):
        try:
            image_size(p, max_pixels)
        except ImageReadError as exc:
            reasons[i] = exc.reason
    readable = [p for i, p in enumerate(train_paths) if i not in reasons]
    decoded: set[Path] = set()
    while readable:
        try:
            drawn = _split(readable, None, fraction, seed)[1]
        except ValueError:
            break  # raised below, after the skipped images are named
        failed = {}
        for p in drawn:
            if p not in decoded:
                try:
                    read_image(p, max_pixels)
                    decoded.add(p)
                except ImageReadError as exc:
                    failed[p] = exc.reason
        if not failed:
            break
        reasons.update({i: failed[p] for i, p in enumerate(train_paths) if p in failed})
        readable = [p for p in readable if p not in failed]
    skipped = skip_unreadable(train_paths, sorted(reasons.items()))
    if not readable:
        raise ValueError(f"none of the {len(train_paths)} training images could be read")
    try:
        return (*_split(readable, None, fraction, seed), skipped)
    except ValueError as exc:
        if not skipped:
            raise
        raise ValueError(f"{exc} ({len(skipped)} unreadable training images skipped)") from None


def fit(
    train: Sequence[Path | str] | Path | str,
    cfg: ModelConfig | None = None,
    calibration: Sequence[Path | str] | Path | str | None = None,
    target_fpr: float = 0.01,
    calibration_fraction: float | None = None,
    progress: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    engine: Engine | None = None,
) -> Model:
    """Fit on normal images (files, folders searched recursively, globs) and calibrate.

    Without ``calibration``, a seeded ``calibration_fraction`` (default 0.2) of the readable
    training images is held out (not fitted on; byte-identical copies together, on one side)
    and its scores set the threshold at ``target_fpr`` (see :func:`fit_split`). With ``calibration`` (normal images only), the
    scorer fits on every training image; ``calibration_fraction`` is then refused. Anomalous
    labels are never used. Images above ``max_pixels`` are skipped unread (see
    ``data.image_io``). ``engine`` is None (this process) or one
    :func:`~..pipeline.engine.make_engine` made (not its name); with a distributed one, see
    :func:`.distributed_fit.fit_on_engine`.

    ``train`` and ``calibration`` may each be one path or a list; the order they list the
    images in does not matter (the images are fitted in a folder's listing order, see
    :func:`calibration_split`). The arguments are checked
    before any work (:func:`~..config.config_for_fit`: ``cfg`` as its construction checks it,
    also after it was edited, layers its backbone lacks and a method that needs class labels
    are refused), and the model keeps a copy of ``cfg``: the caller may change or reuse theirs.
    """
    cfg = config_for_fit(cfg)
    check_target_fpr("fit", target_fpr)
    check_number("fit", "calibration_fraction", calibration_fraction, 0, 1, low_open=True,
                 high_open=True, allowed=(None,))
    check_number("fit", "max_pixels", max_pixels, 1, whole=True)
    check_engine(engine)
    train = path_list(train, "train")
    calibration = None if calibration is None else path_list(calibration, "calibration")
    for name, given in (("training", train), ("calibration", calibration)):
        if given == []:
            raise ValueError(f"no {name} images given (an empty list)")
    train_paths = input_images(train, twins="once")
    if not train_paths:
        raise ValueError(f"no training images found in {', '.join(map(str, train))}")
    fit_all, cal_all, source, unread = fit_split(train_paths, calibration, calibration_fraction,
                                                 cfg.seed, max_pixels)
    if engine is not None and not engine.in_process:
        from .distributed_fit import fit_on_engine

        kept = set(fit_all) | set(cal_all)  # it draws the same split over the readable images
        model = fit_on_engine([p for p in train_paths if p in kept], cfg, engine, calibration,
                              target_fpr, _held_out_fraction(calibration, calibration_fraction),
                              progress, max_pixels)
        skipped = with_roles(unread + model.info.skipped_images, cal_all)
        return Model(model.cfg, model.extractor, model.scorer, model.calibration,
                     replace(model.info, skipped_images=skipped))
    backbone, extractor, scorer = build(cfg, progress=progress, max_pixels=max_pixels)
    runner = Runner(extractor, progress=progress)
    # streamed: the training features go batch by batch into the scorer (PatchCore's coreset),
    # the calibration images batch by batch through it, so memory does not grow with the set
    fitted = runner.fit({"model": scorer}, fit_all, skip_errors=True)
    skipped = unread + fitted.skipped
    scores, patch_scores, cal_ok = [], [], []
    for idx, feats in runner.iter_readable(cal_all, "extract calibration", skipped=skipped):
        result = runner.score_features({"model": scorer}, feats)["model"]
        cal_ok += idx
        scores.append(result.image_scores)
        if result.patch_scores is not None:
            patch_scores.append(on_image(result.patch_scores, feats))
    if not cal_ok:
        raise ValueError(f"none of the {len(cal_all)} calibration images could be read")
    return calibrated_model(cfg, backbone, extractor, scorer, np.concatenate(scores),
                            np.concatenate(patch_scores) if patch_scores else None, target_fpr,
                            source, [fit_all[i] for i in fitted.indices],
                            [cal_all[i] for i in cal_ok], with_roles(skipped, cal_all))


def with_roles(skipped: list[dict[str, str]], cal_paths: Sequence[Path]) -> list[dict[str, str]]:
    """``skipped`` as model.json lists them, each with its ``role``: "calibration" for one of
    ``cal_paths``, else "training" (see :func:`skipped_as`)."""
    cal = {display_path(p) for p in cal_paths}
    return [{**s, "role": "calibration" if s["path"] in cal else "training"} for s in skipped]


def skipped_as(info: ModelInfo, role: str) -> list[dict[str, str]]:
    """The unreadable images of ``role`` ("training" or "calibration") a fit skipped; an entry
    without a role (a model saved before roles) counts as a training image's, as it did."""
    return [s for s in info.skipped_images if s.get("role", "training") == role]


def on_image(patch_scores: np.ndarray, features: Features) -> np.ndarray:
    """The patch scores of the cells on the images (not on padding), flattened."""
    return patch_scores.ravel() if features.valid is None else patch_scores[features.valid]


def calibrated_model(cfg: ModelConfig, backbone, extractor: FeatureExtractor, scorer: Scorer,
                     cal_scores: np.ndarray, cal_patch_scores: np.ndarray | None,
                     target_fpr: float, source: str, fit_paths: Sequence[Path],
                     cal_paths: Sequence[Path], skipped: list[dict[str, str]]) -> Model:
    """The fitted :class:`Model`: threshold from the calibration images' scores, heatmap range
    from their on-image patch scores."""
    from .runner import raw_path_field  # runner imports this module

    cal = calibrate(cal_scores, target_fpr, source)
    log.info("calibration: %s", cal.summary())
    display = _display_range(cal_patch_scores, cal.threshold)
    info = ModelInfo(
        config=cfg.to_dict(),
        backbone={"name": backbone.name, "layers": list(backbone.layers),
                  "weights": backbone.weight_source.to_dict()},
        calibration=cal.to_dict(),
        train_images=[display_path(p) for p in fit_paths],  # model.json is UTF-8
        # explanations check these; read once in the process (the split's copy check read
        # the same-size ones already)
        train_image_sha256=[content_sha256(p) for p in fit_paths],
        train_images_raw=[raw_path_field(str(p)) for p in fit_paths],  # ... and open these
        calibration_images=[display_path(p) for p in cal_paths],
        skipped_images=skipped,
        display=display,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    return Model(cfg, extractor, scorer, cal, info)


def _display_range(patch_scores: np.ndarray | None, threshold: float) -> dict[str, float]:
    """Heatmap colour range: from the median normal patch score to as far above the threshold."""
    if patch_scores is None or patch_scores.size == 0:
        return {}
    lo = float(np.median(patch_scores))
    lo = min(lo, threshold)
    return {"map_vmin": lo, "map_vmax": float(threshold + max(threshold - lo, 1e-6))}


def open_model_dir(directory: Path | str
                   ) -> tuple[ModelInfo, ModelConfig, Calibration, Backbone]:
    """``directory``'s description, config, calibration and backbone (not built where its card
    is cached), checked as a model is loaded: the format version, every file's checksum, the
    config (and its input side, :meth:`~..config.ModelConfig.check_saved`), then the backbone
    weights' checksum; any damage is a one-line :class:`ModelFormatError`."""
    directory = Path(directory)
    info = checked_model_info(directory)
    try:
        config = dict(info.config)
        # Models saved before ``features.resize`` existed were fitted on stretched inputs.
        config["features"] = {"resize": "stretch", **(config.get("features") or {})}
        cfg = ModelConfig.from_dict(config, "config")
        cfg.check_saved("config")
        calibration = Calibration.from_dict(info.calibration)
    except ConfigError as exc:
        raise ModelFormatError(f"{directory}/{MODEL_JSON}: {exc}") from None
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:
        raise ModelFormatError(f"{directory}/{MODEL_JSON}: damaged model description "
                               f"({type(exc).__name__}: {exc})") from None
    try:
        backbone = build_backbone(cfg, cache_dir=directory / BACKBONE_DIR)  # exports saved with it
    except LayerRangeError as exc:
        raise ModelFormatError(f"{directory}/{MODEL_JSON}: config: {exc}") from None
    check_backbone_checksum(directory, info, backbone.weight_source.checksum)
    return info, cfg, calibration, backbone


def load_model(directory: Path | str, progress: bool = False, batch_size: int | None = None,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> Model:
    """Load a saved model, checked by :func:`open_model_dir`, all from one save of it
    (:func:`.model_dir.loaded_whole`). ``progress``, ``batch_size`` and ``max_pixels`` are
    how this run screens, not part of the model (``batch_size`` None = the config's)."""
    check_number("load_model", "batch_size", batch_size, 1, whole=True, allowed=(None,))
    check_number("load_model", "max_pixels", max_pixels, 1, whole=True)
    directory = Path(directory)

    def load() -> Model:
        info, cfg, calibration, backbone = open_model_dir(directory)
        scorer = Scorer.load(directory / SCORER_DIR, progress=progress)
        extractor = build_extractor(cfg, backbone, type(scorer), batch_size=batch_size,
                                    max_pixels=max_pixels)
        return Model(cfg, extractor, scorer, calibration, info)

    model = loaded_whole(directory, load)
    model.directory = directory
    return model
