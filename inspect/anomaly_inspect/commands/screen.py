"""``anomaly-inspect screen``: score new images with a saved model; CSV, overlays, HTML report."""

from __future__ import annotations

import argparse

from ..choices import OVERLAY_CHOICES
from .common import (
    add_engine_args,
    add_max_pixels_arg,
    add_output_args,
    check_writable,
    engine_from_args,
    nonempty,
    nonempty_path,
    out_dir,
    positive_int,
    print_table,
    write_json_and_show,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("screen", help="screen images with a saved model (results.csv, report.html)",
                       description=__doc__)
    p.add_argument("model_dir", type=nonempty_path, metavar="MODEL_DIR", help="written by 'anomaly-inspect fit'")
    p.add_argument("inputs", type=nonempty, nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    p.add_argument("--out", type=out_dir, required=True, metavar="RESULTS_DIR", help="results folder")
    p.add_argument("--rescore", action="store_true",
                   help="score every image again instead of skipping those already in "
                        "results.csv (which starts over: the thumbnails, overlays, strips and "
                        "maps its earlier rows name are removed)")
    p.add_argument("--labels", type=nonempty, metavar="CSV|mvtec|none",
                   help="ground truth for ROC/AUROC in the report: a CSV with path,label columns, "
                        "'mvtec' (test/good = normal), or 'none'; default: MVTec layout when every "
                        "image follows it")
    p.add_argument("--overlays", choices=OVERLAY_CHOICES, default="flagged",
                   help="which images get a heatmap overlay; resumed rows without the one it "
                        "asks for get theirs (default: flagged)")
    p.add_argument("--maps", choices=OVERLAY_CHOICES, default="none",
                   help="which images get their raw anomaly map as maps/*.npy (float32 at the "
                        "image's size, at most 4096 px on the longer side; the score's units; NaN "
                        "outside a centre crop), named in results.csv's map column; resumed rows without "
                        "one get theirs (default: none)")
    p.add_argument("--no-report", action="store_true",
                   help="do not write report.html (then --labels, used only there, is refused)")
    p.add_argument("--explain", nargs="?", type=positive_int, const=3, default=0, metavar="TOP",
                   help="for each flagged image, a strip of its TOP (default 3) most anomalous "
                        "patches beside the normal training patches they matched (explain/, "
                        "shown in the report); resumed flagged rows without one get theirs")
    p.add_argument("--batch-size", type=positive_int,
                   help="images per backbone batch (default: the model's)")
    add_max_pixels_arg(p)
    add_engine_args(p)
    add_output_args(p)
    p.set_defaults(func=run, out_owns=_outputs)


def _outputs() -> tuple[str, ...]:
    """The names screen writes in --out (--output-json may go beside them)."""
    from ..screening.runner import OUTPUTS

    return OUTPUTS


def run(args: argparse.Namespace) -> int:

    from ..resources import peak_rss_mb
    from ..screening import load_model

    check_writable(args.out, "--out", into=True)
    if args.labels is not None and args.no_report:
        raise ValueError("--labels: used only by the report, which --no-report turns off; "
                         "drop one of them")
    engine = engine_from_args(args)  # fails fast (one line) when Ray is missing
    model = load_model(args.model_dir, progress=not args.quiet, batch_size=args.batch_size,
                       max_pixels=args.max_pixels)
    s = model.screen(args.inputs, args.out, rescore=args.rescore, overlays=args.overlays,
                     labels=args.labels, report=not args.no_report, progress=not args.quiet,
                     explain=args.explain, engine=engine, maps=args.maps)
    rows = [
        ("images", f"{s.n_inputs} ({s.n_scored} scored now, {s.n_resumed} already in results.csv)"),
        ("flagged anomalous", f"{s.n_flagged} of {s.n_scored} scored now"),
        ("errors", str(s.n_errors)),
        ("threshold", f"score > {model.threshold:.6g} (expected FPR "
                      f"{model.calibration.expected_fpr:.2%}, {model.calibration.n_calibration} "
                      f"calibration images)"),
        ("throughput", f"{s.images_per_second:.1f} img/s ({s.n_scored} scored in "
                       f"{s.seconds:.1f} s)"),
        *([("engine start", f"{s.engine_start:.1f} s (not in the throughput)")]
          if s.engine_start else []),
        *([("engine warm-up", f"{s.engine_warm_up:.1f} s (workers starting, loading the model; "
                              f"not in the throughput)")] if s.engine_warm_up else []),
        *([("resumed rows", f"{s.resumed_seconds:.1f} s writing their missing strips, maps or "
                            f"overlays (not in the throughput)")] if s.resumed_seconds else []),
        ("peak RSS", f"{peak_rss_mb():.0f} MB"),
        ("results", str(s.results_csv)),
    ]
    if s.report_html:
        rows.append(("report", str(s.report_html)))
    write_json_and_show(args.output_json, {
        "n_inputs": s.n_inputs, "n_scored": s.n_scored, "n_resumed": s.n_resumed,
        "n_flagged": s.n_flagged, "n_errors": s.n_errors,
        **(_totals(s.results_csv) if args.output_json else {}),  # read only for the JSON
        "seconds": round(s.seconds, 3), "engine_start": round(s.engine_start, 3),
        "engine_warm_up": round(s.engine_warm_up, 3),
        "resumed_seconds": round(s.resumed_seconds, 3),
        "images_per_second": round(s.images_per_second, 3), "peak_rss_mb": round(peak_rss_mb(), 1),
        "errors": [{"path": p, "error": e} for p, e in s.errors],
    }, lambda: print_table(rows))
    if s.n_errors:
        import sys

        print(f"error: {s.n_errors} image(s) could not be screened (rows with an error in "
              f"{s.results_csv}):", file=sys.stderr)
        for path, reason in s.errors[:10]:
            print(f"  {path}: {reason}", file=sys.stderr)
        if s.n_errors > 10:
            print(f"  ... and {s.n_errors - 10} more", file=sys.stderr)
    return s.exit_code


def _totals(results_csv) -> dict[str, int]:
    """The rows of the whole results folder, counted as report.html counts them (n_flagged /
    n_errors count only this run's images: 0 flagged on a resumed run that scored nothing)."""
    from ..screening.html_report import row_counts
    from ..screening.runner import read_results

    rows, _ = read_results(results_csv)
    flagged, errors = row_counts(rows)
    return {"n_rows_total": len(rows), "n_flagged_total": flagged, "n_errors_total": errors}
