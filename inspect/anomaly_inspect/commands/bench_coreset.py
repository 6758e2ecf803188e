"""``anomaly-inspect bench-coreset``: coreset variants side by side (radius, time, AUROC)."""

from __future__ import annotations

import argparse

from ..choices import CORESET_VARIANTS
from .common import (
    add_engine_args,
    add_model_args,
    add_output_args,
    engine_from_args,
    given_flags,
    model_config_from_args,
    nonempty_path,
    positive_int,
    positive_int_list,
    refuse_repeats,
    write_json,
)

DEFAULT_RATIOS = "0.01,0.1,0.25"
DEFAULT_VARIANTS = "two_round,exact"


def ratio_list(text: str) -> list[float]:
    """argparse type of --ratios: comma-separated numbers, none given twice (a row each: a
    repeat would run the same rows again); :func:`check_ratios` checks that each is a share in
    (0, 1], once the options the benchmark ignores have been refused."""
    try:
        ratios = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--ratios must be comma-separated shares in (0, 1] "
                                         f"(e.g. 0.01,0.1), got {text!r}") from None
    refuse_repeats(ratios, text, "each ratio is one row")
    return ratios


def variant_list(text: str) -> list[str]:
    """argparse type of --variants: comma-separated coreset variant names, none empty or given
    twice (a row each: an empty list would quietly run the defaults, a repeat a row twice);
    ``coreset_bench`` refuses an unknown name."""
    names = text.split(",")
    if not text.replace(",", "").strip():
        raise argparse.ArgumentTypeError(f"no variant names in {text!r}; give comma-separated "
                                         f"names, e.g. {DEFAULT_VARIANTS}, or drop it for the default")
    if "" in names:
        raise argparse.ArgumentTypeError(f"an empty name in {text!r}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise argparse.ArgumentTypeError(f"{', '.join(twice)} given twice in {text!r}; each "
                                         f"variant is one row")
    return names


def check_ratios(ratios: list[float]) -> None:
    """Refuse --ratios outside (0, 1] before any feature is extracted."""
    bad = [r for r in ratios if not 0 < r <= 1]
    if bad:
        raise ValueError(f"--ratios must be shares in (0, 1], got {', '.join(map(str, bad))}")


#: the options --stream-images (random features) takes; every other option is one of the
#: benchmark on real features (the model, engine and category ones) and is refused with it
STREAM_OPTIONS = ("stream_images", "max_bank_items", "output_json", "quiet")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench-coreset", help="coreset variants side by side: radius, time, AUROC",
                       description=__doc__)
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """All of bench-coreset's options (read by :func:`check_options` through ``given_flags``)."""
    p.add_argument("--root", type=nonempty_path, help="folder holding CATEGORY/")
    p.add_argument("--category")
    p.add_argument("--stream-images", type=positive_int_list, metavar="N,N,...",
                   help="instead: peak RSS of the streamed fit on N images of random features "
                        "(one fresh process each; coreset and bank only, no backbone)")
    p.add_argument("--max-bank-items", type=positive_int, help="with --stream-images: cap the bank")
    p.add_argument("--ratios", type=ratio_list, metavar="R,R,...",
                   help=f"comma-separated coreset ratios in (0, 1] (default {DEFAULT_RATIOS})")
    p.add_argument("--variants", type=variant_list, metavar="V,V,...",
                   help=f"comma-separated, from {', '.join(CORESET_VARIANTS)} (default "
                        f"{DEFAULT_VARIANTS}; exact is slow at large ratios)")
    p.add_argument("--engine-only", action="store_true",
                   help="with --engine ray: only the one-machine streamed fit against the engine's, "
                        "holding no features (for large training sets)")
    p.add_argument("--radius-sample", type=positive_int, metavar="N",
                   help="with --engine-only: covering radius over a seeded sample of N patches (a maximum "
                        "over the sample: compare it only between the rows of one run)")
    add_model_args(p)
    add_engine_args(p)
    add_output_args(p)


def check_options(args: argparse.Namespace) -> None:
    """Refuse the options the chosen benchmark does not use."""
    if args.stream_images:
        unused = given_flags(args, add_arguments, but=STREAM_OPTIONS)
        if unused:
            raise ValueError(f"--stream-images (random features) does not take {', '.join(unused)}")
        return
    if args.max_bank_items is not None:
        raise ValueError("--max-bank-items applies to --stream-images only")
    if args.engine_only:
        unused = given_flags(args, add_arguments, only=("ratios", "variants"))
        if unused:
            raise ValueError(f"--engine-only (the config's own coreset) does not take {', '.join(unused)}")
        if args.engine != "ray":  # an in-process engine's row would be the one-machine fit again
            raise ValueError("--engine-only applies to a distributed engine (--engine ray) only")
    elif args.radius_sample is not None:
        raise ValueError("--radius-sample applies to --engine-only only")
    if args.root is None or args.category is None:
        raise ValueError("--root and --category are required (or --stream-images)")
    if args.ratios is not None:
        check_ratios(args.ratios)


def run(args: argparse.Namespace) -> int:
    from ..data.mvtec import load_mvtec
    from ..evaluation.coreset_bench import bench_coreset, format_row

    check_options(args)
    if args.stream_images:
        return run_stream(args)
    cfg = model_config_from_args(args)
    if args.engine_only:
        from ..evaluation.coreset_bench import bench_engine_fit

        rows = bench_engine_fit(load_mvtec(args.root, args.category), cfg, engine_from_args(args),
                                args.radius_sample, progress=not args.quiet)
        for row in rows if args.quiet else []:
            print(format_row(row))
        write_json(args.output_json, {"rows": rows, "config": cfg.to_dict()})
        return 0
    rows = bench_coreset(load_mvtec(args.root, args.category), cfg,
                         args.ratios or ratio_list(DEFAULT_RATIOS),
                         args.variants or variant_list(DEFAULT_VARIANTS),
                         progress=not args.quiet, engine=engine_from_args(args))
    if args.quiet:
        for row in rows:
            print(format_row(row))
    write_json(args.output_json, {"rows": rows, "config": cfg.to_dict()})
    return 0


def run_stream(args: argparse.Namespace) -> int:
    from ..evaluation.coreset_bench import stream_fit_in_subprocess

    rows = []
    for n in args.stream_images:
        rows.append(stream_fit_in_subprocess(n, max_items=args.max_bank_items))
        r = rows[-1]
        print(f"{r['images']:>6} images  {r['patches']:>9} patches  bank {r['bank']:>7}  "
              f"{r['seconds']:>7.1f} s  peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    write_json(args.output_json, {"stream_fit": rows})
    return 0
