"""How the frozen backbone runs: torch eager, or an ONNX export run by ONNX Runtime / OpenVINO.

The runtime changes how the backbone runs, never what it computes: the ONNX
graph is exported from the same timm module (same weights, same stages, the
pooled embedding when asked for), and an ``f32`` runtime agrees with torch to
float tolerance. ``bf16`` (OpenVINO only) and ``int8`` (ONNX Runtime only: static
post-training quantisation, calibrated on training images) trade accuracy for speed
and are never chosen unless asked for.

Exports are made lazily (on the first batch, never at import time), once per
(backbone, weights checksum, stages, input size, outputs, torch and timm versions), and
cached as ``backbone-<key>.onnx`` in a directory: the model directory for
saved models, otherwise ``$ANOMALY_INSPECT_CACHE`` or ``~/.cache/anomaly_inspect``.
A saved model runs the graphs it holds whatever torch version runs now: in its
folder a graph is also found by its input size and outputs (:func:`graph_signature`) and by
the backbone, weights checksum and stages each export records in its metadata
(:func:`export_record`). Each graph written is recorded with its sha256 and checked against
it before it runs (:func:`check_graph`): a damaged cache entry is made again.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import importlib.metadata
import io
import json
import logging
import os
import re
import shutil
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..choices import check_runtime
from ..files import (
    STALE_TEMP_AFTER_S,
    WORK_FOLDERS,
    remove_stale_folders,
    remove_stale_temp_files,
    replacing,
    stream_sha256,
    work_folder,
    write_text,
)
from ..user_cache import user_cache_dir

log = logging.getLogger(__name__)

# ONNX Runtime's Linux builds send usage telemetry (session creations with model names and graph
# hashes, a device id kept under ~/.cache/Microsoft, a session file in the temporary folder) unless
# this is set before its first session; kept where the caller set it. Set before any onnxruntime
# import: every module that imports onnxruntime imports this one first.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

CALIBRATION_IMAGES = 32  # training images an int8 graph is calibrated on
EXPORT_FORMAT = 1  # bump when the exported graph's layout changes
OPENVINO_INSTALL = 'pip install "openvino>=2024.4"'  # as the README says (the [openvino] extra)
# Images per runtime call: a batch runs in slices of about this many pixels. Both runtimes
# are 15-50 % faster on slices of two 320 px images than on 32 at once (the activations of a
# few images stay in cache), and ONNX Runtime's arena shrinks from ~650 MB to ~100 MB
# (docs/results/runtime/micro_batch_2026-12-03/).
MICRO_BATCH_PIXELS = 2 * 320 * 320


class RuntimeUnavailableError(RuntimeError):
    """The requested runtime's library is not installed."""


class CalibrationError(ValueError):
    """An int8 graph is needed but there is neither one nor training images to calibrate it."""


class PrecisionError(RuntimeError):
    """The precision asked for cannot be run here (its export or quantisation failed): the
    backbone never runs at another one instead (only f32 falls back, to torch f32)."""


def runtime_available(runtime: str) -> bool:
    """Whether the library behind ``runtime`` can be imported."""
    if runtime == "torch":
        return True
    module = {"onnxruntime": "onnxruntime", "openvino": "openvino"}[runtime]
    import importlib.util

    return importlib.util.find_spec(module) is not None


def require_runtime(runtime: str, purpose: str | None = None) -> None:
    """Raise :class:`RuntimeUnavailableError` (with the install command) where ``runtime``'s
    library is not installed; ``purpose`` names what needs it (default: "runtime NAME")."""
    if not runtime_available(runtime):
        hint = f": {OPENVINO_INSTALL}" if runtime == "openvino" else ""
        raise RuntimeUnavailableError(f"{purpose or f'runtime {runtime}'} needs the {runtime} "
                                      f"package, which is not installed{hint}")


_ENV_LOCK = threading.Lock()


@contextlib.contextmanager
def openvino_telemetry_declined():
    """OpenVINO's usage telemetry declined for the calls inside. Its Python tools decide
    whether to send usage events (on unless a user opted out) at ``import openvino`` and again
    at every ``convert_model``, and send each from a process forked on a worker thread: a
    network call from a tool meant to run offline, a client id written under ``~/intel``, and
    a fork of a process whose other threads (ONNX Runtime, faiss) may hold locks, which can
    leave the child hanging and the process with it at exit. The telemetry declines where
    ``CI`` is "true", so the calls inside see that; the environment is restored after them."""
    with _ENV_LOCK:
        before = os.environ.get("CI")
        os.environ["CI"] = "true"
        try:
            yield
        finally:
            if before is None:
                os.environ.pop("CI", None)
            else:
                os.environ["CI"] = before


def load_openvino():
    """The ``openvino`` module (see :func:`require_runtime`), imported with its telemetry
    declined (:func:`openvino_telemetry_declined`); an ``openvino`` the caller imported already
    is returned as it is."""
    import sys

    if "openvino" not in sys.modules:
        with openvino_telemetry_declined():
            import openvino  # noqa: F401
    return sys.modules["openvino"]


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of ``exc``'s message, at most ``limit`` characters (for one-line errors)."""
    return (str(exc).strip().splitlines() or [""])[0][:limit]


def max_rel_diff(got: Sequence, want: Sequence) -> float:
    """Largest over the output pairs of max |got - want| / max |want| (arrays or tensors)."""
    return max(float(np.abs(np.asarray(g, np.float64) - np.asarray(w, np.float64)).max()
                     / max(float(np.abs(np.asarray(w, np.float64)).max()), 1e-12))
               for g, w in zip(got, want, strict=True))


def default_cache_dir() -> Path:
    """Where the backbone's ONNX exports go: the user cache's ``onnx`` folder."""
    return user_cache_dir("onnx")


OUTPUTS = ("stages", "pooled", "full")  # what an exported graph returns, see _StagesGraph


@functools.cache
def timm_version() -> str:
    """The installed timm's version, read without importing timm."""
    try:
        return importlib.metadata.version("timm")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def export_key(name: str, weights_checksum: str, layers: Sequence[int], input_hw: tuple[int, int],
               outputs: str) -> str:
    """Hash of everything the exported graph depends on (timm's version too: it defines the
    module that is traced)."""
    if outputs not in OUTPUTS:
        raise ValueError(f"outputs must be one of {OUTPUTS}, got {outputs!r}")
    desc = {"name": name, "weights": weights_checksum, "layers": [int(i) for i in layers],
            "input_hw": [int(v) for v in input_hw], "pooled": outputs != "stages",
            "torch": torch.__version__, "timm": timm_version(), "format": EXPORT_FORMAT}
    if outputs == "full":  # a flag of its own, so that the two older kinds' keys kept their form
        desc["full"] = True
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:24]


def graph_outputs(n_stages: int, outputs: str) -> tuple[str, ...]:
    """Output names of an exported graph with ``n_stages`` stages (see :class:`_StagesGraph`)."""
    return (*(f"stage{i}" for i in range(n_stages)),
            *{"stages": (), "pooled": ("pooled",), "full": ("final", "pooled")}[outputs])


#: prefix of the metadata keys an export records (:func:`export_record`)
RECORD_PREFIX = "anomaly_inspect."


def export_record(name: str, weights_checksum: str, layers: Sequence[int]) -> dict[str, str]:
    """What an export records in its ONNX metadata about the backbone it was made from (its
    file name's key hashes these too, with the torch version: a graph found under another
    key is run only where its record matches)."""
    return {f"{RECORD_PREFIX}backbone": name, f"{RECORD_PREFIX}weights_checksum": weights_checksum,
            f"{RECORD_PREFIX}layers": json.dumps([int(i) for i in layers])}


def graph_signature(path: Path) -> tuple[tuple[int, ...], tuple[str, ...], dict[str, str]] | None:
    """The input shape without the batch axis, the output names and the
    :func:`export_record` (empty for a graph exported before records existed) of the ONNX
    graph at ``path``; None where it is not a readable graph."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
        graph = model.graph
        shape = tuple(int(d.dim_value) for d in graph.input[0].type.tensor_type.shape.dim[1:])
    except Exception:  # onnx raises its own types (DecodeError, ...) for a damaged file
        return None
    record = {p.key: p.value for p in model.metadata_props if p.key.startswith(RECORD_PREFIX)}
    return shape, tuple(o.name for o in graph.output), record


class DamagedGraphError(ValueError):
    """A cached graph whose bytes are not those recorded when it was written, or one in the user
    cache that records none (it is made again, like an unreadable one)."""


def checksum_path(graph: Path) -> Path:
    """The file beside ``graph`` holding the sha256 of its bytes, written with it by
    :func:`export_onnx` and :func:`quantize_int8`."""
    return graph.with_name(f"{graph.name}.sha256")


def _record_checksum(graph: Path, written: Path) -> None:
    """Record in :func:`checksum_path` of ``graph`` the sha256 of ``written``, the finished file
    about to be renamed onto ``graph``. Recorded first, so that a run never finds a new graph
    without its checksum (runs exporting the same graph at once write the same bytes)."""
    write_text(checksum_path(graph), _sha256(written) + "\n")


#: file identity (path, device, inode, size, mtime, ctime) -> sha256: each graph is hashed once
#: per process, not at every session load
_digests: dict[tuple, str] = {}


def _sha256(path: Path) -> str:
    """The sha256 of the file at ``path``, from :data:`_digests` where it is unchanged."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        key = (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if key not in _digests:
            _digests[key] = stream_sha256(f)
    return _digests[key]


def check_graph(path: Path) -> None:
    """Raise :class:`DamagedGraphError` where the graph at ``path`` is not the file whose sha256
    was recorded when it was written (:func:`checksum_path`), or records none and lies in the
    user cache (written by an older version, or its checksum removed). A graph elsewhere
    without one is a saved model's: its ``checksums.json`` covers the graphs saved with it."""
    record = checksum_path(path)
    try:
        want = record.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        if path.parent.resolve() != default_cache_dir().resolve():
            return
        raise DamagedGraphError(f"no checksum recorded: {record.name} is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DamagedGraphError(f"{record.name}: unreadable checksum ({first_line(exc)})") from None
    if _sha256(path) != want:
        raise DamagedGraphError(f"changed since it was written: its sha256 is not the one "
                                f"{record.name} records")


class _StagesGraph(nn.Module):
    """What is exported: the stage maps (``stages``: early exit); with ``pooled`` also the
    pooled embedding; with ``full`` also the final feature map before it (block norms)."""

    def __init__(self, model: nn.Module, layers: Sequence[int], outputs: str):
        super().__init__()
        self.model = model
        self.layers = [int(i) for i in layers]
        self.outputs = outputs

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.outputs == "stages":
            return tuple(self.model.forward_intermediates(x, indices=self.layers, stop_early=True,
                                                          intermediates_only=True))
        final, inter = self.model.forward_intermediates(x, indices=self.layers,
                                                        intermediates_only=False)
        pooled = self.model.forward_head(final, pre_logits=True)
        return (*inter, final, pooled) if self.outputs == "full" else (*inter, pooled)


def static_same_padding(model: nn.Module, input_hw: tuple[int, int]) -> nn.Module:
    """A copy of ``model`` whose TF-"same" convolutions (timm's ``Conv2dSame``, which works out
    its padding from the input's shape at run time) pad by constants for ``input_hw``.

    Why: traced by the legacy exporter, that run-time arithmetic stays in the graph and its
    ``Pad`` stays a separate node (with it, ONNX Runtime runs Lite0 at ~114 img/s instead of
    ~185). Constant pads let ONNX Runtime fold every ``Pad`` into its ``Conv``. Same weights,
    same function: only the way the padding is computed differs.
    """
    from timm.layers.conv2d_same import Conv2dSame
    from timm.layers.padding import get_same_padding

    targets = [name for name, m in model.named_modules() if type(m) is Conv2dSame]
    if not targets:
        return model
    model = copy.deepcopy(model)
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [model.get_submodule(n).register_forward_pre_hook(
        lambda _m, args, n=n: sizes.__setitem__(n, tuple(args[0].shape[-2:]))) for n in targets]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, *input_hw))
    finally:
        for h in hooks:
            h.remove()
    for name in targets:
        conv = model.get_submodule(name)
        ph, pw = (get_same_padding(size, k, s, d) for size, k, s, d in
                  zip(sizes[name], conv.kernel_size, conv.stride, conv.dilation, strict=True))
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child,
                _PaddedConv(conv, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)))
    return model


class _PaddedConv(nn.Module):
    """``conv``'s weights as a plain convolution (padding 0) after a constant zero padding
    ``pads`` (left, right, top, bottom)."""

    def __init__(self, conv: nn.Conv2d, pads: tuple[int, int, int, int]):
        super().__init__()
        self.conv = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                              0, conv.dilation, conv.groups, conv.bias is not None)
        self.conv.weight, self.conv.bias = conv.weight, conv.bias
        self.pads = pads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.nn.functional.pad(x, self.pads))


def _finish_graph(path: Path, record: dict[str, str] | None, drop_pad_inputs: bool) -> None:
    """Add ``record`` to the graph's metadata; with ``drop_pad_inputs``, drop the empty trailing
    inputs the legacy exporter gives ``Pad`` nodes: ONNX Runtime's Pad-into-Conv fusion only
    applies to a ``Pad`` without them."""
    import onnx

    model = onnx.load(str(path))
    if drop_pad_inputs:
        for node in model.graph.node:
            if node.op_type == "Pad":
                while node.input and node.input[-1] == "":
                    node.input.pop()
    if record:
        onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                            **record})
    onnx.save(model, str(path))


def export_onnx(model: nn.Module, layers: Sequence[int], input_hw: tuple[int, int], outputs: str,
                path: Path, record: dict[str, str] | None = None) -> Path:
    """Export ``model``'s stages (and more, see :class:`_StagesGraph`) to ``path`` with a
    dynamic batch axis, ``record`` (:func:`export_record`) in its metadata.

    Uses torch's TorchScript-based exporter on :func:`static_same_padding`'s copy of the model:
    it exports in well under a second, where the ``torch.export``-based one takes 5-12 s, and
    ONNX Runtime runs both graphs at the same speed (both fold every pad and batch norm into
    the convolutions). The ``torch.export``-based exporter is the fallback where it fails; its
    graphs are opset 18, the lowest it implements (asked for 17 it fails to convert the ``Pad``
    nodes and writes 18 anyway), the TorchScript one's 17: the same function either way. The
    file is written beside ``path`` and renamed into place (no half-written cache), its sha256
    recorded beside it (:func:`check_graph`).
    """
    graph = _StagesGraph(static_same_padding(model, input_hw), layers, outputs).eval()
    names = list(graph_outputs(len(layers), outputs))
    x = torch.zeros(2, 3, *input_hw)
    log.info("exporting the backbone to ONNX (once per backbone, weights, stages and input size)")
    tidy_cache_folder(path.parent)
    with replacing(path) as tmp, _quiet_exporter(), torch.no_grad():
        try:
            torch.onnx.export(
                graph, (x,), str(tmp), dynamo=False, opset_version=17, input_names=["images"],
                output_names=names, dynamic_axes={n: {0: "batch"} for n in ["images", *names]},
            )
            _finish_graph(Path(tmp), record, drop_pad_inputs=True)
        except Exception as exc:
            log.info("TorchScript-based ONNX export failed (%s: %s); trying torch.export",
                     type(exc).__name__, first_line(exc))
            torch.onnx.export(
                graph, (x,), str(tmp), dynamo=True, external_data=False, verbose=False,
                input_names=["images"], output_names=names,
                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
            )
            _finish_graph(Path(tmp), record, drop_pad_inputs=False)
        _record_checksum(path, Path(tmp))
    log.info("exported backbone graph to %s", path)
    return path


def calibration_digest(images: np.ndarray) -> str:
    """Hash of the calibration batch an int8 graph was made from (part of its file name)."""
    return hashlib.sha256(np.ascontiguousarray(images, np.float32).tobytes()).hexdigest()[:12]


INT8_FORMAT = 1  # bump when quantize_int8's settings (format, types, ranges) change


def int8_key(images: np.ndarray) -> str:
    """What an int8 graph is made from: the digest of its calibration ``images``,
    :data:`INT8_FORMAT` and the onnxruntime version whose quantiser makes it. Part of the
    graph's file name and of the feature cache keys at int8, so that neither serves a graph
    another quantiser made."""
    import onnxruntime  # int8 runs on onnxruntime only: it is installed (require_runtime)

    desc = {"images": calibration_digest(images), "format": INT8_FORMAT,
            "onnxruntime": onnxruntime.__version__}
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:12]


def quantize_int8(src: Path, images: np.ndarray, dst: Path, batch: int = 8,
                  source: str = "training images") -> Path:
    """Static int8 quantisation of the f32 graph ``src`` (QDQ, per-channel int8 weights,
    uint8 activations, min-max ranges) calibrated on ``images`` (B, 3, H, W), normalised
    as for the backbone; written beside ``dst`` and renamed into place, its sha256 recorded
    beside it (:func:`check_graph`). ``source`` says what the images are (logged)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._batches = iter([images[i:i + batch] for i in range(0, len(images), batch)])

        def get_next(self):
            x = next(self._batches, None)
            return None if x is None else {"images": np.ascontiguousarray(x, np.float32)}

    dst.parent.mkdir(parents=True, exist_ok=True)
    log.info("quantising the backbone to int8 (calibrated on %d %s)", len(images), source)
    tidy_cache_folder(dst.parent)
    # a locked work folder: the next run removes one that a run killed here left (tens of MB)
    with work_folder(dst) as tmp, _quiet_exporter():
        pre = tmp / "pre.onnx"
        out = tmp / "int8.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=True)
        _record_checksum(dst, out)
        os.replace(out, dst)
    return dst


#: :func:`quantize_int8`'s work folders of earlier versions (``tempfile``'s names, not locked),
#: and what they held
_OLD_QUANTISING = re.compile(r"tmp[a-z0-9_]{8}")
_OLD_QUANTISING_FILES = re.compile(r"(pre|int8)\.onnx(\.data)?")


def tidy_cache_folder(folder: Path | str) -> None:
    """Remove from the ONNX cache ``folder`` what killed runs left: the temporary files of
    unfinished exports (:func:`remove_stale_temp_files`) and :func:`quantize_int8`'s work
    folders no live run holds (and an earlier version's unlocked ones, ``tmpXXXXXXXX`` holding
    only its ``pre.onnx`` / ``int8.onnx``, once older than :data:`STALE_TEMP_AFTER_S`)."""
    remove_stale_temp_files(folder)
    remove_stale_folders(folder, WORK_FOLDERS)
    try:
        old = [p for p in Path(folder).iterdir() if _OLD_QUANTISING.fullmatch(p.name)]
    except OSError:
        return
    for path in old:
        try:
            if (path.is_symlink() or not path.is_dir()
                    or time.time() - path.stat().st_mtime < STALE_TEMP_AFTER_S
                    or not all(_OLD_QUANTISING_FILES.fullmatch(f.name) for f in path.iterdir())):
                continue
            shutil.rmtree(path)
            log.info("%s: removed the int8 work folder %s left by a killed run", folder, path.name)
        except OSError:
            continue


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's progress prints, info logs and warnings (not its errors)."""
    names = ("torch.onnx", "onnx_ir", "onnxscript", "torch.export", "torch._dynamo")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def micro_batch(height: int, width: int) -> int:
    """Images per runtime call for inputs of this size (:data:`MICRO_BATCH_PIXELS`)."""
    return max(1, -(-MICRO_BATCH_PIXELS // (height * width)))


class OnnxRunner:
    """An exported backbone graph run by ONNX Runtime or OpenVINO on the CPU.

    It runs on torch's intra-op threads (``torch.get_num_threads()``). A batch runs in
    slices of :func:`micro_batch` images; the outputs are the same as in one call.
    ``runs_precision``: the precision that runs, as the compiled model reports it (OpenVINO
    runs f32 where the CPU has no bf16 support, whatever was asked).
    """

    def __init__(self, path: Path, runtime: str = "onnxruntime", precision: str = "f32"):
        check_runtime(runtime, precision)
        if runtime == "torch":
            raise ValueError("OnnxRunner runs onnxruntime or openvino, not torch")
        self.path = Path(path)
        self.runtime = runtime
        self.precision = precision
        self.threads = torch.get_num_threads()
        self.runs_precision = precision
        if runtime == "onnxruntime":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.log_severity_level = 3
            # No busy-waiting between runs: decoding, embedding and search share these cores.
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self._session = ort.InferenceSession(str(self.path), opts,
                                                 providers=["CPUExecutionProvider"])
            self._input = self._session.get_inputs()[0].name
        else:
            require_runtime("openvino")
            ov = load_openvino()

            core = ov.Core()
            config = {"INFERENCE_NUM_THREADS": self.threads,
                      "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                      "PERFORMANCE_HINT": "LATENCY"}
            self._compiled = core.compile_model(core.read_model(str(self.path)), "CPU", config)
            self._request = self._compiled.create_infer_request()
            self.runs_precision = openvino_precision(self._compiled, precision)

    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        """Outputs for a (B, 3, H, W) float32 batch, in export order."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        step = micro_batch(*images.shape[-2:])
        if len(images) <= step:
            return self._run(images)
        parts = [self._run(images[i:i + step]) for i in range(0, len(images), step)]
        return [np.concatenate(outs) for outs in zip(*parts, strict=True)]

    def _run(self, images: np.ndarray) -> list[np.ndarray]:
        if self.runtime == "onnxruntime":
            return self._session.run(None, {self._input: images})
        self._request.infer({0: images})
        return [np.array(self._request.get_output_tensor(i).data, dtype=np.float32)
                for i in range(len(self._compiled.outputs))]


def openvino_precision(compiled, asked: str) -> str:
    """The precision an OpenVINO compiled model runs at (its ``INFERENCE_PRECISION_HINT`` read
    back: bf16 falls back to f32 on a CPU without bf16 support); ``asked`` where the property
    cannot be read."""
    try:
        value = compiled.get_property("INFERENCE_PRECISION_HINT")
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises its own types
        log.debug("OpenVINO: INFERENCE_PRECISION_HINT not readable (%s)", first_line(exc))
        return asked
    name = str(getattr(value, "type_name", None) or value).lower()
    return {"bf16": "bf16", "bfloat16": "bf16", "f32": "f32", "float32": "f32",
            "f16": "f16", "float16": "f16"}.get(name, name)
