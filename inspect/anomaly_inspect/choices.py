"""The values that options take (runtimes, precisions, resize modes, engines, views, coreset
variants, overlays, export formats, index kinds) and their check, with no
heavy import: the configuration and the command line use them without loading torch,
albumentations or ONNX Runtime, so ``--help`` and argument errors answer at once."""

from __future__ import annotations

import itertools
import reprlib
import types
import typing
from collections.abc import Sequence
from dataclasses import fields, is_dataclass
from typing import Any

RUNTIMES = ("torch", "onnxruntime", "openvino")
PRECISIONS = ("f32", "bf16", "int8")
DEFAULT_RUNTIME = "onnxruntime"
DEFAULT_PRECISION = "f32"
RANDOM_WEIGHTS = "random"  # weights: a seeded random initialisation (tests, benchmarks)
RESIZE_MODES = ("stretch", "pad")
FINEST_MODES = ("mean", "rows", "full")  # how the patch embedding summarises the finest stage
ENGINES = ("local", "ray")
OVERLAY_CHOICES = ("flagged", "all", "none")  # which screened images get a heatmap overlay
EXPORT_FORMATS = {"onnx": "onnxruntime", "openvino": "openvino"}  # format -> the runtime it serves
INDEX_KINDS = ("auto", "flat", "hnsw", "ivf")  # faiss index of a nearest-neighbour scorer
# tail views: kind -> (rotation step in degrees or None, horizontal flip)
VIEW_KINDS = {"rot15flip": (15, True), "rot30flip": (30, True), "rot45flip": (45, True),
              "rotflip": (90, True), "none": (None, False)}
# bench-coreset's variants: name -> (chunk_size, first_round_ratio) given the config's chunk
# size and first-round ratio and the coreset ratio
CORESET_VARIANTS = {
    "two_round": lambda chunk, first, ratio: (chunk, first),
    "one_round": lambda chunk, first, ratio: (chunk, None),  # plain chunked greedy (before the fix)
    "cells": lambda chunk, first, ratio: (chunk, min(1.0, 2 * ratio)),  # round 1 keeps twice the
    #                                       ratio, round 2 in k-means cells where it would be costly
    "exact": lambda chunk, first, ratio: (None, None),
}


def check_runtime(runtime: str, precision: str) -> None:
    """Raise ValueError for an unknown runtime / precision or an unsupported pair."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {shown(runtime)}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {shown(precision)}")
    if precision == "bf16" and runtime != "openvino":
        raise ValueError(f"precision bf16 needs runtime openvino (got runtime {shown(runtime)})")
    if precision == "int8" and runtime != "onnxruntime":
        raise ValueError(f"precision int8 needs runtime onnxruntime (got runtime {shown(runtime)})")


def check_embedding(aggregate: int, finest: str) -> None:
    """Raise ValueError for patch-embedding settings ``PatchEmbedding`` cannot take."""
    if finest not in FINEST_MODES:
        raise ValueError(f"finest_stage must be one of {FINEST_MODES}, got {shown(finest)}")
    if aggregate < 1 or aggregate % 2 == 0:
        raise ValueError(f"aggregate must be an odd number >= 1 (a neighbourhood centred on "
                         f"its patch), got {aggregate}")


def check_layers(name: str, layers: Sequence[int]) -> tuple[int, ...]:
    """``layers`` as a tuple of ints; empty, repeated or decreasing indices are a ValueError.
    Not sorted here: the stages always come back shallow to deep, and a config that says
    [3, 2] would record one order while its features follow the other."""
    layers = tuple(int(i) for i in layers)
    if not layers:
        raise ValueError(f"{name}: layers must not be empty")
    if any(a >= b for a, b in itertools.pairwise(layers)):
        raise ValueError(f"{name}: layers must be increasing indices without repeats "
                         f"(shallow to deep), got {shown(list(layers))}")
    return layers


#: seeds must be below this: the smallest range of the seed's consumers is faiss's IVF
#: clustering seed (``ClusteringParameters.seed``, a C int); torch takes < 2**64, numpy any
SEED_LIMIT = 2**31
#: what a seed must be, the words of both the --seed flag's and the config's refusal
SEED_RANGE = "must be below 2**31 (faiss's IVF clustering takes a 32-bit seed)"


#: how much of a user's value an error message shows (:func:`shown`)
SHOWN_CHARS = 80
_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel, _SHORT_REPR.maxstring, _SHORT_REPR.maxother = 4, SHOWN_CHARS, SHOWN_CHARS
_SHORT_REPR.maxlist = _SHORT_REPR.maxtuple = _SHORT_REPR.maxdict = _SHORT_REPR.maxset = 8


def shown(value: Any) -> str:
    """``repr(value)`` for an error message that quotes a value the user gave, cut to about
    :data:`SHOWN_CHARS` characters (``...`` where cut). A YAML alias holds one list many times
    over, by reference: cheap to read, but its whole repr was the message (430 bytes of YAML:
    gigabytes)."""
    text = _SHORT_REPR.repr(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 3] + "..."


class ConfigError(ValueError):
    """A configuration file or value that cannot be used."""


def _is_a(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits the annotation ``hint`` (the few kinds a config uses)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_is_a(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint in (int, float):  # a bool is no number here; an int is a float
        return isinstance(value, int if hint is int else (int, float)) and not isinstance(value, bool)
    if origin is list:
        return isinstance(value, list) and all(_is_a(v, typing.get_args(hint)[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _describe(hint: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             type(None): "null"}
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return f"a list of {_describe(typing.get_args(hint)[0]).removeprefix('an ').removeprefix('a ')}s"
    if typing.get_origin(hint) is dict:
        return "a mapping"
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def check_field_types(obj: Any, section: str) -> None:
    """Each field of the dataclass ``obj`` against its annotation, so that a YAML value of the
    wrong kind ("32" for 32, ``seed: abc``) is one line naming the key, not a traceback later."""
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        value = getattr(obj, f.name)
        if is_dataclass(hints[f.name]):  # a section (ModelConfig's backbone, features)
            if not isinstance(value, hints[f.name]):
                raise ConfigError(f"{section}{f.name}: expected a {hints[f.name].__name__}, got "
                                  f"{shown(value)}; a mapping (or a YAML file) is read with "
                                  f"ModelConfig.from_dict(...) or load_config(...)")
            continue
        if not _is_a(value, hints[f.name]):
            raise ConfigError(f"{section}{f.name}: expected {_describe(hints[f.name])}, got {shown(value)}")


def check_instance(name: str, value: Any, kind: type, how: str) -> None:
    """Raise a one-line TypeError unless ``value``, the API argument ``name``, is a ``kind``;
    ``how`` says how one is made. Without it a wrong argument (a config's name for the
    config, a model's folder for the model) failed later as an AttributeError."""
    if not isinstance(value, kind):
        got = "None" if value is None else f"a {type(value).__name__}"
        article = "an" if kind.__name__[0] in "AEIOU" else "a"
        raise TypeError(f"{name}: expected {article} {kind.__name__} ({how}), got {got}")
