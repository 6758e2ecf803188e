"""``anomaly-inspect evaluate``: fit on normal training images, score the test split."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data.folder import load_folders
from ..data.mvtec import load_mvtec
from ..evaluation.evaluate import EvaluationResult, evaluate
from .common import (
    add_engine_args,
    add_model_args,
    add_output_args,
    engine_from_args,
    model_config_from_args,
    print_table,
    write_json,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="fit on train/good, score test, print AUROC and resources",
                       description=__doc__)
    p.add_argument("--dataset", choices=["mvtec", "folder"], default="mvtec")
    p.add_argument("--root", type=Path, help="mvtec: folder holding CATEGORY/ (or the category itself)")
    p.add_argument("--category", help="mvtec: category name, e.g. bottle")
    p.add_argument("--train-dir", type=Path, action="append", default=[], help="folder: normal training images")
    p.add_argument("--test-normal-dir", type=Path, action="append", default=[], help="folder: normal test images")
    p.add_argument("--test-anomalous-dir", type=Path, action="append", default=[], help="folder: anomalous test images")
    p.add_argument("--mask-dir", type=Path, help="folder: masks named like the anomalous images")
    add_model_args(p)
    add_engine_args(p)
    add_output_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.dataset == "mvtec":
        if args.root is None:
            raise ValueError("--root is required for --dataset mvtec")
        dataset = load_mvtec(args.root, args.category)
    else:
        if not args.train_dir:
            raise ValueError("--train-dir is required for --dataset folder")
        dataset = load_folders(args.train_dir, args.test_normal_dir, args.test_anomalous_dir, args.mask_dir)
    cfg = model_config_from_args(args)
    result = evaluate(dataset, cfg, progress=not args.quiet, engine=engine_from_args(args))
    print_result(result)
    write_json(args.output_json, result.to_dict())
    return 0


def print_result(result: EvaluationResult) -> None:
    """Print an evaluation result as the table every evaluating command shows."""
    px = "n/a (no masks)" if result.pixel_auroc is None else f"{result.pixel_auroc:.4f}"
    print_table([
        ("category", result.category),
        ("method", f"{result.method} on {result.backbone} ({result.weights} weights, {result.image_size}px)"),
        ("image AUROC", f"{result.image_auroc:.4f}"),
        ("pixel AUROC", px),
        ("image AUROC by defect", ", ".join(f"{g} {v:.3f}" for g, v in result.image_auroc_by_defect.items())),
        ("train / test images", f"{result.n_train} / {result.n_test} ({result.n_test_anomalous} anomalous)"),
        ("fit", f"{result.fit_seconds:.1f} s"),
        ("test", f"{result.test_seconds:.1f} s ({result.test_images_per_second:.1f} img/s)"),
        ("end-to-end", f"{result.images_per_second:.1f} img/s (fit + test images)"),
        ("backbone runtime", result.runtime),
        ("time by stage", ", ".join(f"{k} {v:.1f} s" for k, v in (result.stage_seconds or {}).items())),
        ("memory bank", f"{result.memory_bank_items} items, {result.memory_bank_mb} MB, {result.search_index} search"),
        ("peak RSS", f"{result.peak_rss_mb:.0f} MB"),
    ])
