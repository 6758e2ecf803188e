"""OOD benchmark runner: features extracted once (and cached), every scorer, every split.

A benchmark config (``configs/ood/*.yaml``) names the data (ISIC ``index.csv``,
ISIC archive layout, or an MVTec category with a held-out defect), the OOD
splits, the backbone and the scorers. Features of each image set are computed
once per configuration and cached on disk (pooled embedding plus per-channel
block norms); patch scorers (PatchCore) are fitted and scored in the same pass.
Nothing is fitted on test data or OOD labels: scorers see the ID training
features (and ID class labels) only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..choices import VIEW_KINDS, check_field_types
from ..config import (
    CONFIG_DIR,
    SEED_LIMIT,
    SEED_RANGE,
    BackboneConfig,
    ConfigError,
    FeatureConfig,
    ModelConfig,
    model_blocks,
    read_yaml_mapping,
    resolve_config,
)
from ..core import Features, FitContext, SharedResults
from ..data.artefacts import ColourRule, SyntheticSpec, make_synthetic_set
from ..data.colour_shift import ColourShift, colour_shift
from ..data.isic import REAL_SPLITS, OODData, isic_archive_benchmark, isic_index_benchmark
from ..data.layout import DatasetLayoutError
from ..data.mvtec_ood import (
    check_colour_splits,
    check_no_repeats,
    check_similarity_groups,
    colour_similarity,
    mvtec_heldout_benchmark,
    object_mean_colour,
    read_colour_manifest,
    read_group_colours,
)
from ..data.pseudo_ood import jigsaw
from ..data.samples import Sample
from ..features.backbone import Backbone
from ..features.cache import FeatureCache, cache_key, code_fingerprint, file_list_hash
from ..features.views import view_params
from ..pipeline import Runner, build_backbone, build_extractor
from ..pipeline.builders import scorer_for
from ..progress import Progress
from ..resources import peak_rss_mb
from ..scorers import Scorer, check_scorer_params, get_scorer_class
from ..scorers.nuisance import NuisanceProjection, ProjectedScorer, nuisance_subspace
from ..scorers.params import check_number
from ..scorers.tail_sampler import TailSampler, TailSamplerResult
from ..user_cache import user_cache_dir
from .fusion import NormalCalibration, crossfit_folds, crossfit_scores, fuse
from .ood import CONVENTION, ood_metrics, orientation

log = logging.getLogger(__name__)

SYNTHETIC_SPLITS = {
    "ink_synth_similar": ("ink", "similar"), "ink_synth_dissimilar": ("ink", "dissimilar"),
    "charts_synth_similar": ("chart", "similar"), "charts_synth_dissimilar": ("chart", "dissimilar"),
}
BENCHMARKS = ("isic", "isic_archive", "mvtec_heldout")
DATA_KEYS = {"isic": ("root", "colours_csv"),
             "isic_archive": ("image_dir", "metadata_csv", "id_list", "ood_lists", "folds", "fold"),
             "mvtec_heldout": ("root", "category", "id_groups", "ood_groups", "colour_manifest",
                               "similar_groups", "folds", "fold")}
DATA_REQUIRED = {"isic": ("root",), "isic_archive": ("image_dir", "metadata_csv", "id_list", "ood_lists"),
                 "mvtec_heldout": ("root", "category", "ood_groups")}
SYNTHETIC_KEYS = ("roi_rgb", "threshold", "seed")  # the isic benchmark's synthetic splits
#: names of the benchmark's own sets (ID train / test, the jigsaw pseudo-OOD copies of ID train):
#: an OOD split of that name would replace them
RESERVED_SPLITS = {"id_train": "the ID training set", "id_test": "the ID test set",
                   "pseudo": "the jigsaw pseudo-OOD copies of the ID training set"}
SIMILARITY_SPLITS = ("similar", "dissimilar")  # added by data.similar_groups (the colour rule)
ORIENT_MODES = ("published", "pseudo_ood")
NUISANCES = ("", "colour")
NUISANCE_K = 5  # directions a nuisance projection removes, unless a row sets nuisance_k
VIEWS = ("", *(k for k in VIEW_KINDS if view_params(k)))  # a pooled row's views ("": none)
# scorers that keep the ID-train features (or their mean and covariance): in-sample, those images
# score (near) 0 (kNN with k = 1: exactly 0), so the jigsaw check would always keep the published direction
IN_SAMPLE_DEGENERATE = ("knn", "knn_nan", "mahalanobis")
JIGSAW_GRID = 3
TAIL_VIEWS = "rotflip"  # TailedCore's default tail_views: 90-degree rotations x flip (7 per image; rot15flip has 47)


@dataclass
class ScorerSpec:
    """One table row: a registered scorer, its parameters and which features it reads.

    ``input``: ``pooled`` (default for pooled scorers), ``patches`` (PatchCore),
    ``block:final`` / ``block:<timm feature index>`` (per-channel block norms) or ``pixels``
    (default for scorers that perturb the image, ODIN: the pooled features of each scored
    image's perturbed copy, extracted per scorer and cached).
    ``orient``: ``published`` keeps the score's published direction;
    ``pseudo_ood`` negates it when it ranks jigsaw-shuffled ID-train images
    (label-free pseudo-OOD) above the ID-train images themselves (refused for
    ``IN_SAMPLE_DEGENERATE`` scorers, whose own training images score degenerately).
    ``nuisance``: ``colour`` projects pooled features onto the complement of the
    ``nuisance_k`` (default ``NUISANCE_K``; refused without ``nuisance``, where it would
    change nothing) most colour-sensitive principal directions (learned from ID-train
    images and colour-shifted copies of them, ``scorers/nuisance.py``) before fit and score.
    ``views``: a :data:`~..choices.VIEW_KINDS` name (``rotflip``: the 90-degree rotations x
    flip, exact on the square input) for a pooled row whose images have no canonical
    orientation: the scorer is fitted on the pooled features of every ID-train image and of its
    views, and an image scores the mean of its own and its views' scores.
    """

    name: str
    label: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    input: str = ""
    orient: str = "published"
    nuisance: str = ""
    nuisance_k: int | None = None
    views: str = ""

    def __post_init__(self):
        owner = f"scorer '{self.label or self.name}'"
        if self.nuisance_k is not None:  # None: NUISANCE_K with a nuisance
            check_number(owner, "nuisance_k", self.nuisance_k, 1, whole=True)
        check_field_types(self, f"{owner}: ")
        cls = get_scorer_class(self.name)  # raises for unknown names
        self.label = self.label or self.name
        check_scorer_params(self.name, self.params, f"scorer '{self.label}' params")
        if "seed" in self.params:  # as a model config's scorer section (config.check_scorer_seed)
            raise ValueError(f"scorer '{self.label}': params: seed: set the top-level 'seed' "
                             f"instead; it seeds every row")
        try:  # the values, now rather than after every set is extracted
            cls(**self.params)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"scorer '{self.label}': {exc}") from None
        if not self.input:
            if "blocks" in cls.requires:
                self.input = "block:final"
            elif hasattr(cls, "perturb"):
                self.input = "pixels"
            else:
                self.input = "patches" if "patches" in cls.requires else "pooled"
        block = self.input.split(":", 1)[1] if self.input.startswith("block:") else None
        if self.input not in ("pooled", "patches", "pixels") and not (
                block == "final" or (block or "").isdigit()):
            raise ValueError(f"scorer '{self.label}': input must be pooled, patches, pixels, "
                             f"block:final or block:<stage index>, got {self.input!r}")
        reads = "blocks" if block is not None else "patches" if self.input == "patches" else "pooled"
        if reads not in cls.requires:
            named = {"patches": "patch", "blocks": "block"}
            raise ValueError(f"scorer '{self.label}': '{self.name}' scores "
                             f"{' and '.join(named.get(r, r) for r in cls.requires)} "
                             f"features, not input {self.input!r}")
        if "block" in self.params:  # the row's input chooses the block: one way to say it
            raise ValueError(f"scorer '{self.label}': params: block: set the row's input "
                             f"('block:final' or 'block:<stage index>') instead")
        if self.orient not in ORIENT_MODES:
            raise ValueError(f"scorer '{self.label}': orient must be one of {ORIENT_MODES}, got {self.orient!r}")
        if self.input == "pixels" and not hasattr(cls, "perturb"):
            raise ValueError(f"scorer '{self.label}': input 'pixels' is for scorers that perturb the "
                             f"image (odin); '{self.name}' does not")
        if self.orient == "pseudo_ood" and self.input == "patches":
            raise ValueError(f"scorer '{self.label}': orient 'pseudo_ood' is for pooled / block / pixel inputs")
        if self.orient == "pseudo_ood" and self.name in IN_SAMPLE_DEGENERATE:
            raise ValueError(f"scorer '{self.label}': orient 'pseudo_ood' scores the ID-train images "
                             f"the scorer was fitted on; '{self.name}' keeps them (or their mean and "
                             f"covariance), so they score (near) 0 and the check would always keep "
                             f"the published direction")
        if self.nuisance not in NUISANCES:
            raise ValueError(f"scorer '{self.label}': nuisance must be one of {NUISANCES}, got {self.nuisance!r}")
        if self.nuisance and self.input != "pooled":
            raise ValueError(f"scorer '{self.label}': nuisance '{self.nuisance}' is for pooled inputs")
        if self.nuisance_k is not None and not self.nuisance:
            raise ValueError(f"scorer '{self.label}': nuisance_k needs nuisance (one of "
                             f"{[n for n in NUISANCES if n]}); without it nothing is projected")
        if self.nuisance and self.nuisance_k is None:
            self.nuisance_k = NUISANCE_K
        if self.views not in VIEWS:
            raise ValueError(f"scorer '{self.label}': views must be one of {[v for v in VIEWS if v]} "
                             f"(or left out), got {self.views!r}")
        if self.views and self.input != "pooled":
            raise ValueError(f"scorer '{self.label}': views '{self.views}' is for pooled inputs")
        if self.views and (self.nuisance or self.orient != "published"):
            raise ValueError(f"scorer '{self.label}': views are not combined with a nuisance "
                             f"projection or orient 'pseudo_ood'")


@dataclass
class FusionSpec:
    """One fused row: the mean of the ``members`` rows' scores (their labels), each standardised
    by the median / MAD of its ``folds``-fold cross-fitted ID-train scores (every ID-train image
    scored by a model fitted without it; :mod:`.fusion`). Nothing is fitted on OOD or test data."""

    label: str
    members: list[str]
    folds: int = 5

    def __post_init__(self):
        check_number(f"fusion '{self.label}'", "folds", self.folds, 2, whole=True)
        check_field_types(self, f"fusion '{self.label}': ")
        if len(self.members) < 2 or len(set(self.members)) != len(self.members):
            raise ValueError(f"fusion '{self.label}': members must be two or more distinct row labels, "
                             f"got {self.members}")


@dataclass
class OODBenchmarkConfig:
    benchmark: str
    data: dict[str, Any]
    splits: list[str]
    scorers: list[ScorerSpec]
    fusions: list[FusionSpec] = field(default_factory=list)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    synthetic: dict[str, Any] = field(default_factory=dict)
    cache_dir: str | None = None  # None: the user cache's ``ood`` folder (cache_folder)
    seed: int = 0
    source: str = "config"
    packaged: bool = False  # a packaged config's file (load_ood_config): see data_folder

    def __post_init__(self):
        check_field_types(self, f"{self.source}: ")

    def cache_folder(self) -> Path:
        """The feature cache: ``cache_dir`` as given, else the user cache's ``ood`` folder
        (``$ANOMALY_INSPECT_CACHE``/ood or ``~/.cache/anomaly_inspect/ood``, as the ONNX exports'),
        which does not depend on the folder the benchmark runs from."""
        return user_cache_dir("ood") if self.cache_dir is None else Path(self.cache_dir)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> OODBenchmarkConfig:
        data = dict(data or {})
        known = {f.name for f in fields(cls)} - {"source", "packaged"}
        unknown = set(data) - known
        model_keys = sorted(unknown & {f.name for f in fields(ModelConfig)})
        if "benchmark" not in data and model_keys:
            raise ConfigError(f"{source}: a model config (it names {model_keys}), not an "
                              f"ood-benchmark config; give it to the --config of 'anomaly-inspect "
                              f"evaluate', 'fit' or 'tune'")
        if unknown:
            raise ConfigError(f"{source}: unknown keys {sorted(unknown)}; expected {sorted(known)}")
        for key in ("benchmark", "data", "splits", "scorers"):
            if key not in data:
                raise ConfigError(f"{source}: missing required key '{key}'")
        if data["benchmark"] not in BENCHMARKS:
            raise ConfigError(f"{source}: benchmark must be one of {BENCHMARKS}, got {data['benchmark']!r}")
        for section, accepted in (("data", DATA_KEYS[data["benchmark"]]),
                                  ("synthetic", SYNTHETIC_KEYS if data["benchmark"] == "isic" else ())):
            if data.get(section, {}) is None:  # an empty section, as for backbone: and features:
                data[section] = {}
            given = data.get(section, {})
            if not isinstance(given, dict):
                raise ConfigError(f"{source}: {section}: expected a mapping, got {given!r}")
            bad = sorted(set(given) - set(accepted))
            if bad:  # a typo ("flod: 1") would otherwise run with the default silently
                raise ConfigError(f"{source}: {section}: unknown key(s) {bad} for benchmark "
                                  f"'{data['benchmark']}'; accepted: {sorted(accepted) or 'none'}")
        if not isinstance(data["splits"], list) or not all(isinstance(x, str) for x in data["splits"]):
            raise ConfigError(f"{source}: splits: expected a list of split names, got "
                              f"{data['splits']!r}")
        for key, what in (("scorers", (str, dict)), ("fusions", dict)):
            entries = data.get(key) or []
            if not isinstance(entries, list) or not all(isinstance(x, what) for x in entries):
                raise ConfigError(f"{source}: {key}: expected a list of "
                                  f"{'scorer names or ' if key == 'scorers' else ''}mappings, got {entries!r}")
        given = data["data"]
        whole = [("seed", data.get("seed", 0), 0), *((f"data: {k}", given.get(k), low)
                                                    for k, low in (("folds", 2), ("fold", 0)))]
        for name, value, low in whole:  # a null fold / folds is the default; a null seed is not
            if (value is not None or name == "seed") and (isinstance(value, bool) or not isinstance(value, int)
                                                          or value < low):
                raise ConfigError(f"{source}: {name}: expected a whole number >= {low}, got {value!r}")
        for name, value in (("seed", data.get("seed", 0)), ("synthetic: seed",
                                                            (data.get("synthetic") or {}).get("seed"))):
            if isinstance(value, int) and value >= SEED_LIMIT:  # the model configs' bound
                raise ConfigError(f"{source}: {name}: {SEED_RANGE}, got {value}")
        folds, fold = (default if given.get(k) is None else given[k] for k, default in (("folds", 5), ("fold", 0)))
        if fold >= folds:
            raise ConfigError(f"{source}: data: fold: expected a whole number < folds ({folds}), got {fold}")
        _check_data_values(source, given, data["splits"])
        _check_synthetic(source, data.get("synthetic", {}))
        try:
            specs = [_spec(ScorerSpec, {"name": s} if isinstance(s, str) else s, "scorer")
                     for s in data.pop("scorers")]
            fusions = [_spec(FusionSpec, f, "fusion") for f in data.pop("fusions", None) or []]
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: {exc}") from None
        # the sections of a model config, with its checks (mapping, unknown keys, types, values)
        model = ModelConfig.from_dict({k: data.pop(k, None) for k in ("backbone", "features")}, source)
        bb, ft = model.backbone, model.features
        if ft.views != "none":  # one way to say it: each row takes its own
            raise ConfigError(f"{source}: features: views: set views on the rows that take them "
                              f"(scorers: - {{name: ..., views: {ft.views}}})")
        if not specs or not data["splits"]:
            raise ConfigError(f"{source}: 'scorers' and 'splits' must not be empty")
        labels = [s.label for s in specs] + [f.label for f in fusions]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"{source}: row labels must be unique; repeated: "
                              f"{sorted({x for x in labels if labels.count(x) > 1})}")
        if bb.layers is not None:  # without layers the backbone's defaults are known at run time
            check_blocks(source, specs, bb.layers)
        blocks = [s.label for s in specs if s.input.startswith("block:")]
        if blocks and ft.resize != "stretch":
            # the block norms sum over every cell of the map (features/extractor.py), padding included
            raise ConfigError(f"{source}: scorers {blocks} read block norms, which would count the "
                              f"padding of features: resize {ft.resize!r}; use resize 'stretch'")
        if bb.precision != "f32" and any(s.input == "pixels" for s in specs):
            # ODIN's 0.0014 step is below int8's input quantisation: the copies would not move
            raise ConfigError(f"{source}: scorers with input 'pixels' (odin) need backbone precision "
                              f"f32, got {bb.precision!r}")
        inputs = {s.label: s.input for s in specs}
        for f in fusions:
            unknown = [m for m in f.members if m not in inputs]
            if unknown:
                raise ConfigError(f"{source}: fusion '{f.label}': members {unknown} are not scorer rows")
            pixels = [m for m in f.members if inputs[m] == "pixels"]
            if pixels:
                raise ConfigError(f"{source}: fusion '{f.label}': members {pixels} score perturbed images; "
                                  f"their cross-fitted ID-train scores would need perturbed ID-train "
                                  f"images, which the benchmark does not make")
        missing = [k for k in DATA_REQUIRED[data["benchmark"]] if given.get(k) in (None, "", [], {})]
        if missing:
            raise ConfigError(f"{source}: data: missing required key(s) {missing} for benchmark "
                              f"'{data['benchmark']}'")
        return cls(scorers=specs, fusions=fusions, backbone=bb, features=ft, source=source, **data)


def check_blocks(source: str, specs: list[ScorerSpec], layers) -> None:
    """Refuse a ``block:<name>`` input that a backbone with these feature ``layers`` does not
    make (its blocks: ``final`` and each layer)."""
    have = model_blocks(layers)
    for s in specs:
        if s.input.startswith("block:") and s.input[6:] not in have:
            raise ConfigError(f"{source}: scorer '{s.label}': no block '{s.input}'; "
                              f"available: {', '.join('block:' + h for h in have)}")


def _spec(cls, entry: dict, what: str):
    """A :class:`ScorerSpec` / :class:`FusionSpec` from its config mapping: an unknown or missing
    key is named with the row (not a bare ``__init__()`` TypeError); ``params: null`` is an empty
    section, as a model config's ``scorer: null``."""
    keys = [f.name for f in fields(cls)]
    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    row = f"{what} '{entry.get('label') or entry.get('name')}'"
    unknown = sorted(map(str, set(entry) - set(keys)))
    if unknown:
        raise ValueError(f"{row}: unknown key(s) {unknown}; accepted: {keys}")
    missing = [k for k in required if k not in entry]
    if missing:
        raise ValueError(f"{what} {entry}: missing key(s) {missing}")
    if "params" in entry and entry["params"] is None:
        entry = {**entry, "params": {}}
    return cls(**entry)


@dataclass
class _DataTypes:
    """The kinds of the ``data`` keys (each benchmark takes some: ``DATA_KEYS``), checked when the
    config is read; ``folds`` / ``fold`` are checked beside ``seed``."""

    root: str | None = None
    colours_csv: str | None = None
    image_dir: str | None = None
    metadata_csv: str | None = None
    id_list: str | None = None
    ood_lists: dict[str, str] | None = None
    category: str | None = None
    id_groups: list[str] | None = None
    ood_groups: dict[str, list[str]] | None = None
    colour_manifest: str | None = None
    similar_groups: list[str] | None = None
    folds: Any = None
    fold: Any = None


def _check_data_values(source: str, given: dict, splits: list[str]) -> None:
    """Refuse, naming the config and the key, data values of the wrong kind, split names the
    benchmark uses for its own sets (``RESERVED_SPLITS``; ``similar`` / ``dissimilar`` where
    ``similar_groups`` adds them), which would replace those sets, and names given twice (a
    repeated split or defect group would count its images twice; a repeated ID group, its
    images as both ID train and ID test)."""
    check_field_types(_DataTypes(**given), f"{source}: data: ")
    groups, lists = given.get("ood_groups") or {}, given.get("ood_lists") or {}
    not_lists = sorted(str(k) for k, v in groups.items()
                       if not isinstance(v, list) or not all(isinstance(m, str) for m in v))
    if not_lists:
        raise ConfigError(f"{source}: data.ood_groups {not_lists} must each be a list of defect "
                          f"folders (or colour:<name> entries)")
    not_paths = sorted(str(k) for k, v in lists.items() if not isinstance(v, str))
    if not_paths:
        raise ConfigError(f"{source}: data.ood_lists {not_paths} must each be the path of an id list")
    similarity = {s: f"the colour rule's {s} group (data.similar_groups adds it)"
                  for s in SIMILARITY_SPLITS} if given.get("similar_groups") else {}
    for key, defined, reserved in (("ood_groups", groups, RESERVED_SPLITS | similarity),
                                   ("ood_lists", lists, RESERVED_SPLITS)):
        for name in defined:
            if not isinstance(name, str):
                raise ConfigError(f"{source}: data: {key}: split names must be strings, got {name!r}")
            if name in reserved:
                raise ConfigError(f"{source}: data: {key}: split name '{name}' is reserved for "
                                  f"{reserved[name]}; rename the split")
    try:  # a repeated defect group counts its images twice, a repeated ID group in train and test
        for name, members in groups.items():
            check_no_repeats(f"ood_groups: {name}", members, "list each defect folder once")
        check_no_repeats("id_groups", given.get("id_groups") or [])
    except ValueError as exc:
        raise ConfigError(f"{source}: data: {exc}") from None
    for name in splits:
        if name in RESERVED_SPLITS:
            raise ConfigError(f"{source}: splits: '{name}' is reserved for {RESERVED_SPLITS[name]}; "
                              f"rename the split")
    try:
        check_no_repeats("splits", splits, hint="")
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _check_synthetic(source: str, synth: dict) -> None:
    """The ``synthetic`` values (the drawing rule and seed of the ISIC synthetic splits), refused
    naming the config and the key rather than failing when the first split is drawn."""
    roi = synth.get("roi_rgb", [0, 0, 0])
    if not (isinstance(roi, list) and len(roi) == 3 and all(
            isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 255 for v in roi)):
        raise ConfigError(f"{source}: synthetic: roi_rgb: expected three numbers in [0, 255] "
                          f"(R, G, B), got {roi!r}")
    try:
        check_number("synthetic", "threshold", synth.get("threshold", 115.0), 0, low_open=True)
        check_number("synthetic", "seed", synth.get("seed", 0), 0, whole=True)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_ood_config(path: Path | str, seed: int | None = None, backbone: dict[str, Any] | None = None,
                    flags: str = "") -> OODBenchmarkConfig:
    """The benchmark config at ``path`` (a file or a packaged name). ``seed`` and ``backbone``
    keys (a command's flags, e.g. ``runtime``) replace the file's before it is checked, so that
    one that does not fit the file is refused naming both (``flags``: as given on the command
    line, in the source and so in the JSON's ``config``). ``packaged`` says whether the file is a
    packaged config's (by name or by path), whose data paths are read as :func:`data_folder` says."""
    data = read_yaml_mapping(path)
    packaged = resolve_config(path).resolve().is_relative_to(CONFIG_DIR)
    if seed is not None:
        data["seed"] = seed
    given = data.get("backbone")
    if backbone and (given is None or isinstance(given, dict)):  # else from_dict says why
        data["backbone"] = {**(given or {}), **backbone}
    cfg = OODBenchmarkConfig.from_dict(data, " with ".join(s for s in (str(path), flags) if s))
    return replace(cfg, packaged=packaged)


# --- data ----------------------------------------------------------------------------------
#: the data keys that name a file or folder (and each entry of ``ood_lists``)
PATH_KEYS = ("root", "colours_csv", "image_dir", "metadata_csv", "id_list", "colour_manifest")
#: a packaged config's data folder unless --data-root or $ANOMALY_INSPECT_DATA says otherwise:
#: beside the repository root, where the recorded commands run from (as the tests' real data)
DEFAULT_DATA_FOLDER = Path("../shared/data")
DATA_ENV = "ANOMALY_INSPECT_DATA"  # where a packaged config's data folder is, unless --data-root


def data_folder(cfg: OODBenchmarkConfig, data_root: Path | None = None) -> Path | None:
    """What the config's relative data paths are read relative to: ``data_root`` (--data-root)
    where given; else, for a packaged config (whose paths name a data folder's entries:
    ``mvtec_ad``, ``isic2017_256``, ``meta/...``, so that it runs wherever the data is),
    ``$ANOMALY_INSPECT_DATA`` where set, else :data:`DEFAULT_DATA_FOLDER`; for a user's own
    file, None: the current folder."""
    if data_root is not None or not cfg.packaged:
        return data_root
    return Path(os.environ.get(DATA_ENV) or DEFAULT_DATA_FOLDER)


def data_paths(cfg: OODBenchmarkConfig, data_root: Path | None = None) -> dict[str, Path]:
    """The files and folders the config's data section names, as read (see :func:`data_folder`),
    by key (``ood_lists.NAME`` for an id list); keys not given are left out."""
    base = data_folder(cfg, data_root)
    paths = {key: _path(cfg.data[key], base) for key in PATH_KEYS if cfg.data.get(key)}
    lists = cfg.data.get("ood_lists") or {}
    return paths | {f"ood_lists.{name}": _path(value, base) for name, value in lists.items()}


def _path(value: str, base: Path | None) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() or base is None else base / p


def _dataset_root(cfg: OODBenchmarkConfig, data_root: Path | None, key: str) -> Path:
    """The dataset folder ``data.key``, refused where it does not exist: a relative root read
    from the wrong folder is said as such, not as a file missing inside the dataset, with what
    to do (a packaged config: give its data folder; a user's own file: --data-root or run from
    the folder its paths are relative to)."""
    p = data_paths(cfg, data_root)[key]
    if not p.is_dir():
        value = cfg.data[key]
        base = data_folder(cfg, data_root)
        state = ", which " + ("is not a folder" if not base or not base.is_dir() else "does not hold it")
        env = os.environ.get(DATA_ENV)
        if Path(value).expanduser().is_absolute():
            where = ""
        elif cfg.packaged:
            origin = (f"--data-root {data_root}" if data_root is not None else
                      f"${DATA_ENV} {env}" if env else
                      f"{DEFAULT_DATA_FOLDER} relative to the current folder {Path.cwd()} (the default)")
            where = (f" (a packaged config reads {value} in its data folder, here {origin}{state}; "
                     f"give the folder that holds {value}/ as --data-root DIR or in {DATA_ENV})")
        elif data_root is None:
            where = (f" ({value} is read relative to the current folder {Path.cwd()}; run from "
                     f"the folder it is relative to, or pass --data-root)")
        else:
            where = f" ({value} is read relative to --data-root {data_root}{state}; check data.{key} and --data-root)"
        raise ConfigError(f"{cfg.source}: data.{key}: {p} is not a folder{where}")
    return p


def build_data(cfg: OODBenchmarkConfig, data_root: Path | None = None) -> tuple[OODData, dict]:
    """ID / OOD samples for the configured splits, plus a record of how synthetic sets were made."""
    d = cfg.data
    # a null folds / fold / id_groups is the default, as the config check reads it
    folds, fold = (default if d.get(k) is None else int(d[k])
                   for k, default in (("folds", 5), ("fold", 0)))
    synth_info: dict = {}
    paths = data_paths(cfg, data_root)
    if cfg.benchmark == "isic":
        real = [s for s in cfg.splits if s in REAL_SPLITS]
        bad = [s for s in cfg.splits if s not in REAL_SPLITS and s not in SYNTHETIC_SPLITS]
        if bad:
            raise ConfigError(f"{cfg.source}: unknown ISIC splits {bad}; available: "
                              f"{', '.join(REAL_SPLITS + tuple(SYNTHETIC_SPLITS))}")
        root = _dataset_root(cfg, data_root, "root")
        data = isic_index_benchmark(root, paths.get("colours_csv"), real)
        synth = [s for s in cfg.splits if s in SYNTHETIC_SPLITS]
        if synth:
            rule = ColourRule(tuple(cfg.synthetic.get("roi_rgb", (176.0, 116.0, 77.0))),
                              float(cfg.synthetic.get("threshold", 115.0)))
            seed = int(cfg.synthetic.get("seed", cfg.seed))
            sources = [s.path for s in data.id_test]
            base = cfg.cache_folder() / "synthetic" / cache_key(
                {"files": file_list_hash(sources), "rule": asdict(rule), "seed": seed,
                 "code": code_fingerprint()})
            synth_info = {"rule": rule.describe(), "roi_rgb": list(rule.roi_rgb),
                          "threshold": rule.threshold, "seed": seed, "source": "ID-test images",
                          "folder": str(base), "splits": {}}
            for name in synth:
                kind, group = SYNTHETIC_SPLITS[name]
                recs = make_synthetic_set(sources, SyntheticSpec(kind, group, rule, seed), base / name)
                data.ood[name] = [Sample(Path(r.path), 1, "synthetic", name) for r in recs]
                dist = np.array([r.distance for r in recs])
                synth_info["splits"][name] = {
                    "n": len(recs), "colours": sorted({r.colour for r in recs}),
                    "distance_min": float(dist.min()), "distance_max": float(dist.max()),
                    "all_follow_rule": bool(all(r.rule_similar == (group == "similar") for r in recs)),
                    "manifest": str(base / name / "manifest.csv")}
        data.ood = {s: data.ood[s] for s in cfg.splits}
    elif cfg.benchmark == "isic_archive":
        lists = {k: paths[f"ood_lists.{k}"] for k in d.get("ood_lists") or {}}
        _check_defined(cfg, lists, "ood_lists")
        image_dir = _dataset_root(cfg, data_root, "image_dir")
        with _config_errors(f"{cfg.source}: data: folds"):
            data = isic_archive_benchmark(image_dir, paths["metadata_csv"], paths["id_list"], lists,
                                          folds, fold, cfg.seed)
        data.ood = {s: data.ood[s] for s in cfg.splits}
    else:
        manifest = paths.get("colour_manifest")
        groups = d.get("ood_groups") or {}
        root = _dataset_root(cfg, data_root, "root")
        with _config_errors(f"{cfg.source}: data: folds"):
            data = mvtec_heldout_benchmark(
                root, d.get("category"), d.get("id_groups") or [],
                groups, manifest, folds, fold, cfg.seed)
        if d.get("similar_groups"):
            _add_similarity_splits(data, manifest, root / d.get("category"), d["similar_groups"],
                                   cfg.source)
        _check_defined(cfg, data.ood, "ood_groups")
        data.ood = {s: data.ood[s] for s in cfg.splits}
    empty = [k for k, v in data.ood.items() if not v]
    if empty:
        raise ValueError(f"{cfg.source}: OOD splits with no images: {empty}")
    return data, synth_info


@contextmanager
def _config_errors(prefix: str):
    """Re-raise a ``ValueError`` from inside (a setting the data cannot meet: more folds than an
    ID class has images, kNN's k above the ID-train count) as a ``ConfigError`` starting with
    ``prefix``, the config and the setting; layout errors name their file already and pass."""
    try:
        yield
    except (ConfigError, DatasetLayoutError):
        raise
    except ValueError as exc:
        raise ConfigError(f"{prefix}: {exc}") from None


def _check_defined(cfg: OODBenchmarkConfig, defined, section: str) -> None:
    """Refuse, naming the config, ``splits`` that the data section does not define."""
    missing = [s for s in cfg.splits if s not in defined]
    if missing:
        raise ConfigError(f"{cfg.source}: splits {missing} are not defined in data.{section}")


def _add_similarity_splits(data: OODData, manifest: Path | None, cat_dir: Path, groups: list[str],
                           source: str) -> None:
    """OOD splits ``similar`` / ``dissimilar``: the colour groups the label-free rule picks
    (``data.mvtec_ood.colour_similarity``), each defined in ``ood_groups`` under its colour name
    (the manifest's ``colour_group`` value, which gives the split its colour) and holding only
    that group's images; checked before the object's colour is measured."""
    if manifest is None:
        raise ConfigError(f"{source}: data.similar_groups needs data.colour_manifest")
    missing = [g for g in groups if g not in data.ood]
    if missing:
        raise ConfigError(f"{source}: data.similar_groups {missing} must be splits of data.ood_groups")
    category = cat_dir.name
    group_rgb = read_group_colours(manifest, category)
    with _config_errors(f"{source}: data.similar_groups: category '{category}' ({manifest})"):
        check_similarity_groups(group_rgb, groups)
        check_colour_splits({g: [s.path for s in data.ood[g]] for g in groups},
                            read_colour_manifest(manifest, category), cat_dir)
    good = [s.path for s in data.id_train if s.group == "good"]
    rule = colour_similarity(object_mean_colour(good), group_rgb, groups)
    data.ood["similar"] = list(data.ood[rule["similar"]])
    data.ood["dissimilar"] = list(data.ood[rule["dissimilar"]])
    data.notes["colour_similarity"] = rule


def _with_resize(extra: dict, resize: str) -> dict:
    """Cache description extras; "stretch" adds nothing, so caches made before ``resize`` stay valid."""
    return extra if resize == "stretch" else {**extra, "resize": resize}


# --- features ------------------------------------------------------------------------------
def extract_arrays(runner: Runner, samples: list[Sample], on_patches, progress: Progress,
                   image_fn=None) -> dict:
    """Pooled embeddings and block norms of ``samples`` as the arrays the cache stores
    (``pooled``, ``block_<name>``); patch features, when the extractor makes them, go to
    ``on_patches`` batch by batch. ``image_fn`` transforms each normalised batch first."""
    paths = [s.path for s in samples]
    pooled, blocks = [], {}
    for feats in runner.iter_features(paths, "features", image_fn, bar=progress):
        pooled.append(feats.pooled)
        for name, norms in feats.blocks.items():
            blocks.setdefault(name, []).append(norms)
        if feats.patches is not None:
            on_patches(Features(patches=feats.patches, valid=feats.valid))
    out = {"pooled": np.concatenate(pooled)}
    out.update({f"block_{k}": np.concatenate(v) for k, v in blocks.items()})
    return out


def view_arrays(cfg: OODBenchmarkConfig, backbone: Backbone, samples: list[Sample], kind: str,
                progress: Progress) -> dict[str, np.ndarray]:
    """``pooled`` (N, D) and ``pooled_views`` (N, V, D) of ``samples`` from the extractor with
    ``features: views`` ``kind`` (the pooled embeddings of their rotated / flipped views)."""
    views_cfg = replace(cfg, features=replace(cfg.features, views=kind))
    runner = Runner(build_extractor(views_cfg, backbone, outputs=("pooled",)), progress=False)
    parts = list(runner.iter_features([s.path for s in samples], "views", bar=progress))
    return {"pooled": np.concatenate([f.pooled for f in parts]),
            "pooled_views": np.concatenate([f.pooled_views for f in parts])}


def _features_for(spec: ScorerSpec, arrays: dict) -> Features:
    """What a row that does not read patches fits and scores on (its input was checked by
    :class:`ScorerSpec` and :func:`check_blocks`): the block norms for ``block:...`` (the
    row's scorer reads its block, :func:`_block_param`), else (pooled, pixels) the pooled
    embedding."""
    if spec.views:
        return Features(pooled=arrays[f"views:{spec.views}:pooled"],
                        pooled_views=arrays[f"views:{spec.views}:pooled_views"])
    if not spec.input.startswith("block:"):
        return Features(pooled=arrays["pooled"])
    return Features(blocks={k[len("block_"):]: v for k, v in arrays.items() if k.startswith("block_")})


def _block_param(spec: ScorerSpec) -> dict:
    """The ``block`` parameter a ``block:<name>`` row's scorer takes from the row's input."""
    return {"block": spec.input.split(":", 1)[1]} if spec.input.startswith("block:") else {}


def _image_scores(runner: Runner, spec: ScorerSpec, scorer, arrays: dict) -> np.ndarray:
    return runner.score_features({spec.label: scorer}, _features_for(spec, arrays))[spec.label].image_scores


def _row_scorer(cfg: OODBenchmarkConfig, s: ScorerSpec, progress: bool = True) -> Scorer:
    """The row's scorer, seeded with the benchmark's seed, for image scores only."""
    return scorer_for(s.name, s.params | _block_param(s), cfg.seed, progress=progress, patch_maps=False)


def check_train_counts(cfg: OODBenchmarkConfig, n_train: int) -> None:
    """Refuse, once the data is read and before any extraction, settings that ``n_train``
    ID-train images cannot meet, naming the config and the row: a ``nuisance_k`` (``n_train``
    centred images span at most ``n_train - 1`` directions), a fusion's ``folds`` (the fold draw's
    own check), and a scorer's own bound on the ID-train images and on the smallest bank a fused
    row's member is cross-fitted on (``check_train_count``, which kNN's and ViM's ``fit`` run)."""
    for s in cfg.scorers:
        if s.nuisance and s.nuisance_k >= n_train:
            raise ConfigError(f"{cfg.source}: scorer '{s.label}': nuisance_k {s.nuisance_k} needs more "
                              f"than {s.nuisance_k} ID-train images (its directions are learned from "
                              f"them), the data has {n_train}")
    banks: dict[str, tuple[int, FusionSpec]] = {}  # member label -> its smallest bank, the fusion
    for fu in cfg.fusions:
        with _config_errors(f"{cfg.source}: fusion '{fu.label}'"):
            bank = n_train - int(np.bincount(crossfit_folds(n_train, fu.folds, cfg.seed)).max())
        for m in fu.members:
            if m not in banks or bank < banks[m][0]:
                banks[m] = (bank, fu)
    for s in cfg.scorers:
        check = getattr(_row_scorer(cfg, s, progress=False), "check_train_count", None)
        if check is None:
            continue
        with _config_errors(f"{cfg.source}: scorer '{s.label}'"):
            check(n_train)
        if s.label in banks:
            bank, fu = banks[s.label]
            with _config_errors(f"{cfg.source}: scorer '{s.label}' (cross-fitted for fusion "
                                f"'{fu.label}', {fu.folds} folds)"):
                check(bank)


# --- run -----------------------------------------------------------------------------------
def run_ood_benchmark(cfg: OODBenchmarkConfig, data_root: Path | None = None,
                      progress: bool = True) -> dict:
    t0 = time.perf_counter()
    data, synth_info = build_data(cfg, data_root)
    check_train_counts(cfg, len(data.id_train))
    t_data = time.perf_counter() - t0
    backbone = build_backbone(cfg)  # reads cfg.backbone and cfg.seed, as of a ModelConfig
    check_blocks(cfg.source, cfg.scorers, backbone.layers)  # a config without layers: the backbone's
    # the one feature source (it reads cfg.features, as of a ModelConfig); every set's pooled
    # features and block norms, and the patches where a patch row needs them
    sources = {want: Runner(build_extractor(cfg, backbone, outputs=("pooled", "blocks", *["patches"] * want)),
                            progress=progress)
               for want in (False, True)}
    runner, patch_runner = sources[False], sources[True]  # fit / score on the (cached) features
    # int8: calibrated on the ID training images before any feature (and its cache key)
    sources[False].extractor.calibrate([x.path for x in data.id_train])

    def row_scorer(s: ScorerSpec) -> Scorer:
        return _row_scorer(cfg, s, progress)

    tail_rows = [row_scorer(s) for s in cfg.scorers if s.name == "tailedcore"]  # their view kind

    def fit_context(samples: list[Sample]) -> FitContext:
        # TailedCore's tail memory takes the rotated / flipped views its tail_views names
        # (TAIL_VIEWS, its default, unless a row sets it), as fit and evaluate-lt give them
        try:
            return patch_runner.fit_context(tail_rows, [x.path for x in samples],
                                            FitContext(shared=SharedResults()))
        except ValueError as exc:  # rows that read different views
            raise ValueError(f"{cfg.source}: {exc}") from None

    train_context = fit_context(data.id_train)
    # fused rows' members: cross-fitted ID-train scores, per (label, folds)
    cv_folds: dict[str, set[int]] = {}
    fused_by: dict[tuple[str, int], str] = {}  # (member, folds): the first fusion that asks for them
    for fu in cfg.fusions:
        for m in fu.members:
            cv_folds.setdefault(m, set()).add(fu.folds)
            fused_by.setdefault((m, fu.folds), fu.label)

    def member_folds(label: str, folds: int) -> np.ndarray:
        """The fold of each ID-train image, a refusal named with the config and the fusion."""
        with _config_errors(f"{cfg.source}: fusion '{fused_by[label, folds]}'"):
            return crossfit_folds(len(data.id_train), folds, cfg.seed)
    cv: dict[tuple[str, int], np.ndarray] = {}
    cache = FeatureCache(cfg.cache_folder())
    sets = {"id_train": data.id_train, "id_test": data.id_test, **data.ood}
    code = code_fingerprint()
    feat_extra = {"v": 1, "kind": "pooled+block_norms", "code": code}

    patch_specs = [s for s in cfg.scorers if s.input == "patches"]
    pc_extra = {
        s.label: {"v": 1, "kind": "patch_scores", "code": code, "scorer": s.name, "params": s.params,
                  "embedding": asdict(cfg.features.embedding()),
                  "seed": cfg.seed, "train": file_list_hash([x.path for x in data.id_train])}
        for s in patch_specs}
    for s in patch_specs:
        if s.name == "tailedcore":
            pc_extra[s.label]["views"] = s.params.get("tail_views", TAIL_VIEWS)

    def desc(name: str, extra: dict) -> dict:
        return cache.describe(backbone, cfg.features.image_size, cfg.features.crop_size,
                              [x.path for x in sets[name]], _with_resize(extra, cfg.features.resize))

    def cv_extra(label: str, folds: int) -> dict:
        return pc_extra[label] | {"crossfit_folds": folds}

    # the TailSampler report: the first TailedCore row's sampler (its fit runs it; the result
    # is cached beside the row's scores), else TailSampler's defaults on the pooled embedding
    tail_spec = next((s for s in patch_specs if s.name == "tailedcore"), None)
    tail_desc = tail_result = None
    if tail_spec is not None:
        tail_desc = desc("id_train", pc_extra[tail_spec.label] | {"kind": "tail_sampler"})
        tail_result = _tail_from_arrays(cache.load(tail_desc))

    arrays: dict[str, dict] = {}
    patch_scores: dict[str, dict[str, np.ndarray]] = {s.label: {} for s in patch_specs}
    for s in patch_specs:
        for name in sets:
            if name != "id_train" and (hit := cache.load(desc(name, pc_extra[s.label]))) is not None:
                patch_scores[s.label][name] = hit["scores"]
        for folds in cv_folds.get(s.label, ()):
            if (hit := cache.load(desc("id_train", cv_extra(s.label, folds)))) is not None:
                cv[s.label, folds] = hit["scores"]
    need_patch = [s for s in patch_specs if len(patch_scores[s.label]) < len(sets) - 1
                  or any((s.label, f) not in cv for f in cv_folds.get(s.label, ()))
                  or (s is tail_spec and tail_result is None)]
    fitted_patch = {}
    n_extracted = 0
    t1 = time.perf_counter()
    with Progress(sum(map(len, sets.values())), "features", enabled=progress) as bar:
        for name, samples in sets.items():
            cached = cache.load(desc(name, feat_extra))
            missing_patch = [s for s in need_patch if name == "id_train" or name not in patch_scores[s.label]]
            if cached is not None and not missing_patch:
                arrays[name] = cached
                bar.update(len(samples))
                continue
            collected: list[Features] = []
            scored: dict[str, list[np.ndarray]] = {s.label: [] for s in missing_patch}

            def on_patches(f: Features, name=name, collected=collected, scored=scored,
                           missing=missing_patch) -> None:
                if name == "id_train":
                    collected.append(f)
                else:
                    got = patch_runner.score_features({s.label: fitted_patch[s.label] for s in missing}, f)
                    for label, r in got.items():
                        scored[label].append(r.image_scores)

            log.info("extracting %s (%d images)", name, len(samples))
            out = extract_arrays(sources[bool(missing_patch)], samples, on_patches, bar)
            n_extracted += len(samples)
            if cached is None:
                cache.save(desc(name, feat_extra), out)
            arrays[name] = out
            if name == "id_train":
                train_patches = Features.concat(collected) if collected else None
                if train_patches is not None:
                    train_patches.pooled = out["pooled"]  # TailedCore's TailSampler reads it
                for s in missing_patch:
                    fitted_patch[s.label] = row_scorer(s)
                    with _config_errors(f"{cfg.source}: scorer '{s.label}'"):
                        patch_runner.fit_features({s.label: fitted_patch[s.label]}, train_patches,
                                                  data.id_train_labels, train_context)
                    if s is tail_spec:
                        tail_result = fitted_patch[s.label].tail_result
                        cache.save(tail_desc, _tail_arrays(tail_result))
                    for folds in sorted(cv_folds.get(s.label, ())):
                        if (s.label, folds) in cv:
                            continue

                        def fit_score(bank: np.ndarray, held: np.ndarray, s=s, tp=train_patches,
                                      folds=folds) -> np.ndarray:
                            scorer = row_scorer(s)
                            with _config_errors(f"{cfg.source}: scorer '{s.label}' (cross-fitted, {folds} folds)"):
                                patch_runner.fit_features(
                                    {s.label: scorer}, tp.subset(bank), data.id_train_labels[bank],
                                    fit_context([data.id_train[i] for i in bank]))
                            return patch_runner.score_features(
                                {s.label: scorer}, tp.subset(held))[s.label].image_scores

                        log.info("cross-fitting %s on ID train (%d folds)", s.label, folds)
                        cv[s.label, folds] = crossfit_scores(member_folds(s.label, folds), fit_score)
                        cache.save(desc("id_train", cv_extra(s.label, folds)), {"scores": cv[s.label, folds]})
                del collected[:], train_patches
            else:
                for s in missing_patch:
                    patch_scores[s.label][name] = np.concatenate(scored[s.label])
                    cache.save(desc(name, pc_extra[s.label]), {"scores": patch_scores[s.label][name]})
    pseudo = None
    if any(s.orient == "pseudo_ood" for s in cfg.scorers):
        pseudo_desc = desc("id_train", feat_extra | _pseudo_extra(cfg.seed))
        pseudo = cache.load(pseudo_desc)
        if pseudo is None:
            gen = torch.Generator().manual_seed(cfg.seed)
            with Progress(len(data.id_train), "pseudo-OOD (jigsaw)", enabled=progress) as bar:
                pseudo = extract_arrays(sources[False], data.id_train, None, bar,
                                        image_fn=lambda x: jigsaw(x, JIGSAW_GRID, gen))
            n_extracted += len(data.id_train)
            cache.save(pseudo_desc, pseudo)
    shifted = None
    if any(s.nuisance == "colour" for s in cfg.scorers):
        shifted, n = _colour_shifted_train(sources[False], data.id_train, cache, desc("id_train", feat_extra),
                                           cfg.seed, progress)
        n_extracted += n
    for kind in dict.fromkeys(s.views for s in cfg.scorers if s.views):
        for name, samples in sets.items():
            d = desc(name, feat_extra | {"views": kind})
            hit = cache.load(d)
            if hit is None:
                with Progress(len(samples), f"{kind} views of {name}", enabled=progress) as bar:
                    hit = view_arrays(cfg, backbone, samples, kind, bar)
                n_extracted += len(samples) * (1 + len(view_params(kind)))
                cache.save(d, hit)
            arrays[name].update({f"views:{kind}:{k}": v for k, v in hit.items()})
    t_features = time.perf_counter() - t1
    projections: dict[int, NuisanceProjection] = {}

    def pooled_scorer(spec: ScorerSpec, rows: np.ndarray | None = None):
        """The row's scorer; a colour projection is learned from the ID-train ``rows`` (None:
        all, cached), so that a cross-fitted member never learns it from its held-out fold."""
        scorer = row_scorer(spec)
        if spec.nuisance:
            if rows is not None:
                proj = nuisance_subspace(arrays["id_train"]["pooled"][rows], shifted["pooled"][rows],
                                         spec.nuisance_k, spec.nuisance)
            else:
                if spec.nuisance_k not in projections:
                    projections[spec.nuisance_k] = nuisance_subspace(
                        arrays["id_train"]["pooled"], shifted["pooled"], spec.nuisance_k, spec.nuisance)
                proj = projections[spec.nuisance_k]
            scorer = ProjectedScorer(scorer, proj)
        return scorer

    results, exact, timings, orientations, row_scores = [], [], {}, {}, {}

    def add_rows(label: str, method: str, params: dict, scores: dict[str, np.ndarray],
                 spec: ScorerSpec | None = None) -> None:
        """The row's metrics on every split: rounded in the JSON, unrounded in the table; with
        the row's ``spec`` settings that tell two rows of one scorer apart (a fused row: null)."""
        row_scores[label] = scores
        settings = {k: getattr(spec, k, None) for k in ("input", "orient", "nuisance", "nuisance_k", "views")}
        for split in data.ood:
            m = ood_metrics(scores["id_test"], scores[split])
            row = {"scorer": label, "method": method, "split": split, "auroc": m.auroc,
                   "fpr_at_tpr80": m.fpr_at_tpr80, "fpr_at_tpr95": m.fpr_at_tpr95, "n_id": m.n_id,
                   "n_ood": m.n_ood, "params": params, **settings}
            exact.append(row)
            results.append(row | {k: round(row[k], 4) for k in ("auroc", "fpr_at_tpr80", "fpr_at_tpr95")})

    for spec in cfg.scorers:
        t = time.perf_counter()
        if spec.input == "patches":
            scores = patch_scores[spec.label]
        else:
            train = _features_for(spec, arrays["id_train"])
            with _config_errors(f"{cfg.source}: scorer '{spec.label}'"):  # the projection's k too
                scorer = pooled_scorer(spec)
                runner.fit_features({spec.label: scorer}, train, data.id_train_labels)
            scored, own_pseudo = arrays, pseudo
            if spec.input == "pixels":
                scored, own_pseudo, n = _perturbed_arrays(runner, scorer, backbone, spec, sets, desc(
                    "id_train", feat_extra), cache, lambda name, extra: desc(name, feat_extra | extra),
                    cfg.seed, progress)
                n_extracted += n
            scores = {n: _image_scores(runner, spec, scorer, scored[n]) for n in sets if n != "id_train"}
            sign = 1.0
            if spec.orient == "pseudo_ood":
                o = orientation(_image_scores(runner, spec, scorer, scored["id_train"]),
                                _image_scores(runner, spec, scorer, own_pseudo))
                orientations[spec.label] = o.to_dict()
                sign = o.sign
                scores = {n: sign * v for n, v in scores.items()}
            for folds in sorted(cv_folds.get(spec.label, ())):

                def fit_score(bank: np.ndarray, held: np.ndarray, spec=spec, train=train,
                              folds=folds) -> np.ndarray:
                    with _config_errors(f"{cfg.source}: scorer '{spec.label}' (cross-fitted, {folds} folds)"):
                        member = pooled_scorer(spec, bank)
                        runner.fit_features({spec.label: member}, train.subset(bank),
                                            data.id_train_labels[bank])
                    return runner.score_features({spec.label: member}, train.subset(held))[spec.label].image_scores

                cv[spec.label, folds] = sign * crossfit_scores(member_folds(spec.label, folds), fit_score)
        add_rows(spec.label, spec.name, row_scorer(spec).get_params(), scores, spec)
        timings[spec.label] = round(time.perf_counter() - t, 3)
    fusions = {}
    for fu in cfg.fusions:
        cals = [NormalCalibration.fit(cv[m, fu.folds]) for m in fu.members]
        add_rows(fu.label, "fuse", {"members": fu.members, "folds": fu.folds},
                 {n: fuse([row_scores[m][n] for m in fu.members], cals) for n in row_scores[fu.members[0]]})
        fusions[fu.label] = {"members": fu.members, "folds": fu.folds,
                             "normal_calibration": {m: c.to_dict() for m, c in zip(fu.members, cals, strict=True)},
                             "source": "median / MAD of each member's cross-fitted ID-train scores"}
    if tail_spec is None:
        tail_result = TailSampler().run(arrays["id_train"]["pooled"])
    sampler = _sampler_settings(tail_spec and row_scorer(tail_spec), tail_spec)
    sizes = {"id_train": len(data.id_train), "id_test": len(data.id_test),
             **{k: len(v) for k, v in data.ood.items()}}
    return {
        "benchmark": cfg.benchmark,
        "dataset": data.name,
        "config": cfg.source,
        "convention": CONVENTION,
        "results": results,
        "table": format_table({"results": exact, "sets": sizes, "dataset": data.name}),
        "sets": sizes,
        "id_train_class_counts": {str(k): int(v) for k, v in
                                  zip(*np.unique(data.id_train_labels, return_counts=True), strict=True)},
        "notes": data.notes,
        "orientation": orientations,
        "fusions": fusions,
        "nuisance": {f"colour_k{k}": {**p.describe(), "shift": asdict(ColourShift()),
                                      "source": "ID-train images and one colour-shifted copy of each"}
                     for k, p in projections.items()},
        "tail_sampler": tail_sampler_report(tail_result, data.id_train_labels, sampler),
        "synthetic": synth_info,
        "backbone": {**asdict(cfg.backbone), "name": backbone.name, "layers": list(backbone.layers),
                     "weights": backbone.weight_source.to_dict(), "image_size": cfg.features.image_size},
        "features": asdict(cfg.features),
        "seed": cfg.seed,
        "timings_s": {"data": round(t_data, 2), "features": round(t_features, 2),
                      "images_extracted": n_extracted, "scorers": timings,
                      "total": round(time.perf_counter() - t0, 2)},
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def _pseudo_extra(seed: int) -> dict:
    """Cache description of the jigsaw pseudo-OOD copies of the ID-train images."""
    return {"pseudo_ood": f"jigsaw{JIGSAW_GRID}", "seed": seed}


def _perturbed_arrays(runner: Runner, scorer, backbone: Backbone, spec: ScorerSpec,
                      sets: dict[str, list[Sample]], train_desc: dict, cache: FeatureCache,
                      desc, seed: int, progress: bool) -> tuple[dict[str, dict], dict | None, int]:
    """Features of every scored set's images as ``scorer.perturb`` changes them (ODIN: one
    backward pass through the torch backbone per image, then the usual extraction), cached per
    set under the scorer's settings and a digest of its fitted state; images extracted. An image
    in several sets (``ink_similar`` is part of ``ink_all``) is perturbed once. With ``orient:
    pseudo_ood`` the ID-train images and their jigsaw copies (the second item, kept apart from
    the sets) are perturbed too, for the check."""
    state = scorer.get_state()
    digest = cache_key({"v": 1, "train": train_desc, "scorer": spec.name, "params": scorer.get_params(),
                        "state": {k: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()
                                  for k, v in sorted(state.items())}})

    def perturbed(x: torch.Tensor) -> torch.Tensor:
        return scorer.perturb(backbone.model, x, backbone.std)

    oriented = spec.orient == "pseudo_ood"
    out, todo = {}, []
    for name in sets:
        if name != "id_train" or oriented:
            d = desc(name, {"perturbed_by": digest})
            out[name] = cache.load(d)
            if out[name] is None:
                todo.append((name, d))
    unique = list(dict.fromkeys(x.path for name, _ in todo for x in sets[name]))
    if unique:
        row = {p: i for i, p in enumerate(unique)}
        with Progress(len(unique), f"{spec.label}: perturbed images", enabled=progress) as bar:
            arrays = extract_arrays(runner, [Sample(p) for p in unique], None, bar, image_fn=perturbed)
        for name, d in todo:
            idx = np.array([row[x.path] for x in sets[name]])
            out[name] = {k: v[idx] for k, v in arrays.items()}
            cache.save(d, out[name])
    n = len(unique)
    pseudo = None
    if oriented:
        d = desc("id_train", {"perturbed_by": digest} | _pseudo_extra(seed))
        pseudo = cache.load(d)
        if pseudo is None:
            gen = torch.Generator().manual_seed(seed)  # the same jigsaw copies as the other rows' check
            with Progress(len(sets["id_train"]), f"{spec.label}: perturbed pseudo-OOD", enabled=progress) as bar:
                pseudo = extract_arrays(runner, sets["id_train"], None, bar,
                                        image_fn=lambda x: perturbed(jigsaw(x, JIGSAW_GRID, gen)))
            cache.save(d, pseudo)
            n += len(sets["id_train"])
    return out, pseudo, n


def _colour_shifted_train(runner: Runner, train: list[Sample], cache: FeatureCache,
                          base_desc: dict, seed: int, progress: bool) -> tuple[dict, int]:
    """Features of one colour-shifted copy of every ID-train image (cached); images extracted."""
    shift = ColourShift()
    d = {**base_desc, "nuisance": "colour", "shift": asdict(shift), "seed": seed}
    if (hit := cache.load(d)) is not None:
        return hit, 0
    gen = torch.Generator().manual_seed(seed)
    mean, std = runner.extractor.transform.mean, runner.extractor.transform.std
    with Progress(len(train), "colour-shifted ID train", enabled=progress) as bar:
        out = extract_arrays(runner, train, None, bar,
                             image_fn=lambda x: colour_shift(x, mean, std, gen, shift))
    cache.save(d, out)
    return out, len(train)


def _tail_arrays(result: TailSamplerResult) -> dict[str, np.ndarray]:
    return {"class_sizes": result.class_sizes, "thresholds": result.thresholds,
            "histogram": result.histogram, "max_k": np.array([result.max_k]),
            "tail_indices": result.tail_indices}


def _tail_from_arrays(arrays: dict[str, np.ndarray] | None) -> TailSamplerResult | None:
    if arrays is None:
        return None
    return TailSamplerResult(arrays["class_sizes"], arrays["thresholds"], arrays["histogram"],
                             int(arrays["max_k"][0]), arrays["tail_indices"])


def _sampler_settings(scorer, spec: ScorerSpec | None) -> dict:
    """Which sampler the report ran: a TailedCore row's (``scorer``, built as the row is), or
    TailSampler's defaults on the pooled embedding."""
    if scorer is None:
        sampler = TailSampler()
        return {"row": None, "keep": sampler.keep, "tail_mass": sampler.tail_mass,
                "embedding": "pooled"}
    return {"row": spec.label, "keep": scorer.tail_keep, "tail_mass": scorer.tail_mass,
            "embedding": scorer.embedding}


def tail_sampler_report(r: TailSamplerResult, labels: np.ndarray, sampler: dict) -> dict:
    """TailSampler's class-size estimates on the ID training set (label-free), from the
    ``sampler`` the run configured (see :func:`_sampler_settings`); the true ID class counts
    are listed beside them for reading only."""
    sizes = r.class_sizes
    return {"sampler": sampler, "histogram": r.histogram.tolist(), "max_k": int(r.max_k),
            "n_tail_images": int(len(r.tail_indices)), "n_images": int(len(sizes)),
            "predicted_size_by_id_class": {str(c): {"median": float(np.median(sizes[labels == c])),
                                                    "tail": int(r.is_tail[labels == c].sum())}
                                           for c in np.unique(labels)}}


def format_table(report: dict) -> str:
    """Rows: scorers; columns: splits (with sizes); cells: AUROC / FPR@TPR80, formatted from the
    rows' metrics as given (``run_ood_benchmark``'s ``table`` from the unrounded ones: the JSON's
    are rounded to 4 decimals, and rounding those again could move the last digit)."""
    splits = list(dict.fromkeys(r["split"] for r in report["results"]))
    scorers = list(dict.fromkeys(r["scorer"] for r in report["results"]))
    cell = {(r["scorer"], r["split"]): f"{r['auroc']:.3f} / {r['fpr_at_tpr80']:.2f}"
            for r in report["results"]}
    sizes = report["sets"]
    heads = [f"{s} ({sizes[s]})" for s in splits]
    w0 = max(len("scorer"), *map(len, scorers))
    widths = [max(len(h), 14) for h in heads]
    lines = [f"AUROC / FPR@TPR80 ({report['dataset']}; ID test {sizes['id_test']}, "
             f"ID train {sizes['id_train']}; ID = positive)",
             "  ".join([f"{'scorer':<{w0}}", *(f"{h:>{w}}" for h, w in zip(heads, widths, strict=True))])]
    for sc in scorers:
        lines.append("  ".join([f"{sc:<{w0}}", *(f"{cell.get((sc, s), '-'):>{w}}"
                                                 for s, w in zip(splits, widths, strict=True))]))
    return "\n".join(lines)
