"""A deployment bundle of a saved model: the backbone graph in one format, the bank, a manifest.

``export_model(MODEL_DIR, OUT, "onnx" | "openvino")`` writes a copy of the model directory
(so ``load_model(OUT)`` and ``anomaly-inspect screen OUT ...`` score with the same code, and
its checksums cover every file) plus, for ``openvino``, the backbone as OpenVINO IR
(``backbone/*.xml`` / ``.bin``, f32 weights, checked against the ONNX graph on a random
batch: one differing by more than :data:`TOLERANCE` is refused), and ``manifest.json``: what
a deployment outside this toolkit needs to feed the graph and read the bank (how a file is
decoded, the order of resize and normalisation, input name and shape, where a padded image's
content lies, outputs, how the patch embedding is formed from them, which grid cells are
scored, the scorer's input, state file, patch- and image-score rules and threshold;
:data:`MANIFEST_VERSION`). A model is exported only in the format of the
runtime it was fitted with (``onnx``: onnxruntime f32 / int8; ``openvino``: openvino f32 /
bf16): its bank was built from that runtime's features, and another runtime's differ.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..choices import EXPORT_FORMATS as FORMATS  # format -> the runtime it serves
from ..config import FeatureConfig
from ..data.image_io import REDUCE_ABOVE_PIXELS, REDUCE_FACTORS
from ..data.loader import reduced_side
from ..features.runtime import (
    first_line,
    load_openvino,
    max_rel_diff,
    openvino_telemetry_declined,
    require_runtime,
)
from ..files import overlaps
from .model import open_model_dir
from .model_dir import (
    BACKBONE_DIR,
    CHECKSUMS_JSON,
    MODEL_FILES,
    SCORER_DIR,
    ModelFormatError,
    check_replaceable,
    read_checksums,
    staged_model_dir,
    write_checksums,
)

MANIFEST_JSON = "manifest.json"
#: ``manifest_version`` of the manifests this version writes: bumped when a field is added or
#: changes meaning (2: the padded content box, the scored cells, the embedding's steps per stage
#: and the scorer's input; 3: the scorer's views and its patch- and image-score rules;
#: version-1 manifests have no ``manifest_version``). Not bumped for ``preprocess.decode`` and
#: the spelled-out ``preprocess.order``: they state rules every bundle has followed (no field
#: changed meaning, nothing a version-3 reader reads differs), and a reader that refuses
#: versions it does not know would refuse new bundles for nothing; test for the key. Loading a
#: bundle never reads its manifest: a bundle with an older one loads and screens as before.
MANIFEST_VERSION = 3
#: largest max relative difference an exported f32 graph may have from its reference (the IR
#: from its ONNX graph; the backbone-alone export's ONNX graph from torch); they agree to a few
#: 1e-6
TOLERANCE = 1e-4


class ExportMismatchError(ValueError):
    """The model was fitted with a runtime whose graph is not the format asked for."""


class ExportCheckError(RuntimeError):
    """An exported graph differs from its reference by more than :data:`TOLERANCE`."""


def _graph_io(path: Path) -> dict[str, Any]:
    """Input and outputs of the ONNX graph at ``path``, a model's file (names, shapes with None
    for dynamic axes); an unreadable one is refused naming it."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelFormatError(f"{path}: not a readable ONNX graph ({first_line(exc)})") from None

    def shape(t) -> list:
        return [d if isinstance(d, int) else None for d in t.shape]

    (inp,) = session.get_inputs()
    return {"input": {"name": inp.name, "shape": shape(inp), "dtype": "float32"},
            "outputs": [{"name": o.name, "shape": shape(o)} for o in session.get_outputs()]}


def _to_openvino(onnx_path: Path, xml_path: Path, height: int, width: int, source: Path) -> float:
    """Convert one ONNX graph to OpenVINO IR (f32 weights) and return the largest relative
    difference between the two on a random batch of two images, both run by OpenVINO f32. A
    graph OpenVINO cannot convert or run is refused naming ``source``, the model's file."""
    require_runtime("openvino", "export --format openvino")
    ov = load_openvino()

    x = np.random.default_rng(0).standard_normal((2, 3, height, width)).astype(np.float32)
    try:
        with openvino_telemetry_declined():  # convert_model decides again whether to send
            converted = ov.convert_model(str(onnx_path))
        ov.save_model(converted, str(xml_path), compress_to_fp16=False)
        core = ov.Core()
        outs = []
        for path in (onnx_path, xml_path):
            compiled = core.compile_model(core.read_model(str(path)), "CPU",
                                          {"INFERENCE_PRECISION_HINT": "f32"})
            result = compiled(x)
            outs.append([np.asarray(result[o]) for o in compiled.outputs])
    except Exception as exc:  # OpenVINO raises its own exception types
        raise ModelFormatError(f"{source}: OpenVINO cannot convert or run this graph "
                               f"({first_line(exc)})") from None
    return max_rel_diff(outs[1], outs[0])


def _model_file_names(model_dir: Path, listed: dict | None) -> list[str]:
    """The files of a model directory that a bundle copies: those its checksums list
    (``listed``; or, for a model saved before checksums, the model files and its exported
    graphs), never other files a user keeps there, nor the checksum list itself: the bundle's
    is written last, and a staging folder holding one is taken for a complete model (the
    files in it that the list does not name for the user's, given into ``--out`` after an
    error or a kill)."""
    if listed is None:
        names = {f for f in MODEL_FILES if (model_dir / f).is_file()}
        names |= {f"{BACKBONE_DIR}/{p.name}" for p in (model_dir / BACKBONE_DIR).glob("*.onnx")}
    else:
        names = set(listed) | {f for f in MODEL_FILES if (model_dir / f).is_file()}
    stale = {MANIFEST_JSON, CHECKSUMS_JSON}  # remade: the list (last), a bundle's manifest, IR
    return sorted(n for n in names if n not in stale and not n.endswith((".xml", ".bin")))


def export_model(model_dir: Path | str, out: Path | str, fmt: str | None = None,
                 overwrite: bool = False) -> dict[str, Any]:
    """Write the deployment bundle of ``model_dir`` to ``out`` in format ``fmt`` (None: the
    format of the runtime the model was fitted with). The model is checked as
    :func:`.model.load_model` checks it, and refused where no graph it holds would run. Atomic;
    refuses to replace anything but a model directory, and that only with ``overwrite``.
    Returns the manifest."""
    model_dir, out = Path(model_dir), Path(out)
    info, cfg, calibration, backbone = open_model_dir(model_dir)
    runtime, precision = cfg.backbone.runtime, cfg.backbone.precision
    fits = [f for f, r in FORMATS.items() if r == runtime]
    if fmt is None:
        if not fits:
            raise ExportMismatchError(f"{model_dir}: fitted with runtime {runtime}, which runs no "
                                      f"exported graph; re-fit with --runtime onnxruntime or "
                                      f"openvino to export it")
        fmt = fits[0]
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}, got {fmt!r}")
    if runtime != FORMATS[fmt]:
        other = f", or export it with --format {fits[0]}" if fits else ""
        raise ExportMismatchError(
            f"{model_dir}: fitted with runtime {runtime} {precision}, so its bank holds that "
            f"runtime's features; --format {fmt} would run the backbone on {FORMATS[fmt]}. "
            f"Re-fit with --runtime {FORMATS[fmt]}{other}")
    src, dst = model_dir.resolve(), out.resolve()
    if overlaps(src, dst):
        raise ValueError(f"{out}: the bundle must be a folder outside the model directory "
                         f"{model_dir} (and not contain it)")
    check_replaceable(out, overwrite=True)  # with or without overwrite: only a model goes
    listed = read_checksums(model_dir)
    names = _model_file_names(model_dir, listed)
    graphs = [n for n in names if n.startswith(f"{BACKBONE_DIR}/") and n.endswith(".onnx")]
    if not graphs:
        raise ExportMismatchError(f"{model_dir / BACKBONE_DIR}: no exported backbone graph in "
                                  f"the model directory; re-fit it to export it")
    size = cfg.features.input_size
    entries = [_graph_entry(model_dir, name, precision, size) for name in graphs]
    if not any(e["runs"] for e in entries):
        raise ExportMismatchError(f"{model_dir}: {_none_runs(entries, precision, size)}, so a "
                                  f"bundle of it could not score; re-fit the model")
    entries.sort(key=lambda e: not e["runs"])
    with staged_model_dir(out, overwrite) as tmp:
        for name in names:
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(model_dir / name, tmp / name)
        if fmt == "openvino":
            for entry in entries:
                onnx_path = tmp / entry["onnx"]
                xml = onnx_path.with_suffix(".xml")
                diff = _to_openvino(onnx_path, xml, size, size, model_dir / entry["onnx"])
                if not diff <= TOLERANCE:
                    raise ExportCheckError(
                        f"{out}: not written: the OpenVINO IR of {model_dir / entry['onnx']} "
                        f"differs from the ONNX graph by {diff:.1e} (max relative difference "
                        f"on one random batch), more than the f32 tolerance {TOLERANCE:.0e}")
                entry["openvino"] = {
                    "xml": f"{BACKBONE_DIR}/{xml.name}", "bin": f"{BACKBONE_DIR}/{xml.stem}.bin",
                    "inference_precision_hint": precision, "max_rel_diff_vs_onnx": diff}
        scorer = json.loads((tmp / SCORER_DIR / "scorer.json").read_text(encoding="utf-8"))
        features = cfg.features
        views = _views(features.views)
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "format": fmt, "runtime": runtime, "precision": precision,
            "toolkit_version": __version__, "source_model": str(src),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "backbone": {"name": info.backbone.get("name"), "layers": info.backbone.get("layers"),
                         "weights_checksum": backbone.weight_source.checksum,
                         "graphs": entries},
            "preprocess": {"color": "RGB", "scale": "pixel / 255", "input_size": size,
                           "image_size": features.image_size, "crop_size": features.crop_size,
                           "resize": features.resize,
                           "interpolation": "bilinear (OpenCV INTER_LINEAR)",
                           "order": PREPROCESS_ORDER,
                           "decode": _decode_rules(features.image_size),
                           "mean": [float(v) for v in backbone.mean],
                           "std": [float(v) for v in backbone.std],
                           "content_box": _content_box(features.resize)},
            "embedding": {"aggregate": features.aggregate,
                          "embed_dim": features.embed_dim,  # the setting (a cap), as configured
                          "width": _embedding_width(features, entries[0]),
                          "finest_stage": features.finest_stage,
                          "equal_stage_weights": features.equal_stage_weights,
                          "stages": _embedding_stages(features, entries[0]),
                          "steps": EMBEDDING_STEPS,
                          "scored_cells": _scored_cells(features.resize)},
            "scorer": {"name": scorer.get("name"), "params": scorer.get("params"),
                       "state": f"{SCORER_DIR}/scorer_state.safetensors",
                       **_scorer_input(scorer.get("name"), scorer.get("params") or {}),
                       "views": views,
                       **_score_rules(scorer.get("name"), scorer.get("params") or {},
                                      "views" in views)},
            "threshold": calibration.threshold,
            "target_fpr": calibration.target_fpr,
            "usage": "anomaly_inspect.load_model(DIR).score(paths), or: anomaly-inspect screen DIR "
                     "IMAGES (with anomaly-inspect installed: the backbone is rebuilt from its "
                     "weights to check their checksum)",
        }
        (tmp / MANIFEST_JSON).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        write_checksums(tmp)
        _same_as_source(model_dir, listed, tmp, names)
    return manifest


def _graph_entry(model_dir: Path, name: str, precision: str, size: int) -> dict[str, Any]:
    """The manifest entry of the graph ``name``: its input and outputs, whether the model runs
    it (at int8 the int8 graph, otherwise the f32 one, taking the model's input size) and its
    precision."""
    int8 = "-int8-" in name
    io = _graph_io(model_dir / name)
    runs = int8 == (precision == "int8") and io["input"]["shape"][1:] == [3, size, size]
    entry = {"onnx": name, "runs": runs,
             "precision": "int8" if int8 else precision if runs else "f32", **io}
    if precision == "int8" and not int8:
        entry["role"] = "the f32 graph the int8 one was quantised from"
    return entry


def _embedding_width(features: FeatureConfig, entry: dict[str, Any]) -> int:
    """The width of each patch's embedding (the bank's rows) from the stage outputs of the
    graph ``entry`` (one the model runs); the config's ``embed_dim`` only caps it: a stage
    wider than ``embed_dim / n_stages`` is pooled down to that width."""
    stages = [o["shape"][1] for o in entry["outputs"] if o["name"].startswith("stage")]
    return features.embedding().output_dim(stages)


#: how the patch embedding is formed from the graph's stage outputs
#: (:class:`~..features.patch_embed.PatchEmbedding`); each stage's own numbers are in
#: ``embedding.stages``
EMBEDDING_STEPS = [
    "1. each stage output (1, C, h_i, w_i) is summarised per channel over the k x k "
    "neighbourhood of each cell (k = aggregate; stride 1, zero padding k // 2, the zeros counted "
    "in every mean; k = 1: the map as is): 'mean': the k x k mean (C values); 'rows' (the finest "
    "stage only, finest_stage): the mean of each of the k rows (C * k values, channel-major: "
    "index c * k + r, r = 0 the row above); 'full': all k * k values (index c * k * k + r * k + "
    "col). The finest stage (stage0) takes finest_stage; every coarser stage 'mean'",
    "2. a stage wider than cap = max(1, embed_dim // number of stages) (embed_dim null: no "
    "cap) is pooled over its channels to cap values: adaptive average pooling (torch "
    "adaptive_avg_pool1d: value j is the mean of channels floor(j * W / cap) .. "
    "ceil((j + 1) * W / cap) - 1 of its W values)",
    "3. a stage on a coarser grid than stage0's (h, w) is upsampled to it bilinearly with "
    "align_corners=False (torch F.interpolate; source coordinate (x + 0.5) * w_i / w - 0.5, "
    "clamped at 0)",
    "4. with equal_stage_weights each stage's values are divided by sqrt(its width after step 2)",
    "5. the stages are concatenated in stage order: each cell (i, j) of stage0's grid, row-major "
    "(i * w + j), has one row of width embedding.width, not L2-normalised: the rows of "
    "the bank (memory_bank in the scorer's state) are such rows",
]


def _embedding_stages(features: FeatureConfig, entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Per stage output of the graph ``entry`` (one the model runs): its neighbourhood summary,
    its width before and after the cap (:data:`EMBEDDING_STEPS`), whether it is upsampled."""
    embedding = features.embedding()
    stages = [o for o in entry["outputs"] if o["name"].startswith("stage")]
    cap = None if embedding.embed_dim is None else max(1, embedding.embed_dim // len(stages))
    finest = stages[0]["shape"][2:]
    out = []
    for i, o in enumerate(stages):
        mode = embedding.finest if i == 0 else "mean"
        summary = o["shape"][1] * {"mean": 1, "rows": embedding.aggregate,
                                   "full": embedding.aggregate ** 2}[mode]
        width = summary if cap is None else min(summary, cap)
        out.append({"output": o["name"], "channels": o["shape"][1], "neighbourhood": mode,
                    "summary_width": summary, "width": width, "pooled_to_cap": width < summary,
                    "upsampled": o["shape"][2:] != finest})
    return out


#: the order in which an image becomes the graph's input (:func:`~..data.image_io.read_image`,
#: :class:`~..data.transforms.ImageTransform`): the resize, padding and crop work on 8-bit
#: samples, so x / 255 after them is not x / 255 resized (up to 4e-3 apart in a score)
PREPROCESS_ORDER = (
    "1. decode the file to an upright h x w x 3 uint8 RGB image (preprocess.decode); "
    "2. resize that uint8 image to image_size with cv2.resize INTER_LINEAR (OpenCV's "
    "fixed-point bilinear on uint8: the result is uint8, rounded): stretch to image_size x "
    "image_size, or pad: to the content box's height x width (content_box), then mirror padding "
    "cv2.copyMakeBorder BORDER_REFLECT_101 to image_size x image_size; "
    "3. centre crop to crop_size if set (rows and columns o .. o + crop_size - 1, o = "
    "(image_size - crop_size) // 2), still uint8; "
    "4. x / 255 in float32 (scale: only now, never before the resize); "
    "5. (x - mean) / std per channel (R, G, B); "
    "6. HWC to CHW, batch axis first: (1, 3, input_size, input_size) float32")


def _decode_rules(image_size: int) -> dict[str, Any]:
    """How :func:`~..data.image_io.read_image` turns a file into the uint8 RGB image the resize
    takes, for a model resized to ``image_size`` (the reduced JPEG decode depends on it), the
    threshold and side from the loader's own constants so that the manifest cannot drift from
    them."""
    min_side = reduced_side(image_size)
    return {
        "result": "an upright h x w x 3 uint8 RGB image; h, w (content_box) are its sides",
        "orientation": "the EXIF orientation (2-8; a TIFF's orientation tag too) is applied "
                       "once, so the image is upright; the reduced decode below reads the sides "
                       "as stored",
        "channels": "grey: copied to R, G and B; alpha: dropped (not composited); palette: "
                    "its colours; OpenCV's BGR order turned to RGB",
        "samples": {
            "uint8": "as stored",
            "uint16": "round(x / 257) (cv2.convertScaleAbs with alpha 1 / 257; not OpenCV's "
                      "cv2.imread IMREAD_COLOR, which keeps the high byte, x >> 8)",
            "other_integers": "round(x * 255 / M), M the type's maximum (int16: 32767, "
                              "uint32: 2**32 - 1); a signed image with a negative sample is "
                              "refused",
            "float": "NaN -> 0, +inf -> 1, -inf -> 0, clipped to [0, 1], then "
                     "floor(x * 255 + 0.5) in the image's float type"},
        "reduced_jpeg": {
            "above_pixels": REDUCE_ABOVE_PIXELS, "min_side": min_side,
            "factors": list(REDUCE_FACTORS),
            "rule": f"a JPEG whose stored width * height is above {REDUCE_ABOVE_PIXELS:,} "
                    f"pixels (above_pixels) is decoded at 1 / f of its size by libjpeg's DCT "
                    f"scaling (cv2.imdecode with IMREAD_REDUCED_COLOR_f: ceil(width / f) x "
                    f"ceil(height / f)), f the largest of factors with min(width, height) // f "
                    f">= min_side ({min_side}: from image_size, whatever crop_size); where no "
                    f"factor keeps that side, and for every other image, f = 1 (full size)"},
    }


def _content_box(resize: str) -> dict[str, str]:
    """Where an h x w image's content lies in the model input
    (:meth:`~..data.transforms.TransformConfig.content_box`), as formulas."""
    if resize == "stretch":
        box = {"top": "0", "left": "0", "height": "image_size", "width": "image_size"}
    else:
        box = {"scale": "image_size / max(h, w)",
               "height": "min(image_size, max(1, round(h * scale)))",
               "width": "min(image_size, max(1, round(w * scale)))",
               "round": "Python's round: halves to the even integer",
               "top": "(image_size - height) // 2", "left": "(image_size - width) // 2",
               "padding": "top rows above, image_size - top - height below, left columns "
                          "left, image_size - left - width right: cv2.copyMakeBorder "
                          "BORDER_REFLECT_101 of the resized image"}
    return {**box, "after_crop": "with crop_size set, o = (image_size - crop_size) // 2: "
                                 "top' = max(top - o, 0), left' = max(left - o, 0), height' = "
                                 "max(min(top + height - o, crop_size) - top', 1), width' "
                                 "likewise; input_size is crop_size or image_size"}


def _scored_cells(resize: str) -> str:
    """Which cells of the embedding's grid a patch scorer scores
    (:func:`~..features.extractor.valid_grid`)."""
    if resize == "stretch":
        return "every cell"
    return ("the cells whose centre lies in the content box (after the crop): row i of h is "
            "scored where top' <= (i + 0.5) * input_size / h < top' + height', column j of w "
            "where left' <= (j + 0.5) * input_size / w < left' + width' (where no centre "
            "does, the one cell clip(floor((top' + height' / 2) / (input_size / h)), 0, h - 1), "
            "likewise for columns); the other cells lie on the padding: they are not searched "
            "and take no part in the image score (scorer.image_score)")


def _views(kind: str) -> dict[str, Any]:
    """``features: views`` as a deployment needs it: the views of each image whose pooled
    outputs the scorer also reads, and how an image's score is formed from them."""
    from ..features.views import view_params

    views = view_params(kind)
    if not views:
        return {"kind": kind}
    return {"kind": kind,
            "views": [{"rotate_degrees": a, "hflip": f} for a, f in views],
            "view_rule": "on the normalised input: flip horizontally first (if hflip), then rotate "
                         "counter-clockwise (torch.rot90, exact for multiples of 90 on the square "
                         "input; other angles: replicate-pad to the diagonal, bilinear rotation, "
                         "centre crop back)",
            "score": "the mean of the scorer's score of the image itself and of each view"}


def _scorer_input(name: str | None, params: dict[str, Any]) -> dict[str, Any]:
    """What the scorer ``name`` reads (its ``requires``) and whether it L2-normalises it first
    (``normalize``: the knn family; no other scorer normalises its input)."""
    from ..scorers import get_scorer_class

    reads = {"patches": "the patch embedding (embedding section): one row per cell",
             "pooled": "the graph output 'pooled': the backbone's globally pooled pre-logit "
                       "vector, over the whole input (padding included)",
             "blocks": "the L2 norm per channel of stage outputs and of the graph output "
                       "'final', over every cell"}
    requires = get_scorer_class(name).requires if name else ()
    return {"input": list(requires), "input_meaning": {r: reads[r] for r in requires},
            "l2_normalized": bool(params.get("normalize", False))}


def _score_rules(name: str | None, params: dict[str, Any], views: bool) -> dict[str, Any]:
    """How the scorer ``name`` with saved ``params`` scores a patch and an image, as formulas an
    outside reimplementation can follow (:func:`~..scorers.patchcore.reweight_image_scores`,
    :func:`~..scorers.patchcore.weighted_scores`, :class:`~..scorers.patch_gaussian.
    PatchMahalanobis`); ``views``: the model scores views too (``scorer.views``)."""
    from ..scorers import get_scorer_class
    from ..scorers.patch_gaussian import PatchMahalanobis
    from ..scorers.patchcore import PatchCore

    cls = get_scorer_class(name) if name else None
    per_view = " (with scorer.views: per view, then their mean)" if views else ""
    largest = ("the largest patch score over the scored cells (embedding.scored_cells)"
               + per_view)
    if cls is not None and issubclass(cls, PatchCore):
        patch = ("per scored cell, x its embedding row: the Euclidean (L2) distance from x "
                 "to its nearest row m* of memory_bank (in the scorer's state; float32; exact: an "
                 "hnsw or ivf bank's search may give upper bounds, but never for the cells the "
                 "image score reads)")
        if params.get("soft_weight", False):
            patch += ("; the patch score is that distance times sqrt(item_weights[m*]) "
                      "(item_weights: the state's weight of each "
                      "bank row, its LOF score; m* is still the nearest row by plain distance)")
        b = int(params.get("num_neighbors", 1))
        if b <= 1:
            image = f"num_neighbors = {b}: {largest}"
        else:
            image = (f"num_neighbors = b = {b}, the paper's re-weighting (Roth et al. 2022): t = "
                     f"the scored cell with the largest patch score s* (the first in row-major "
                     f"order on ties), x_t its embedding row, m* its nearest bank row; B = "
                     f"min(b, the number of rows of memory_bank); where B is 1, image score = "
                     f"s*; else N = the B rows of memory_bank nearest to m* (Euclidean, exact; "
                     f"m* itself first); d_k = ||x_t - n_k|| for each n_k "
                     f"in N; image score = (1 - exp(min_k d_k) / sum_k exp(d_k)) * s* (float64, "
                     f"stored as float32){per_view}; the threshold is on this score")
        return {"patch_score": patch, "image_score": image}
    if cls is not None and issubclass(cls, PatchMahalanobis):
        return {"patch_score": "per scored cell, x its embedding row: (x - mean)^T precision "
                               "(x - mean), the squared Mahalanobis distance (mean and precision "
                               "in the scorer's state; float32)",
                "image_score": largest}
    where = f"{cls.__module__}.{cls.__name__}" if cls is not None else "unknown"
    return {"patch_score": None,
            "image_score": f"the scorer's own score of its input ({where}); it scores no "
                           f"patches{per_view}"}


def _none_runs(entries: list[dict[str, Any]], precision: str, size: int) -> str:
    """Why none of the graphs ``entries`` would run."""
    kinds = [e for e in entries if ("-int8-" in e["onnx"]) == (precision == "int8")]
    if not kinds:
        return (f"it runs at {precision} and holds no "
                f"{'int8' if precision == 'int8' else 'f32'} graph")
    sizes = sorted({"x".join(map(str, e["input"]["shape"][2:])) for e in kinds})
    return (f"it runs on {size}x{size} inputs and its {precision} graphs take "
            f"{', '.join(sizes)}")


def _same_as_source(model_dir: Path, listed: dict | None, copy: Path, names: list[str]) -> None:
    """Refuse a copy whose files differ from the source's checksum list ``listed`` (a file
    changed between the check and the copy)."""
    if listed is None:
        return
    copied = read_checksums(copy) or {}
    for name in names:
        if name in listed and copied.get(name, {}).get("sha256") != listed[name]["sha256"]:
            raise ModelFormatError(f"{model_dir / name}: changed while it was exported; "
                                   f"export again")
