"""``anomaly-inspect export``: write the frozen backbone as an ONNX file for deployment.

The graph is the one the ``onnxruntime`` / ``openvino`` runtimes run: input
``images`` (B, 3, H, W) float32, normalised with the model's mean / std;
outputs ``stage0``, ``stage1``, ... (the configured stages) and, with
``--pooled``, ``pooled`` (B, D). The batch axis is dynamic. The export is
checked against torch on one random batch before it is reported.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import torch

from ..features.runtime import OnnxRunner
from ..pipeline import build_backbone
from .common import add_model_args, model_config_from_args, print_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export the backbone to ONNX for deployment", description=__doc__)
    p.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    p.add_argument("--pooled", action="store_true", help="add the pooled embedding as an output")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    add_model_args(p)
    p.add_argument("--quiet", action="store_true", help="no info logs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{args.out}: already exists; pass --overwrite to replace it")
    if args.out.suffix != ".onnx":
        raise ValueError(f"{args.out}: the output file must end in .onnx")
    cfg = model_config_from_args(args)
    backbone = build_backbone(cfg)
    size = cfg.features.image_size
    args.out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(backbone.export((size, size), "pooled" if args.pooled else "stages"), args.out)  # the cached export
    torch.manual_seed(0)
    x = torch.randn(2, 3, size, size)
    if args.pooled:
        maps, pooled = backbone.torch_forward_with_pooled(x)
        want = [*maps, pooled]
    else:
        want = backbone.torch_forward(x)
    got = OnnxRunner(args.out, "onnxruntime")(x.numpy())
    diff = max(float(np.abs(g - w.numpy()).max() / np.abs(w.numpy()).max()) for g, w in zip(got, want, strict=True))
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
