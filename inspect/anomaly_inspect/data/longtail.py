"""Long-tailed, noisy, multi-class training sets (TailedCore protocol, benchmarks.md §4).

From several MVTec-layout categories one unified training set is built:

* ``step``: round(0.6 * C) randomly chosen tail classes keep ``k`` random
  train/good images each (``k`` below each one's count, or it is no tail), head classes keep all;
* ``pareto``: class sizes follow a shuffled Pareto(alpha = 6) profile scaled so
  the largest-share class keeps all its images, clipped to [5, N_c];
* noise: real test anomalies copied into the training set - step: each head
  class gets min(#anomalies, round(noise * N_c)); pareto: round(noise * total)
  slots drawn over the images of classes with >= 20 images. Tail classes
  (ground truth for TailSampler) are: step - the k-image classes; pareto - the
  classes under 20 images, or the smallest-share class when there is none.

Everything is drawn from one seeded generator and written as a JSON manifest
(paths relative to each category folder) so a run repeats exactly. The manifest
also records what each category held (``sources``: numbers of training images and
anomalies, a SHA-256 of their file lists) so it is not re-used on other data.
Injected anomalies are removed from the test sets unless ``overlap`` (the
published protocol, which leaves them in) is chosen. methods.md §1.9 has the source.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..choices import ConfigError, check_field_types
from ..files import write_text
from .mvtec import AnomalyDataset
from .samples import Sample

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "anomaly-inspect-longtail/1"
TAIL_KINDS = ("step", "pareto")
MIN_NOISY_CLASS = 20  # pareto: classes smaller than this get no noise and count as tail


@dataclass
class LongTailSet:
    """A generated long-tailed noisy split; paths are relative to each category folder."""

    tail: str
    k: int | None
    noise: float
    seed: int
    overlap: bool
    categories: list[str]
    tail_classes: list[str]
    train: list[dict]  # {"category", "path", "noise": bool}
    removed_from_test: dict[str, list[str]] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    tail_ratio: float = 0.6
    alpha: float = 6.0
    format: str = MANIFEST_FORMAT
    #: per category {"train", "anomalies", "sha256"} of the data drawn from (empty in older manifests)
    sources: dict[str, dict] = field(default_factory=dict)

    # -- persistence -----------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: Path | str) -> Path:
        return write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path | str) -> LongTailSet:
        """Read and check a manifest; every error names ``path``."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: long-tail manifest not found")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not a JSON manifest ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"{path}: not a long-tail manifest (format must be '{MANIFEST_FORMAT}')")
        try:
            split = cls(**data)
        except TypeError as exc:
            raise ValueError(f"{path}: malformed long-tail manifest ({exc})") from None
        problem = split._problem()
        if problem:
            raise ValueError(f"{path}: malformed long-tail manifest: {problem}")
        return split

    def _problem(self) -> str | None:
        """What is inconsistent in this split (field types, categories, counts, entries), or
        None."""
        try:
            check_field_types(self, "")
        except ConfigError as exc:
            return str(exc)
        cats = self.categories
        if self.tail not in TAIL_KINDS:
            return f"tail '{self.tail}' is not one of {', '.join(TAIL_KINDS)}"
        if len(set(cats)) != len(cats) or len(cats) < 2:
            return f"categories must be at least 2 distinct names, got {cats!r}"
        if (self.tail == "step") != (self.k is not None and self.k >= 1):
            return f"k must be a whole number >= 1 for a step tail and null for pareto, got {self.k!r}"
        if not set(self.tail_classes) <= set(cats):
            return f"tail_classes {sorted(set(self.tail_classes) - set(cats))} are not in categories"
        if set(self.counts) != set(cats):
            return f"counts must have one entry per category {cats}, got {sorted(self.counts)}"
        for c in cats:
            v = self.counts[c]
            if not isinstance(v, dict) or not all(isinstance(v.get(k), int) and v[k] >= 0
                                                  for k in ("original", "good", "noise")):
                return f"counts['{c}'] needs whole numbers 'original', 'good', 'noise', got {v!r}"
        listed: dict[str, dict[bool, list[str]]] = {c: {False: [], True: []} for c in cats}
        for i, item in enumerate(self.train):
            if not isinstance(item, dict) or set(item) != {"category", "path", "noise"}:
                return f"train entry {i} must have exactly the keys category, path, noise, got {item!r}"
            if item["category"] not in listed:
                return f"train entry {i} ({item['path']}) has category '{item['category']}', not one of {cats}"
            if not isinstance(item["path"], str) or not isinstance(item["noise"], bool):
                return f"train entry {i}: path must be a string and noise true or false, got {item!r}"
            listed[item["category"]][item["noise"]].append(item["path"])
        for c in cats:
            paths = listed[c][False] + listed[c][True]
            if len(set(paths)) != len(paths):
                return f"category '{c}' lists a training image twice"
            got = {"good": len(listed[c][False]), "noise": len(listed[c][True])}
            want = {k: self.counts[c][k] for k in got}
            if got != want:
                return f"category '{c}': counts say {want}, the train entries hold {got}"
        if not set(self.removed_from_test) <= set(cats):
            return f"removed_from_test must map categories to paths, got keys {sorted(self.removed_from_test)}"
        if not self.overlap:
            for c in cats:
                if sorted(self.removed_from_test.get(c, [])) != sorted(listed[c][True]):
                    return (f"category '{c}': removed_from_test must list exactly its injected (noise) "
                            f"training images when overlap is false, or they stay in the test set")
        if self.sources and (set(self.sources) != set(cats) or any(
                not isinstance(v, dict) or set(v) != {"train", "anomalies", "sha256"}
                for v in self.sources.values())):
            return "sources must give train, anomalies and sha256 for every category"
        return None

    def same_recipe(self, tail: str, k: int | None, noise: float, seed: int, overlap: bool,
                    categories: list[str]) -> bool:
        return (self.tail, self.k if tail == "step" else None, self.noise, self.seed, self.overlap,
                self.categories) == (tail, k if tail == "step" else None, noise, seed, overlap,
                                     sorted(categories))

    def check_data(self, datasets: dict[str, AnomalyDataset], category_dirs: dict[str, Path],
                   path: Path | str) -> None:
        """Refuse (naming the manifest ``path``) a split drawn from other data than ``datasets``.
        A manifest of an older version has no ``sources``: it passes when the split rebuilt
        from its recipe and the data now is the same."""
        if self.sources:
            now = data_sources(datasets, category_dirs)
            diffs = []
            for c in self.categories:
                then, cur = self.sources[c], now.get(c)
                if cur is None:
                    diffs.append(f"{c}: not among the categories now")
                elif (then["train"], then["anomalies"]) != (cur["train"], cur["anomalies"]):
                    diffs.append(f"{c}: {then['train']} training images and {then['anomalies']} "
                                 f"anomalies then, {cur['train']} and {cur['anomalies']} now")
                elif then["sha256"] != cur["sha256"]:
                    diffs.append(f"{c}: as many images, other file names")
            what = "was drawn from other data than found now"
        else:
            try:
                again = build_longtail(datasets, category_dirs, self.tail, self.k or 1, self.noise,
                                       self.seed, self.overlap, self.tail_ratio, self.alpha)
            except ValueError as exc:
                raise ValueError(f"{path}: this manifest's recipe cannot be rebuilt ({exc})") from None
            # with overlap nothing is removed; the committed manifests list the injected images
            ignored = {"sources": {}, **({"removed_from_test": {}} if self.overlap else {})}
            same = {**again.to_dict(), **ignored} == {**self.to_dict(), **ignored}
            diffs = [] if same else [
                f"{c}: {self.counts[c]} in the manifest, {again.counts.get(c)} rebuilt"
                for c in self.categories if self.counts[c] != again.counts.get(c)] or ["other images drawn"]
            what = "has no record of its data (older version) and differs from the split rebuilt now"
        if diffs:
            raise ValueError(f"{path}: manifest {what} ({'; '.join(diffs)}); delete it to rebuild "
                             f"the split, or write manifests to another folder")

    # -- use -------------------------------------------------------------------
    def train_samples(self, category_dirs: dict[str, Path]) -> list[Sample]:
        """Training samples (group = category); raises naming the first missing file."""
        out = []
        for item in self.train:
            path = Path(category_dirs[item["category"]]) / item["path"]
            if not path.is_file():
                raise FileNotFoundError(f"{path}: listed in the long-tail manifest but missing")
            out.append(Sample(path, 0, "train", item["category"]))
        return out

    def test_samples(self, category: str, dataset: AnomalyDataset, category_dir: Path) -> list[Sample]:
        """``category``'s test samples without the injected ones (unless overlap); raises if a
        training image would stay in them without overlap."""
        if category not in self.categories:
            raise ValueError(f"'{category}' is not a category of this split ({self.categories})")
        if self.overlap:
            return list(dataset.test)
        removed = set(self.removed_from_test.get(category, []))
        test = [s for s in dataset.test if _rel(s.path, category_dir) not in removed]
        train = {item["path"] for item in self.train if item["category"] == category}
        leaked = [s.path for s in test if _rel(s.path, category_dir) in train]
        if leaked:
            raise ValueError(f"{category}: {len(leaked)} training image(s) also in the test set "
                             f"(first: {leaked[0]}) although overlap is off: removed_from_test "
                             f"must list every injected image")
        return test

    @property
    def class_sizes(self) -> dict[str, int]:
        """True number of training images per category (normal + injected)."""
        return {c: self.counts[c]["good"] + self.counts[c]["noise"] for c in self.categories}


def _rel(path: Path, category_dir: Path) -> str:
    return Path(path).relative_to(category_dir).as_posix()


def data_sources(datasets: dict[str, AnomalyDataset], category_dirs: dict[str, Path]) -> dict[str, dict]:
    """Per category: numbers of training images and anomalies and a SHA-256 of their relative
    paths in order (the lists the split is drawn from)."""
    out = {}
    for c in sorted(datasets):
        cdir = Path(category_dirs[c])
        train = [_rel(s.path, cdir) for s in datasets[c].train]
        anomalies = [_rel(s.path, cdir) for s in datasets[c].test if s.label == 1]
        digest = hashlib.sha256("\n".join(train + ["--"] + anomalies).encode()).hexdigest()
        out[c] = {"train": len(train), "anomalies": len(anomalies), "sha256": digest}
    return out


def pareto_profile(n_classes: int, alpha: float = 6.0) -> np.ndarray:
    """Relative class shares: Pareto(alpha) mass between C + 1 points from its 1 % to 99 % quantile."""
    from scipy.stats import pareto

    x = np.linspace(pareto.ppf(0.01, alpha), pareto.ppf(0.99, alpha), n_classes + 1)
    return np.diff(pareto.cdf(x, alpha))


def _round(x: float) -> int:
    return int(np.floor(x + 0.5))


def build_longtail(
    datasets: dict[str, AnomalyDataset],
    category_dirs: dict[str, Path],
    tail: str = "step",
    k: int = 4,
    noise: float = 0.1,
    seed: int = 0,
    overlap: bool = False,
    tail_ratio: float = 0.6,
    alpha: float = 6.0,
) -> LongTailSet:
    """Draw a long-tailed noisy split of ``datasets`` (category -> MVTec-layout dataset)."""
    if tail not in TAIL_KINDS:
        raise ValueError(f"unknown tail kind '{tail}'; choose from {', '.join(TAIL_KINDS)}")
    if not 0 <= noise < 1:
        raise ValueError(f"noise ratio must be in [0, 1), got {noise}")
    if tail == "step" and k < 1:
        raise ValueError(f"step tail needs k >= 1 images per tail class, got {k}")
    cats = sorted(datasets)
    if len(cats) < 2:
        raise ValueError(f"a long-tailed set needs at least 2 categories, got {cats}")
    rng = np.random.default_rng(seed)
    n_orig = {c: len(datasets[c].train) for c in cats}

    if tail == "step":
        n_tail = _round(tail_ratio * len(cats))
        tails = sorted(cats[i] for i in rng.choice(len(cats), n_tail, replace=False))
        whole = [c for c in tails if k >= n_orig[c]]
        if whole:  # that class would keep all its images: the split is not long-tailed
            c = whole[0]
            raise ValueError(f"step tail: k {k} keeps every one of the {n_orig[c]} training "
                             f"images of tail class '{c}', so the split is not long-tailed; "
                             f"choose k below {min(n_orig[w] for w in whole)}")
        keep_n = {c: k if c in tails else n_orig[c] for c in cats}
    else:
        shares = pareto_profile(len(cats), alpha)[rng.permutation(len(cats))]
        biggest = int(shares.argmax())
        scale = n_orig[cats[biggest]] / shares[biggest]
        keep_n = {c: int(np.clip(_round(shares[i] * scale), 5, n_orig[c])) for i, c in enumerate(cats)}
        # tail = the few-shot classes (< 20 images, which also get no noise); with few
        # categories there may be none, then the class with the smallest share is the tail
        tails = [c for c in cats if keep_n[c] < MIN_NOISY_CLASS] or [cats[int(shares.argmin())]]

    kept = {c: np.sort(rng.choice(n_orig[c], keep_n[c], replace=False)) for c in cats}

    anomalies = {c: [s for s in datasets[c].test if s.label == 1] for c in cats}
    if tail == "step":
        n_noise = {c: 0 if c in tails else min(len(anomalies[c]), _round(noise * n_orig[c]))
                   for c in cats}
    else:
        eligible = [c for c in cats if keep_n[c] >= MIN_NOISY_CLASS]
        slots_of = np.array([c for c in eligible for _ in range(keep_n[c])])
        total = min(_round(noise * sum(keep_n.values())), len(slots_of))
        drawn = rng.choice(slots_of, total, replace=False) if total else np.array([])
        n_noise = {c: min(len(anomalies[c]), int((drawn == c).sum())) for c in cats}

    train, removed, counts = [], {}, {}
    for c in cats:
        cdir = Path(category_dirs[c])
        train += [{"category": c, "path": _rel(datasets[c].train[i].path, cdir), "noise": False}
                  for i in kept[c]]
        picked = np.sort(rng.choice(len(anomalies[c]), n_noise[c], replace=False)) if n_noise[c] else []
        injected = [_rel(anomalies[c][i].path, cdir) for i in picked]
        train += [{"category": c, "path": p, "noise": True} for p in injected]
        removed[c] = [] if overlap else injected  # overlap: they stay in the test set
        counts[c] = {"original": n_orig[c], "good": int(keep_n[c]), "noise": len(injected)}
    split = LongTailSet(tail, k if tail == "step" else None, noise, seed, overlap, cats, tails, train,
                        removed, counts, tail_ratio, alpha, sources=data_sources(datasets, category_dirs))
    log.info("long-tail %s set: %s; tail classes %s", tail,
             ", ".join(f"{c} {v['good']}+{v['noise']}" for c, v in counts.items()), tails)
    return split


def check_category_names(categories: list[str], source: str = "categories") -> None:
    """Refuse, naming ``source``, a category that is not one folder name (a ``/``, or ``.`` /
    ``..``): the names are joined into the manifest's file name, which would then land in
    folders below (or outside) the manifest folder."""
    for c in categories:
        if "/" in c or c in (".", ".."):
            raise ValueError(f"{source}: category '{c}' is not one folder name (it holds '/' or is "
                             f"'.' or '..'), and the categories name the split's manifest file; "
                             f"name a folder elsewhere as CATEGORY=DIR (--root)")


def manifest_name(tail: str, k: int | None, noise: float, seed: int, categories: list[str],
                  overlap: bool = False) -> str:
    """The manifest file name of a recipe. The noise ratio is written short (``0.1``) where
    that reads back as the same number, else in full (``0.1000001``): distinct ratios get
    distinct names, and the names of the manifests written so far stay. Categories that are
    not one folder name are refused (:func:`check_category_names`)."""
    check_category_names(categories)
    shape = f"step_k{k}" if tail == "step" else tail
    suffix = "_overlap" if overlap else ""
    ratio = f"{noise:g}" if float(f"{noise:g}") == noise else repr(float(noise))
    return f"lt_{shape}_noise{ratio}_seed{seed}_{'-'.join(sorted(categories))}{suffix}.json"


def load_or_build_longtail(datasets: dict, dirs: dict[str, Path], tail: str, k: int | None,
                           noise: float, seed: int, overlap: bool, manifest_dir: Path,
                           save: bool = True) -> LongTailSet:
    """The split of this recipe: re-read from ``manifest_dir`` when its manifest is there
    (refused if that file holds another recipe or was drawn from other data), else built and,
    with ``save``, its manifest written. evaluate-lt saves a built split only once it passed
    the evaluation's checks (``evaluate_longtail(save_manifest=True)``): a refused run must
    leave no manifest, which would then refuse the corrected data."""
    categories = list(dirs)
    path = Path(manifest_dir) / manifest_name(tail, k, noise, seed, categories, overlap)
    if not path.is_file():
        split = build_longtail(datasets, dirs, tail, k, noise, seed, overlap)
        if save:
            split.save(path)
            log.info("wrote split manifest %s", path)
        return split
    split = LongTailSet.load(path)
    if not split.same_recipe(tail, k, noise, seed, overlap, categories):
        raise ValueError(f"{path}: existing manifest has a different recipe; delete it or "
                         f"write manifests to another folder")
    split.check_data(datasets, dirs, path)
    log.info("re-using split manifest %s", path)
    return split
