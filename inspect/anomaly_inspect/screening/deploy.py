"""A deployment bundle of a saved model: the backbone graph in one format, the bank, a manifest.

``export_model(MODEL_DIR, OUT, "onnx" | "openvino")`` writes a copy of the model directory
(so ``load_model(OUT)`` and ``anomaly-inspect screen OUT ...`` score with the same code, and
its checksums cover every file) plus, for ``openvino``, the backbone as OpenVINO IR
(``backbone/*.xml`` / ``.bin``, f32 weights, checked against the ONNX graph on a random
batch), and ``manifest.json``: what a deployment outside this toolkit needs to feed the graph
and read the bank (input name, shape and normalisation, outputs, the patch embedding, the
scorer and its state file, the threshold). A model is exported only in the format of the
runtime it was fitted with (``onnx``: onnxruntime f32 / int8; ``openvino``: openvino f32 /
bf16): its bank was built from that runtime's features, and another runtime's differ.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from .model_dir import (
    BACKBONE_DIR,
    SCORER_DIR,
    _replace_model,
    check_replaceable,
    read_model_info,
    verify_model_files,
    write_checksums,
)

FORMATS = {"onnx": "onnxruntime", "openvino": "openvino"}  # format -> the runtime it serves
MANIFEST_JSON = "manifest.json"


class ExportMismatchError(ValueError):
    """The model was fitted with a runtime whose graph is not the format asked for."""


def _graph_io(path: Path) -> dict[str, Any]:
    """Input and outputs of an ONNX graph (names, shapes with None for dynamic axes)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def shape(t) -> list:
        return [d if isinstance(d, int) else None for d in t.shape]

    (inp,) = session.get_inputs()
    return {"input": {"name": inp.name, "shape": shape(inp), "dtype": "float32"},
            "outputs": [{"name": o.name, "shape": shape(o)} for o in session.get_outputs()]}


def _to_openvino(onnx_path: Path, xml_path: Path, height: int, width: int) -> float:
    """Convert one ONNX graph to OpenVINO IR (f32 weights) and return the largest relative
    difference between the two on a random batch of two images, both run by OpenVINO f32."""
    try:
        import openvino as ov
    except ImportError as exc:
        raise RuntimeError("export --format openvino needs the openvino package: "
                           "pip install 'anomaly-inspect[openvino]'") from exc
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml_path), compress_to_fp16=False)
    x = np.random.default_rng(0).standard_normal((2, 3, height, width)).astype(np.float32)
    core = ov.Core()
    outs = []
    for path in (onnx_path, xml_path):
        compiled = core.compile_model(core.read_model(str(path)), "CPU",
                                      {"INFERENCE_PRECISION_HINT": "f32"})
        result = compiled(x)
        outs.append([np.asarray(result[o]) for o in compiled.outputs])
    return max(float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))
               for a, b in zip(outs[1], outs[0], strict=True))


def export_model(model_dir: Path | str, out: Path | str, fmt: str = "onnx",
                 overwrite: bool = False) -> dict[str, Any]:
    """Write the deployment bundle of ``model_dir`` to ``out`` (atomically; refuses to replace
    anything but a model directory, and that only with ``overwrite``); returns the manifest."""
    model_dir, out = Path(model_dir), Path(out)
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}, got {fmt!r}")
    verify_model_files(model_dir)
    info = read_model_info(model_dir)
    backbone = info.config.get("backbone", {})
    runtime = backbone.get("runtime", "onnxruntime")
    precision = backbone.get("precision", "f32")
    if runtime != FORMATS[fmt]:
        fits = [f for f, r in FORMATS.items() if r == runtime]
        hint = (f"export it with --format {fits[0]}" if fits else
                "a model fitted in torch has no exported graph")
        raise ExportMismatchError(
            f"{model_dir}: fitted with runtime {runtime} {precision}, so its bank holds that "
            f"runtime's features; --format {fmt} would run the backbone on {FORMATS[fmt]}. "
            f"Re-fit with --runtime {FORMATS[fmt]}, or {hint}")
    graphs = sorted((model_dir / BACKBONE_DIR).glob("*.onnx"))
    if not graphs:
        raise ExportMismatchError(f"{model_dir / BACKBONE_DIR}: no exported backbone graph in "
                                  f"the model directory; re-fit it to export it")
    check_replaceable(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o755)
    try:
        shutil.copytree(model_dir, tmp, dirs_exist_ok=True)
        for stale in (tmp / MANIFEST_JSON, *(tmp / BACKBONE_DIR).glob("*.xml"),
                      *(tmp / BACKBONE_DIR).glob("*.bin")):
            stale.unlink(missing_ok=True)  # a model directory that was itself an export
        size = int(info.config.get("features", {}).get("crop_size")
                   or info.config.get("features", {}).get("image_size"))
        entries = []
        for onnx_path in graphs:
            entry = {"onnx": f"{BACKBONE_DIR}/{onnx_path.name}", **_graph_io(onnx_path)}
            if fmt == "openvino":
                xml = tmp / BACKBONE_DIR / f"{onnx_path.stem}.xml"
                entry["openvino"] = {"xml": f"{BACKBONE_DIR}/{xml.name}",
                                     "bin": f"{BACKBONE_DIR}/{xml.stem}.bin",
                                     "max_rel_diff_vs_onnx": _to_openvino(onnx_path, xml, size, size)}
            entries.append(entry)
        scorer = json.loads((model_dir / SCORER_DIR / "scorer.json").read_text(encoding="utf-8"))
        manifest = {
            "format": fmt, "runtime": runtime, "precision": precision,
            "toolkit_version": __version__, "source_model": str(model_dir.resolve()),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "backbone": {"name": info.backbone.get("name"), "layers": info.backbone.get("layers"),
                         "weights_checksum": info.backbone.get("weights", {}).get("checksum"),
                         "graphs": entries},
            "preprocess": {"color": "RGB", "scale": "pixel / 255", "input_size": size,
                           **{k: info.config.get("features", {}).get(k)
                              for k in ("image_size", "crop_size", "resize")},
                           "mean": _normalisation(info, "mean"), "std": _normalisation(info, "std")},
            "embedding": {k: info.config.get("features", {}).get(k)
                          for k in ("aggregate", "embed_dim", "finest_stage", "equal_stage_weights")},
            "scorer": {"name": scorer.get("name"), "params": scorer.get("params"),
                       "state": f"{SCORER_DIR}/scorer_state.safetensors"},
            "threshold": info.calibration.get("threshold"),
            "target_fpr": info.calibration.get("target_fpr"),
            "usage": "anomaly_inspect.load_model(DIR).score(paths), or: anomaly-inspect screen DIR IMAGES",
        }
        (tmp / MANIFEST_JSON).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        write_checksums(tmp)
        if out.exists():
            _replace_model(tmp, out)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _normalisation(info, key: str) -> list[float]:
    """The model's input mean / std: its backbone's own (timm's pretrained_cfg; read from the
    backbone's cached card, so this builds no model where one is cached)."""
    from ..features.backbone import Backbone

    b = info.config.get("backbone", {})
    return [float(v) for v in getattr(Backbone(b.get("name"), b.get("layers"), b.get("weights"),
                                               runtime="torch"), key)]
