"""``anomaly-inspect evaluate-lt``: long-tailed noisy multi-class benchmark (TailedCore protocol).

Builds (or re-reads) a seeded long-tailed noisy training set from several
MVTec-layout categories, fits one unified model per method on it and reports
per-class and mean image AUROC plus TailSampler's class-size estimates.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..data.layout import DatasetLayoutError
from ..data.longtail import TAIL_KINDS, LongTailSet, build_longtail, manifest_name
from ..data.mvtec import load_mvtec
from ..evaluation.longtail import evaluate_longtail
from ..features.views import VIEW_KINDS
from ..scorers import get_scorer_class, scorer_parameters
from .common import add_model_args, add_output_args, model_config_from_args, print_table, write_json

log = logging.getLogger(__name__)

DEFAULT_VIEWS = {"step": "rot15flip", "pareto": "rot30flip"}  # as the TailedCore MVTec configs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate-lt", help="long-tailed noisy multi-class benchmark (TailedCore)",
                       description=__doc__)
    p.add_argument("--root", action="append", required=True, metavar="DIR|CATEGORY=DIR",
                   help="folder holding CATEGORY/ folders (repeatable), or CATEGORY=DIR for one category")
    p.add_argument("--categories", required=True, help="comma-separated category names")
    p.add_argument("--tail", choices=TAIL_KINDS, default="step")
    p.add_argument("--k", type=int, default=4, help="step: images kept per tail class (default 4)")
    p.add_argument("--noise", type=float, default=0.1, help="ratio of injected test anomalies (default 0.1)")
    p.add_argument("--overlap", action="store_true",
                   help="leave injected anomalies in the test sets (published protocol)")
    p.add_argument("--methods", default="patchcore,softpatch,tailedcore", help="comma-separated scorers")
    p.add_argument("--manifest-dir", type=Path, default=Path("datasets"),
                   help="where split manifests are read / written (default datasets/)")
    p.add_argument("--manifest", type=Path, help="use this manifest file as is")
    p.add_argument("--coreset-ratio", type=float, help="coreset ratio for every method (default 0.1)")
    p.add_argument("--chunk-size", type=int, help="coreset chunk size (default 4096)")
    p.add_argument("--index", choices=["auto", "flat", "hnsw", "ivf"],
                   help="faiss index (default auto: exact for small banks, HNSW for large)")
    p.add_argument("--tail-views", choices=sorted(VIEW_KINDS),
                   help="tail augmentation (default rot15flip for step, rot30flip for pareto)")
    add_model_args(p)
    add_output_args(p)
    p.set_defaults(func=run)


def resolve_categories(roots: list[str], categories: list[str]) -> dict[str, Path]:
    """Category -> its folder, from plain roots (searched in order) and CATEGORY=DIR entries."""
    mapping: dict[str, Path] = {}
    plain: list[Path] = []
    for entry in roots:
        if "=" in entry:
            cat, d = entry.split("=", 1)
            mapping[cat.strip()] = Path(d)
        else:
            plain.append(Path(entry))
    for r in plain:
        if not r.is_dir():
            raise FileNotFoundError(f"{r}: --root folder not found")
    out = {}
    for c in categories:
        if c in mapping:
            out[c] = mapping[c]
            continue
        found = [r / c for r in plain if (r / c / "train").is_dir()]
        found += [r for r in plain if r.name == c and (r / "train").is_dir()]
        if not found:
            raise DatasetLayoutError(
                f"category '{c}': no {c}/train/ under {', '.join(map(str, plain)) or 'any --root'}")
        out[c] = found[0]
    return out


def scorer_params(section: dict, methods: list[str], options: dict) -> dict:
    """The config's ``scorer`` section overridden by the command-line options that are set;
    each method later takes the keys its constructor accepts. A key no method accepts is an
    error (a typo would otherwise be ignored silently)."""
    params = dict(section or {})
    params.update({k: v for k, v in options.items() if v is not None})
    accepted = set().union(*(scorer_parameters(m) for m in methods))
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise ValueError(f"scorer settings {unknown} are not parameters of any of {methods}")
    return params


def run(args: argparse.Namespace) -> int:
    categories = [c.strip() for c in args.categories.split(",") if c.strip()]
    if len(set(categories)) != len(categories):
        raise ValueError(f"--categories lists a category twice: {args.categories}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        get_scorer_class(m)  # unknown names fail before any work
    dirs = resolve_categories(args.root, categories)
    datasets = {c: load_mvtec(d) for c, d in dirs.items()}
    for c, d in list(datasets.items()):  # name by the requested category, not the folder
        d.name = c
    cfg = model_config_from_args(args)
    seed = cfg.seed
    if args.manifest:
        split = LongTailSet.load(args.manifest)
        if sorted(split.categories) != sorted(categories):
            raise ValueError(f"{args.manifest}: manifest categories {split.categories} differ "
                             f"from --categories {sorted(categories)}")
    else:
        path = args.manifest_dir / manifest_name(args.tail, args.k, args.noise, seed, categories,
                                                 args.overlap)
        if path.is_file():
            split = LongTailSet.load(path)
            if not split.same_recipe(args.tail, args.k, args.noise, seed, args.overlap, categories):
                raise ValueError(f"{path}: existing manifest has a different recipe; delete it or "
                                 f"use --manifest-dir")
            log.info("re-using split manifest %s", path)
        else:
            split = build_longtail(datasets, dirs, args.tail, args.k, args.noise, seed, args.overlap)
            split.save(path)
            log.info("wrote split manifest %s", path)
    params = scorer_params(cfg.scorer, methods, {"coreset_ratio": args.coreset_ratio,
                                                 "chunk_size": args.chunk_size, "index": args.index})
    views = args.tail_views or DEFAULT_VIEWS[split.tail]
    report = evaluate_longtail(split, datasets, dirs, cfg, methods, params, views,
                               progress=not args.quiet)

    rows = [("split", f"{split.tail}" + (f" k={split.k}" if split.k else "") +
             f", noise {split.noise:g}, seed {split.seed}, tail classes {split.tail_classes or 'none'}")]
    for c, v in split.counts.items():
        est = report.class_size_estimates["per_class"][c]
        rows.append((f"  {c}", f"{v['good']} good + {v['noise']} noise; TailSampler median size "
                     f"{est['predicted_median']:.0f}, {est['flagged_tail']} flagged tail"))
    by = {(r["method"], r["category"]): r["image_auroc"] for r in report.results}
    for m, mean in report.mean_auroc().items():
        per = ", ".join(f"{c} {by[(m, c)]:.3f}" for c in split.categories)
        info = report.methods[m]
        rows.append((m, f"mean {mean:.4f} ({per}); fit {info['fit_seconds']:.0f} s, "
                        f"bank {info['memory_bank_items']}"))
    rows.append(("timings", ", ".join(f"{k} {v}" for k, v in report.timings.items())))
    print_table(rows)
    write_json(args.output_json, report.to_dict())
    return 0
