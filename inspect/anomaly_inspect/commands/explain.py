"""``anomaly-inspect explain``: why each image scored as it did (nearest normal patches)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import (
    add_max_pixels_arg,
    add_output_args,
    check_writable,
    nonempty,
    nonempty_path,
    out_dir,
    positive_int,
    print_table,
    write_json,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="show the normal training patches behind an image's score",
                       description=__doc__ + " For every image: its most anomalous patches "
                       "beside the normal training patches they were compared with (a strip "
                       "per image in --out, details in --out/explanations.json).")
    p.add_argument("model_dir", type=nonempty_path, metavar="MODEL_DIR", help="written by 'anomaly-inspect fit'")
    p.add_argument("inputs", type=nonempty, nargs="+", metavar="IMAGE", help="image files, folders or glob patterns")
    p.add_argument("--out", type=out_dir, required=True, metavar="DIR", help="where strips are written")
    p.add_argument("--top", type=positive_int, default=3,
                   help="non-overlapping suspicious patches per image (default 3; a strip draws "
                        "the first 50, explanations.json keeps all)")
    p.add_argument("--batch-size", type=positive_int,
                   help="images per backbone batch (default: the model's)")
    add_max_pixels_arg(p)
    add_output_args(p)
    p.set_defaults(func=run, out_owns=_outputs)


def _outputs() -> tuple[str, ...]:
    """The names explain writes in --out besides its strips (--output-json may go beside them)."""
    from ..screening.explain import OUTPUTS

    return OUTPUTS


def run(args: argparse.Namespace) -> int:
    from ..screening import load_model
    from ..screening.explain import ExplainUnavailable, explain_to_dir

    check_writable(args.out, "--out", into=True)
    model = load_model(args.model_dir, progress=not args.quiet, batch_size=args.batch_size,
                       max_pixels=args.max_pixels)
    try:
        results = explain_to_dir(model, args.inputs, args.out, args.top, progress=not args.quiet)
    except ExplainUnavailable as exc:
        raise ValueError(f"{args.model_dir}: {exc}") from None
    rows = [(path, summary(e)) for path, e, _ in results if e is not None]
    failed = [(path, reason) for path, _, reason in results if reason]
    if rows:
        print_table(rows)
    print(f"strips and explanations.json in {args.out}")
    write_json(args.output_json, {"explanations": str(Path(args.out) / "explanations.json"),
                                  "n_images": len(results), "n_errors": len(failed)})
    for path, reason in failed:
        print(f"error: {path}: {reason}", file=sys.stderr)
    return 1 if failed else 0


def summary(e) -> str:
    """One line: the score and decision, the top patch's box and what it matched (a box in an
    augmented view of the training image is in model-input pixels of that view)."""
    from ..screening.explain import view_text

    top = e.patches[0] if e.patches else None
    match = "-"
    if top is not None:
        m = top.match
        match = m.note or f"{Path(m.path).name} {_box(m.box)}"
        if not m.note and m.view is not None:
            match += f" in its view{view_text(m.view)}, model-input px"
    return (f"score {e.score:.4g} ({'anomalous' if e.flagged else 'normal'}, threshold "
            f"{e.threshold:.4g}); top patch {_box(top.box) if top else '-'} matched {match}")


def _box(box) -> str:
    return "-" if box is None else f"(x {box.left}, y {box.top}, {box.width}x{box.height})"
