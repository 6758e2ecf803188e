"""Label-free choice of a configuration: synthetic-anomaly validation on held-out normal images.

Procedure (docs/auto_config.md): at most ``max_images`` training images (seeded subset) are split
into ``n_folds`` seeded folds. Every image is held out once; a copy of it gets one synthetic
anomaly (:mod:`..data.anomalies`, families assigned in a seeded balanced order, ``poisson`` donors
taken from the fold's bank images). For each candidate and fold, the scorer is fitted on the
other folds' images and scores the held-out normals and their anomalous copies; each (fold,
family) pair is a judge with its AUROC. Candidates are ranked by trimmed Borda count over judges;
the winner replaces the default only if it beats it by more than the fold-to-fold noise.
Backbone features are extracted once per backbone x input size x resize into ``cache_dir``
(an int8 backbone is calibrated on the tuning images first, for each of them).
Where every image is square, ``pad`` gives the very input ``stretch`` gives: a ``pad`` candidate
then takes its ``stretch`` twin's validation (``same_as``) instead of repeating it, and an
ensemble never takes both; it is still ranked, a column of the Borda table like any candidate.

Each candidate also keeps the median / MAD of its cross-fitted scores on held-out normal images:
the normal calibration of :func:`..evaluation.fusion.fuse` for ensembles. Nothing here sees a test image.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..config import ModelConfig
from ..data.anomalies import (
    AnomalyRecipe,
    SyntheticAnomaly,
    TooSmallForAnomalies,
    read_anomalies,
    write_anomalies,
)
from ..data.image_io import DEFAULT_MAX_PIXELS, ImageReadError
from ..data.layout import display_path, listing_order
from ..data.loader import decode_factor, reduced_side
from ..evaluation.fusion import NormalCalibration, balanced_folds, fold_splits, fuse
from ..evaluation.metrics import auroc
from ..features.cache import code_fingerprint, file_fingerprints
from ..files import cached_entry, same_bytes
from ..pipeline import build_backbone
from ..pipeline.builders import scorer_for
from ..progress import Progress
from ..scorers import Scorer, check_scorer_params, get_scorer_class, scorer_parameters
from ..user_cache import user_cache_dir
from .candidates import AXES, Candidate, candidate_grid, changed_axis, combinations
from .rank import Decision, beats_default, fold_gain, trimmed_borda
from .stage_cache import TUNE_CACHE_ELSEWHERE, StageMaps, calibrate, stage_maps

log = logging.getLogger(__name__)


#: why an image is left out of validation (``kind`` of a ``skipped_images`` record): it cannot
#: be read (``fit`` skips it too), or it is under :data:`..data.anomalies.MIN_SIDE` pixels on a
#: side, too small for a synthetic anomaly (``fit`` trains on it: only held-out copies need it)
UNREADABLE, TOO_SMALL = "unreadable", "too_small"


def skipped_counts(skipped: Sequence[dict[str, str]]) -> str:
    """``skipped`` images counted by kind: "2 unreadable and 1 too small for synthetic
    anomalies" (a record without ``kind``, written before it, is unreadable)."""
    n_small = sum(s.get("kind") == TOO_SMALL for s in skipped)
    parts = [f"{len(skipped) - n_small} unreadable" if len(skipped) > n_small else "",
             f"{n_small} too small for synthetic anomalies" if n_small else ""]
    return " and ".join(p for p in parts if p)


class TooFewImagesError(ValueError):
    """Fewer training images than tune's folds need (two per fold): a caller that held some
    out (``fit --auto``'s calibration images) adds how many and the options that set it."""


#: the user cache (``$ANOMALY_INSPECT_CACHE`` moves it with the ONNX exports), not a folder in
#: /tmp that every user of the machine shares
def tune_cache(cache_dir: Path | str | None = None) -> Path:
    """``cache_dir``, else the user cache's ``tune`` folder (``$ANOMALY_INSPECT_CACHE``/tune or
    ``~/.cache/anomaly_inspect/tune``), read when called (the environment may change)."""
    return Path(cache_dir) if cache_dir is not None else user_cache_dir("tune")


@dataclass(frozen=True)
class TuneSettings:
    """How candidates are validated: ``n_folds`` folds over at most ``max_images`` training images
    (seeded by ``seed``), the anomaly ``recipe``, ``trim`` of the Borda mean, ``ensemble`` members.
    ``coreset_ratio``: the scorer's coreset ratio during validation only (None = the base
    config's); 0.01 keeps the fold banks small and cheap to select.
    ``first_round_ratio``: the coreset's round-1 share during validation (0.1: one cheap
    pass; the fold banks rank candidates and are never deployed).
    ``index``: the fold banks' search index. Validation reads image scores only, which are
    exact under HNSW too (exact image maxima), so "hnsw" gives exact search's scores at a
    fraction of its cost on the held-out patches (None = the base config's)."""

    n_folds: int = 3
    max_images: int | None = 300
    coreset_ratio: float | None = 0.01
    first_round_ratio: float | None = 0.1
    index: str | None = "hnsw"
    seed: int = 0
    trim: float = 0.1
    ensemble: int = 3
    grid: str = "compact"
    recipe: AnomalyRecipe = field(default_factory=AnomalyRecipe)

    def validation_overrides(self) -> dict:
        """The scorer parameters validation sets (the ones not None)."""
        return {k: v for k, v in (("coreset_ratio", self.coreset_ratio),
                                  ("first_round_ratio", self.first_round_ratio),
                                  ("index", self.index)) if v is not None}

    def __post_init__(self):
        if self.n_folds < 2:
            raise ValueError(f"n_folds must be >= 2, got {self.n_folds}")
        if self.ensemble < 1:
            raise ValueError(f"ensemble must be >= 1, got {self.ensemble}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CandidateScores:
    """One candidate's validation: AUROC per (fold, family), per fold (all families pooled),
    its Borda score, and the normal calibration from its held-out normal scores."""

    candidate: Candidate
    judge_auroc: dict[str, float]
    fold_auroc: list[float]
    borda: float = 0.0
    calibration: NormalCalibration | None = None
    seconds: float = 0.0
    same_as: str | None = None  # the candidate whose validation this is (same model input)
    extraction: Candidate | None = None  # the extraction that fed it (:func:`extraction_of`)

    @property
    def mean_auroc(self) -> float:
        return float(np.mean(list(self.judge_auroc.values())))

    def to_dict(self) -> dict:
        return {**self.candidate.to_dict(), "borda": round(self.borda, 4),
                "mean_auroc": round(self.mean_auroc, 4),
                "fold_auroc": [round(v, 4) for v in self.fold_auroc],
                "judge_auroc": {k: round(v, 4) for k, v in self.judge_auroc.items()},
                "normal_calibration": None if self.calibration is None else self.calibration.to_dict(),
                "seconds": round(self.seconds, 1),
                **({"same_as": self.same_as} if self.same_as else {})}


@dataclass
class TuningResult:
    """The selector's outcome; ``to_dict`` is what model.json and the evaluate JSON record."""

    settings: TuneSettings
    candidates: list[CandidateScores]
    decision: Decision
    ensemble: list[int]
    ensemble_judge_auroc: dict[str, float]
    n_images: int
    seconds: float
    base: dict  # the base config the candidates were derived from (``ModelConfig.to_dict``)
    scores: dict = field(default_factory=dict, repr=False)  # name -> fold -> (normal, anomalous)
    skipped: list[dict[str, str]] = field(default_factory=list)  # path, error, kind (UNREADABLE...)
    candidate_source: str = "grid"  # "grid": settings.grid's; "given": tune's ``candidates``

    def readable(self, train_paths: Sequence[Path | str]) -> list[Path]:
        """``train_paths`` without the images tuning skipped as unreadable: the images a model
        is fitted on (those too small for synthetic anomalies kept, as ``fit`` keeps them)."""
        bad = {s["path"] for s in self.skipped if s.get("kind", UNREADABLE) == UNREADABLE}
        return [Path(p) for p in train_paths if display_path(p) not in bad]

    def tuned(self, train_paths: Sequence[Path | str]) -> list[Path]:
        """``train_paths`` without every image tuning skipped: those its fold plan was drawn
        over (:func:`normal_calibrations` draws it again)."""
        left = {s["path"] for s in self.skipped}
        return [Path(p) for p in train_paths if display_path(p) not in left]

    @property
    def chosen(self) -> Candidate:
        return self.candidates[self.decision.chosen].candidate

    def chosen_config(self, base: ModelConfig) -> ModelConfig:
        return self.chosen.config(base)

    @property
    def ensemble_note(self) -> str | None:
        """Why the ensemble has fewer members than ``settings.ensemble`` (None where it has them
        all): only that many candidates give distinct model inputs (:func:`ensemble_members`)."""
        asked, taken = self.settings.ensemble, len(self.ensemble)
        if taken >= asked:
            return None
        twins = sum(bool(c.same_as) for c in self.candidates)
        why = (f" (a pad candidate on square images is its stretch twin's input: {twins} of "
               f"them)" if twins else "")
        return (f"ensemble of {taken}, not the {asked} asked: only {taken} distinct model "
                f"input{'s' * (taken != 1)} among the {len(self.candidates)} candidates{why}")

    def to_dict(self) -> dict:
        order = np.argsort([-c.borda for c in self.candidates], kind="stable")
        note = self.ensemble_note
        return {
            "chosen": self.chosen.name,
            "chosen_config": self.chosen.to_dict(),
            "default": self.candidates[self.decision.default].candidate.name,
            "decision": {**self.decision.to_dict(),
                         "winner": self.candidates[self.decision.winner].candidate.name,
                         "chosen": self.chosen.name,
                         "default": self.candidates[self.decision.default].candidate.name},
            "ensemble": [self.candidates[i].candidate.name for i in self.ensemble],
            **({"ensemble_requested": self.settings.ensemble, "ensemble_note": note} if note else {}),
            "ensemble_mean_auroc": round(float(np.mean(list(self.ensemble_judge_auroc.values()))), 4),
            "ensemble_judge_auroc": {k: round(v, 4) for k, v in self.ensemble_judge_auroc.items()},
            "settings": {**self.settings.to_dict(), "candidates": self.candidate_source},
            "base": self.base,
            "n_images": self.n_images,
            "skipped_images": self.skipped,
            "seconds": round(self.seconds, 1),
            "candidates": [self.candidates[i].to_dict() for i in order],
        }


def fold_plan(n: int, settings: TuneSettings, paths: Sequence[Path] | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(chosen image indices, fold of each, family index of each) for ``n`` training images.
    With their ``paths``, byte-identical chosen images (:func:`~..files.same_bytes`: only the
    chosen ones are read, where their sizes agree) share the fold of the first of them, so that
    no held-out image is validated against its own copy in its fold's bank (without copies the
    plain seeded folds)."""
    rng = np.random.default_rng((settings.seed, 1))
    keep = n if settings.max_images is None else min(n, settings.max_images)
    chosen = np.sort(rng.permutation(n)[:keep])
    folds = balanced_folds(keep, settings.n_folds, rng)  # drawn after the subset, from one generator
    families = balanced_folds(keep, len(settings.recipe.families), rng)
    copies = same_bytes([paths[i] for i in chosen]) if paths is not None else []
    for group in copies:  # positions among the chosen
        folds[group] = folds[group[0]]
    if copies and len(np.unique(folds)) < settings.n_folds:
        raise TooFewImagesError(f"tune needs images in each of its {settings.n_folds} folds; the "
                                f"{keep} training images are too few distinct ones (byte-identical "
                                f"copies share a fold)")
    return chosen, folds, families


def all_square(paths: Sequence[Path]) -> bool:
    """Whether every image is square (read from the headers): resize ``pad`` then gives the
    same model input as ``stretch`` (the same bilinear resize to the full square, no border)."""
    from PIL import Image

    try:
        for p in paths:
            with Image.open(p) as im:
                if im.size[0] != im.size[1]:
                    return False
    except Exception:  # noqa: BLE001 - unreadable header: the candidate is validated as usual
        return False
    return True


def stretch_twins(batch: Sequence[Candidate], square: bool) -> dict[int, int]:
    """``pad`` candidate -> its ``stretch`` twin in ``batch``, where the images are all square."""
    if not square:
        return {}
    index = {c: i for i, c in enumerate(batch)}
    return {i: index[replace(c, resize="stretch")] for i, c in enumerate(batch)
            if c.resize == "pad" and replace(c, resize="stretch") in index}


def extraction_of(group: Sequence[Candidate]) -> Candidate:
    """The one feature extraction that feeds ``group`` (candidates of one backbone x size x
    resize): its first candidate with the union of the group's stages, whose layers are part of
    the stage-map cache key. Validation, the ensemble's normal calibration and the test scores
    all extract through it, so the calibration reads the entry validation wrote."""
    return replace(group[0], strides=tuple(sorted({s for c in group for s in c.strides})))


def ensemble_members(scores: Sequence[CandidateScores], borda: np.ndarray, size: int) -> list[int]:
    """The ``size`` best candidates by Borda count, skipping any that is the same model input
    as one already taken (a twin adds nothing to a fusion)."""
    members: list[int] = []
    taken: set[str] = set()
    for i in np.argsort(-borda, kind="stable"):
        same = scores[i].same_as or scores[i].candidate.name
        if same not in taken and len(members) < size:
            members.append(int(i))
            taken.add(same)
    return members


def synthetic_set(paths: Sequence[Path], folds: np.ndarray, families: np.ndarray,
                  settings: TuneSettings, cache_dir: Path,
                  max_pixels: int = DEFAULT_MAX_PIXELS, image_size: int | None = None) -> list[Path]:
    """Write (or reuse) one anomalous copy of each image; donors come from its fold's bank.
    With ``image_size`` (the side images are resized to), each copy is drawn on the decode the
    loader gives its source for that input (a JPEG over 16 MP at reduced size, see
    :func:`..data.loader.decode_factor`), so that a copy differs from its source only inside
    the mask as the features see them; where no decode is reduced (every PNG) the set is the one
    drawn without ``image_size``. The set is reused only for the same files (path, size, mtime
    of sources and donors), pixel budget and reduced decodes. At an unreadable image nothing is
    kept and the error raised."""
    import hashlib
    import json

    rng = np.random.default_rng((settings.seed, 2))
    donors = []
    for i in range(len(paths)):
        bank = np.flatnonzero(folds != folds[i])
        donors.append(paths[int(rng.choice(bank))])
    fams = [settings.recipe.families[f] for f in families]
    described = [settings.recipe.to_dict(), file_fingerprints(paths), folds.tolist(), fams,
                 file_fingerprints(donors), max_pixels,
                 code_fingerprint()]  # the drawing and decoding code: an upgrade draws again
    factors = []
    if image_size is not None:  # each file's header once (a donor is also one of the paths)
        factor = {p: decode_factor(p, image_size, max_pixels) for p in set(paths)}
        factors = [factor[p] for p in [*paths, *donors]]
    min_side = None
    if any(f > 1 for f in factors):  # else the key (and set) of a full decode
        min_side = reduced_side(image_size)
        described.append({"reduced_decode": factors})
    key = hashlib.sha256(json.dumps(described).encode()).hexdigest()[:16]
    rows = cached_entry(
        cache_dir / "synthetic" / key, _synthetic_entry,
        lambda tmp: write_anomalies(paths, fams, donors, tmp, settings.recipe,
                                    max_pixels=max_pixels, min_side=min_side),
        "the synthetic-anomaly set", TUNE_CACHE_ELSEWHERE)
    return [Path(r.path) for r in rows]


def _synthetic_entry(directory: Path) -> list[SyntheticAnomaly] | None:
    """The synthetic-anomaly set cached in ``directory``, or None (absent, or damaged: said,
    and :func:`..files.cached_entry` discards it and draws it again)."""
    try:
        return read_anomalies(directory)
    except ValueError as e:
        log.warning("broken synthetic-anomaly cache entry: %s; drawing it again", e)  # e names the file
        return None


def check_method(base: ModelConfig) -> None:
    """Refuse a method that reads features other than patches (tune's cached stage maps give
    patch features only), or ``scorer`` settings it does not take."""
    cls = get_scorer_class(base.method)
    check_scorer_params(base.method, base.scorer)
    other = [f for f in cls.requires if f != "patches"]
    if base.scorer.get("embedding") == "patch_mean" and "pooled" in other:
        other.remove("pooled")  # TailedCore's image embedding taken from the patches
    if "patches" not in cls.requires or other:
        hint = "; or set its scorer embedding: patch_mean" if "embedding" in scorer_parameters(base.method) else ""
        raise ValueError(f"tune: method '{base.method}' reads {' and '.join(cls.requires)} features; "
                         f"tune ranks configurations of methods that read patch features only "
                         f"(e.g. patchcore){hint}")


def _scorer(base: ModelConfig, overrides: dict | None = None) -> Scorer:
    """The base config's scorer (:func:`..pipeline.builders.scorer_for`), for image scores
    only; ``overrides`` (validation settings) replace the parameters it has."""
    check_method(base)
    known = scorer_parameters(base.method)
    params = base.scorer | {k: v for k, v in (overrides or {}).items() if k in known}
    return scorer_for(base.method, params, base.seed, progress=False, patch_maps=False)


def score_candidate(cand: Candidate, base: ModelConfig, normal: StageMaps, anomalous: StageMaps,
                    folds: np.ndarray, families: np.ndarray, family_names: Sequence[str],
                    batch_size: int = 32, overrides: dict | None = None
                    ) -> tuple[CandidateScores, dict]:
    """Cross-fitted validation of one candidate (see the module docstring)."""
    t0 = time.perf_counter()
    embedding = cand.config(base).features.embedding()
    judge, fold_auroc, normals, raw = {}, [], [], {}
    for f, bank, held in fold_splits(folds):
        scorer = _scorer(base, overrides)
        scorer.fit_batches(normal.iter_features(bank, cand.strides, embedding, batch_size), len(bank))
        s_norm = np.concatenate([scorer.score(x).image_scores for x in
                                 normal.iter_features(held, cand.strides, embedding, batch_size)])
        s_anom = np.concatenate([scorer.score(x).image_scores for x in
                                 anomalous.iter_features(held, cand.strides, embedding, batch_size)])
        del scorer
        labels = np.r_[np.zeros(len(held)), np.ones(len(held))]
        fold_auroc.append(auroc(labels, np.r_[s_norm, s_anom]))
        for k, fam in enumerate(family_names):
            sel = families[held] == k
            if sel.any():
                judge[f"fold{f}/{fam}"] = auroc(np.r_[np.zeros(len(held)), np.ones(int(sel.sum()))],
                                                np.r_[s_norm, s_anom[sel]])
        normals.append(s_norm)
        raw[f] = (s_norm, s_anom)
    cal = NormalCalibration.fit(np.concatenate(normals))
    return CandidateScores(cand, judge, fold_auroc, calibration=cal,
                           seconds=time.perf_counter() - t0), raw


def ensemble_validation(members: list[int], raw: list[dict], folds: np.ndarray, families: np.ndarray,
                        family_names: Sequence[str]) -> dict[str, float]:
    """Judge AUROCs of the normal-calibrated fusion of ``members``: in fold f each member is
    standardised by its held-out normal scores of the *other* folds."""
    out = {}
    n_folds = int(folds.max()) + 1
    for f, _, held in fold_splits(folds):
        cals = [NormalCalibration.fit(np.concatenate([raw[m][g][0] for g in range(n_folds) if g != f]))
                for m in members]
        s_norm = fuse([raw[m][f][0] for m in members], cals)
        s_anom = fuse([raw[m][f][1] for m in members], cals)
        for k, fam in enumerate(family_names):
            sel = families[held] == k
            if sel.any():
                out[f"fold{f}/{fam}"] = auroc(np.r_[np.zeros(len(held)), np.ones(int(sel.sum()))],
                                              np.r_[s_norm, s_anom[sel]])
    return out


def ascent_round(cands: Sequence[Candidate], fold_auroc: Sequence[Sequence[float]],
                 default: Candidate) -> list[Candidate]:
    """The ``ascent`` grid's second round: per setting, among the one-change candidates whose
    mean fold gain over the default exceeds their own fold-to-fold noise (the keep-the-default
    rule), the one with the largest gain; then those winners' pairs and all of them together.
    (A larger gain within its noise does not stop a smaller one beyond its noise.)"""
    table = np.asarray(fold_auroc, np.float64).T  # (n_folds, n_candidates)
    d = cands.index(default)
    best: dict[str, tuple[float, int]] = {}
    for i, c in enumerate(cands):
        axis = changed_axis(c, default)
        if axis is None:
            continue
        margin, noise = fold_gain(table, i, d)
        if margin > noise and margin > best.get(axis, (-np.inf, -1))[0]:
            best[axis] = (margin, i)
    winners = [cands[best[axis][1]] for axis in AXES if axis in best]
    return combinations(default, winners) if len(winners) > 1 else []


def usable(cands: Sequence[Candidate], base: ModelConfig) -> list[Candidate]:
    """``cands`` without those whose configuration is invalid (e.g. an input size below the base
    config's crop), each left out with a warning."""
    out = []
    for c in cands:
        try:
            c.check(base)
        except ValueError as e:
            log.warning("tune: leaving out %s", e)
            continue
        out.append(c)
    return out


def tune(train_paths: Sequence[Path | str], base: ModelConfig, settings: TuneSettings = TuneSettings(),
         candidates: Sequence[Candidate] | None = None, cache_dir: Path | str | None = None,
         progress: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS) -> TuningResult:
    """Rank ``candidates`` (default: ``settings.grid`` around ``base``) on synthetic-anomaly
    validation of ``train_paths`` and decide (see the module docstring); images larger than
    ``max_pixels`` are skipped as unreadable (as ``fit`` skips them). ``base`` is the default:
    it is kept unless a candidate beats it by more than the fold-to-fold noise, and wins ties.
    Before any work: an invalid candidate given in ``candidates`` is refused (one of the grid's
    is left out with a warning); so is a method that reads more than patch features."""
    t0 = time.perf_counter()
    check_method(base)
    cache_dir = tune_cache(cache_dir)
    paths = listing_order([Path(p) for p in train_paths])  # fit's order, however named
    default = Candidate.of(base)
    default.check(base)
    if candidates is None:
        cands = [default, *usable(candidate_grid(settings.grid, base)[1:], base)]
    else:  # the default first, then by name: the result does not depend on the given order
        cands = [default, *sorted(set(candidates) - {default}, key=lambda c: c.name)]
        for c in cands:
            c.check(base)
    crop = base.features.crop_size
    paths, (_, folds, families), synthetic, skipped = _readable_plan(paths, settings, cache_dir,
                                                                     max_pixels, default.image_size)
    square = any(c.resize == "pad" for c in cands) and all_square([*paths, *synthetic])
    # the synthetic set per decode size (the one drawn for the default's, then as groups ask)
    drawn_for = {default.image_size: synthetic}

    def validate(batch: list[Candidate]) -> list[tuple[CandidateScores, dict]]:
        """Cross-fitted validation of ``batch``, one feature extraction per backbone x size x
        resize (with the union of its candidates' stages); a ``pad`` twin of a ``stretch``
        candidate on square images takes the twin's validation."""
        twins = stretch_twins(batch, square)
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, c in enumerate(batch):
            if i not in twins:
                groups[c.extraction].append(i)
        out: list = [None] * len(batch)
        for (name, size, resize), members in groups.items():
            ext = extraction_of([batch[i] for i in members])
            backbone = build_backbone(ext.config(base))
            calibrate(backbone, paths, size, resize, crop, max_pixels)
            bs = base.features.batch_size
            normal = stage_maps(backbone, paths, size, resize, cache_dir / "maps", bs, progress,
                                f"extract {name} {size} {resize}", max_pixels, crop)
            # drawn on the decode of this input size (the set drawn first, unless a JPEG over
            # 16 MP is decoded at another reduced size for it)
            if size not in drawn_for:
                drawn_for[size] = synthetic_set(paths, folds, families, settings, cache_dir,
                                                max_pixels, size)
            drawn = drawn_for[size]
            anomalous = stage_maps(backbone, drawn, size, resize, cache_dir / "maps", bs, progress,
                                   "extract synthetic", max_pixels, crop)
            for i in members:
                scores, raw = score_candidate(batch[i], base, normal, anomalous, folds, families,
                                              settings.recipe.families, bs, settings.validation_overrides())
                out[i] = replace(scores, extraction=ext), raw
                log.info("tune: %s mean synthetic AUROC %.4f", batch[i].name, out[i][0].mean_auroc)
                bar.update()
            del backbone, normal, anomalous
        for i, j in twins.items():
            scores, raw = out[j]
            out[i] = replace(scores, candidate=batch[i], seconds=0.0, same_as=batch[j].name), raw
            bar.update()
        return out

    with Progress(len(cands), "tune candidates", unit="cand", enabled=progress) as bar:
        validated = validate(cands)
        if settings.grid == "ascent" and candidates is None:
            second = usable([c for c in ascent_round(cands, [v[0].fold_auroc for v in validated],
                                                     default) if c not in cands], base)
            bar.grow(len(second))
            cands += second
            validated += validate(second)
    scores = [v[0] for v in validated]
    raw = [v[1] for v in validated]
    names = settings.recipe.families
    judges = sorted(scores[0].judge_auroc)
    table = np.array([[s.judge_auroc[j] for s in scores] for j in judges])
    borda = trimmed_borda(table, settings.trim)
    for s, b in zip(scores, borda, strict=True):
        s.borda = float(b)
    fold_table = np.array([s.fold_auroc for s in scores]).T
    decision = beats_default(fold_table, borda, default=cands.index(default))
    members = ensemble_members(scores, borda, settings.ensemble)
    ens = ensemble_validation(members, raw, folds, families, names)
    return TuningResult(settings, scores, decision, members, ens, len(paths),
                        time.perf_counter() - t0, base.to_dict(),
                        {c.name: r for c, r in zip(cands, raw, strict=True)}, skipped,
                        "grid" if candidates is None else "given")


def _readable_plan(paths: list[Path], settings: TuneSettings, cache_dir: Path, max_pixels: int,
                   image_size: int | None = None):
    """The fold plan and synthetic set (for images resized to ``image_size``, see
    :func:`synthetic_set`) of the readable images among ``paths``. Drawing the
    synthetic set reads each planned image, before any extraction; at an unreadable one the
    set drawn so far is dropped, the image skipped with a warning (as ``fit`` skips it; one
    too small for synthetic anomalies, :class:`..data.anomalies.TooSmallForAnomalies`, ``fit``
    still trains on) and
    the plan drawn again without it (each bad image repeats the drawing, which is cheap next
    to validation). Returns (planned paths, (chosen, folds, families), synthetic paths, skipped)."""
    skipped: list[dict[str, str]] = []
    while True:
        kept = len(paths) if settings.max_images is None else min(len(paths), settings.max_images)
        if kept < 2 * settings.n_folds:  # the images left are not all read yet: not "readable"
            got = (f"only {kept} left after skipping {skipped_counts(skipped)} (reading stopped "
                   f"there: some of those {kept} may be unreadable too)") if skipped else f"got {kept}"
            cap = f" (max_images={settings.max_images} of {len(paths)} images)" if kept < len(paths) else ""
            raise TooFewImagesError(f"tune needs at least {2 * settings.n_folds} training images, "
                                    f"{got}{cap}")
        plan = fold_plan(len(paths), settings, paths)
        planned = [paths[i] for i in plan[0]]
        try:
            return (planned, plan, synthetic_set(planned, *plan[1:], settings, cache_dir, max_pixels,
                                                 image_size), skipped)
        except ImageReadError as e:
            if e.path not in planned:
                raise
            kind = TOO_SMALL if isinstance(e, TooSmallForAnomalies) else UNREADABLE
            log.warning("skipping %s: %s%s", display_path(e.path), e.reason,
                        "; not held out, still fitted on" if kind == TOO_SMALL else "")
            skipped.append({"path": display_path(e.path), "error": e.reason, "kind": kind})
            paths = [p for p in paths if p != e.path]


def normal_calibrations(train_paths: Sequence[Path | str], base: ModelConfig,
                        members: Sequence[CandidateScores], settings: TuneSettings = TuneSettings(),
                        cache_dir: Path | str | None = None, progress: bool = True,
                        max_pixels: int = DEFAULT_MAX_PIXELS,
                        calibrate_on: Sequence[Path | str] | None = None) -> list[NormalCalibration]:
    """Each member's normal calibration at the *deployed* scorer settings (the base config's
    coreset ratio): median / MAD of its cross-fitted scores on the tuning folds' held-out normal
    images (same folds and stage-map cache as :func:`tune`: each member is extracted as its
    validation was, ``extraction``, else alone). Test images never enter. An int8
    backbone is calibrated on all of ``train_paths``, as ``fit`` and :func:`.judge.test_scores`
    calibrate the member whose scores this standardises (tune's validation calibrates on the
    tuning subset, which differs where there are more than ``max_images`` images).
    ``train_paths``: the images tuning planned its folds over (:meth:`TuningResult.tuned`);
    ``calibrate_on`` (default ``train_paths``): the images a fit takes
    (:meth:`TuningResult.readable`: also those too small for synthetic anomalies)."""
    cache_dir = tune_cache(cache_dir)
    train = listing_order([Path(p) for p in train_paths])
    fitted = train if calibrate_on is None else listing_order([Path(p) for p in calibrate_on])
    chosen, folds, _ = fold_plan(len(train), settings, train)
    paths = [train[i] for i in chosen]
    bs = base.features.batch_size
    out = []
    for member in members:
        cand, ext = member.candidate, member.extraction or extraction_of([member.candidate])
        backbone = build_backbone(ext.config(base))
        calibrate(backbone, fitted, ext.image_size, ext.resize, base.features.crop_size, max_pixels)
        normal = stage_maps(backbone, paths, ext.image_size, ext.resize, cache_dir / "maps", bs,
                            progress, f"extract {cand.name}", max_pixels, base.features.crop_size)
        embedding = cand.config(base).features.embedding()
        scores = []  # fold by fold, as validation's: the calibration's std fallback sums in order
        for _, bank, held in fold_splits(folds):
            scorer = _scorer(base)
            scorer.fit_batches(normal.iter_features(bank, cand.strides, embedding, bs), len(bank))
            scores += [scorer.score(x).image_scores for x in
                       normal.iter_features(held, cand.strides, embedding, bs)]
        out.append(NormalCalibration.fit(np.concatenate(scores)))
    return out
