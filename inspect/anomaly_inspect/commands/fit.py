"""``anomaly-inspect fit``: fit on normal images, calibrate a threshold, save a model directory.

Without ``--calibration``, a seeded share of the readable ``--train`` images is held out to
calibrate the threshold; ``--auto`` tunes on the other images only, so that the images that
set the threshold never influence the configuration either."""

from __future__ import annotations

import argparse

from .common import (
    add_engine_args,
    add_max_pixels_arg,
    add_model_args,
    add_output_args,
    check_engine_fits,
    check_writable,
    engine_from_args,
    fraction,
    model_config_from_args,
    nonempty,
    out_dir,
    print_table,
    write_json,
)
from .tune import add_tune_args, check_tune_args, run_tune


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit", help="fit on normal images and save a calibrated model directory",
                       description=__doc__)
    p.add_argument("--train", type=nonempty, action="append", required=True, metavar="DIR",
                   help="normal training images: folder (searched recursively), file or glob; repeatable")
    p.add_argument("--out", type=out_dir, required=True, metavar="MODEL_DIR", help="model directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model directory")
    p.add_argument("--calibration", type=nonempty, action="append", metavar="DIR",
                   help="normal images that set the threshold (default: hold out part of --train)")
    p.add_argument("--calibration-fraction", type=fraction,
                   help="fraction of the readable training images held out for calibration "
                        "(default 0.2, seeded by --seed); not with --calibration")
    p.add_argument("--target-fpr", type=fraction, default=0.01,
                   help="false-positive rate on normal images the threshold aims at (default 0.01)")
    p.add_argument("--auto", action="store_true",
                   help="choose the configuration first with `tune` on the --train images the "
                        "model fits on (synthetic anomalies; not the held-out calibration "
                        "images); the choice is recorded in model.json")
    add_tune_args(p)
    add_model_args(p, tunes=True)
    add_max_pixels_arg(p)
    add_engine_args(p)
    add_output_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..screening.model import skipped_as
    from ..screening.model_dir import check_replaceable, save_lock

    if args.calibration is not None and args.calibration_fraction is not None:
        raise ValueError("--calibration-fraction: sets the share of --train held out for "
                         "calibration, so it does not apply with --calibration; drop one of them")
    check_tune_args(args, fuses=False)
    check_writable(args.out, "--out")
    # --out's save lock from before the fit to the end of its save: a second fit into the same
    # folder is refused at once, not after minutes of fitting
    with save_lock(args.out):
        check_replaceable(args.out, args.overwrite)  # fail before minutes of fitting
        model, cfg, tuning = _fit(args)
        model.save(args.out, overwrite=args.overwrite)
    cal = model.calibration
    lo, hi = cal.fpr_interval
    write_json(args.output_json, {"model_dir": str(args.out), "calibration": cal.to_dict(),
                                  **({"tuning": tuning.to_dict()} if tuning else {})})
    print_table([
        ("model", str(args.out)),
        ("method", f"{cfg.method} on {cfg.backbone.name} ({model.info.backbone['weights']['kind']} weights, "
                   f"{model.extractor.backbone.runs_on} runtime)"),
        ("training images", f"{len(model.info.train_images)} (skipped "
                            f"{len(skipped_as(model.info, 'training'))} unreadable)"),
        ("calibration", f"{cal.n_calibration} normal images (skipped "
                        f"{len(skipped_as(model.info, 'calibration'))} unreadable), {cal.source}"),
        ("threshold", f"score > {cal.threshold:.6g}"),
        ("expected FPR", f"{cal.expected_fpr:.2%} (target {cal.target_fpr:.2%}; "
                         f"{cal.interval_level:.0%} interval {lo:.2%}-{hi:.2%})"
                         + ("" if cal.target_met else " TARGET NOT REACHABLE: too few calibration images")),
    ])
    return 0


def _fit(args: argparse.Namespace):
    """The model ``args`` ask for (tuned first with ``--auto``), its config and the tuning."""
    from ..screening import fit
    from ..screening.model import fit_split, input_images
    from ..tuning.tune import TooFewImagesError

    cfg = model_config_from_args(args)
    engine = engine_from_args(args)  # its option errors before tuning, too
    check_engine_fits(cfg, engine)
    tuning = None
    if args.auto:  # on the images fit fits on: the split fit draws again (same seed)
        fit_part, held = fit_split(input_images(args.train, twins="once"), args.calibration,
                                   args.calibration_fraction, cfg.seed, args.max_pixels)[:2]
        try:
            tuning = run_tune(fit_part, args, cfg)
        except TooFewImagesError as exc:
            if args.calibration is not None or not held:
                raise
            raise TooFewImagesError(
                f"{exc}; {len(held)} of the {len(fit_part) + len(held)} readable --train images are "
                f"held out for calibration: give --calibration DIR instead, a smaller "
                f"--calibration-fraction, or fewer --folds") from None
        write_json(args.output_json, {"tuning": tuning.to_dict()})  # kept should the fit fail
        cfg = tuning.chosen_config(cfg)
    model = fit(args.train, cfg, calibration=args.calibration, target_fpr=args.target_fpr,
                calibration_fraction=args.calibration_fraction, progress=not args.quiet,
                max_pixels=args.max_pixels, engine=engine)
    if tuning is not None:
        model.info.tuning = tuning.to_dict()
    return model, cfg, tuning
