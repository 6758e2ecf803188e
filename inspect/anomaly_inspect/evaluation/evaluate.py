"""Per-category evaluation: fit on train/good, score the test split, report metrics and resources.

Nothing here is fitted on test data: the scorer sees training features only,
and the metrics are threshold-free.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..choices import check_instance
from ..config import ModelConfig, config_for_fit
from ..data.image_io import DEFAULT_MAX_PIXELS, image_orientation, read_mask
from ..data.layout import DatasetLayoutError
from ..data.mvtec import AnomalyDataset
from ..data.samples import Sample
from ..data.transforms import ImageTransform, build_transform
from ..pipeline import Engine, Runner, build
from ..pipeline.engine import check_engine, start_engine
from ..progress import Progress
from ..resources import Timer, peak_rss_mb
from ..scorers.maps import anomaly_maps
from ..scorers.params import check_number
from .metrics import aupro, auroc, auroc_by_group, fpr_at_tpr

log = logging.getLogger(__name__)


@dataclass
class EvaluationResult:
    category: str
    method: str
    backbone: str
    weights: str
    image_size: int
    image_auroc: float
    pixel_auroc: float | None
    image_auroc_by_defect: dict[str, float]
    n_train: int
    n_test: int
    n_test_anomalous: int
    fit_seconds: float
    test_seconds: float
    test_images_per_second: float
    images_per_second: float
    memory_bank_items: int | None
    memory_bank_mb: float | None
    search_index: str | None
    #: the process's peak RSS so far (``ru_maxrss``, :func:`..resources.peak_rss_mb`), not this
    #: evaluation's own: a later evaluate() in the same process (a notebook) reports an earlier,
    #: larger peak again; run each in a fresh process to compare them
    peak_rss_mb: float
    config: dict
    runtime: str = "torch"
    #: seconds per stage: decode, backbone, embed, fit, search, maps, then export (the
    #: backbone graphs made on the first batch, 0 where they were cached; one-time, left out of
    #: ``backbone``, ``fit_seconds`` / ``test_seconds`` and the img/s; with ``--engine ray``
    #: also engine_start, likewise left out, and remote fit). Less export and engine_start
    #: they sum to at most fit_seconds + test_seconds
    stage_seconds: dict[str, float] | None = None
    #: whether this run made a backbone graph (ONNX export or int8 quantisation) rather than
    #: finding it cached: its peak RSS is then higher than a warm run's (it cannot be split)
    exported: bool = False
    search_graph: dict | None = None  # an HNSW graph's M and its fit-time check(s): excess distance
    #: of ``fit_seconds`` (stage ``fit``), the seconds the search index took to build (an HNSW
    #: graph's check and rebuilds included; the rest of the stage is mostly the coreset); None
    #: for scorers without one
    index_seconds: float | None = None
    pixel_auroc_note: str | None = None  # why there is no pixel AUROC (None when there is one)
    #: the area under the per-region-overlap curve to 30 % FPR, divided by 0.3 (MVTec AD's
    #: localisation metric, :func:`..evaluation.metrics.aupro`), over the pixels of the pixel
    #: AUROC; None where there is no pixel AUROC
    pixel_aupro: float | None = None
    #: the share of test normals flagged at the highest image threshold that flags 95 % of the
    #: anomalous test images
    image_fpr_at_tpr95: float | None = None
    #: the centre crop of the resized image that is the backbone's input (None: the whole image);
    #: ``pixel_auroc`` is then over the crop, as the published MVTec protocol crops the masks
    crop_size: int | None = None
    #: with a crop: the pixel AUROC over every pixel of each image's content, those outside the
    #: crop scored below every pixel the model saw (:func:`score_unseen`: a defect there is a miss)
    pixel_auroc_whole_image: float | None = None
    #: with a crop: the AUPRO over the same pixels as ``pixel_auroc_whole_image``
    pixel_aupro_whole_image: float | None = None
    #: with a crop and a pixel AUROC: {"anomalous": N, "of": M}, N of the M anomalous mask
    #: pixels (in the resized image's pixels) lie outside the crop, unseen by the model
    anomalous_pixels_outside_crop: dict[str, int] | None = None
    #: the built scorer's effective parameters (get_params): ``config`` holds only the
    #: config's ``scorer:`` section, which leaves the defaults (and the seed) out
    scorer_params: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def fit_remote(scorer, engine: Engine, cfg: ModelConfig, paths: list, max_pixels: int,
               progress: Progress) -> None:
    """The training split fitted on ``engine``'s workers; any unreadable image stops it."""
    from ..data.image_io import ImageReadError
    from ..pipeline.remote_fit import fit_bank_remote

    _, errors = fit_bank_remote(scorer, engine, cfg, paths, max_pixels, progress)
    if errors:
        raise ImageReadError(paths[errors[0][0]], errors[0][1])


def check_test_labels(dataset: AnomalyDataset) -> None:
    """Refuse, before any fitting or tuning, a test split without both labels (no AUROC)."""
    n_anomalous = sum(s.label == 1 for s in dataset.test)
    if not n_anomalous or n_anomalous == len(dataset.test):
        raise DatasetLayoutError(f"{dataset.name}: the test split needs normal and anomalous images "
                                 f"for an AUROC; it has {len(dataset.test) - n_anomalous} normal and "
                                 f"{n_anomalous} anomalous")


def check_dataset(dataset: AnomalyDataset, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Refuse, before any fitting or tuning, a dataset that cannot give its metrics: a test
    split without both labels (:func:`check_test_labels`) or files :func:`check_files` refuses
    (with the ``max_pixels`` budget the images are then read with)."""
    check_test_labels(dataset)
    check_files(dataset.name, [*dataset.train, *dataset.test], max_pixels=max_pixels)


def check_files(name: str, samples: Sequence[Sample], masks: bool = True,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Refuse, before any fitting, an image that cannot be read (found from headers, without
    decoding; one over ``max_pixels`` included) and, with ``masks``, a mask that cannot be read
    or has another shape than its image (it would be stretched onto it); ``name`` heads the
    error."""
    from ..data.image_io import ImageReadError, image_size

    problems = []
    for s in samples:
        try:
            width, height = image_size(s.path, max_pixels)
        except ImageReadError as exc:
            problems.append(str(exc))
            continue
        if not masks or s.mask_path is None:
            continue
        try:
            w, h = image_size(s.mask_path, max_pixels)
        except ImageReadError as exc:
            problems.append(f"{exc} (the mask of {s.path})")
            continue
        if (w, h) != (width, height):
            problems.append(f"{s.mask_path}: a {w}x{h} mask"
                            f"{_as_stored(s.mask_path, w, h, max_pixels)} for the "
                            f"{width}x{height} image {s.path}"
                            f"{_as_stored(s.path, width, height, max_pixels)}; a mask has its "
                            f"image's shape")
    if problems:
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise DatasetLayoutError(f"{name}: {len(problems)} file(s) cannot be used:\n  "
                                 + "\n  ".join(problems[:10]) + more)


def _as_stored(path: Path, width: int, height: int, max_pixels: int) -> str:
    """"" or, for a file with an EXIF orientation, that its upright ``width`` x ``height`` is
    after it, and its size as stored (a mask drawn on the stored pixels reads as the same)."""
    orientation = image_orientation(path, max_pixels)
    if orientation == 1:
        return ""
    stored = f"{height}x{width}" if orientation in (5, 6, 7, 8) else f"{width}x{height}"
    return f" (after its EXIF orientation {orientation}; {stored} as stored)"


def _pixel_auroc(masks: list[np.ndarray], maps: list[np.ndarray], name: str,
                 where: str = "", warn: bool = True) -> float | None:
    """Pixel AUROC over every test image's pixels (one mask and map per image, any shape);
    None, said once (unless not ``warn``), where the masks cannot give one (no masks, or no
    anomalous pixel in any of them), so the image AUROC is kept. ``where``: which pixels
    (e.g. " inside the 224 px crop"), for the warning."""
    if not masks:
        return None
    labels = np.concatenate([m.ravel() for m in masks])
    if not labels.any() or labels.all():
        if warn:
            log.warning("%s: the masks mark %s pixel anomalous%s: no pixel AUROC", name,
                        "no" if not labels.any() else "every", where)
        return None
    return auroc(labels, np.concatenate([m.ravel() for m in maps]))


def uncropped(amap: np.ndarray, mask_path: Path | None, height: int, width: int,
              transform: ImageTransform) -> tuple[np.ndarray, np.ndarray]:
    """The map and mask over all of a ``height`` x ``width`` image's content in the resized
    image (``image_size`` px, the padding of ``resize: pad`` left out), from ``amap``, the map
    of the centre crop the backbone saw: the pixels outside the crop are NaN in the map
    (:func:`score_unseen` scores them) and the mask is read again, as the loader crops it."""
    cfg = transform.cfg
    s, off, crop = cfg.image_size, cfg.crop_offset, cfg.output_size
    full = np.full((s, s), np.nan, np.float32)
    full[off:off + crop, off:off + crop] = amap
    mask = (read_mask(mask_path, cfg.max_pixels) if mask_path is not None
            else np.zeros((height, width), np.uint8))
    content = cfg.resized_box(height, width).slices()
    return full[content], transform.uncropped_mask(mask, height, width)[content] > 0


def score_unseen(maps: list[np.ndarray]) -> None:
    """Score, in place, the pixels outside the crop (NaN in ``maps``) just below the lowest
    score of any pixel the model saw, over the whole test set: they rank as the most normal,
    so a defect outside the crop is a miss, as it is for the detector."""
    if not maps:
        return
    floor = np.nextafter(np.float32(min(np.nanmin(m) for m in maps)), np.float32(-np.inf))
    for m in maps:
        m[np.isnan(m)] = floor


def pixel_auroc_note(has_masks: bool, masks: list[np.ndarray], method: str) -> str:
    """Why :func:`_pixel_auroc` gave none: no masks, no anomaly maps from ``method``, or masks
    that mark no (or every) pixel anomalous."""
    if not has_masks:
        return "no masks"
    if not masks:
        return f"{method} gives no anomaly maps"
    return "the masks mark no pixel anomalous" if not any(m.any() for m in masks) else \
        "the masks mark every pixel anomalous"


def evaluate(dataset: AnomalyDataset, cfg: ModelConfig | None = None, progress: bool = True,
             engine: Engine | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> EvaluationResult:
    """Fit ``cfg``'s scorer (None: the defaults) on ``dataset.train``, score ``dataset.test``.
    Refused before any fitting, as ``fit`` refuses them: a ``cfg`` that is no ModelConfig,
    whose fields (also edited since it was made) its construction refuses, or whose scorer
    cannot fit here (:func:`~..config.config_for_fit`: a method that needs class labels, a
    block the backbone lacks), and images (and masks) over ``max_pixels``
    (:func:`check_dataset`). A distributed ``engine``
    fits the memory bank on its workers (:func:`..pipeline.remote_fit.fit_bank_remote`:
    extraction and the coreset's first round there, the second round here); the test split
    is scored here either way. With ``features.crop_size`` the pixel AUROC is over the crop (the
    published protocol), and the result also gives it over every pixel of each image's content,
    those outside the crop scored as the most normal (:func:`uncropped`, :func:`score_unseen`),
    with how many anomalous mask pixels lie there."""
    check_instance("dataset", dataset, AnomalyDataset,
                   "load_mvtec(...), load_folders(...) or load_dataset(...)")
    cfg = config_for_fit(cfg)
    check_engine(engine)
    check_number("evaluate", "max_pixels", max_pixels, 1, whole=True)
    check_dataset(dataset, max_pixels)
    # without masks nothing reads the patch maps: image scores only (the same, searched faster)
    backbone, extractor, scorer = build(cfg, progress=progress, patch_maps=dataset.has_masks,
                                       max_pixels=max_pixels)
    remote = engine is not None and not engine.in_process
    runner = Runner(extractor, None if remote else engine, progress)
    train_paths = [s.path for s in dataset.train]
    if remote and getattr(engine, "start", None) is not None:  # Ray starts here, not inside
        runner.times.add("engine_start", start_engine(engine))  # the timed fit (nor its img/s)
    made = backbone.export_seconds  # graphs made here (not on remote workers): stage export
    with Timer() as fit_t:
        if remote:  # the workers' stages are not timed here
            with Progress(len(train_paths), "extract train", enabled=progress) as bar, \
                    runner.times("remote fit"):
                fit_remote(scorer, engine, cfg, train_paths, extractor.transform.max_pixels, bar)
            summary = scorer.fit_summary()
        else:
            summary = runner.fit({cfg.method: scorer}, train_paths).info[cfg.method]
        backbone.release()  # the runtime's memory arena is not needed until the test images
    fit_export = backbone.export_seconds - made
    test = dataset.test
    mask_paths = [s.mask_path for s in test] if dataset.has_masks else None
    crop = cfg.features.crop_size
    full = build_transform(extractor.transform) if crop else None  # the crop's maps made whole
    scores, maps, masks = [], [], []
    whole_maps, whole_masks = [], []  # with a crop: every content pixel
    with Timer() as test_t:
        for item in runner.score({cfg.method: scorer}, [s.path for s in test], "score test",
                                 mask_paths):
            result = item.results[cfg.method]
            scores.append(result.image_scores)
            if dataset.has_masks and result.patch_scores is not None:
                with runner.times("maps"):
                    size = item.batch.masks.shape[1:]
                    batch_maps = anomaly_maps(result.patch_scores, size).astype(np.float32)
                    for j, (amap, mask, box) in enumerate(zip(batch_maps, item.batch.masks,
                                                              item.batch.boxes, strict=True)):
                        if full is not None:  # every content pixel, those outside the crop too
                            whole = uncropped(amap, test[item.batch.indices[j]].mask_path,
                                              *item.batch.originals[j], full)
                            whole_maps.append(whole[0])
                            whole_masks.append(whole[1])
                        maps.append(amap[box.slices()].copy())  # the image's pixels, not padding
                        masks.append(mask[box.slices()].astype(bool))
    export = backbone.export_seconds - made
    fit_seconds, test_seconds = fit_t.seconds - fit_export, test_t.seconds - (export - fit_export)
    runner.times.add("backbone", -export)  # made lazily inside the first batch's backbone pass
    runner.times.add("export", export)
    outside = whole_pixel = None
    if whole_maps:
        outside = {"anomalous": sum(int((np.isnan(a) & m).sum())
                                    for a, m in zip(whole_maps, whole_masks, strict=True)),
                   "of": sum(int(m.sum()) for m in whole_masks)}
        score_unseen(whole_maps)
    image_scores = np.concatenate(scores)
    labels = np.array([s.label for s in test])
    image_auroc = auroc(labels, image_scores)
    # with a crop, the whole image's figures stand on their own: every defect may lie outside
    # the crop, where they show the miss (said once where neither scope has a defect)
    if whole_maps:
        whole_pixel = _pixel_auroc(whole_masks, whole_maps, dataset.name)
    where = f" inside the {crop} px crop" if whole_pixel is not None else ""
    pixel = _pixel_auroc(masks, maps, dataset.name, where, warn=not whole_maps or bool(where))
    note = None if pixel is not None else \
        pixel_auroc_note(dataset.has_masks, masks, cfg.method) + where
    pro = None if pixel is None else aupro(masks, maps)
    whole_pro = None if whole_pixel is None else aupro(whole_masks, whole_maps)
    if whole_pixel is None:
        outside = None
    n_train, n_test = len(train_paths), len(test)
    return EvaluationResult(
        category=dataset.name,
        method=cfg.method,
        backbone=cfg.backbone.name,
        weights=backbone.weight_source.kind,
        image_size=cfg.features.image_size,
        image_auroc=float(image_auroc),
        pixel_auroc=None if pixel is None else float(pixel),
        pixel_aupro=pro,
        image_fpr_at_tpr95=fpr_at_tpr(labels, image_scores, 0.95),
        image_auroc_by_defect={g: float(v) for g, v in
                               auroc_by_group(labels, image_scores, [s.group for s in test]).items()},
        n_train=n_train,
        n_test=n_test,
        n_test_anomalous=int(labels.sum()),
        fit_seconds=round(fit_seconds, 3),
        test_seconds=round(test_seconds, 3),
        test_images_per_second=round(n_test / test_seconds, 3),
        images_per_second=round((n_train + n_test) / (fit_seconds + test_seconds), 3),
        memory_bank_items=summary.get("memory_bank_items"),
        memory_bank_mb=summary.get("memory_bank_mb"),
        search_index=summary.get("search_index"),
        peak_rss_mb=round(peak_rss_mb(), 1),
        config=cfg.to_dict(),
        runtime=backbone.runs_on,
        stage_seconds=runner.times.to_dict(),
        exported=export > 0,
        search_graph={"m": summary["search_graph_m"], "excess": summary["search_graph_excess"]}
        if "search_graph_m" in summary else None,
        index_seconds=summary.get("index_seconds"),
        pixel_auroc_note=note,
        crop_size=crop,
        pixel_auroc_whole_image=whole_pixel,
        pixel_aupro_whole_image=whole_pro,
        anomalous_pixels_outside_crop=outside,
        scorer_params=scorer.get_params(),
    )
