"""What explanations cost: bank growth, explaining vs scoring again, screen throughput.

Fits (or reuses) a model on a category's ``train/good`` with the default config, then prints:

* bank size: the scorer state's bytes with and without the provenance arrays;
* per flagged test image: seconds to explain it from its scores (read its header, pick patches,
  resolve provenance, check / read the training images, draw and write the strip) against seconds to
  score it again (one image alone, and the per-image share of a batched pass);
* ``screen`` against ``screen --explain`` on the whole test split, interleaved round by round
  (the same machine load hits both), each run into a fresh folder, report included.

Timings on a shared machine are noisy; only the side-by-side ratios mean much.

Usage: python docs/bench_explain.py [--root ../shared/data/mvtec_ad] [--category bottle]
       [--model /tmp/explain/bottle_model] [--rounds 3] [--output-json FILE]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from anomaly_inspect.data.layout import expand_inputs
from anomaly_inspect.screening import fit, load_model
from anomaly_inspect.screening.explain import TrainingImages, explain_scored, render_strip
from anomaly_inspect.screening.overlays import denormalise, write_rgb


def bank_bytes(model_dir: Path) -> dict:
    state_path = model_dir / "scorer" / "scorer_state.safetensors"
    state = load_file(str(state_path))
    with tempfile.TemporaryDirectory() as tmp:
        bare = Path(tmp) / "bare.safetensors"
        save_file({k: v for k, v in state.items() if not k.startswith("provenance")}, str(bare))
        without = bare.stat().st_size
    with_prov = state_path.stat().st_size
    return {"items": int(len(state["memory_bank"])), "bytes_with": with_prov,
            "bytes_without": without, "growth": with_prov / without - 1.0}


def explain_vs_rescore(model, paths: list[Path], top: int) -> dict:
    t = model.extractor.transform
    train = TrainingImages(model)  # cold: every training image is hashed and decoded once
    t0 = time.perf_counter()
    scored = [(r, x) for b in model.iter_score(paths, keep_maps=True, explain_top=top) for r, x in
              ((b.images[k], b.inputs.get(k)) for k in range(len(b.images)))]
    batched = (time.perf_counter() - t0) / len(paths)
    flagged = [(r, x) for r, x in scored if r.flagged]
    if not flagged:  # nothing to time (the throughput rounds still run)
        return {"n_flagged": 0, "index": model.scorer.search_index, "score_batched_s": batched}
    explain_s, alone_s, exact = [], [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for k, (r, x) in enumerate(flagged):
            t0 = time.perf_counter()
            e = explain_scored(model, r, top, train)  # reads the image's header, as screen does
            exact += int(e.patches[0].distance == r.score)
            write_rgb(Path(tmp) / f"{k}.jpg", render_strip(model, e, denormalise(x, t.mean, t.std),
                                                           train))
            explain_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            model.score([r.path])
            alone_s.append(time.perf_counter() - t0)
    return {"n_flagged": len(flagged), "top_equals_score": exact, "index": model.scorer.search_index,
            "explain_s": statistics.mean(explain_s),
            "explain_s_median": statistics.median(explain_s),
            "score_alone_s": statistics.mean(alone_s), "score_batched_s": batched}


def throughput(model, test: Path, rounds: int, top: int) -> dict:
    out: dict[str, list[float]] = {"screen": [], "screen --explain": []}
    n = len(expand_inputs([test]))
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            order = [("screen", 0), ("screen --explain", top)]
            for name, k in (order if r % 2 == 0 else order[::-1]):
                dest = Path(tmp) / f"{r}-{k}"
                t0 = time.perf_counter()
                model.screen([test], dest, progress=False, explain=k)
                out[name].append(n / (time.perf_counter() - t0))
                shutil.rmtree(dest)
    med = {k: statistics.median(v) for k, v in out.items()}
    return {"images": n, "img_per_s": out, "median": med,
            "ratio": med["screen --explain"] / med["screen"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=Path("../shared/data/mvtec_ad"))
    ap.add_argument("--category", default="bottle")
    ap.add_argument("--model", type=Path, default=Path("/tmp/explain/bottle_model"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--top", type=int, default=3)
    ap.add_argument("--output-json", type=Path)
    args = ap.parse_args()
    cat = args.root / args.category
    if not (args.model / "model.json").is_file():
        fit([cat / "train" / "good"], progress=False).save(args.model)
    model = load_model(args.model)
    test = cat / "test"
    res = {"bank": bank_bytes(args.model)}
    b = res["bank"]
    print(f"bank: {b['items']} items, {b['bytes_without']:,} bytes without provenance, "
          f"{b['bytes_with']:,} with: +{100 * b['growth']:.2f} %")
    # warm-up: the ONNX session and caches, so that neither side pays them
    model.score(sorted(expand_inputs([test]))[:2])
    res["cost"] = c = explain_vs_rescore(model, sorted(expand_inputs([test])), args.top)
    if not c["n_flagged"]:
        print("no test image was flagged: no explanation to time")
    else:
        print(f"per flagged image ({c['n_flagged']}): explain {c['explain_s'] * 1e3:.0f} ms "
              f"(median {c['explain_s_median'] * 1e3:.0f}) vs score again "
              f"{c['score_alone_s'] * 1e3:.0f} ms alone / {c['score_batched_s'] * 1e3:.0f} ms "
              f"batched; top distance == image score for {c['top_equals_score']} of "
              f"{c['n_flagged']} ({c['index']} index)")
    res["throughput"] = tp = throughput(model, test, args.rounds, args.top)
    runs = ", ".join(f"{k}: " + " / ".join(f"{v:.2f}" for v in vs) for k, vs in tp["img_per_s"].items())
    print(f"throughput on {tp['images']} images, img/s per round ({runs}); medians "
          f"{tp['median']['screen']:.2f} vs {tp['median']['screen --explain']:.2f}: "
          f"{100 * tp['ratio']:.0f} % kept")
    if args.output_json:
        args.output_json.write_text(json.dumps(res, indent=2, default=float))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
