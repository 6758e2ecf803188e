"""``anomaly-inspect bench-scale``: the same images screened by the local engine and by Ray at
1, 2, ... workers, side by side: img/s, ratio to local, start-up, peak RSS of driver and workers."""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from .common import (
    add_output_args,
    nonempty,
    nonempty_path,
    positive_int,
    positive_int_list,
    write_json,
)

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench-scale", help="local vs Ray engine throughput and memory, side by side",
                       description=__doc__)
    p.add_argument("model_dir", type=nonempty_path, metavar="MODEL_DIR", help="written by 'anomaly-inspect fit'")
    p.add_argument("inputs", type=nonempty, nargs="+", metavar="INPUT", help="image files, folders or globs")
    p.add_argument("--images", type=positive_int, default=1000,
                   help="images per run: the inputs repeated, or the first this many (default 1000)")
    p.add_argument("--workers", type=positive_int_list, default=[1, 2], metavar="N,N,...",
                   help="Ray actor pool sizes to run (default 1,2)")
    p.add_argument("--rounds", type=positive_int, default=1,
                   help="repeat every configuration, interleaved (default 1)")
    p.add_argument("--batch-size", type=positive_int,
                   help="images per backbone batch, every run (default: the model's)")
    add_output_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..pipeline.ray_engine import import_ray
    from ..screening.model import input_images
    from ..screening.model_dir import checked_model_info
    from ..screening.scale_bench import bench_scale, format_row, run_label

    checked_model_info(args.model_dir)  # once, not in every run (each would start Ray first)
    import_ray()  # one line saying how to install it, before any run
    found = input_images(args.inputs, twins="keep")  # as screen takes them
    if not found:
        raise ValueError(f"no images found in {', '.join(args.inputs)}")
    paths = [found[i % len(found)] for i in range(args.images)]
    configs = [("local", None)] + [("ray", w) for w in args.workers]
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        rows = bench_scale(args.model_dir, paths, configs, Path(tmp), args.rounds,
                           progress=not args.quiet, batch_size=args.batch_size)
    for row in rows if args.quiet else []:  # printed as each run ends otherwise
        print(format_row(row, rows))
    write_json(args.output_json, {"model_dir": str(args.model_dir), "images": len(paths),
                                  "distinct_images": len(set(paths)), "runs": rows})
    failed = [row for row in rows if "error" in row]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(rows)} bench-scale runs failed (first: "
                           f"{run_label(failed[0])}: {failed[0]['error']})")
    check_unreadable(rows, len(paths))
    return 0


def check_unreadable(rows: list[dict], images: int) -> None:
    """Refuse runs that read no image (their rates time nothing); warn, with the count (the
    most of a run), where some images could not be read (the rates count the scored ones).
    Rows of runs that failed have no ``errors``."""
    from ..screening.scale_bench import run_label

    def first(some: list[dict]) -> str:
        return f"{run_label(some[0])}: {some[0]['first_error']}"

    empty = [row for row in rows if row.get("errors") and not row["images"]]
    if empty:
        raise ValueError(f"no image could be read in {len(empty)} of {len(rows)} bench-scale "
                         f"runs (first: {first(empty)})")
    unread = [row for row in rows if row.get("errors")]
    if unread:
        log.warning("%d of %d images could not be read in %d of %d bench-scale runs (first: "
                    "%s); the rates count the scored images only",
                    max(r["errors"] for r in unread), images, len(unread), len(rows),
                    first(unread))
