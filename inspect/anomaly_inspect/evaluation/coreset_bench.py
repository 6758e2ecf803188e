"""Coreset quality and cost side by side: covering radius, time and image AUROC per ratio.

Features of the training and test images are extracted once; each coreset
variant then picks a bank from the same training patches, and the bank is
scored with exact search and the config's other scorer settings (``max_bank_items``,
``num_neighbors``; PatchCore only), so the variants differ only in the coreset. The
covering radius is the largest distance from a training patch to its nearest
centre, on the same random projection the coreset selects on. Each long stage of a row
(coreset, radius, scoring) shows a bar named after the row (:func:`row_label`). Each row's
``timed`` says what its ``seconds`` cover: :data:`TIMED_CORESET` (a variant's rows, on
features already extracted) or :data:`TIMED_FIT` (a fit from the image paths: the engine's
rows, and :func:`bench_engine_fit`'s ``streamed_fit`` row). A distributed engine is started
before the timed fits (:func:`start_engine`): its start-up (Ray's, several seconds) is in no
row's ``seconds`` but in the engine rows' ``engine_start``, the first engine row's (0 on the
later ones, which reuse the running engine).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from ..choices import CORESET_VARIANTS
from ..config import ModelConfig
from ..core import Features
from ..data.image_io import DEFAULT_MAX_PIXELS
from ..data.mvtec import AnomalyDataset
from ..pipeline import Engine, Runner, build
from ..pipeline.engine import start_engine
from ..progress import Progress
from ..resources import peak_rss_mb
from ..scorers.coreset import covering_radius, projection_matrix
from ..scorers.nn_index import ProbeSample
from ..scorers.patchcore import PatchCore, image_patches
from .metrics import auroc

#: the steps of the radius bar: :func:`covering_radius`'s own block of points, so that block
#: by block it makes the same faiss searches and gives the same radius
RADIUS_BLOCK = 65536
#: the steps of the scoring bar: test images per ``score`` call (faiss's exact search may round
#: a distance's last bit by batch, as by thread count; the rounded AUROC does not move)
SCORE_IMAGES = 8
#: what a row's seconds cover (its ``timed``): the coreset alone, or extraction and the fit
TIMED_CORESET = "coreset"
TIMED_FIT = "extraction + fit"
#: :func:`bench_engine_fit`'s one-machine row (the streamed fit, as ``fit`` runs it): not a
#: coreset variant's name, whose rows time the coreset alone
STREAMED_FIT = "streamed_fit"


def check_variants(variants: Sequence[str]) -> None:
    unknown = [v for v in variants if v not in CORESET_VARIANTS]
    if unknown:
        raise ValueError(f"unknown coreset variants {unknown}; choose from {sorted(CORESET_VARIANTS)}")


def check_method(cfg: ModelConfig) -> None:
    """Refuse, before any extraction, a method other than PatchCore: every row is a PatchCore
    bank (a SoftPatch or TailedCore row would be plain PatchCore under another name)."""
    if cfg.method != "patchcore":
        raise ValueError(f"bench-coreset measures PatchCore's coreset; the config's method is "
                         f"'{cfg.method}' (use method patchcore)")


def bench_scorer(scorer_params: dict, ratio: float, seed: int, **overrides) -> PatchCore:
    """The PatchCore of a row: the config's scorer settings (``max_bank_items``,
    ``num_neighbors``, ...) at ``ratio``, with exact search (``overrides``: a variant's
    ``chunk_size`` and ``first_round_ratio``). Local and engine rows are built alike."""
    return PatchCore(**{**scorer_params, "coreset_ratio": ratio, "index": "flat", "seed": seed,
                        "progress": False, **overrides})


def bench_coreset(dataset: AnomalyDataset, cfg: ModelConfig, ratios: Sequence[float],
                  variants: Sequence[str] = ("two_round", "exact"),
                  progress: bool = True, engine: Engine | None = None) -> list[dict]:
    """One row per (ratio, variant): bank size, coreset seconds, covering radius, image AUROC.
    With a distributed ``engine``, one more row per ratio (variant ``engine:NAME``): the bank
    fitted on its workers (extraction and round 1 there, round 2 here; timed :data:`TIMED_FIT`)."""
    check_variants(variants)
    check_method(cfg)
    for ratio in ratios:  # the scorer settings, before any extraction
        bench_scorer(cfg.scorer, ratio, cfg.seed)
    if engine is not None and not engine.in_process:
        from ..pipeline.remote_fit import check_distributed_precision

        check_distributed_precision(cfg)
    extractor = build(cfg, progress=progress)[1]
    train_paths = [s.path for s in dataset.train]
    extractor.calibrate(train_paths)  # int8: on this dataset's training images
    runner = Runner(extractor, progress=progress)
    train = runner.extract(train_paths, "extract train").features
    test = runner.extract([s.path for s in dataset.test], "extract test").features
    labels = np.array([s.label for s in dataset.test])
    rows = bench_coreset_features(dataset.name, train, test, labels, cfg.scorer, ratios, variants,
                                  cfg.seed, progress)
    if engine is not None and not engine.in_process:
        rows += _engine_rows(dataset, cfg, ratios, engine, train, test, labels, progress)
    return rows


def bench_engine_fit(dataset: AnomalyDataset, cfg: ModelConfig, engine: Engine,
                     radius_sample: int | None = None, progress: bool = True) -> list[dict]:
    """The one-machine fit (streamed, as ``fit`` / ``evaluate`` run it; row
    :data:`STREAMED_FIT`) against ``engine``'s, both timed from the image paths (extraction
    and fit), holding no features: only the training patches' 128-d projections (a seeded
    uniform sample of ``radius_sample`` of them, kept as the batches pass, when given) for the
    covering radius. The config's index is kept (image scores are exact with any index)."""
    from ..pipeline.remote_fit import check_distributed_precision, fit_bank_remote

    check_method(cfg)
    check_distributed_precision(cfg)
    runner = Runner(build(cfg, progress=False)[1], progress=progress)
    params = {**cfg.scorer, "seed": cfg.seed, "progress": False}
    local, remote = PatchCore(**params), PatchCore(**params)
    paths = [s.path for s in dataset.train]
    kept: list[np.ndarray] = []  # every projection, or (radius_sample) a sample as they pass
    sample = ProbeSample(radius_sample, seed=cfg.seed) if radius_sample else None
    n_patches = 0
    proj: list = []

    def project(x: np.ndarray) -> np.ndarray:
        if not proj:
            proj.append(projection_matrix(x.shape[1], local.projection_dim, cfg.seed))
        return x if proj[0] is None else x @ proj[0].numpy()

    def tee(batches):
        nonlocal n_patches
        for feats in batches:
            rows = project(image_patches(feats))
            n_patches += len(rows)
            if sample is None:
                kept.append(rows)
            else:
                sample.add(rows)
            yield feats

    seconds = {}
    start = time.perf_counter()
    local.fit_batches(tee(runner.iter_features(paths, "local fit")), len(paths))
    seconds[STREAMED_FIT] = time.perf_counter() - start
    engine_start = start_engine(engine)  # after the local fit: Ray's processes stay out of it
    start = time.perf_counter()
    with Progress(len(paths), f"{engine.name} fit", enabled=progress) as bar:
        fit_bank_remote(remote, engine, cfg, paths, DEFAULT_MAX_PIXELS, bar)
    seconds[f"engine:{engine.name}"] = time.perf_counter() - start
    projected = np.concatenate(kept) if sample is None else sample.rows
    scores: dict[str, list[np.ndarray]] = {k: [] for k in seconds}
    for item in runner.score(dict(zip(seconds, (local, remote), strict=True)),
                             [s.path for s in dataset.test], "score test"):
        for name, result in item.results.items():
            scores[name].append(result.image_scores)
    labels = np.array([s.label for s in dataset.test])
    rows = []
    for name, scorer in zip(seconds, (local, remote), strict=True):
        rows.append({
            "category": dataset.name, "ratio": local.coreset_ratio, "variant": name,
            "bank": scorer.bank_size, "patches": n_patches, "seconds": round(seconds[name], 2),
            "timed": TIMED_FIT,
            "radius": round(radius_with_bar(projected, project(scorer.memory_bank),
                                            row_label(name, local.coreset_ratio), progress), 4),
            "radius_points": len(projected),
            # how the radius' points were drawn: a sampled maximum is comparable only between
            # rows of one run (the sampler changed on 2026-12-04, docs/scaling.md)
            "radius_sampler": ("every patch" if sample is None
                               else f"probe_sample seed {cfg.seed}"),
            "image_auroc": round(float(auroc(labels, np.concatenate(scores[name]))), 4),
        })
        if scorer is remote:
            rows[-1]["engine_start"] = round(engine_start, 2)
        if progress:
            print(format_row(rows[-1]), flush=True)
    return rows


def _engine_rows(dataset: AnomalyDataset, cfg: ModelConfig, ratios: Sequence[float],
                 engine: Engine, train: Features, test: Features, labels: np.ndarray,
                 progress: bool) -> list[dict]:
    """The banks ``engine`` fits from the training paths, measured like the local variants."""
    from ..pipeline.remote_fit import fit_bank_remote

    flat = image_patches(train)
    proj = projection_matrix(flat.shape[1], bench_scorer(cfg.scorer, 1.0, cfg.seed).projection_dim,
                             cfg.seed)
    project = (lambda x: x) if proj is None else (lambda x: x @ proj.numpy())
    projected = project(flat)
    engine_start = start_engine(engine)
    rows = []
    for ratio in ratios:
        scorer = bench_scorer(cfg.scorer, ratio, cfg.seed)
        sub = ModelConfig.from_dict({**cfg.to_dict(), "scorer": {**cfg.scorer, "coreset_ratio": ratio}},
                                    "bench config")
        start = time.perf_counter()
        with Progress(len(dataset.train), f"{engine.name} fit", enabled=progress) as bar:
            fit_bank_remote(scorer, engine, sub, [s.path for s in dataset.train],
                            DEFAULT_MAX_PIXELS, bar)
        seconds = time.perf_counter() - start
        bank = scorer.memory_bank
        label = row_label(f"engine:{engine.name}", ratio)
        rows.append({
            "category": dataset.name, "ratio": ratio, "variant": f"engine:{engine.name}",
            "bank": len(bank), "patches": len(flat), "seconds": round(seconds, 2),
            "timed": TIMED_FIT,
            "radius": round(radius_with_bar(projected, project(bank), label, progress), 4),
            "image_auroc": round(float(auroc(labels, image_scores(scorer, test, label,
                                                                  progress))), 4),
            "engine_start": round(engine_start, 2),
        })
        engine_start = 0.0  # paid once, before the first row
        if progress:
            print(format_row(rows[-1]), flush=True)
    return rows


def bench_coreset_features(name: str, train: Features, test: Features, labels: np.ndarray,
                           scorer_params: dict, ratios: Sequence[float], variants: Sequence[str],
                           seed: int = 0, progress: bool = True) -> list[dict]:
    """:func:`bench_coreset` on features already extracted."""
    check_variants(variants)
    flat = image_patches(train)
    config = bench_scorer(scorer_params, 1.0, seed)
    proj = projection_matrix(flat.shape[1], config.projection_dim, seed)
    projected = flat if proj is None else flat @ proj.numpy()
    rows = []
    for ratio in ratios:
        for variant in variants:
            chunk, first = CORESET_VARIANTS[variant](config.chunk_size, config.first_round_ratio,
                                                     ratio)
            scorer = bench_scorer(scorer_params, ratio, seed, chunk_size=chunk,
                                  first_round_ratio=first)
            label = row_label(variant, ratio)
            start = time.perf_counter()
            coreset = scorer.run_coreset(scorer.coreset(), [flat], Progress(
                len(flat), f"{label}: coreset", unit="pt", enabled=progress))
            with Progress(coreset.target, f"{label}: coreset round 2", unit="pt",
                          enabled=progress and coreset.greedy_round_two) as bar:
                idx = coreset.finish(bar)
            seconds = time.perf_counter() - start
            scorer.set_state({"memory_bank": np.ascontiguousarray(flat[idx])})
            rows.append({
                "category": name, "ratio": ratio, "variant": variant, "bank": len(idx),
                "patches": len(flat), "seconds": round(seconds, 2), "timed": TIMED_CORESET,
                "radius": round(radius_with_bar(projected, projected[idx], label, progress), 4),
                "image_auroc": round(float(auroc(labels, image_scores(scorer, test, label,
                                                                      progress))), 4),
            })
            if progress:
                print(format_row(rows[-1]), flush=True)
    return rows


def row_label(variant: str, ratio: float) -> str:
    """A row's name on its bars, e.g. ``two_round 10 %`` (a bar adds the stage)."""
    return f"{variant} {ratio * 100:g} %"


def radius_with_bar(points: np.ndarray, centres: np.ndarray, label: str,
                    progress: bool = True) -> float:
    """:func:`covering_radius`, :data:`RADIUS_BLOCK` points a call, with a bar (``label``:
    radius) counting the points: the largest of the blocks' radii is the radius."""
    worst = 0.0
    with Progress(len(points), f"{label}: radius", unit="pt", enabled=progress) as bar:
        for s in range(0, len(points), RADIUS_BLOCK):
            block = points[s:s + RADIUS_BLOCK]
            worst = max(worst, covering_radius(block, centres, RADIUS_BLOCK))
            bar.update(len(block))
    return worst


def image_scores(scorer: PatchCore, test: Features, label: str, progress: bool = True) -> np.ndarray:
    """``scorer``'s image scores of ``test``, :data:`SCORE_IMAGES` images a call, with a bar
    (``label``: scoring) counting the images."""
    parts = []
    with Progress(len(test), f"{label}: scoring", enabled=progress) as bar:
        for s in range(0, len(test), SCORE_IMAGES):
            part = test.subset(np.arange(s, min(s + SCORE_IMAGES, len(test))))
            parts.append(scorer.score(part).image_scores)
            bar.update(len(part))
    return np.concatenate(parts)


def format_row(row: dict) -> str:
    """A row on one line; an engine row that started the engine says how long that took (not
    in its seconds)."""
    started = f"  engine start {row['engine_start']:.1f} s" if row.get("engine_start") else ""
    return (f"{row['category']}  ratio {row['ratio']:<5}  {row['variant']:<9}  bank {row['bank']:>7}"
            f"  {row['seconds']:>8.1f} s ({row['timed']}){started}  radius {row['radius']:.3f}"
            f"  image AUROC {row['image_auroc']:.4f}")


def stream_fit(n_images: int, grid: int = 40, dim: int = 232, batch_size: int = 32,
               ratio: float = 0.1, max_items: int | None = None, seed: int = 0) -> dict:
    """Peak RSS and time of PatchCore's streamed fit on ``n_images`` of random features.

    Isolates the coreset's memory from the backbone's: batches of (B, grid, grid,
    dim) float32 features (the default 320 px embedding's shape) arrive as from
    the extractor, and nothing but the coreset's kept rows may accumulate. Run
    each size in a fresh process (peak RSS only grows).
    """
    rng = np.random.default_rng(seed)

    def batches():
        for start in range(0, n_images, batch_size):
            m = min(batch_size, n_images - start)
            yield Features(rng.standard_normal((m, grid, grid, dim), dtype=np.float32))

    start = time.perf_counter()
    scorer = PatchCore(coreset_ratio=ratio, max_bank_items=max_items, index="flat",
                       seed=seed, progress=False).fit_batches(batches(), n_images)
    return {"images": n_images, "patches": n_images * grid * grid, "ratio": ratio,
            "max_bank_items": max_items, "bank": scorer.bank_size,
            "seconds": round(time.perf_counter() - start, 1), "peak_rss_mb": round(peak_rss_mb(), 1)}


def stream_fit_in_subprocess(n_images: int, **kwargs) -> dict:
    """:func:`stream_fit` in a fresh (spawned) process, so each peak RSS is its own."""
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(stream_fit, (n_images,), kwargs)
