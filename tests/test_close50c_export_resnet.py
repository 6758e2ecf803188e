"""A timm backbone outside the bundled EfficientNet-Lite family (ResNet-18, random weights)
exports through the project's ONNX path and agrees with torch as the Lite models do
(issue 14: any timm name is accepted, the export test covered only the three Lite models)."""

from __future__ import annotations

import pytest
import torch

from anomaly_inspect.features.backbone import Backbone
from test_runtime import SIZE, rel_diff


@pytest.mark.slow
def test_resnet18_exports_and_agrees_with_torch():
    torch.manual_seed(1)
    x = torch.randn(3, 3, SIZE, SIZE)
    ref = Backbone("resnet18", weights="random", runtime="torch")
    bb = Backbone("resnet18", weights="random", runtime="onnxruntime")
    (maps, pooled), (rmaps, rpooled) = bb.forward_with_pooled(x), ref.forward_with_pooled(x)
    assert bb.runs_on == "onnxruntime f32" and len(bb.exports) == 1  # exported, no fallback
    assert [m.shape[1] for m in maps] == [128, 256] and pooled.shape == rpooled.shape == (3, 512)
    assert all(rel_diff(a, b) < 1e-4 for a, b in zip([*maps, pooled], [*rmaps, rpooled], strict=True))
