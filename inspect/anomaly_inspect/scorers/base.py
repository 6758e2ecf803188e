"""The one scorer interface: ``fit(features)`` / ``score(features)``, higher = more anomalous.

Constructor arguments are the configuration (they map one-to-one onto the
YAML in ``configs/``); ``fit`` learns state from normal / in-distribution
training features only; ``score`` never learns. State is saved as plain
arrays (safetensors) plus JSON, never pickle.
"""

from __future__ import annotations

import errno
import functools
import inspect
import json
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from ..core import Features, FitContext, ScoreResult

SCORER_FORMAT_VERSION = 1


class NotFittedError(RuntimeError):
    """``score`` was called before ``fit``."""


class ScorerFormatError(ValueError):
    """Saved scorer state that this version cannot read."""


def read_saved_json(path: Path, what: str) -> dict:
    """The JSON object in ``path`` (a saved ``what``'s description); unreadable, or not an
    object, is a :class:`ScorerFormatError` naming the file."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ScorerFormatError(f"{path}: unreadable {what} description ({exc})") from None
    if not isinstance(meta, dict):
        raise ScorerFormatError(f"{path}: expected a JSON object")
    return meta


def read_saved_state(path: Path, what: str) -> dict[str, np.ndarray]:
    """The arrays in the safetensors file ``path`` (a saved ``what``'s state); a damaged file is
    a :class:`ScorerFormatError` naming it and why."""
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        first = (str(exc).splitlines() or [""])[0]
        raise ScorerFormatError(f"{path}: damaged {what} state ({type(exc).__name__}: "
                                f"{first})") from None


def save_state(state: dict[str, np.ndarray], path: Path) -> None:
    """Write ``state`` as safetensors to ``path``; where the write fails (a full disk, a folder
    made read-only), an ``OSError`` naming ``path`` with the reason's errno (safetensors raises
    its own error type, which no caller would take for an I/O error), ``EIO`` where its message
    gives none."""
    try:
        save_file(state, str(path))
    except SafetensorError as exc:
        text = str(exc)
        if "I/O error" not in text:
            raise
        found = re.search(r"os error (\d+)", text)
        code = int(found[1]) if found else errno.EIO
        raise OSError(code, os.strerror(code), str(path)) from exc


class Scorer(ABC):
    """Base class of every scorer. Subclasses set ``name`` and ``requires``.

    Every subclass's ``fit``, ``fit_batches`` and ``score`` check what they are given first
    (:meth:`check_input`, installed by ``__init_subclass__``): one error path for all scorers.
    """

    name: ClassVar[str] = ""
    #: which :class:`Features` fields the scorer reads: "patches" and/or "pooled"
    requires: ClassVar[tuple[str, ...]] = ("patches",)
    #: whether ``fit`` needs ID class labels (a classifier head; a class-conditional
    #: Mahalanobis sets it per instance): a model config's fit has none (normal images only),
    #: so ``ModelConfig.check_scorer`` refuses such a scorer before any work
    needs_labels: bool = False
    #: constructor arguments that are runtime switches, not model parameters: left out of
    #: :meth:`get_params` and the saved scorer; whoever builds or loads the scorer sets them
    #: (each scorer takes the ones its constructor names): ``progress`` (bars) and
    #: ``patch_maps`` (False where only image scores are read: memory banks then search
    #: for cheaper upper bounds, the image scores being exact either way)
    runtime_params: ClassVar[tuple[str, ...]] = ("progress", "patch_maps")
    #: parameters added after models were saved without them, with the value that describes
    #: what those older fits did (not the new default): :meth:`load` fills them in
    saved_before: ClassVar[dict[str, Any]] = {}
    #: the view kind (:data:`~..choices.VIEW_KINDS`) the scorer reads at fit from
    #: ``FitContext.views``; None: none (the runner adds views only for a scorer that names them)
    fit_views: str | None = None

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        for stage in ("fit", "fit_batches", "score"):
            method = cls.__dict__.get(stage)
            if method is not None and not getattr(method, "_checks_input", False):
                setattr(cls, stage, _checking_input(method, stage))

    def check_input(self, features: Features, stage: str) -> None:
        """Refuse, naming the field, features this scorer cannot use: a field it reads that
        holds NaN or Inf, or (at score) has another width than at fit. (A missing field is the
        scorer's own error: some read a field at fit only.)"""
        fitted = getattr(self, "_input_widths", None)
        for field in self.requires:
            arr = getattr(features, field, None)
            if arr is None:
                continue
            if arr.dtype.kind in "fc" and arr.size and not sum_is_finite(arr):
                # the sum (one fast pass) can also overflow on finite values: count for sure
                bad = ~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
                if bad.any():
                    raise ValueError(f"{type(self).__name__}.{stage}: {field} features of "
                                     f"{int(bad.sum())} of {len(arr)} images hold NaN or Inf values")
            if stage == "score" and fitted and fitted.get(field, arr.shape[-1]) != arr.shape[-1]:
                raise ValueError(f"{type(self).__name__}.score: {field} features have width "
                                 f"{arr.shape[-1]}, the scorer was fitted on width {fitted[field]}")

    def _widths(self, features: Features) -> dict[str, int]:
        """The widths of the fields this scorer reads, which score checks after a fit."""
        return {f: getattr(features, f).shape[-1] for f in self.requires
                if getattr(features, f, None) is not None}

    @classmethod
    def constructor_params(cls) -> list[str]:
        """Names of the keyword arguments of ``__init__``."""
        sig = inspect.signature(cls.__init__)
        return [k for k, p in sig.parameters.items()
                if k != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    @classmethod
    def runtime_kwargs(cls, **switches: Any) -> dict[str, Any]:
        """The runtime ``switches`` (e.g. ``progress=False``) that this scorer's constructor takes."""
        unknown = set(switches) - set(cls.runtime_params)
        if unknown:
            raise TypeError(f"not runtime switches of {cls.__name__}: {sorted(unknown)}")
        accepted = cls.constructor_params()
        return {k: v for k, v in switches.items() if k in accepted}

    def get_params(self) -> dict[str, Any]:
        """Model parameters: the constructor arguments but runtime switches, scikit-learn
        style (read back from attributes)."""
        return {k: getattr(self, k) for k in self.constructor_params()
                if k not in self.runtime_params}

    @property
    def is_fitted(self) -> bool:
        return getattr(self, "_fitted", False)

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__}.score() called before fit()")

    @abstractmethod
    def fit(self, features: Features, labels: np.ndarray | None = None,
            context: FitContext | None = None) -> Scorer:
        """Learn from training features (normal / in-distribution only); ``labels`` are ID
        class labels for the scorers that train a classifier, ``context`` what some scorers
        need besides (see :class:`FitContext`)."""

    def fit_batches(self, batches: Iterable[Features], n_images: int,
                    context: FitContext | None = None) -> Scorer:
        """Fit on training features that arrive batch by batch (at most ``n_images``: the
        caller may skip unreadable images).

        The default gathers them (one copy) and calls :meth:`fit`; scorers that can
        learn from a stream (PatchCore's coreset) override it to keep memory flat.
        """
        features = Features.collect(batches, n_images, at_most=True)
        if len(features) == 0:
            raise ValueError(f"{type(self).__name__}.fit_batches: no training features arrived "
                             f"(expected up to {n_images} images)")
        return self.fit(features, context=context)

    def fit_summary(self) -> dict[str, Any]:
        """What the fit produced, for reports (e.g. memory-bank size); empty by default."""
        return {}

    @abstractmethod
    def score(self, features: Features) -> ScoreResult:
        """Score features; never changes the fitted state."""

    @abstractmethod
    def get_state(self) -> dict[str, np.ndarray]:
        """Fitted state as named numpy arrays."""

    @abstractmethod
    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore fitted state from :meth:`get_state`'s arrays (checked first with
        :meth:`check_state`)."""

    def check_state(self, state: dict[str, np.ndarray], shapes: dict[str, tuple[int | str, ...]],
                    optional: Iterable[str] = (), **sizes: int) -> None:
        """:func:`check_shapes` of a ``state`` to restore, the named sizes being ``sizes`` and
        the feature widths of the fit ("patches", "pooled", ...; :meth:`load` sets those of
        the saved model first)."""
        check_shapes(state, shapes, {**(getattr(self, "_input_widths", None) or {}), **sizes},
                     optional)

    def save(self, directory: Path | str) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__}.save() called before fit()")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"format_version": SCORER_FORMAT_VERSION, "name": self.name, "params": self.get_params()}
        widths = getattr(self, "_input_widths", None)
        if widths:  # the feature widths of the fit, which score checks
            meta["input_widths"] = widths
        (directory / "scorer.json").write_text(json.dumps(meta, indent=2, default=_jsonable))
        state = {k: np.ascontiguousarray(v) for k, v in self.get_state().items()}
        save_state(state, directory / "scorer_state.safetensors")

    @classmethod
    def load(cls, directory: Path | str, **runtime: Any) -> Scorer:
        """Load a saved scorer; ``runtime`` switches (e.g. ``progress=False``) are the caller's.
        ``Scorer.load`` loads any scorer; a subclass's (``PatchCore.load``) only its own kind
        (its subclasses included), as its callers expect that type."""
        from . import get_scorer_class

        directory = Path(directory)
        meta_path = directory / "scorer.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path}: no saved scorer here")
        meta = read_saved_json(meta_path, "scorer")
        if meta.get("format_version") != SCORER_FORMAT_VERSION:
            raise ScorerFormatError(
                f"{meta_path}: scorer format version {meta.get('format_version')} is not "
                f"supported (this version reads {SCORER_FORMAT_VERSION}); re-fit the model"
            )
        state_path = directory / "scorer_state.safetensors"
        if not state_path.is_file():
            raise ScorerFormatError(f"{state_path}: missing scorer state")
        state = read_saved_state(state_path, "scorer")
        for key, arr in state.items():
            if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
                raise ScorerFormatError(f"{state_path}: array {key!r} holds NaN or Inf values; "
                                        f"the saved model is damaged, re-fit it")
        try:
            scorer_cls = get_scorer_class(meta["name"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ScorerFormatError(f"{meta_path}: unknown scorer ({exc})") from None
        if not issubclass(scorer_cls, cls):
            raise ScorerFormatError(f"{meta_path}: holds a {meta['name']!r} scorer "
                                    f"({scorer_cls.__name__}), not a {cls.__name__}")
        switches = scorer_cls.runtime_kwargs(**runtime)  # a wrong switch is the caller's error
        # files written before the widths were saved lack them: score then skips that check
        widths = meta.get("input_widths")
        if widths is not None and not (isinstance(widths, dict) and all(
                isinstance(w, int) and not isinstance(w, bool) and w >= 0 for w in widths.values())):
            raise ScorerFormatError(f"{meta_path}: input_widths must map feature fields to "
                                    f"widths, got {widths!r}")
        if not isinstance(meta.get("params"), dict):  # else an AttributeError below
            raise ScorerFormatError(f"{meta_path}: params must be an object (a mapping), got "
                                    f"{type(meta.get('params')).__name__}")
        try:
            # files written before runtime switches were left out may still hold them
            params = {k: v for k, v in meta["params"].items() if k not in scorer_cls.runtime_params}
            params = {**scorer_cls.saved_before, **params}
            scorer = scorer_cls(**params, **switches)
            if widths is not None:  # before set_state, which checks the arrays' widths against them
                scorer._input_widths = widths
            scorer.set_state(state)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ScorerFormatError(f"{state_path}: does not match the scorer described in "
                                    f"{meta_path.name} ({type(exc).__name__}: {exc})") from None
        scorer._fitted = True
        return scorer


def check_shapes(state: dict[str, np.ndarray], shapes: dict[str, tuple[int | str, ...]],
                 sizes: dict[str, int] | None = None, optional: Iterable[str] = ()) -> None:
    """Refuse (``ValueError`` naming the array) saved ``state`` that lacks an array of
    ``shapes`` (but those in ``optional``) or holds one of another shape: restored, it would
    fail deep in scoring, or score wrongly. An expected shape lists sizes: ints, and names
    whose size every array naming them shares, given in ``sizes`` or else set by the first
    array (in ``shapes``' order) that has them."""
    known = dict(sizes or {})
    for key, shape in shapes.items():
        if key not in state:
            if key in optional:
                continue
            raise ValueError(f"array {key!r} is missing")
        actual, bound = np.shape(state[key]), dict(known)
        fits = len(actual) == len(shape) and all(
            (bound.setdefault(dim, n) if isinstance(dim, str) else dim) == n
            for dim, n in zip(shape, actual, strict=True))
        if not fits:
            dims = [f"{d}={known[d]}" if d in known else str(d) for d in shape]
            raise ValueError(f"array {key!r} has shape {actual}, expected "
                             f"({', '.join(dims)}{',' if len(dims) == 1 else ''})")
        known = bound


def _checking_input(method, stage: str):
    """``method`` (a scorer's fit, fit_batches or score) checking its features first; a fit
    that returns records the widths that score then expects (a refused one leaves a fitted
    scorer's widths, like its state, as they were)."""
    if stage == "fit_batches":
        @functools.wraps(method)
        def checked(self, batches, n_images, context=None):
            widths: dict[str, int] = {}

            def each():
                for i, batch in enumerate(batches):
                    self.check_input(batch, "fit")
                    if i == 0:
                        widths.update(self._widths(batch))
                    yield batch
            result = method(self, each(), n_images, context)
            self._input_widths = widths
            return result
    else:
        @functools.wraps(method)
        def checked(self, features, *args, **kwargs):
            self.check_input(features, stage)
            result = method(self, features, *args, **kwargs)
            if stage == "fit":
                self._input_widths = self._widths(features)
            return result
    checked._checks_input = True
    return checked


def sum_is_finite(arr: np.ndarray) -> bool:
    """Whether the sum of ``arr`` is finite: False for any NaN or Inf in it, and (rarely) for
    finite values whose sum overflows. Half floats are summed in float32, whose range their
    sums never leave."""
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.add.reduce(arr, None, dtype=np.float32 if arr.dtype == np.float16 else None)
    return bool(np.isfinite(total))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
