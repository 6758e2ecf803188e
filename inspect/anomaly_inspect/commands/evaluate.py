"""``anomaly-inspect evaluate``: fit on normal training images, score the test split."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..data.registry import available_datasets, load_dataset
from .common import (
    add_engine_args,
    add_max_pixels_arg,
    add_model_args,
    add_output_args,
    check_engine_fits,
    engine_from_args,
    model_config_from_args,
    nonempty_path,
    print_table,
    write_json,
    write_json_and_show,
)
from .tune import add_tune_args, check_tune_args, run_tune

if TYPE_CHECKING:
    from ..evaluation.evaluate import EvaluationResult

#: each adapter's option (``data.registry.dataset_options``) -> its flag and argparse settings: the
#: parser's flags and the names ``load_dataset``'s errors give them (the one check), from one table
DATASET_FLAGS = {
    "root": ("--root", {"type": nonempty_path,
                        "help": "mvtec: folder holding CATEGORY/ (or the category itself)"}),
    "category": ("--category", {"help": "mvtec: category name, e.g. bottle"}),
    "train_dirs": ("--train-dir", {"type": nonempty_path, "action": "append", "default": [],
                                   "help": "folder: normal training images"}),
    "test_normal_dirs": ("--test-normal-dir", {"type": nonempty_path, "action": "append", "default": [],
                                               "help": "folder: normal test images"}),
    "test_anomalous_dirs": ("--test-anomalous-dir", {"type": nonempty_path, "action": "append",
                                                     "default": [],
                                                     "help": "folder: anomalous test images"}),
    "mask_dir": ("--mask-dir", {"type": nonempty_path,
                                "help": "folder: masks named like the anomalous images"}),
}
#: adapter option -> the flag that sets it
OPTION_FLAGS = {option: flag for option, (flag, _) in DATASET_FLAGS.items()}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="fit on train/good, score test, print AUROC and resources",
                       description=__doc__)
    p.add_argument("--dataset", choices=available_datasets(), default="mvtec")
    for option, (flag, settings) in DATASET_FLAGS.items():
        p.add_argument(flag, dest=option, **settings)
    p.add_argument("--auto", action="store_true",
                   help="choose the configuration first with `tune` on the training images only "
                        "(synthetic anomalies); the choice is recorded in the JSON")
    add_max_pixels_arg(p)
    add_tune_args(p)
    add_model_args(p, tunes=True)
    add_engine_args(p)
    add_output_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluation.evaluate import check_dataset, evaluate

    check_tune_args(args)
    cfg = model_config_from_args(args)
    engine = engine_from_args(args)  # its options checked before minutes of tuning
    check_engine_fits(cfg, engine)
    # the dataset's options checked (by load_dataset, naming the flags) as it is read
    options = {option: getattr(args, option) for option in OPTION_FLAGS}
    dataset = load_dataset(args.dataset, OPTION_FLAGS, **options)
    tuning = None
    if args.auto:
        # before minutes of tuning (evaluate checks it before fitting)
        check_dataset(dataset, args.max_pixels)
        tuning = run_tune([s.path for s in dataset.train], args, cfg)
        write_json(args.output_json, {"tuning": tuning.to_dict()})  # kept should evaluate fail
    result = evaluate(dataset, tuning.chosen_config(cfg) if tuning else cfg, progress=not args.quiet,
                      engine=engine, max_pixels=args.max_pixels)
    # where the fit ran (a distributed bank differs slightly by design): the engine, and the
    # Ray actors its last map ran on (null for the local engine)
    out = {**result.to_dict(), "engine": engine.name, "workers": getattr(engine, "actors", None)}
    if tuning is not None:
        out["tuning"] = tuning.to_dict()
    write_json_and_show(args.output_json, out, lambda: print_result(result))  # kept should the ensemble fail
    if tuning is not None and args.ensemble:
        from ..tuning.judge import evaluate_ensemble

        # the K asked beside the members fused: fewer where the candidates give fewer distinct
        # model inputs (the tuning block's ensemble_note says why)
        ensemble = evaluate_ensemble(dataset, tuning, cfg, args.tune_cache,
                                     progress=not args.quiet, max_pixels=args.max_pixels)
        out["ensemble"] = {**ensemble, "requested": args.ensemble}
        write_json(args.output_json, out)
        members = ensemble["members"]
        short = (f"; {len(members)} of the {args.ensemble} asked"
                 if len(members) < args.ensemble else "")
        print(f"ensemble image AUROC  {ensemble['image_auroc']:.4f} "
              f"({', '.join(members)}; normal-calibrated{short})")
    return 0


def graph_note(graph: dict | None) -> str:
    """ ' (M 16; 0.02 % above exact)': an HNSW graph's links and its fit-time check(s)."""
    if not graph:
        return ""
    checks = " -> ".join(f"{100 * e:.2f} %" for e in graph["excess"])
    return f" (M {graph['m']}; {checks} above exact on training patches)"


def stage_line(result: EvaluationResult) -> str:
    """The seconds per stage; the export only where this run made a graph, marked as outside
    the img/s (a cached graph leaves it at 0)."""
    return ", ".join(f"{k} {v:.1f} s" + (" (one-time, not in img/s)" if k == "export" else "")
                     for k, v in (result.stage_seconds or {}).items()
                     if k != "export" or result.exported)


def print_result(result: EvaluationResult) -> None:
    """Print an evaluation result as the table every evaluating command shows."""
    px = f"n/a ({result.pixel_auroc_note})" if result.pixel_auroc is None else f"{result.pixel_auroc:.4f}"
    outside = result.anomalous_pixels_outside_crop
    if result.pixel_auroc_whole_image is not None and outside is not None:
        px += (f" over the {result.crop_size} px crop; {result.pixel_auroc_whole_image:.4f} over the "
               f"whole image, where {outside['anomalous']} of {outside['of']} anomalous mask pixels "
               f"lie outside the crop (scored as the lowest)")
    pro = None
    if result.pixel_aupro is not None or result.pixel_aupro_whole_image is not None:
        pro = "n/a" if result.pixel_aupro is None else f"{result.pixel_aupro:.4f}"
        pro += " (to 30 % FPR)"
        if result.pixel_aupro_whole_image is not None:
            pro += f" over the crop; {result.pixel_aupro_whole_image:.4f} over the whole image"
    crop = f", {result.crop_size}px centre crop" if result.crop_size else ""
    print_table([
        ("category", result.category),
        ("method", f"{result.method} on {result.backbone} ({result.weights} weights, "
                   f"{result.image_size}px{crop})"),
        ("image AUROC", f"{result.image_auroc:.4f}"),
        ("pixel AUROC", px),
        *([("pixel AUPRO", pro)] if pro is not None else []),
        *([("image FPR at 95 % TPR", f"{result.image_fpr_at_tpr95:.4f}")]
          if result.image_fpr_at_tpr95 is not None else []),
        ("image AUROC by defect", ", ".join(f"{g} {v:.3f}" for g, v in result.image_auroc_by_defect.items())),
        ("train / test images", f"{result.n_train} / {result.n_test} ({result.n_test_anomalous} anomalous)"),
        ("fit", f"{result.fit_seconds:.1f} s"),
        ("test", f"{result.test_seconds:.1f} s ({result.test_images_per_second:.1f} img/s)"),
        ("end-to-end", f"{result.images_per_second:.1f} img/s (fit + test images)"),
        ("backbone runtime", result.runtime),
        ("time by stage", stage_line(result)),
        *([("memory bank", f"{result.memory_bank_items} items, {result.memory_bank_mb} MB, "
                           f"{result.search_index} search{graph_note(result.search_graph)}")]
          if result.memory_bank_items else []),
        ("peak RSS", f"{result.peak_rss_mb:.0f} MB"),
    ])
