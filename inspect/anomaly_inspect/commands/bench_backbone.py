"""``anomaly-inspect bench-backbone``: backbone-only feature throughput on this machine.

Same stages and input size as ``evaluate``: the physical limit the full
pipeline is measured against.
"""

from __future__ import annotations

import argparse
import time

import torch

from ..config import BackboneConfig, FeatureConfig
from ..evaluation.resources import peak_rss_mb
from ..features.backbone import Backbone
from .common import print_table, write_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench-backbone", help="measure backbone-only images/s", description=__doc__)
    p.add_argument("--backbone", default=BackboneConfig.name)
    p.add_argument("--layers", help="comma-separated timm feature indices (default: stride 8 and 16)")
    p.add_argument("--weights", help="checkpoint FILE or 'random'")
    p.add_argument("--image-size", type=int, default=FeatureConfig.image_size,
                   help=f"input side in pixels (default {FeatureConfig.image_size}, as evaluate)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--batches", type=int, default=8, help="timed batches (after one warm-up)")
    p.add_argument("--output-json", type=__import__("pathlib").Path)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    layers = [int(v) for v in args.layers.split(",")] if args.layers else None
    backbone = Backbone(args.backbone, layers, args.weights)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    backbone(x)  # warm-up
    start = time.perf_counter()
    for _ in range(args.batches):
        backbone(x)
    seconds = time.perf_counter() - start
    ips = args.batch_size * args.batches / seconds
    result = {
        "backbone": args.backbone,
        "layers": list(backbone.layers),
        "strides": backbone.strides,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "images": args.batch_size * args.batches,
        "seconds": round(seconds, 3),
        "images_per_second": round(ips, 3),
        "torch_threads": torch.get_num_threads(),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    print_table([(k, str(v)) for k, v in result.items()])
    write_json(args.output_json, result)
    return 0
