"""Offline weight resolution: bundled Lite wheels mapped by position, files, random, clear errors."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from anomaly_inspect.features.backbone import Backbone, StaleCardError, UnknownBackboneError
from anomaly_inspect.features.weights import (
    BUNDLED_WEIGHTS,
    WeightsUnavailableError,
    bundled_weights_path,
    map_state_dict_by_position,
)

LITES = sorted(BUNDLED_WEIGHTS)  # tf_efficientnet_lite0, lite1, lite2
CAT_CLASSES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def chelsea():
    if os.environ.get("CI"):  # CI installs scikit-image (the dev extra): it fails there without
        from skimage import data
    else:
        data = pytest.importorskip("skimage.data")
    from PIL import Image

    return Image.fromarray(data.chelsea())  # a real photo of a cat


@pytest.mark.parametrize("name", LITES)
def test_bundled_mapping_matches_every_shape(name):
    import timm

    path = bundled_weights_path(name)
    assert path is not None and path.is_file(), f"weight wheel for {name} not installed"
    model = timm.create_model(name, pretrained=False)
    source = torch.load(path, map_location="cpu", weights_only=True)
    mapped = map_state_dict_by_position(model, source, str(path))
    target = model.state_dict()
    assert list(mapped) == list(target)
    assert all(mapped[k].shape == target[k].shape for k in target)
    # Mapped by position: the values are the wheel's tensors, in the wheel's order.
    for (_, src), (_, dst) in zip(source.items(), mapped.items(), strict=True):
        assert src is dst


@pytest.mark.parametrize("name", LITES)
def test_bundled_model_classifies_chelsea_as_cat(name, chelsea):
    from timm.data import create_transform, resolve_data_config

    bb = Backbone(name)
    assert bb.weight_source.kind == "bundled"
    cfg = resolve_data_config({}, model=bb.model)  # the model's own pretrained_cfg
    assert cfg["mean"] == pytest.approx((0.5, 0.5, 0.5)) and cfg["std"] == pytest.approx((0.5, 0.5, 0.5))
    assert bb.mean == tuple(cfg["mean"]) and bb.std == tuple(cfg["std"])
    x = create_transform(**cfg)(chelsea).unsqueeze(0)
    probs = bb.classify(x).softmax(dim=1)[0]
    top = int(probs.argmax())
    assert top in CAT_CLASSES, f"{name}: top-1 class {top}"
    assert float(probs[list(CAT_CLASSES)].sum()) > 0.5


def test_random_weights_only_when_asked():
    bb = Backbone("tf_efficientnet_lite0", weights="random", seed=3)
    assert bb.weight_source.kind == "random"
    assert bb.weight_source.checksum != Backbone("tf_efficientnet_lite0").weight_source.checksum
    feats = bb(torch.zeros(1, 3, 64, 64))
    assert bb.strides == [8, 16]
    assert [f.shape[1] for f in feats] == bb.channels and [f.shape[-1] for f in feats] == [8, 4]
    again = Backbone("tf_efficientnet_lite0", weights="random", seed=3)
    assert again.weight_source.checksum == bb.weight_source.checksum  # seeded


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(UnknownBackboneError, match="unknown backbone 'efficientnet_lite_zero'"):
        Backbone("efficientnet_lite_zero")


def test_no_offline_weights_names_the_options(tmp_path, monkeypatch):
    from huggingface_hub import constants

    # An empty HF and torch.hub cache: resnet18 has no bundled wheel and nothing cached.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(WeightsUnavailableError) as info:
        Backbone("resnet18")
    msg = str(info.value)
    assert "'resnet18'" in msg
    for option in ("weights=FILE", "weights='random'", "tf_efficientnet_lite0", "cache"):
        assert option in msg
    from anomaly_inspect.cli import with_flag_hints  # the command line names its flags instead

    assert "--weights FILE" in with_flag_hints(msg) and "--weights random" in with_flag_hints(msg)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_user_checkpoint_file_loads(tmp_path, suffix):
    ref = Backbone("tf_efficientnet_lite0", weights="random", seed=7)
    path = tmp_path / f"mine{suffix}"
    state = {k: v.contiguous() for k, v in ref.model.state_dict().items()}
    if suffix == ".pth":
        torch.save({"state_dict": state}, path)  # wrapped, as many training scripts save it
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    bb = Backbone("tf_efficientnet_lite0", weights=path)
    assert bb.weight_source.kind == "file" and bb.weight_source.location == str(path.resolve())
    assert bb.weight_source.checksum == ref.weight_source.checksum
    x = torch.randn(2, 3, 64, 64)
    for a, b in zip(ref(x), bb(x), strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)


def test_wheel_file_given_explicitly_is_mapped_by_position():
    path = bundled_weights_path("tf_efficientnet_lite0")
    explicit = Backbone("tf_efficientnet_lite0", weights=path)
    assert explicit.weight_source.kind == "file"
    assert explicit.weight_source.checksum == Backbone("tf_efficientnet_lite0").weight_source.checksum


def test_bad_checkpoint_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "absent.pth")):
        Backbone("tf_efficientnet_lite0", weights=tmp_path / "absent.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailableError, match=f"{junk}: not a readable torch checkpoint"):
        Backbone("tf_efficientnet_lite0", weights=junk)
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsUnavailableError, match=f"{damaged}: not a readable safetensors file"):
        Backbone("tf_efficientnet_lite0", weights=damaged)
    with pytest.raises(WeightsUnavailableError, match=f"{tmp_path}: is a folder"):
        Backbone("tf_efficientnet_lite0", weights=tmp_path)
    # Weights of another architecture: refused, never silently partially loaded.
    with pytest.raises(WeightsUnavailableError, match="lite2"):
        Backbone("tf_efficientnet_lite0", weights=bundled_weights_path("tf_efficientnet_lite2"))


CARD_RUN = """
import json, sys
import torch
from anomaly_inspect.features.backbone import Backbone
bb = Backbone("tf_efficientnet_lite0")
x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
out = bb(x)
timm_loaded = "timm" in sys.modules
built = bb.model.training is False and "timm" in sys.modules  # built on first use
print(json.dumps({"timm": timm_loaded, "built": built, "checksum": bb.weight_source.checksum,
                  "layers": bb.layers, "mean": bb.mean, "sums": [float(o.double().sum()) for o in out],
                  "torch": [float(o.double().sum()) for o in bb.torch_forward(x)]}))
"""


def test_a_cached_card_spares_timm_and_changes_nothing(tmp_path):
    """The second process runs the backbone from its cached export and card without importing
    timm (or torchvision); the same checksum, stages, normalisation and outputs; the model is
    built on first use with the same weights."""
    from pathlib import Path

    src = str(Path(__file__).resolve().parents[1] / "inspect")
    env = {**os.environ, "PYTHONPATH": src, "ANOMALY_INSPECT_CACHE": str(tmp_path)}
    runs = [json.loads(subprocess.run([sys.executable, "-c", CARD_RUN], env=env, check=True,
                                      capture_output=True, text=True).stdout.splitlines()[-1])
            for _ in range(2)]
    assert runs[0]["timm"] and not runs[1]["timm"] and runs[1]["built"]
    assert len(list((tmp_path / "onnx").glob("*.card.json"))) == 1
    for key in ("checksum", "layers", "mean", "sums", "torch"):
        assert runs[0][key] == runs[1][key], key
    np.testing.assert_allclose(runs[1]["sums"], runs[1]["torch"], rtol=1e-4)


def test_a_card_that_does_not_match_the_weights_is_refused(tmp_path, monkeypatch):
    """A stale card is never used silently: building the model (here through the torch
    fallback an export failure would take, and directly) raises and removes the card; an
    unreadable or incomplete card is rebuilt."""
    monkeypatch.setenv("ANOMALY_INSPECT_CACHE", str(tmp_path))
    ref = Backbone("tf_efficientnet_lite0")
    (card,) = (tmp_path / "onnx").glob("*.card.json")
    doc = json.loads(card.read_text())
    assert doc["source"]["checksum"] == ref.weight_source.checksum
    stale_doc = {**doc, "source": {**doc["source"], "checksum": "0" * 64}}
    card.write_text(json.dumps(stale_doc))
    stale = Backbone("tf_efficientnet_lite0", runtime="torch")
    assert stale.weight_source.checksum == "0" * 64  # read from the card, model not built yet
    with pytest.raises(StaleCardError, match="do not match the cached card"):
        stale(torch.rand(1, 3, 32, 32))
    assert not card.exists()
    with pytest.raises(StaleCardError):  # and again: never built past the check
        stale.model  # noqa: B018
    assert Backbone("tf_efficientnet_lite0").weight_source.checksum == ref.weight_source.checksum
    for broken in ("{not json", json.dumps({**doc, "feature_info": [{"num_chs": 16}]}),
                   json.dumps({**doc, "source": {"kind": "bundled"}})):
        card.write_text(broken)
        assert Backbone("tf_efficientnet_lite0").weight_source.checksum == ref.weight_source.checksum
        assert json.loads(card.read_text())["source"]["checksum"] == ref.weight_source.checksum
    assert not list((tmp_path / "onnx").glob("*.tmp"))


def test_a_stale_card_is_not_taken_for_an_export_failure(tmp_path, monkeypatch, caplog):
    """With an ONNX runtime, the export builds the model: a stale card must stop the run, not
    fall back to torch under the card's checksum."""
    monkeypatch.setenv("ANOMALY_INSPECT_CACHE", str(tmp_path))
    Backbone("tf_efficientnet_lite0")
    (card,) = (tmp_path / "onnx").glob("*.card.json")
    doc = json.loads(card.read_text())
    card.write_text(json.dumps({**doc, "source": {**doc["source"], "checksum": "0" * 64}}))
    stale = Backbone("tf_efficientnet_lite0", runtime="onnxruntime")
    with pytest.raises(StaleCardError, match="do not match the cached card"):
        stale(torch.rand(1, 3, 32, 32))
    assert "running the backbone in torch" not in caplog.text


def test_a_model_first_built_in_inference_mode_still_takes_gradients(tmp_path, monkeypatch):
    monkeypatch.setenv("ANOMALY_INSPECT_CACHE", str(tmp_path))
    Backbone("tf_efficientnet_lite0")  # writes the card
    bb = Backbone("tf_efficientnet_lite0", runtime="torch")
    with torch.inference_mode():
        bb(torch.rand(1, 3, 32, 32))  # builds the model here
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    bb.model(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_no_card_is_written_when_the_weights_file_changes_while_read(tmp_path, monkeypatch):
    import anomaly_inspect.features.backbone as B

    monkeypatch.setenv("ANOMALY_INSPECT_CACHE", str(tmp_path))
    keys = iter(["before", "after"])
    monkeypatch.setattr(B, "card_path", lambda name, file, explicit: tmp_path / f"{next(keys)}.card.json")
    bb = Backbone("tf_efficientnet_lite0")
    assert bb.weight_source.kind == "bundled" and not list(tmp_path.glob("*.card.json"))


def _fake_timm_cache(tmp_path, monkeypatch, state: dict) -> Path:
    """An HF cache holding ``state`` as timm's resnet18 weights (and an empty torch.hub)."""
    from huggingface_hub import constants
    from safetensors.torch import save_file

    repo = tmp_path / "hf" / "models--timm--resnet18.a1_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc")
    path = repo / "snapshots" / "abc" / "model.safetensors"
    path.parent.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return path


def _resnet18_state(seed: int) -> dict:
    import timm

    torch.manual_seed(seed)
    return timm.create_model("resnet18", pretrained=False).state_dict()


def test_timm_cache_weights_that_do_not_fit_are_refused_naming_the_file(tmp_path, monkeypatch):
    state = _resnet18_state(5)
    path = _fake_timm_cache(tmp_path, monkeypatch, {f"encoder.{k}": v for k, v in state.items()})
    with pytest.raises(WeightsUnavailableError) as info:
        Backbone("resnet18", runtime="torch")
    msg = str(info.value)
    assert msg.startswith(f"{path}: does not fit the model: ") and "weights would stay random" in msg
    assert "'bn1.bias' missing from the file" in msg  # the first of the sorted names
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsUnavailableError, match=f"{path}: timm's cached weights for this "
                                                      "model cannot be read"):
        Backbone("resnet18", runtime="torch")


def test_timm_cache_weights_load_with_only_the_classifier_left_out(tmp_path, monkeypatch):
    state = _resnet18_state(5)
    _fake_timm_cache(tmp_path, monkeypatch, {k: v for k, v in state.items() if not k.startswith("fc.")})
    bb = Backbone("resnet18", runtime="torch")
    assert bb.weight_source.kind == "timm-cache"
    loaded = bb.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if not k.startswith("fc."))
    # one tensor too many that is not the classifier's: refused
    _fake_timm_cache(tmp_path / "2", monkeypatch, {**state, "extra.weight": torch.ones(2)})
    with pytest.raises(WeightsUnavailableError, match="'extra.weight' unexpected in the file"):
        Backbone("resnet18", runtime="torch")
    # a tensor of the wrong shape: refused too
    bad = {**state, "conv1.weight": torch.ones(3, 3)}
    _fake_timm_cache(tmp_path / "3", monkeypatch, bad)
    with pytest.raises(WeightsUnavailableError,
                       match=r"does not fit the model: 'conv1.weight' has shape \(3, 3\), the "
                             r"model's \(64, 3, 7, 7\)"):
        Backbone("resnet18", runtime="torch")


# Explicit checkpoint files: a fine-tuned or missing classifier head is tolerated (it never feeds
# the features), anything else that does not fit is refused; a pickled module is a one-line error.
NAME = "tf_efficientnet_lite0"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """The full state dict of a seeded random lite0, and the same with a 2-class (fine-tuned)
    head and with no head, each saved as a .pth."""
    folder = tmp_path_factory.mktemp("heads")
    state = Backbone(NAME, weights="random", seed=7, runtime="torch").model.state_dict()
    body = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    files = {"full": state, "headless": body,
             "finetuned": {**body, "classifier.weight": torch.zeros(2, 1280),
                           "classifier.bias": torch.zeros(2)}}
    for kind, sd in files.items():
        torch.save(sd, folder / f"{kind}.pth")
    return folder


@pytest.mark.parametrize("kind", ["finetuned", "headless"])
def test_a_checkpoint_of_another_or_no_head_loads_the_same_features(checkpoints, kind, caplog):
    full = Backbone(NAME, weights=checkpoints / "full.pth", runtime="torch")
    with caplog.at_level(logging.INFO, logger="anomaly_inspect.features.weights"):
        bb = Backbone(NAME, weights=checkpoints / f"{kind}.pth", runtime="torch")
    notes = [r.getMessage() for r in caplog.records if "classifier head" in r.getMessage()]
    assert len(notes) == 1 and notes[0].startswith(f"{checkpoints / f'{kind}.pth'}: ")
    assert "not loaded" in notes[0]
    assert bb.weight_source.kind == "file"
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    for a, b in zip(full(x), bb(x), strict=True):
        assert torch.equal(a, b)
    # the checksum hashes what was loaded: not the head left at its random init, so neither
    # the seed (which draws that init) nor the file's head changes it; the full file's differs
    other_seed = Backbone(NAME, weights=checkpoints / f"{kind}.pth", runtime="torch", seed=3)
    assert other_seed.model is not None  # built from the card: its checksum must match
    assert other_seed.weight_source.checksum == bb.weight_source.checksum
    assert bb.weight_source.checksum != full.weight_source.checksum


def test_the_fine_tuned_and_the_headless_checkpoint_have_one_checksum(checkpoints):
    sums = {Backbone(NAME, weights=checkpoints / f"{k}.pth", runtime="torch").weight_source.checksum
            for k in ("finetuned", "headless")}
    assert len(sums) == 1


def test_a_named_checkpoint_missing_a_feature_tensor_is_refused(tmp_path, checkpoints):
    state = torch.load(checkpoints / "full.pth", weights_only=True)
    path = tmp_path / "partial.pth"
    torch.save({k: v for k, v in state.items() if k != "conv_stem.weight"}, path)
    with pytest.raises(WeightsUnavailableError,
                       match=f"{path}: does not fit the model: 1 tensors missing or unexpected "
                             r"\(e.g. 'conv_stem.weight' missing from the file\)"):
        Backbone(NAME, weights=path, runtime="torch")
    torch.save({**state, "conv_stem.weight": torch.ones(3, 3)}, path)
    with pytest.raises(WeightsUnavailableError,
                       match=r"does not fit the model: 'conv_stem.weight' has shape \(3, 3\)"):
        Backbone(NAME, weights=path, runtime="torch")


def test_a_pickled_module_is_a_one_line_error(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(WeightsUnavailableError) as info:
        Backbone(NAME, weights=path, runtime="torch")
    assert str(info.value) == (f"{path}: holds a pickled object, not a state dict; save "
                               f"model.state_dict()")
