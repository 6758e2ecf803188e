"""Typed pipeline configuration; the YAML files in ``configs/`` mirror these fields.

The configs ship inside the package (``anomaly_inspect/configs``); a config is
given as a file path or by name: ``patchcore``, ``ood/isic_all``.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .choices import (  # SEED_LIMIT / SEED_RANGE re-exported: config's names for them
    DEFAULT_PRECISION,
    DEFAULT_RUNTIME,
    RANDOM_WEIGHTS,
    RESIZE_MODES,
    SEED_LIMIT,
    SEED_RANGE,
    VIEW_KINDS,
    ConfigError,
    check_embedding,
    check_field_types,
    check_instance,
    check_layers,
    check_runtime,
    shown,
)
from .files import not_utf8

if TYPE_CHECKING:
    from .features.patch_embed import PatchEmbedding
    from .scorers import Scorer


MIN_IMAGE_SIZE = 32  # the backbones' stride-16 feature maps need a few cells
#: the largest input side: generous for real inspection (the docs use at most 384; a 4096²
#: input already makes 262144 stride-8 patches an image, 1 GiB of 1024-d float32 features),
#: refused up front: a larger side failed only once images were read, in OpenCV's allocation of
#: the resized image ("Insufficient memory"), as unreadable images
MAX_IMAGE_SIZE = 4096
#: the largest input side a saved model may declare, checked as it is loaded: above
#: ``MAX_IMAGE_SIZE``, for models fitted before that bound existed, yet bounded: a model.json
#: declaring 60000 had each screened image resized to 60000² float32 (11 GB)
MAX_SAVED_IMAGE_SIZE = 2 * MAX_IMAGE_SIZE


def _at_least(section: str, name: str, value: int | None, low: int) -> None:
    if value is not None and value < low:
        raise ConfigError(f"{section}{name}: must be at least {low}, got {value}")


def _at_most(section: str, name: str, value: int | None, high: int) -> None:
    if value is not None and value > high:
        raise ConfigError(f"{section}{name}: must be at most {high}, got {value}")


@dataclass
class BackboneConfig:
    """Which timm model, which stages (timm feature indices; None = stride 8 and 16), which weights,
    and how it runs: ``runtime`` torch | onnxruntime | openvino, ``precision`` f32 | bf16
    (openvino only) | int8 (onnxruntime only, calibrated on the training images). The runtime
    never changes what is computed (f32 agrees with torch)."""

    name: str = "tf_efficientnet_lite0"
    layers: list[int] | None = None
    weights: str | None = None
    runtime: str = DEFAULT_RUNTIME
    precision: str = DEFAULT_PRECISION

    def weights_for(self, name: str) -> str | None:
        """The weights kept when the backbone becomes ``name`` (``--backbone``, a tuning
        candidate): a checkpoint file is this backbone's (None: ``name``'s default weights);
        random weights are no backbone's."""
        return self.weights if name == self.name or self.weights == RANDOM_WEIGHTS else None

    def __post_init__(self):
        check_field_types(self, "backbone: ")
        if self.layers is not None:
            try:
                check_layers("backbone", self.layers)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        try:
            check_runtime(self.runtime, self.precision)
        except ValueError as exc:
            raise ConfigError(f"backbone: {exc}") from None


def absolute_weights(weights: str | None) -> str | None:
    """``weights`` with a checkpoint file's path made absolute, read against the current folder
    (as a config's relative data root is): a fitted model records it, and then loads from any
    folder, as Ray workers (whose current folder is their own) do. None (the bundled or timm
    weights) and ``random`` stay as they are."""
    if weights is None or weights == RANDOM_WEIGHTS:
        return weights
    return os.path.abspath(os.path.expanduser(weights))


@dataclass
class FeatureConfig:
    """Model input geometry and patch embedding. ``resize``: "stretch" squashes every image
    to a square (default); "pad" keeps the aspect ratio (longer side = ``image_size``,
    mirrored padding that the scorers ignore). ``views``: for images with no canonical
    orientation (dermoscopy), a :data:`~.choices.VIEW_KINDS` name (``rotflip``: the 90-degree
    rotations x flip) whose views' pooled embeddings a pooled scorer is fitted on too, an image
    scoring the mean over it and its views; "none" by default. The views are made from the model
    input (after resize / padding), so the mean is exactly invariant to rotating that input, and
    to rotating the file up to resize rounding."""

    image_size: int = 320
    crop_size: int | None = None
    resize: str = "stretch"
    batch_size: int = 32
    aggregate: int = 3
    embed_dim: int | None = 1024
    finest_stage: str = "rows"
    equal_stage_weights: bool = True
    views: str = "none"

    def __post_init__(self):
        check_field_types(self, "features: ")
        for name in ("image_size", "crop_size"):  # the crop, where given, is the backbone's input
            _at_least("features: ", name, getattr(self, name), MIN_IMAGE_SIZE)
        for name in ("batch_size", "aggregate", "embed_dim"):
            _at_least("features: ", name, getattr(self, name), 1)
        if self.crop_size is not None and self.crop_size > self.image_size:
            raise ConfigError(f"features: crop_size ({self.crop_size}) must not exceed "
                              f"image_size ({self.image_size})")
        if self.resize not in RESIZE_MODES:
            raise ConfigError(f"features: resize must be one of {RESIZE_MODES}, got {shown(self.resize)}")
        if self.views not in VIEW_KINDS:
            raise ConfigError(f"features: views must be one of {tuple(VIEW_KINDS)}, got {shown(self.views)}")
        try:  # refused here, not when a model is built (and without importing torch)
            check_embedding(self.aggregate, self.finest_stage)
        except ValueError as exc:
            raise ConfigError(f"features: {exc}") from None

    @property
    def input_size(self) -> int:
        """The side of the square the backbone sees (the crop where there is one)."""
        return self.crop_size or self.image_size

    def embedding(self) -> PatchEmbedding:
        """The patch-feature map these settings describe (see features/patch_embed.py)."""
        from .features.patch_embed import PatchEmbedding

        try:
            return PatchEmbedding(self.aggregate, self.embed_dim, self.finest_stage, self.equal_stage_weights)
        except ValueError as exc:
            raise ConfigError(f"features: {exc}") from None


@dataclass
class ModelConfig:
    """Everything needed to rebuild a fitted pipeline (with the scorer's state)."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    method: str = "patchcore"
    scorer: dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self):
        check_field_types(self, "")
        _at_least("", "seed", self.seed, 0)

    def checked(self) -> ModelConfig:
        """A copy of this config, checked again as constructing it checks it: a field edited
        since (``cfg.features.image_size = 24`` on a loaded config) is refused with the same
        one-line :class:`ConfigError` as ``FeatureConfig(image_size=24)``, not once the images
        are read, nor by ``load_model`` of the model it fitted. See :func:`config_for_fit`."""
        cfg = copy.deepcopy(self)
        cfg.__post_init__()  # the sections' kinds first: their checks read their fields
        cfg.backbone.__post_init__()
        cfg.features.__post_init__()
        return cfg

    def check_new_fit(self, source: str = "config") -> None:
        """Refuse, naming ``source``, settings a new fit cannot use: a ``seed`` in ``scorer``
        (:func:`check_scorer_seed`; a model saved before that refusal holds one and still
        loads), a seed its consumers cannot take (faiss IVF: 32 bits) or an input size beyond
        ``MAX_IMAGE_SIZE``. Checked where a config for a fit is read or given (``load_config``,
        the tops of ``fit`` and ``evaluate``), not when a saved model is loaded, whose fit is
        done."""
        check_scorer_seed(self.scorer, source)
        if self.seed >= SEED_LIMIT:
            raise ConfigError(f"{source}: seed: {SEED_RANGE}, got {self.seed}")
        try:  # the crop, where given, is smaller
            _at_most("features: ", "image_size", self.features.image_size, MAX_IMAGE_SIZE)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def check_saved(self, source: str = "config") -> None:
        """Refuse, naming ``source``, a saved model's input side beyond
        ``MAX_SAVED_IMAGE_SIZE`` (its crop is no larger): screening would resize each image to
        it. Checked as a model directory is opened; a new fit's bounds are
        :meth:`check_new_fit`'s."""
        if self.features.image_size > MAX_SAVED_IMAGE_SIZE:
            raise ConfigError(f"{source}: features: image_size: must be at most "
                              f"{MAX_SAVED_IMAGE_SIZE} in a saved model (a fit takes at most "
                              f"{MAX_IMAGE_SIZE}), got {self.features.image_size}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> ModelConfig:
        if not isinstance(data, dict | None):
            raise ConfigError(f"{source}: expected a mapping, got {shown(data)}")
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if "benchmark" in unknown:
            raise ConfigError(f"{source}: an ood-benchmark config (it names a 'benchmark'), not a "
                              f"model config; give it to 'anomaly-inspect ood-benchmark --config'")
        if unknown:
            raise ConfigError(f"{source}: unknown top-level keys {sorted(unknown)}; expected {sorted(known)}")
        for name in ("backbone", "features", "scorer"):  # only null is an empty section
            if name in data and data[name] is None:
                data[name] = {}
        sections = {"backbone": BackboneConfig, "features": FeatureConfig}
        for name, section_cls in sections.items():
            given = data.get(name, {})
            if not isinstance(given, dict):
                raise ConfigError(f"{source}: {name}: expected a mapping, got {shown(given)}")
            accepted = sorted(f.name for f in fields(section_cls))
            bad = sorted(set(given) - set(accepted))
            if bad:
                raise ConfigError(f"{source}: {name}: unknown key{'s' if len(bad) > 1 else ''} "
                                  f"{', '.join(map(repr, bad))}; accepted keys: {', '.join(accepted)}")
        try:
            bb = BackboneConfig(**data.pop("backbone", {}))
            ft = FeatureConfig(**data.pop("features", {}))
        except (TypeError, ConfigError) as exc:
            raise ConfigError(f"{source}: {exc}") from None
        try:
            cfg = cls(backbone=bb, features=ft, **data)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        if "method" in data:
            cfg.check_scorer(source)
        elif cfg.scorer:  # evaluate-lt routes such a section to several methods
            cfg.check_scorer_keys(source)
        return cfg

    def check_scorer_keys(self, source: str = "config") -> None:
        """Refuse, naming ``source``, ``scorer`` keys that no method takes (typos); a key another
        method takes is left to the command, which knows the method(s) it fits."""
        from .scorers import available_scorers, merge_scorer_params

        try:
            merge_scorer_params(self.scorer, available_scorers(), {})
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def check_scorer(self, source: str = "config") -> Scorer:
        """Refuse, naming ``source``, a ``method`` that is not a scorer or ``scorer`` settings its
        constructor refuses (unknown keys, wrong types or ranges), or a method whose fit needs
        ID class labels (``Scorer.needs_labels``), which a model's fit never has: found when the
        file is read, or at the top of ``fit`` and ``evaluate``, not after the features are
        extracted; nor a block the backbone does not make (:meth:`check_block`). Returns the
        scorer it built (unseeded, unfitted)."""
        from .scorers import build_scorer, check_scorer_params, get_scorer_class

        try:
            scorer_cls = get_scorer_class(self.method)
            check_scorer_params(self.method, self.scorer)
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        try:
            scorer = build_scorer(self.method, **self.scorer,
                                  **scorer_cls.runtime_kwargs(progress=False))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: scorer: {exc}") from None
        if self.features.views != "none" and scorer_cls.requires != ("pooled",):
            raise ConfigError(f"{source}: features: views {self.features.views!r} is for scorers of "
                              f"the pooled embedding; {self.method!r} reads "
                              f"{' and '.join(scorer_cls.requires)} features")
        if scorer.needs_labels:
            raise ConfigError(f"{source}: method {self.method!r} with these settings fits on ID "
                              f"class labels, which fitting a model never has (normal images "
                              f"only); it is for ood-benchmark configs")
        self.check_block(source)
        return scorer

    def check_block(self, source: str = "config", layers: Sequence[int] | None = None) -> None:
        """Refuse, naming ``source``, a ``scorer: block`` (of a method that reads block norms,
        block_feature_norm) that the backbone's layers do not make (:func:`model_blocks`):
        found when the config is read, not after the features are extracted. Without
        ``backbone: layers`` the block is checked against ``layers``, the backbone's default
        stages, which the caller looks up (a built backbone's, or ``model_config_from_args``'s
        from its card or timm: this module reaches no backbone); not at all without them. A
        block that is not a string, or a method that is no scorer, is left to the checks that
        name them."""
        from .scorers import get_scorer_class

        block = self.scorer.get("block")
        layers = self.backbone.layers if self.backbone.layers is not None else layers
        if not isinstance(block, str) or block == "final" or layers is None:
            return  # every backbone makes "final"; a block of another kind the scorer refuses
        try:
            if "blocks" not in get_scorer_class(self.method).requires:
                return
        except ValueError:
            return
        have = model_blocks(layers)
        if block not in have:
            raise ConfigError(f"{source}: scorer: block: no block '{block}'; available: "
                              f"{', '.join(have)}")


def config_for_fit(cfg: ModelConfig | None) -> ModelConfig:
    """``cfg`` as ``fit`` and ``evaluate`` take it, checked before any image is read: None is
    the defaults, anything but a :class:`ModelConfig` is a TypeError; a copy checked again
    (:meth:`ModelConfig.checked`: the caller may change or reuse theirs) whose scorer can fit
    (:meth:`ModelConfig.check_scorer`), that a new fit can use
    (:meth:`ModelConfig.check_new_fit`) and whose ``backbone: layers`` its backbone has
    (:func:`check_layers_exist`); a weights file's path made absolute (:func:`absolute_weights`)."""
    if cfg is None:
        cfg = ModelConfig()
    check_instance("cfg", cfg, ModelConfig,
                   "read a YAML file or a packaged config with load_config(...)")
    cfg = cfg.checked()
    cfg.backbone.weights = absolute_weights(cfg.backbone.weights)  # the model loads from anywhere
    cfg.check_new_fit()  # first: a scorer seed is named as such, not as a key the scorer lacks
    cfg.check_scorer()
    check_layers_exist(cfg)
    return cfg


def check_layers_exist(cfg: ModelConfig, source: str | None = None) -> None:
    """Refuse ``backbone: layers`` that ``cfg``'s backbone lacks (the one-line
    :class:`~.features.backbone.LayerRangeError` building it raises, naming that key, after
    ``source``, the flag or file that gave them, where given) before any image is read: its
    stages come from the backbone's cached card, else from timm
    (:func:`~.features.backbone.layer_strides`). A name that is no timm model is left to the
    build, which names the models it resembles."""
    if cfg.backbone.layers is None:
        return
    from .features.backbone import LayerRangeError, layer_strides

    try:
        layer_strides(cfg.backbone.name, cfg.backbone.layers, cfg.backbone.weights)
    except LayerRangeError as exc:
        if source is None:
            raise
        raise LayerRangeError(f"{source}: {exc}") from None
    except ValueError:
        pass


def model_blocks(layers: Sequence[int]) -> list[str]:
    """The blocks whose norms the extractor computes (``Features.blocks``) for a backbone with
    these feature ``layers``: ``final`` (the map before pooling) and each layer's index. The
    one rule for block_feature_norm's ``block`` and ood-benchmark's ``block:<name>`` inputs."""
    return ["final", *map(str, layers)]


CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def packaged_configs() -> list[str]:
    """Names of the packaged configs: ``patchcore``, ``ood/isic_all``, ..."""
    return sorted(p.relative_to(CONFIG_DIR).with_suffix("").as_posix()
                  for p in CONFIG_DIR.rglob("*.yaml"))


def resolve_config(ref: Path | str) -> Path:
    """A config file path: ``ref`` itself if it is a file, else the packaged config named ``ref``,
    which may be written as the docs write it, with a trailing ``.yaml`` / ``.yml`` and / or a
    leading ``configs/`` (the checkout's link to the packaged configs), so that those commands
    also work outside a checkout."""
    path = Path(ref)
    if path.is_file():
        return path
    stem = path.with_suffix("") if path.suffix in (".yaml", ".yml") else path
    name = stem.as_posix().removeprefix("configs/")
    if name in packaged_configs():
        return CONFIG_DIR / f"{name}.yaml"
    if path.is_dir():
        raise ConfigError(f"{ref}: is a folder; give a config file (YAML) or a packaged config name")
    raise ConfigError(f"{ref}: config file not found, and not a packaged config name "
                      f"(available: {', '.join(packaged_configs())})")


class _DuplicateKey(Exception):
    """A key given twice in one YAML mapping: (key, its first line, its second line)."""


#: the most values (scalars, lists, mappings) a YAML file read here may hold once its aliases
#: are followed; a packaged config holds well under a thousand
MAX_YAML_VALUES = 100_000


def _check_expansion(node: yaml.Node, sizes: dict[int, int], open_: set[int]) -> int:
    """The number of values ``node`` stands for with its aliases followed (``sizes``: those of
    the nodes counted, by id; ``open_``: those being counted). An alias shares its node, so a
    few hundred bytes of nested aliases (or nested ``<<`` merges) stand for billions of values:
    cheap to read, but not to print, copy or compare; refused (a ``ComposerError`` marking
    the node) above :data:`MAX_YAML_VALUES`, as is a value that holds itself."""
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_:
        raise yaml.composer.ComposerError(None, None, "an alias refers to itself (a value that "
                                          "holds itself)", node.start_mark)
    open_.add(id(node))
    children = (node.value if isinstance(node, yaml.SequenceNode) else
                [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode)
                else [])
    size = 1
    for child in children:
        size += _check_expansion(child, sizes, open_)
        if size > MAX_YAML_VALUES:
            raise yaml.composer.ComposerError(None, None, f"its aliases expand to more than "
                                              f"{MAX_YAML_VALUES} values", node.start_mark)
    open_.discard(id(node))
    sizes[id(node)] = size
    return size


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` refusing a key given twice in one mapping, which it would read as
    the last one silently (two ``features:`` blocks: the first is lost). Keys a ``<<`` merge
    brings in may be overridden, as YAML means them to be. Aliases are followed up to
    :data:`MAX_YAML_VALUES` values (:func:`_check_expansion`), checked before anything is
    built."""

    def compose_document(self):
        node = super().compose_document()
        if node is not None:
            _check_expansion(node, {}, set())
        return node

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            lines: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in lines:
                        raise _DuplicateKey(key, lines[key], line)
                    lines[key] = line
                except TypeError:  # an unhashable key: refused by the base class
                    continue
        return super().construct_mapping(node, deep)


# YAML 1.2's floats that YAML 1.1 (PyYAML) reads as strings: an exponent without a dot
# (1e-3, 5E-4) or without its sign (1.0e5). Ints stay ints: PyYAML's int rule is tried first.
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def _yaml_error(exc: yaml.YAMLError) -> str:
    """``exc`` in one line: where (1-based line and column) and what PyYAML found there."""
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
    if mark is None or problem is None:
        return f"invalid YAML ({' '.join(str(exc).split())})"
    return f"line {mark.line + 1}, column {mark.column + 1}: invalid YAML ({problem})"


def read_yaml_mapping(path: Path | str) -> dict[str, Any]:
    """The top-level mapping of a YAML file (an empty file is an empty mapping); a key given
    twice in one mapping is refused.

    ``path`` may also name a packaged config (see :func:`resolve_config`).
    """
    path = resolve_config(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}
    except _DuplicateKey as exc:
        key, first, line = exc.args
        raise ConfigError(f"{path}: line {line}: key {shown(key)} given twice (first at line {first}); "
                          f"only one would be read: merge them") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: {_yaml_error(exc)}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(not_utf8(path, exc)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load_config(path: Path | str | None) -> ModelConfig:
    """Read a YAML config (a file or a packaged config name); ``None`` gives the defaults."""
    if path is None:
        return ModelConfig()
    data = read_yaml_mapping(path)
    check_scorer_seed(data.get("scorer"), str(path))
    cfg = ModelConfig.from_dict(data, str(path))
    cfg.check_new_fit(str(path))
    return cfg


def check_scorer_seed(scorer: Any, source: str) -> None:
    """Refuse ``seed`` in a ``scorer`` section: the top-level ``seed`` is the one seed of a
    model (the scorer's, the random weights', the calibration split's) that model.json
    records, so a second one would make the record disagree with the scorer."""
    if isinstance(scorer, dict) and "seed" in scorer:
        raise ConfigError(f"{source}: scorer: seed: set the top-level 'seed' (or --seed) "
                          f"instead; it seeds the scorer too")
