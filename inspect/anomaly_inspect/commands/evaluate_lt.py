"""``anomaly-inspect evaluate-lt``: long-tailed noisy multi-class benchmark (TailedCore protocol).

Builds (or re-reads) a seeded long-tailed noisy training set from several
MVTec-layout categories, fits one unified model per method on it and reports
per-class and mean image AUROC plus TailSampler's class-size estimates.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..choices import INDEX_KINDS, VIEW_KINDS
from ..config import ModelConfig
from ..data.longtail import TAIL_KINDS
from .common import (
    add_model_args,
    add_output_args,
    check_writable,
    given_options,
    model_config_from_args,
    noise_ratio,
    nonempty,
    nonempty_path,
    options_of,
    positive_int,
    print_table,
    write_json_and_show,
)

RECIPE_DEFAULTS = {"tail": "step", "k": 4, "noise": 0.1, "overlap": False}
DEFAULT_METHODS = "patchcore,softpatch,tailedcore"
#: --manifest-dir's default: one object, so that :func:`.common.given_options` tells it from a
#: --manifest-dir given (even ``datasets``)
MANIFEST_DIR = Path("datasets")
#: model options evaluate-lt has no use for: --methods names its scorers
NOT_OFFERED = ("method",)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate-lt", help="long-tailed noisy multi-class benchmark (TailedCore)",
                       description=__doc__)
    p.add_argument("--root", type=nonempty, action="append", required=True, metavar="DIR|CATEGORY=DIR",
                   help="folder holding CATEGORY/ folders (repeatable), or CATEGORY=DIR for one category")
    p.add_argument("--categories", required=True, help="comma-separated category names")
    add_recipe_args(p)
    p.add_argument("--methods", default=DEFAULT_METHODS,
                   help=f"comma-separated scorers (default {DEFAULT_METHODS})")
    add_manifest_args(p)
    add_scorer_args(p)
    p.add_argument("--tail-views", choices=sorted(VIEW_KINDS),
                   help="TailedCore's tail augmentation (default: the config's scorer: tail_views, "
                        "else rot15flip for step, rot30flip for pareto)")
    add_model_args(p, but=NOT_OFFERED)
    add_output_args(p)
    p.set_defaults(func=run)


def add_recipe_args(p: argparse.ArgumentParser) -> None:
    """The split's recipe flags; they default to None so that one given with --manifest can be
    checked against it (:func:`.common.given_options` finds those given)."""
    p.add_argument("--tail", choices=TAIL_KINDS, help=f"split shape (default {RECIPE_DEFAULTS['tail']})")
    p.add_argument("--k", type=positive_int, help=f"step: images kept per tail class (default {RECIPE_DEFAULTS['k']})")
    p.add_argument("--noise", type=noise_ratio,
                   help=f"ratio of injected test anomalies (default {RECIPE_DEFAULTS['noise']})")
    p.add_argument("--overlap", action="store_true", default=None,
                   help="leave injected anomalies in the test sets (published protocol)")


def add_manifest_args(p: argparse.ArgumentParser) -> None:
    """Where the split's manifest is: a folder of manifests named by recipe, or one file (then
    the folder is not read: one given is refused unless it holds that file)."""
    p.add_argument("--manifest-dir", type=nonempty_path, default=MANIFEST_DIR,
                   help="where split manifests are read / written (default datasets/; not read "
                        "with --manifest)")
    p.add_argument("--manifest", type=nonempty_path,
                   help="use this manifest file (its recipe: --tail, --k, --noise, --overlap must "
                        "agree with it or be left out)")


def add_scorer_args(p: argparse.ArgumentParser) -> None:
    """Scorer settings for every method; unset (None) they leave the config's or the default."""
    p.add_argument("--coreset-ratio", type=float, help="coreset ratio for every method (default 0.1)")
    p.add_argument("--chunk-size", type=int, help="coreset chunk size (default 4096)")
    p.add_argument("--index", choices=INDEX_KINDS,
                   help="faiss index (default auto: exact for small banks, HNSW for large)")


def scorer_settings(args: argparse.Namespace, cfg: ModelConfig, methods: list[str]) -> dict:
    """The config's ``scorer`` section overridden by the scorer flags given, checked before any
    work by building every method's scorer: a value refused names the config, or the flag that
    gave it (the flags are added one at a time on top of the config)."""
    from ..evaluation.longtail import build_scorers
    from ..scorers import merge_scorer_params

    options = options_of(add_scorer_args)
    config = f"{args.config or 'config'}: scorer"
    try:  # the config's keys first, so that a key no method takes names the config
        merge_scorer_params(cfg.scorer, methods, {})
    except ValueError as exc:
        raise ValueError(f"{config}: {exc}") from None
    params = merge_scorer_params(cfg.scorer, methods, {d: getattr(args, d) for d in options})
    settings = dict(cfg.scorer)
    steps = [(config, settings)]
    for dest, action in options.items():
        if (value := getattr(args, dest)) is not None:
            settings = {**settings, dest: value}
            steps.append((f"{max(action.option_strings, key=len)} {value}", settings))
    for source, settings in steps:
        try:
            build_scorers(methods, settings, cfg.seed, progress=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: {exc}") from None
    return params


def run(args: argparse.Namespace) -> int:
    from ..data.layout import resolve_category_dirs
    from ..data.longtail import (
        LongTailSet,
        check_category_names,
        load_or_build_longtail,
        manifest_name,
    )
    from ..data.mvtec import load_mvtec
    from ..evaluation.longtail import check_methods, check_tail_views, evaluate_longtail

    categories = [c.strip() for c in args.categories.split(",") if c.strip()]
    if len(set(categories)) != len(categories):
        raise ValueError(f"--categories lists a category twice: {args.categories}")
    check_category_names(categories, "--categories")
    if (args.manifest and given_options(args, add_manifest_args, only=("manifest_dir",))
            and args.manifest.resolve().parent != args.manifest_dir.resolve()):
        raise ValueError(f"--manifest-dir {args.manifest_dir}: not read with --manifest "
                         f"{args.manifest}, which is not in it (the split is that file's); "
                         f"leave one out")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    check_methods(methods)  # before any work
    check_tail_views(methods, args.tail_views)
    given = {flag.removeprefix("--"): v for flag, v in given_options(args, add_recipe_args).items()}
    recipe = {**RECIPE_DEFAULTS, **given}
    if "k" in given and not args.manifest and recipe["tail"] != "step":  # a manifest's is checked below
        raise ValueError(f"--k {args.k}: the images kept per tail class of a step split; "
                         f"--tail {recipe['tail']} does not use it, leave it out")
    cfg = model_config_from_args(args)
    if cfg.features.views != "none":  # the config's method, which takes views, is not run here
        raise ValueError(f"{args.config or 'config'}: features: views {cfg.features.views!r} is for "
                         f"scorers of the pooled embedding, and every method evaluate-lt runs "
                         f"scores patch features; leave it out (TailedCore's tail augmentation "
                         f"is --tail-views)")
    params = scorer_settings(args, cfg, methods)  # before a manifest is written
    seed = cfg.seed
    new = False  # whether the split is built now (no manifest of it yet)
    if not args.manifest:
        built = args.manifest_dir / manifest_name(recipe["tail"], recipe["k"], recipe["noise"],
                                                  seed, categories, recipe["overlap"])
        new = not built.is_file()  # one already there is only read
        if new:
            check_writable(args.manifest_dir, "--manifest-dir", into=True)
    dirs = resolve_category_dirs(args.root, categories)
    datasets = {c: load_mvtec(d) for c, d in dirs.items()}
    for c, d in list(datasets.items()):  # name by the requested category, not the folder
        d.name = c
    manifest = args.manifest
    if manifest:
        split = LongTailSet.load(args.manifest)
        if sorted(split.categories) != sorted(categories):
            raise ValueError(f"{args.manifest}: manifest categories {split.categories} differ "
                             f"from --categories {sorted(categories)}")
        for key, value in given.items():
            if value != getattr(split, key):
                flag = f"--{key}" if isinstance(value, bool) else f"--{key} {value}"
                raise ValueError(f"{flag} conflicts with --manifest {args.manifest}, which has "
                                 f"{key} = {getattr(split, key)}; leave --{key} out")
        split.check_data(datasets, dirs, args.manifest)
    else:
        # not saved here: evaluate_longtail writes a new split's manifest once it passed the
        # checks, so a refused run leaves none behind to refuse the corrected data
        split = load_or_build_longtail(datasets, dirs, recipe["tail"], recipe["k"], recipe["noise"],
                                       seed, recipe["overlap"], args.manifest_dir, False)
        manifest = built
    report = evaluate_longtail(split, datasets, dirs, cfg, methods, params, args.tail_views,
                               progress=not args.quiet, manifest=manifest,
                               save_manifest=new)

    # a manifest's split seed need not be --seed, which seeds the scorers
    seeds = f"seed {split.seed}" if split.seed == seed else f"split seed {split.seed}, scorer seed {seed}"
    rows = [("split", f"{split.tail}" + (f" k={split.k}" if split.k else "") +
             f", noise {split.noise:g}, {seeds}, tail classes {split.tail_classes or 'none'}")]
    for c, v in split.counts.items():
        est = report.class_size_estimates["per_class"][c]
        rows.append((f"  {c}", f"{v['good']} good + {v['noise']} noise; TailSampler median size "
                     f"{est['predicted_median']:.0f}, {est['flagged_tail']} flagged tail"))
    by = {(r["method"], r["category"]): r["image_auroc"] for r in report.results}
    for m, mean in report.mean_auroc().items():
        per = ", ".join(f"{c} {by[(m, c)]:.3f}" for c in split.categories)
        info = report.methods[m]
        rows.append((m, f"mean {mean:.4f} ({per}); fit {info['fit_seconds']:.0f} s, "
                        f"bank {info.get('memory_bank_items', 'n/a')}"))
    rows.append(("timings", ", ".join(f"{k} {v}" for k, v in report.timings.items())))
    write_json_and_show(args.output_json, report.to_dict(), lambda: print_table(rows))
    return 0
