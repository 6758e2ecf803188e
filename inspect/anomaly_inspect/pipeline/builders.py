"""Build the backbone, extractor and scorer that a :class:`ModelConfig` describes."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..config import ConfigError, ModelConfig, check_scorer_seed
from ..data.image_io import DEFAULT_MAX_PIXELS
from ..features.backbone import Backbone, LayerRangeError
from ..features.extractor import FeatureExtractor
from ..scorers import (
    Scorer,
    build_scorer,
    check_scorer_params,
    get_scorer_class,
    scorer_parameters,
)


def build_backbone(cfg: ModelConfig, cache_dir: str | Path | None = None) -> Backbone:
    """The backbone ``cfg.backbone`` describes; ONNX exports go to ``cache_dir`` (None = user cache).
    Layers it lacks are a :class:`LayerRangeError` naming the ``backbone: layers`` key (the
    config's source is the caller's to add: it is not known here)."""
    b = cfg.backbone
    try:
        return Backbone(b.name, b.layers, b.weights, seed=cfg.seed, runtime=b.runtime,
                        precision=b.precision, cache_dir=cache_dir)
    except LayerRangeError as exc:
        raise LayerRangeError(f"backbone: layers: {exc}") from None


def build_extractor(cfg: ModelConfig, backbone: Backbone, *scorer_classes: type[Scorer],
                    outputs: Iterable[str] = (), batch_size: int | None = None,
                    max_pixels: int = DEFAULT_MAX_PIXELS) -> FeatureExtractor:
    """The feature source for ``cfg``: the outputs the scorer classes require (``patches``,
    ``pooled``, ``blocks``) plus ``outputs``; ``batch_size`` overrides the config's (a
    runtime choice that never changes the features). Block norms sum over every cell of the
    map, so a scorer that reads them is refused with ``features: resize`` other than stretch
    (they would count the padding), as ood-benchmark refuses its block rows."""
    wanted = set(outputs).union(*(c.requires for c in scorer_classes))
    f = cfg.features
    blocks = [c.name for c in scorer_classes if "blocks" in c.requires]
    if blocks and f.resize != "stretch":
        raise ConfigError(f"features: resize: {', '.join(blocks)} reads block norms, which would "
                          f"count the padding of resize {f.resize!r}; use resize 'stretch'")
    return FeatureExtractor(
        backbone, f.image_size, f.crop_size, batch_size or f.batch_size, f.embedding(),
        patches="patches" in wanted, pooled="pooled" in wanted, resize=f.resize,
        blocks="blocks" in wanted, max_pixels=max_pixels, views=f.views,
    )


def seeded_params(method: str, params: dict, seed: int) -> dict:
    """``params`` (a config's ``scorer`` section) with the model's ``seed`` for a scorer that
    takes one: the one way every command seeds a scorer. A ``seed`` in ``params`` is refused
    (``check_scorer_seed``): the top-level seed is the one model.json records."""
    check_scorer_seed(params, "config")
    out = dict(params)
    if "seed" in scorer_parameters(method):
        out["seed"] = seed
    return out


def scorer_for(method: str, params: dict, seed: int, *, progress: bool = True,
               patch_maps: bool = True) -> Scorer:
    """The ``method`` scorer with ``params`` (a ``scorer`` section, or the settings of it a
    command passes on), seeded with the model's ``seed`` (:func:`seeded_params`) and given the
    runtime switches: the one way fit, evaluate, tune, evaluate-lt and ood-benchmark build a
    scorer, so a new switch or seeding rule is one edit here. A key ``method`` does not take,
    or a ``seed`` in ``params``, is a ``ValueError``. ``patch_maps=False`` where only image
    scores are read (see ``Scorer.runtime_params``)."""
    check_scorer_params(method, params)
    return build_scorer(method, **seeded_params(method, params, seed),
                        **get_scorer_class(method).runtime_kwargs(progress=progress, patch_maps=patch_maps))


def build(cfg: ModelConfig, progress: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS,
          patch_maps: bool = True, batch_size: int | None = None,
          ) -> tuple[Backbone, FeatureExtractor, Scorer]:
    """Backbone, extractor and scorer for ``cfg``; an unknown ``scorer`` key, or a ``seed``
    there (the scorer takes ``cfg.seed``, the one model.json records), is a ``ValueError``, as
    is a ``scorer: block`` the backbone's default stages lack (``ModelConfig.check_block``:
    refused here, before any image is extracted).
    ``patch_maps=False`` where only image scores are read (see ``Scorer.runtime_params``);
    ``batch_size`` as for :func:`build_extractor`."""
    scorer = scorer_for(cfg.method, cfg.scorer, cfg.seed, progress=progress, patch_maps=patch_maps)
    backbone = build_backbone(cfg)
    cfg.check_block("config", backbone.layers)
    extractor = build_extractor(cfg, backbone, get_scorer_class(cfg.method), batch_size=batch_size,
                                max_pixels=max_pixels)
    return backbone, extractor, scorer
