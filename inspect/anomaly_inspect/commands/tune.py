"""``anomaly-inspect tune``: choose a configuration from normal images alone (synthetic anomalies).

With ``--judge`` (a labelled MVTec category) every candidate is also fitted on all training
images and scored on the test split, to *report* how good the choice was; the test labels never
change the choice.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
from pathlib import Path

from .common import (
    add_max_pixels_arg,
    add_model_args,
    add_output_args,
    check_writable,
    given_flags,
    model_config_from_args,
    non_negative_int,
    nonempty,
    nonempty_path,
    positive_int,
    print_table,
    write_json,
)


def folds(text: str) -> int:
    """argparse type: a number of folds, >= 2 (each image is held out once)."""
    v = positive_int(text)
    if v < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2 (each fold is held out once), got {text!r}")
    return v


def add_tune_args(p: argparse.ArgumentParser) -> None:
    """The selector's options (shared by ``tune``, ``fit --auto`` and ``evaluate --auto``); their
    defaults are TuneSettings', None here = not given."""
    p.add_argument("--grid", choices=("compact", "ascent", "full"),
                   help="candidates: compact = the base config and each setting changed one at a "
                        "time (11; default); ascent = compact, then the pairs (and the whole set) "
                        "of the changes that beat the base config by more than the fold noise; "
                        "full = every combination (216; hours on two cores)")
    p.add_argument("--candidates", metavar="NAMES",
                   help="comma-separated candidate names instead of --grid, e.g. "
                        "lite0-320-8+16-rows-stretch,lite2-384-8+16-mean-pad (the base config is "
                        "always added)")
    p.add_argument("--folds", type=folds, help="held-out folds, at least 2 (default 3)")
    p.add_argument("--max-tune-images", type=positive_int,
                   help="training images used for validation, a seeded subset (default 300)")
    p.add_argument("--ensemble", type=non_negative_int, metavar="K",
                   help="evaluate --auto: fuse the top K candidates, each standardised by its "
                        "held-out normal scores (default 0 = the single chosen configuration); "
                        "tune: the size of the ensemble it validates (default 3); not for fit")
    p.add_argument("--tune-cache", type=nonempty_path, default=None, metavar="DIR",
                   help="where extracted stage maps and synthetic images are kept "
                        "(default ~/.cache/anomaly_inspect/tune, or $ANOMALY_INSPECT_CACHE/tune); "
                        "not inside a folder whose images the command reads")


def check_tune_args(args: argparse.Namespace, fuses: bool = True) -> None:
    """Refuse the selector's options without ``--auto`` (``fit``, ``evaluate``): unused there;
    ``--ensemble`` where nothing is fused (``fit`` saves one model); with ``--auto``, a tune
    cache it could not write in or that its inputs would read (:func:`check_tune_cache`)."""
    given = given_flags(args, add_tune_args)
    if given and not args.auto:
        raise ValueError(f"{', '.join(given)}: tuning option{'s' if len(given) > 1 else ''}, "
                         f"used only with --auto")
    if not fuses and args.ensemble is not None:
        raise ValueError("--ensemble: fit saves one model (the chosen configuration); "
                         "fusion is evaluate --auto's")
    if args.auto:  # without it no tune cache is written
        check_tune_cache(args)


#: the options (of ``tune``, ``fit`` and ``evaluate``) that name files, folders or globs whose
#: images the command reads, and their flags; ``--root`` by its category's folders (:func:`input_folders`)
INPUT_FLAGS = {"train": "--train", "calibration": "--calibration", "train_dirs": "--train-dir",
               "test_normal_dirs": "--test-normal-dir",
               "test_anomalous_dirs": "--test-anomalous-dir", "mask_dir": "--mask-dir"}


def input_folders(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """(flag, folder) of each folder whose images the command lists recursively: a folder
    named (:data:`INPUT_FLAGS`), a glob's fixed leading folders (as
    :func:`..data.layout.expand_inputs` roots it), and the folders of ``--root``'s category
    (``--root`` itself without ``--category``) that :mod:`..data.mvtec` lists: ``train/``,
    and ``test/`` and ``ground_truth/`` where the command reads the test split (``evaluate``;
    ``tune`` with ``--judge`` only). A file named brings in no other image, nor does the rest
    of the category folder (a tune cache beside train/ is taken)."""
    out = []
    for option, flag in INPUT_FLAGS.items():
        value = getattr(args, option, None)
        for item in [] if value is None else [value] if isinstance(value, (str, Path)) else value:
            p = Path(item)
            if p.is_dir():
                out.append((flag, p))
            elif not os.path.lexists(p) and any(ch in str(item) for ch in "*?["):
                out.append((flag, Path(*itertools.takewhile(
                    lambda part: not any(ch in part for ch in "*?["), p.parts))))
    root, category = getattr(args, "root", None), getattr(args, "category", None)
    if root is not None:
        cat_dir = Path(root) / category if category else Path(root)
        reads_test = getattr(args, "judge", True)  # tune reads the test split with --judge only
        out += [("--root/--category" if category else "--root", cat_dir / sub)
                for sub in ("train", "test", "ground_truth")[:3 if reads_test else 1]]
    return out


def listed_below(folder: Path, path: Path) -> bool:
    """Whether listing ``folder`` recursively reaches ``path`` (both resolved): ``path`` is
    ``folder`` or lies below it, with no hidden name on the way (a listing skips those)."""
    f, p = Path(os.path.realpath(folder)), Path(os.path.realpath(path))
    return (p == f or f in p.parents) and not any(part.startswith(".")
                                                  for part in p.relative_to(f).parts)


def check_tune_cache(args: argparse.Namespace) -> None:
    """Refuse, before any work, a ``--tune-cache`` folder this process could not write in, and
    a tune cache (``--tune-cache``, else the user cache's) that lies in a folder whose images the
    command reads (:func:`input_folders`, :func:`listed_below`): the synthetic anomalies and
    masks tuning writes there were read as normal training images by the next tune or fit,
    the set growing run after run. Refused rather than left out of the listings: a dataset
    adapter or a later plain ``fit`` would still read them."""
    from ..tuning.tune import tune_cache
    from ..user_cache import CACHE_ENV

    if args.tune_cache is not None:
        check_writable(args.tune_cache, "--tune-cache", into=True)
    cache = tune_cache(args.tune_cache)
    for flag, folder in input_folders(args):
        if not listed_below(folder, cache):
            continue
        real = os.path.realpath(cache)
        resolved = "" if real == os.path.abspath(cache) else f" (= {real})"
        if args.tune_cache is not None:
            named, fix = f"--tune-cache {cache}{resolved}", "give a --tune-cache outside it"
        elif os.environ.get(CACHE_ENV):
            named = f"the tune cache {cache}{resolved} (${CACHE_ENV}/tune)"
            fix = f"set ${CACHE_ENV} to a folder outside it, or give --tune-cache DIR"
        else:
            named = f"the default tune cache {cache}{resolved}"
            fix = "give --tune-cache DIR outside it"
        raise ValueError(f"{named}: inside the {flag} folder {folder}, whose images this "
                         f"command reads: its synthetic anomalies (and their masks) would be "
                         f"read as training images by the next run; {fix}")


def settings_from_args(args: argparse.Namespace):
    from ..tuning import TuneSettings

    given = {"n_folds": args.folds, "max_images": args.max_tune_images, "grid": args.grid,
             "ensemble": args.ensemble or None}  # evaluate's 0 (no fusion): the default members
    return TuneSettings(**{k: v for k, v in given.items() if v is not None})


def run_tune(train_paths, args: argparse.Namespace, cfg):
    """Tune on ``train_paths`` with the command-line settings; prints a one-line summary.
    ``--grid`` with ``--candidates`` is refused: the list replaces the grid; so is an empty
    list (not the grid: that is what leaving ``--candidates`` out gives)."""
    from ..tuning.candidates import Candidate
    from ..tuning.tune import TOO_SMALL, tune

    if args.candidates is not None and not args.candidates.replace(",", "").strip():
        raise ValueError(f"--candidates {args.candidates!r}: no candidate names; give "
                         "comma-separated names, e.g. lite0-320-8+16-rows-stretch, or drop it "
                         "for --grid's candidates")
    if args.candidates and given_flags(args, add_tune_args, only=("grid",)):
        raise ValueError("--grid: not with --candidates (the listed candidates replace the grid); "
                         "drop one of them")
    cands = None if not args.candidates else [Candidate.parse(n.strip())  # "a, b" as "a,b"
                                              for n in args.candidates.split(",")]
    result = tune(train_paths, cfg, settings_from_args(args), cands,
                  cache_dir=args.tune_cache, progress=not args.quiet,
                  max_pixels=args.max_pixels)
    d = result.decision
    small = [s for s in result.skipped if s.get("kind") == TOO_SMALL]
    n_bad = len(result.skipped) - len(small)
    skipped = f", {n_bad} unreadable image{'s' * (n_bad != 1)} skipped" if n_bad else ""
    print(f"tune: chose {result.chosen.name} ({d.reason}; {len(result.candidates)} candidates, "
          f"{result.seconds:.0f} s{skipped})")
    if args.ensemble and result.ensemble_note:  # asked for: fused (evaluate) or validated (tune)
        logging.getLogger(__name__).warning("--ensemble %d: %s", args.ensemble,
                                            result.ensemble_note)
    if small:  # no copy drawn on them; a fit (and --judge's) still trains on them
        print(f"tune: {len(small)} image{'s' * (len(small) != 1)} too small for synthetic "
              f"anomalies: used for fitting, not held out")
    return result


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="choose a configuration from normal images (synthetic anomalies)",
                       description=__doc__)
    p.add_argument("--train", type=nonempty, action="append", metavar="DIR",
                   help="normal training images: folder, file or glob; repeatable")
    p.add_argument("--root", type=nonempty_path, help="MVTec layout: folder holding CATEGORY/")
    p.add_argument("--category", help="MVTec category (its train/good images are used)")
    p.add_argument("--judge", action="store_true",
                   help="also score every candidate on the category's labelled test split and "
                        "report test AUROC, rank correlation and regret (never used to choose)")
    add_max_pixels_arg(p)
    add_tune_args(p)
    add_model_args(p, tunes=True)
    add_output_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data.mvtec import load_mvtec, load_mvtec_train
    from ..screening.model import input_images

    if (args.root is not None or args.category) and args.train:
        raise ValueError("tune: give --train DIR or --root/--category, not both")
    if args.category and args.root is None:
        raise ValueError("tune --category: needs --root, the folder holding the category")
    check_tune_cache(args)
    cfg = model_config_from_args(args)
    dataset = None
    if args.root is not None and args.judge:
        dataset = load_mvtec(args.root, args.category)
        train = [s.path for s in dataset.train]
    elif args.root is not None:  # tuning reads train/good alone: no test split needed
        train = [s.path for s in load_mvtec_train(args.root, args.category)]
    elif args.train:
        train = input_images(args.train, twins="once")  # less earlier outputs, as fit
    else:
        raise ValueError("tune: give --train DIR or --root/--category")
    if args.ensemble == 0:
        raise ValueError("tune --ensemble: the size of the validated ensemble, at least 1 "
                         "(default 3)")
    if args.judge and dataset is None:
        raise ValueError("tune --judge needs a labelled MVTec category (--root/--category)")
    if args.judge:
        from ..evaluation.evaluate import check_dataset

        check_dataset(dataset, args.max_pixels)  # before the tuning, not after it
    result = run_tune(train, args, cfg)
    out = {"tuning": result.to_dict()}
    rows = [(c["name"], f"synthetic AUROC {c['mean_auroc']:.4f}, Borda {c['borda']:.2f}")
            for c in out["tuning"]["candidates"]]
    if args.judge:
        from ..tuning.judge import judge_selector

        write_json(args.output_json, out)  # the choice is kept even if judging is interrupted

        judged = judge_selector(dataset, result, cfg, args.tune_cache,
                                progress=not args.quiet, max_pixels=args.max_pixels)
        out["judge"] = judged
        test = {c["name"]: c["test_auroc"] for c in judged["candidates"]}
        rows = [(n, f"{v}, test AUROC {test[n]:.4f}") for n, v in rows]
        rows += [("chosen / default / best", f"{judged['chosen_test_auroc']:.4f} / "
                  f"{judged['default_test_auroc']:.4f} / {judged['best_test_auroc']:.4f}"),
                 ("regret chosen / default", f"{judged['regret_chosen']:.4f} / {judged['regret_default']:.4f}"),
                 ("Spearman (Borda, test)", f"{judged['spearman_borda_test']:.3f}"
                  if judged["spearman_borda_test"] is not None
                  else f"n/a, {judged['spearman_note']['spearman_borda_test']}"),
                 ("ensemble test AUROC", f"{judged['ensemble_test_auroc']:.4f} ({', '.join(judged['ensemble'])})")]
    print_table(rows)
    write_json(args.output_json, out)
    return 0
