"""``anomaly-inspect export``: a saved model, or the frozen backbone alone, for deployment.

``export MODEL_DIR --format onnx|openvino --out DIR`` writes the model's deployment bundle
(the backbone graph in that format, the bank, ``manifest.json``; a model directory itself, so
``screen DIR`` scores with the same code). A model is exported only in the format of the
runtime it was fitted with. Its OpenVINO IR is checked against its ONNX graph on one random
batch, with the tolerance below: an IR beyond it is an error and ``--out`` is left as it was.

``export --out FILE.onnx [model options]`` writes the backbone alone: the f32 graph the
``onnxruntime`` runtime runs (a config of another runtime or precision is refused). Input
``images`` (B, 3, S, S) float32, S the config's crop size (else its image size), normalised
with the model's mean / std; outputs ``stage0``, ``stage1``, ... (the configured stages) and,
with ``--pooled``, ``pooled`` (B, D). The batch axis is dynamic. The export is checked
against torch on one random batch before it is written: a graph that cannot be loaded, or
differs from torch by more than 1e-4 (``TOLERANCE``, max relative difference), is an error and
``--out`` is left as it was.
"""

from __future__ import annotations

import argparse
import shutil

from ..choices import EXPORT_FORMATS
from .common import (
    add_model_args,
    check_writable,
    given_flags,
    model_config_from_args,
    nonempty_path,
    options_of,
    print_table,
)

#: model options export has no use for: the backbone alone is always its f32 ONNX graph (what
#: the onnxruntime runtime runs at f32), with a dynamic batch axis, taking the resized input,
#: without a scorer; a saved model brings its own settings
NOT_OFFERED = ("method", "runtime", "precision", "resize", "batch_size")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a saved model (or the backbone alone) for deployment",
                       description=__doc__)
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """All of export's arguments (its options read by ``given_flags``)."""
    p.add_argument("model_dir", type=nonempty_path, nargs="?", metavar="MODEL_DIR",
                   help="a saved model (from 'anomaly-inspect fit'); without it, the backbone alone")
    p.add_argument("--format", choices=EXPORT_FORMATS,
                   help="with MODEL_DIR: the backbone graph's format (default, and the only one "
                        "accepted: that of the runtime the model was fitted with)")
    p.add_argument("--out", type=nonempty_path, required=True,
                   help="with MODEL_DIR, the bundle folder; otherwise the .onnx file to write")
    p.add_argument("--pooled", action="store_true", help="add the pooled embedding as an output")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out: with MODEL_DIR a bundle or model folder "
                        "(other files in it are kept), otherwise the .onnx file")
    add_model_args(p, but=NOT_OFFERED)
    p.add_argument("--quiet", action="store_true", help="no info logs")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..features.runtime import OnnxRunner, first_line, max_rel_diff
    from ..files import replacing
    from ..pipeline import build_backbone
    from ..screening.deploy import TOLERANCE
    from ..screening.model_dir import model_dir_holding

    check_writable(args.out, "--out")  # either form is written beside --out, then renamed
    if args.model_dir is not None:
        return run_model(args)
    if args.format is not None:
        raise ValueError("--format exports a saved model: give its MODEL_DIR")
    if args.out.is_dir():
        raise IsADirectoryError(f"{args.out}: is a folder; --out names the .onnx file to write")
    model = model_dir_holding(args.out)  # its own graph: replacing it breaks the model
    if model is not None:
        raise ValueError(f"{args.out}: is a file of model directory {model}; give another path")
    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{args.out}: already exists; pass --overwrite to replace it")
    if args.out.suffix != ".onnx":
        raise ValueError(f"{args.out}: the output file must end in .onnx")
    cfg = model_config_from_args(args)
    runtime, precision = cfg.backbone.runtime, cfg.backbone.precision
    if (runtime, precision) != ("onnxruntime", "f32"):
        raise ValueError(f"{args.config or 'config'}: backbone runtime {runtime} precision "
                         f"{precision}: the backbone alone is written as its f32 ONNX graph "
                         f"(onnxruntime f32); to deploy another runtime or precision, fit a "
                         f"model with it and export MODEL_DIR")
    if args.seed is not None and str(cfg.backbone.weights) != "random":
        raise ValueError("--seed: only changes random weights (--weights random); the backbone's "
                         "weights are its own")
    backbone = build_backbone(cfg)
    size = cfg.features.input_size
    torch.manual_seed(0)
    x = torch.randn(2, 3, size, size)
    if args.pooled:
        maps, pooled = backbone.torch_forward_with_pooled(x)
        want = [*maps, pooled]
    else:
        want = backbone.torch_forward(x)
    with replacing(args.out) as tmp:  # the cached export, checked before it replaces --out
        shutil.copyfile(backbone.export((size, size), "pooled" if args.pooled else "stages"), tmp)
        try:
            got = OnnxRunner(tmp, "onnxruntime")(x.numpy())
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
            raise RuntimeError(f"{args.out}: not written: onnxruntime cannot run the exported "
                               f"graph ({type(exc).__name__}: {first_line(exc)})") from None
        diff = max_rel_diff(got, want)
        if not diff <= TOLERANCE:
            raise RuntimeError(f"{args.out}: not written: the exported graph differs from torch "
                               f"by {diff:.1e} (max relative difference on one random batch), "
                               f"more than the f32 tolerance {TOLERANCE:.0e}")
    print_table([
        ("wrote", str(args.out)),
        ("backbone", f"{backbone.name} ({backbone.weight_source.kind} weights, checksum "
                     f"{backbone.weight_source.checksum[:16]}...)"),
        ("input", f"images (B, 3, {size}, {size}) float32, mean {backbone.mean}, std {backbone.std}"),
        ("outputs", ", ".join(f"{n} {tuple(o.shape[1:])}" for n, o in zip(
            [f"stage{i}" for i in range(len(backbone.layers))] + (["pooled"] if args.pooled else []),
            got, strict=True))),
        ("max rel diff vs torch", f"{diff:.1e} (onnxruntime f32, one random batch)"),
    ])
    return 0


def backbone_only() -> tuple[str, ...]:
    """Options of the backbone-alone form (--pooled and the model's it offers); a saved model
    brings its own. Read when a command needs it, not at import (every CLI start imports this
    module)."""
    return ("pooled", *(d for d in options_of(add_model_args) if d not in NOT_OFFERED))


def run_model(args: argparse.Namespace) -> int:
    from ..screening.deploy import MANIFEST_JSON, export_model

    given = given_flags(args, add_arguments, only=backbone_only())
    if given:
        raise ValueError(f"{' '.join(given)}: not used with MODEL_DIR (a saved model brings its "
                         f"own settings); drop them, or drop MODEL_DIR to export a backbone alone")
    if args.out.suffix == ".onnx":
        raise ValueError(f"{args.out}: with MODEL_DIR, --out is the bundle folder (the backbone "
                         f"graph is written inside it); drop MODEL_DIR to write the backbone "
                         f"alone as an .onnx file")
    manifest = export_model(args.model_dir, args.out, args.format, overwrite=args.overwrite)
    graphs = manifest["backbone"]["graphs"]
    rows = [("wrote", f"{args.out} ({MANIFEST_JSON}, the model's files, checksums)"),
            ("format", f"{manifest['format']} (fitted with {manifest['runtime']} "
                       f"{manifest['precision']})"),
            ("graphs", ", ".join(g.get("openvino", {}).get("xml", g["onnx"]) for g in graphs)),
            ("input", f"{graphs[0]['input']['name']} {graphs[0]['input']['shape']} float32, "
                      f"mean {manifest['preprocess']['mean']}, std {manifest['preprocess']['std']}"),
            ("scorer", f"{manifest['scorer']['name']}, threshold {manifest['threshold']}")]
    for g in graphs:
        if "openvino" in g:
            rows.append(("max rel diff IR vs ONNX", f"{g['openvino']['max_rel_diff_vs_onnx']:.1e} "
                                                    f"(OpenVINO f32, one random batch)"))
    print_table(rows)
    return 0
