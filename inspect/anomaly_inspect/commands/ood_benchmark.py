"""``anomaly-inspect ood-benchmark``: every configured OOD scorer on every split of one benchmark."""

from __future__ import annotations

import argparse

from ..config import check_layers_exist
from .common import (
    add_output_args,
    add_runtime_args,
    check_backbone_name,
    given_options,
    nonempty_path,
    seed,
    write_json_and_show,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ood-benchmark", help="run OOD scorers on ISIC / MVTec artefact splits, print AUROC table",
        description="Fit every scorer of the config on the ID training images (features extracted "
                    "once and cached), score ID test and each OOD split, print AUROC / FPR@TPR80.")
    p.add_argument("--config", type=nonempty_path, required=True, help="benchmark YAML FILE or packaged config name, e.g. ood/isic_all")
    p.add_argument("--data-root", type=nonempty_path,
                   help="folder that relative data paths in the config are resolved against: a "
                        "packaged config's data folder, holding mvtec_ad/, isic2017_256/, meta/ "
                        "(default $ANOMALY_INSPECT_DATA, else ../shared/data); for a config file "
                        "of your own, default the current directory")
    p.add_argument("--cache-dir", type=nonempty_path,
                   help="feature cache folder (overrides the config's cache_dir; default "
                        "$ANOMALY_INSPECT_CACHE/ood or ~/.cache/anomaly_inspect/ood)")
    add_config_args(p)
    add_output_args(p)
    p.set_defaults(func=run)


def add_config_args(p: argparse.ArgumentParser) -> None:
    """--runtime / --precision / --seed: the config's ``backbone`` runtime and precision and its
    top-level ``seed``, as in the model-building commands."""
    add_runtime_args(p, "; overrides the config's backbone")
    p.add_argument("--seed", type=seed,
                   help="random seed of the folds, the pseudo-OOD copies, the scorers and random "
                        "weights (overrides the config's seed, default 0; synthetic: seed, where "
                        "set, stays)")


def run(args: argparse.Namespace) -> int:
    from ..evaluation.ood_benchmark import load_ood_config, run_ood_benchmark

    flags = " ".join(f"{flag} {value}" for flag, value in given_options(args, add_config_args).items())
    cfg = load_ood_config(args.config, args.seed, {k: getattr(args, k) for k in ("runtime", "precision")
                                                   if getattr(args, k) is not None}, flags)
    # as the model-building commands (commands.common, which the benchmark's fingerprinted code
    # may not import): a backbone name or layers it lacks, naming the file's key, before any data
    check_backbone_name(cfg, f"{args.config}: backbone: name")
    check_layers_exist(cfg, str(args.config))
    if args.cache_dir:
        cfg.cache_dir = str(args.cache_dir)
    report = run_ood_benchmark(cfg, args.data_root, progress=not args.quiet)
    write_json_and_show(args.output_json, report, lambda: show(report))
    return 0


def show(report: dict) -> None:
    """The benchmark's table and notes."""
    print(report["table"])
    print(f"convention: {report['convention']}")
    if report["synthetic"]:
        print(f"synthetic artefacts: {report['synthetic']['rule']}")
    for label, o in report["orientation"].items():
        print(f"orientation of {label}: {'negated' if o['flipped'] else 'as published'} "
              f"(ID train vs its jigsaw pseudo-OOD: AUROC {o['pseudo_ood_auroc']:.3f} as published)")
    t = report["timings_s"]
    print(f"time: {t['total']:.1f} s total, {t['features']:.1f} s features "
          f"({t['images_extracted']} images extracted), peak RSS {report['peak_rss_mb']:.0f} MB")
