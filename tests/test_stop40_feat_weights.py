"""Explicit checkpoint files: a fine-tuned or missing classifier head is tolerated (it never feeds
the features), anything else that does not fit is refused; a pickled module is a one-line error."""

from __future__ import annotations

import logging

import pytest
import torch

from anomaly_inspect.features.backbone import Backbone
from anomaly_inspect.features.weights import WeightsUnavailableError

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
