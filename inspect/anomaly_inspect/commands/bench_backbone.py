"""``anomaly-inspect bench-backbone``: backbone-only throughput of each runtime, side by side.

Same stages and input size as ``evaluate``: the physical limit the full
pipeline is measured against. Every runtime runs in this one process on the
same batch, interleaved round by round (best of ``--rounds``), so that load
from other processes affects them alike. torch f32 is always measured: it is
the reference for the speed ratio and for the largest relative difference.
Each row names what ran (``runs_on``): a variant that fell back (an f32 export that failed
runs in torch; OpenVINO runs bf16 as f32 on a CPU without bf16) says so (``fell_back``).
"""

from __future__ import annotations

import argparse
import tempfile
import time

from ..choices import PRECISIONS, RUNTIMES
from ..config import BackboneConfig, FeatureConfig
from .common import (
    add_output_args,
    image_size,
    int_list,
    nonempty,
    positive_int,
    print_table,
    write_json,
)

VARIANTS = [("torch", "f32"), ("onnxruntime", "f32"), ("onnxruntime", "int8"), ("openvino", "f32"),
            ("openvino", "bf16")]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench-backbone", help="measure backbone-only images/s per runtime",
                       description=__doc__)
    p.add_argument("--backbone", default=BackboneConfig.name,
                   help=f"timm model name (default {BackboneConfig.name})")
    p.add_argument("--layers", type=int_list,
                   help="comma-separated timm feature indices (default: stride 8 and 16)")
    p.add_argument("--weights", type=nonempty, help="checkpoint FILE or 'random'")
    p.add_argument("--runtime", choices=RUNTIMES, action="append",
                   help="measure this runtime (repeatable; default: every installed one; one "
                        "named here must be installed); torch f32 is always measured as the "
                        "reference")
    p.add_argument("--precision", choices=PRECISIONS, action="append",
                   help="measure this precision (repeatable; default: all; bf16 is openvino only, "
                        "int8 onnxruntime only, calibrated here on the random benchmark batch, "
                        "a graph kept for this run only)")
    p.add_argument("--pooled", action="store_true",
                   help="run the full network for the pooled embedding too (norm / classifier scorers)")
    p.add_argument("--image-size", type=image_size, default=FeatureConfig.image_size,
                   help=f"input side in pixels (default {FeatureConfig.image_size}, as evaluate)")
    p.add_argument("--batch-size", type=positive_int, default=32,
                   help="images per timed call (default 32)")
    p.add_argument("--rounds", type=positive_int, default=5,
                   help="interleaved rounds, one batch per runtime each (after a warm-up); best "
                        "kept (default 5)")
    add_output_args(p)
    p.set_defaults(func=run)


def selected_variants(runtimes: list[str] | None, precisions: list[str] | None) -> list[tuple[str, str]]:
    """torch f32 first, then the installed (runtime, precision) pairs the filters keep; filters
    that keep no pair at all are an error (e.g. onnxruntime with bf16), and so is a runtime
    named by ``runtimes`` (or the only one the filters leave) that is not installed. Without
    ``runtimes`` an uninstalled runtime is skipped with a warning."""
    import logging

    from ..features.runtime import require_runtime, runtime_available

    asked = [v for v in VARIANTS
             if (not runtimes or v[0] in runtimes) and (not precisions or v[1] in precisions)]
    if not asked:
        raise ValueError(f"--runtime {' '.join(runtimes or ['(any)'])} --precision "
                         f"{' '.join(precisions or ['(any)'])}: no such pair; pairs: "
                         f"{', '.join(' '.join(v) for v in VARIANTS)}")
    missing = sorted({v[0] for v in asked if not runtime_available(v[0])})
    if missing and (runtimes or {v[0] for v in asked} <= set(missing)):
        require_runtime(missing[0], f"bench-backbone --runtime {missing[0]}")
    for name in missing:
        logging.getLogger(__name__).warning("%s is not installed: %s not measured", name,
                                            ", ".join(" ".join(v) for v in asked if v[0] == name))
    return [VARIANTS[0], *(v for v in asked if v != VARIANTS[0] and v[0] not in missing)]


def run(args: argparse.Namespace) -> int:
    variants = selected_variants(args.runtime, args.precision)
    # int8 is calibrated on the random batch: its graphs go to a folder of this run only, so
    # that nothing else ever runs them
    with tempfile.TemporaryDirectory(prefix="bench-backbone-int8-") as scratch:
        return _run(args, variants, scratch)


def _run(args: argparse.Namespace, variants: list[tuple[str, str]], scratch: str) -> int:
    import torch

    from ..features.backbone import Backbone
    from ..features.runtime import PrecisionError, first_line, max_rel_diff
    from ..progress import Progress
    from ..resources import peak_rss_mb

    layers = args.layers or None
    backbones = {v: Backbone(args.backbone, layers, args.weights, runtime=v[0], precision=v[1],
                             cache_dir=scratch if v[1] == "int8" else None)
                 for v in variants}
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    for b in backbones.values():  # int8 only (a speed figure)
        b.calibrate(x.numpy(), source="random inputs (a speed figure only)")

    def step(b: Backbone):
        if args.pooled:
            maps, pooled = b.forward_with_pooled(x)
            return [*maps, pooled]
        return b(x)

    ref = step(backbones[VARIANTS[0]])
    diffs, failed = {}, {}
    rounds = max(1, args.rounds)
    # on stderr, after each timed call (outside the timing): the figures on stdout stay clean
    with Progress(len(backbones) * (1 + rounds), "bench-backbone", unit="batch",
                  enabled=not args.quiet) as bar:
        for v, b in list(backbones.items()):  # warm-up (and the export on first use)
            try:
                diffs[v] = max_rel_diff(step(b), ref)
            except PrecisionError as exc:  # that variant cannot run here: a row says why
                failed[v] = first_line(exc)
                del backbones[v]
                bar.grow(-rounds)
            bar.update()
        best = dict.fromkeys(backbones, float("inf"))
        for _ in range(rounds):
            for v, b in backbones.items():
                start = time.perf_counter()
                step(b)
                best[v] = min(best[v], time.perf_counter() - start)
                bar.update()
    base = args.batch_size / best[VARIANTS[0]]
    rows = []
    for v in variants:
        if v in failed:
            rows.append({"runtime": v[0], "precision": v[1], "runs_on": f"failed: {failed[v]}",
                         "fell_back": False, "images_per_second": None,
                         "ratio_to_torch_f32": None, "max_rel_diff_vs_torch": None})
            continue
        ips = args.batch_size / best[v]
        ran = backbones[v].runs_on
        rows.append({"runtime": v[0], "precision": v[1], "runs_on": ran,
                     "fell_back": v[0] != "torch" and ran != " ".join(v),
                     "images_per_second": round(ips, 2), "ratio_to_torch_f32": round(ips / base, 2),
                     "max_rel_diff_vs_torch": float(f"{diffs[v]:.2e}")})
    first = backbones[VARIANTS[0]]
    result = {
        "backbone": args.backbone,
        "layers": list(first.layers),
        "strides": first.strides,
        "pooled": bool(args.pooled),
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        "runtimes": rows,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    print(f"{args.backbone} stages {list(first.layers)} (strides {first.strides})"
          f"{' + pooled' if args.pooled else ''}, {args.image_size} px, batch {args.batch_size}, "
          f"best of {args.rounds} interleaved rounds, {torch.get_num_threads()} threads")
    print_table([("runtime", "img/s   x torch f32   max rel diff")] + [
        (f"{r['runtime']} {r['precision']}" + (f" (ran: {r['runs_on']})" if r["fell_back"] else ""),
         r["runs_on"] if r["images_per_second"] is None else
         f"{r['images_per_second']:7.1f}   {r['ratio_to_torch_f32']:11.2f}   {r['max_rel_diff_vs_torch']:.1e}")
        for r in rows])
    write_json(args.output_json, result)
    return 0
