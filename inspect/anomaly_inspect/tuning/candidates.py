"""Candidate configurations for ``anomaly-inspect tune`` and the grids they come from.

A candidate changes only the feature side of a :class:`ModelConfig`: backbone, input size,
stages (by stride), the finest stage's embedding and the resize mode. Candidates that share
backbone, size and resize share one feature extraction (with the union of their stages).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

from ..config import ModelConfig

# layer_strides, stage_strides: backbone facts (the backbone's card), re-exported here
from ..features.backbone import UnknownBackboneError, layer_strides, stage_strides

BACKBONES = {"lite0": "tf_efficientnet_lite0", "lite1": "tf_efficientnet_lite1",
             "lite2": "tf_efficientnet_lite2"}
SIZES = (256, 320, 384, 448)
STAGE_SETS = ((8, 16), (4, 8, 16), (8, 16, 32))
EMBEDDINGS = ("rows", "full", "mean")
RESIZES = ("stretch", "pad")
GRIDS = ("compact", "ascent", "full")
AXES = ("backbone", "image_size", "strides", "embedding", "resize")


def _strides(backbone: str, layers: Sequence[int] | None = None) -> tuple[int, ...]:
    """:func:`stage_strides` (:func:`layer_strides` of ``layers`` where given), an unknown
    name's error saying which names candidates take."""
    try:
        return stage_strides(backbone) if layers is None else layer_strides(backbone, layers)
    except UnknownBackboneError as exc:
        raise UnknownBackboneError(f"{exc} (candidates name {', '.join(BACKBONES)} or a timm "
                                   f"model, e.g. tf_efficientnet_lite0)") from None


@dataclass(frozen=True)
class Candidate:
    """One configuration to rank: timm ``backbone``, ``image_size``, ``strides`` of the stages,
    the finest stage's neighbourhood summary (``embedding``), ``resize`` mode."""

    backbone: str
    image_size: int
    strides: tuple[int, ...]
    embedding: str
    resize: str

    @property
    def name(self) -> str:
        short = {v: k for k, v in BACKBONES.items()}.get(self.backbone, self.backbone)
        return (f"{short}-{self.image_size}-{'+'.join(map(str, self.strides))}-"
                f"{self.embedding}-{self.resize}")

    @property
    def extraction(self) -> tuple[str, int, str]:
        """Candidates with the same key share one feature extraction."""
        return self.backbone, self.image_size, self.resize

    def layers(self) -> list[int]:
        strides = _strides(self.backbone)
        missing = [s for s in self.strides if s not in strides]
        if missing:
            raise ValueError(f"{self.backbone}: no stage with stride {missing} (has {strides})")
        return [strides.index(s) for s in self.strides]

    def config(self, base: ModelConfig) -> ModelConfig:
        """``base`` with this candidate's feature settings (everything else, e.g. the scorer, kept)."""
        cfg = copy.deepcopy(base)
        cfg.backbone.name = self.backbone
        cfg.backbone.layers = self.layers()
        cfg.backbone.weights = base.backbone.weights_for(self.backbone)
        cfg.features.image_size = self.image_size
        cfg.features.resize = self.resize
        cfg.features.finest_stage = self.embedding
        return cfg

    def check(self, base: ModelConfig) -> None:
        """Refuse, in one line naming this candidate, a configuration ``base`` cannot take (a
        stride the backbone lacks, an input size below the crop, ...), as a config file is."""
        try:
            cfg = self.config(base)
        except ValueError as e:
            raise ValueError(f"candidate {self.name}: {e}") from None
        ModelConfig.from_dict(cfg.to_dict(), f"candidate {self.name}")

    @classmethod
    def parse(cls, name: str) -> Candidate:
        """The candidate named like ``lite0-320-8+16-rows-stretch`` (see :attr:`name`)."""
        try:
            short, size, strides, embedding, resize = name.split("-")
            cand = cls(BACKBONES.get(short, short), int(size), tuple(int(s) for s in strides.split("+")),
                       embedding, resize)
        except ValueError:
            raise ValueError(f"bad candidate name {name!r}: expected BACKBONE-SIZE-STRIDES-EMBEDDING-"
                             f"RESIZE, e.g. lite0-320-8+16-rows-stretch") from None
        if embedding not in EMBEDDINGS or resize not in RESIZES:
            raise ValueError(f"bad candidate name {name!r}: embedding one of {EMBEDDINGS}, "
                             f"resize one of {RESIZES}")
        return cand

    @classmethod
    def of(cls, cfg: ModelConfig) -> Candidate:
        """The candidate that ``cfg`` is (layers None = the stride-8 and stride-16 stages)."""
        layers = cfg.backbone.layers
        picked = (8, 16) if layers is None else _strides(cfg.backbone.name, layers)
        return cls(cfg.backbone.name, cfg.features.image_size, picked, cfg.features.finest_stage,
                   cfg.features.resize)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["strides"] = list(self.strides)
        d["name"] = self.name
        return d


def candidate_grid(grid: str, base: ModelConfig) -> list[Candidate]:
    """The candidates of ``grid``, the base configuration first.

    ``full``: every combination of Lite0/1/2, sizes 256-448, stage sets {8+16, 4+8+16, 8+16+32},
    embeddings {rows, full, mean} and resize {stretch, pad} (216). ``compact`` (the default of
    ``tune``): the base configuration and each of those values changed one at a time (11 with
    the default base), chosen before any real test run because the full grid takes hours on two
    CPU cores (docs/auto_config.md). ``ascent`` starts from ``compact``; its second round
    (:func:`combinations`) depends on the first round's validation.
    """
    default = Candidate.of(base)
    if grid == "full":
        cands = [Candidate(BACKBONES[b], s, st, e, r) for b, s, st, e, r in itertools.product(
            BACKBONES, SIZES, STAGE_SETS, EMBEDDINGS, RESIZES)]
    elif grid in ("compact", "ascent"):
        cands = [default]
        cands += [Candidate(b, default.image_size, default.strides, default.embedding, default.resize)
                  for b in BACKBONES.values()]
        cands += [Candidate(default.backbone, s, default.strides, default.embedding, default.resize)
                  for s in SIZES]
        cands += [Candidate(default.backbone, default.image_size, st, default.embedding, default.resize)
                  for st in STAGE_SETS]
        cands += [Candidate(default.backbone, default.image_size, default.strides, e, default.resize)
                  for e in EMBEDDINGS]
        cands += [Candidate(default.backbone, default.image_size, default.strides, default.embedding, r)
                  for r in RESIZES]
    else:
        raise ValueError(f"unknown candidate grid {grid!r}; choose from {', '.join(GRIDS)}")
    out = [default]
    for c in cands:
        if c not in out:
            out.append(c)
    return out


def changed_axis(cand: Candidate, default: Candidate) -> str | None:
    """The one setting (of :data:`AXES`) in which ``cand`` differs from ``default``; None if it
    equals the default or differs in more than one."""
    diff = [a for a in AXES if getattr(cand, a) != getattr(default, a)]
    return diff[0] if len(diff) == 1 else None


def combinations(default: Candidate, winners: Sequence[Candidate]) -> list[Candidate]:
    """Round 2 of the ``ascent`` grid: ``default`` with the changes of every pair of ``winners``
    (one-change candidates on different settings), and with all of them together."""
    axes = [changed_axis(w, default) for w in winners]
    if None in axes or len(set(axes)) != len(axes):
        raise ValueError("combinations need one-change candidates on different settings")

    changes = [(axis, getattr(w, axis)) for w, axis in zip(winners, axes, strict=True)]
    groups = list(itertools.combinations(changes, 2))
    if len(changes) > 2:
        groups.append(tuple(changes))
    return [replace(default, **dict(g)) for g in groups]
