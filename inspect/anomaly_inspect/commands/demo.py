"""``anomaly-inspect demo``: generate a synthetic MVTec-layout dataset and evaluate PatchCore on it.

The dataset (procedural fabric or brushed-metal texture with scratch, stain, hole and crack
defects and exact masks) goes to a temporary folder that is removed afterwards, unless
``--out`` or ``--keep`` is given. The evaluation is the same as ``anomaly-inspect evaluate``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from ..choices import RANDOM_WEIGHTS
from ..config import ModelConfig
from ..data.synthetic import DEFECTS, TEXTURES
from .common import (
    add_model_args,
    add_output_args,
    check_writable,
    model_config_from_args,
    out_dir,
    positive_int,
    write_json_and_show,
)
from .evaluate import print_result

log = logging.getLogger(__name__)


def data_size(text: str) -> int:
    """argparse type: a generated image side, at least 64 pixels (the textures' scale)."""
    v = positive_int(text)
    if v < 64:
        raise argparse.ArgumentTypeError(f"must be at least 64 pixels, got {text!r}")
    return v


def defect_list(text: str) -> list[str]:
    """argparse type of --defects: comma-separated defect types, at least one, each once."""
    defects = [d.strip() for d in text.split(",") if d.strip()]
    if not defects or any(d not in DEFECTS for d in defects):
        raise argparse.ArgumentTypeError(f"must be comma-separated defect types from "
                                         f"{', '.join(DEFECTS)}, got {text!r}")
    if len(set(defects)) != len(defects):
        raise argparse.ArgumentTypeError(f"lists a defect type twice: {text!r}")
    return defects


def check_weights_file(cfg: ModelConfig) -> None:
    """Refuse, before the dataset is written, a backbone weights file (``--weights`` or the
    config's) that is missing or a folder, as building the backbone would refuse it: only
    after the dataset was written, whose folder then refuses the corrected run."""
    weights = cfg.backbone.weights
    if weights is not None and str(weights) != RANDOM_WEIGHTS:
        from ..features.weights import check_weights_file as check

        check(Path(weights).expanduser())


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the main job on a generated synthetic dataset", description=__doc__)
    p.add_argument("--out", type=out_dir, help="write the dataset here (kept); default: a temporary folder")
    p.add_argument("--keep", action="store_true",
                   help="keep the temporary dataset folder and print its path, also where the run "
                        "fails (without --out)")
    p.add_argument("--texture", choices=TEXTURES, default="fabric")
    p.add_argument("--defects", type=defect_list, default=",".join(DEFECTS),
                   help=f"comma-separated defect types (default {','.join(DEFECTS)})")
    p.add_argument("--n-train", type=positive_int, default=40, help="normal training images (default 40)")
    p.add_argument("--n-test-good", type=positive_int, default=12, help="normal test images (default 12)")
    p.add_argument("--n-test-per-defect", type=positive_int, default=5, help="test images per defect (default 5)")
    p.add_argument("--data-size", type=data_size, default=256,
                   help="generated image side in pixels (default 256, at least 64)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a dataset this command generated earlier under --out (with --out only)")
    add_model_args(p)
    add_output_args(p)
    p.set_defaults(func=run, out_owns=_outputs)


def _outputs() -> tuple[str, ...]:
    """The names demo may write in --out (--output-json may go beside them)."""
    return tuple(f"synthetic_{t}" for t in TEXTURES)


def run(args: argparse.Namespace) -> int:
    from ..data.mvtec import load_mvtec
    from ..data.synthetic import generate_dataset
    from ..evaluation.evaluate import evaluate

    if args.out is not None and args.keep:
        raise ValueError("--keep keeps the temporary dataset folder; a dataset written to --out "
                         "is kept anyway: give one of them")
    if args.overwrite and args.out is None:
        raise ValueError("--overwrite replaces a dataset generated earlier under --out; "
                         "without --out there is none")
    if args.out is not None:
        check_writable(args.out, "--out", into=True)
    cfg = model_config_from_args(args)
    check_weights_file(cfg)
    defects = args.defects
    if args.out is not None:
        root, cleanup = args.out, False
    else:
        root = Path(tempfile.mkdtemp(prefix="anomaly-inspect-demo-"))
        cleanup = not args.keep
    done = False
    cat_dir = None  # set once the dataset is written
    try:
        cat_dir = generate_dataset(
            root, texture=args.texture, n_train=args.n_train, n_test_good=args.n_test_good,
            n_test_per_defect=args.n_test_per_defect, image_size=args.data_size, seed=cfg.seed,
            defects=defects, overwrite=args.overwrite, progress=not args.quiet,
        )
        dataset = load_mvtec(cat_dir)
        result = evaluate(dataset, cfg, progress=not args.quiet)
        done = True
    finally:
        if cleanup or (args.keep and cat_dir is None):  # --keep: nothing was written to keep
            shutil.rmtree(root, ignore_errors=True)
        elif args.keep and not done:  # failed or interrupted: say where the kept folder is
            print(f"dataset folder kept: {root}", file=sys.stderr)
    data = result.to_dict()
    data["dataset"] = {"synthetic": True, "texture": args.texture, "defects": defects,
                       "path": None if cleanup else str(cat_dir)}
    write_json_and_show(args.output_json, data, lambda: print_result(result))
    if not cleanup:
        print(f"dataset: {cat_dir}")
    return 0
