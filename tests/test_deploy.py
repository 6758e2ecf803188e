"""``export MODEL_DIR --format``: the deployment bundle loads and scores like the model, carries
its manifest and checksums, converts to OpenVINO IR faithfully, and refuses another runtime."""

from __future__ import annotations

import json

import numpy as np
import pytest

from anomaly_inspect.cli import main
from anomaly_inspect.config import ModelConfig
from anomaly_inspect.screening import ModelFormatError, fit, load_model
from anomaly_inspect.screening.deploy import ExportMismatchError, export_model
from layout_writer import rgb_image, write_image


def _model(root, runtime: str):
    for i in range(8):
        write_image(root / "train" / f"{i}.png", rgb_image(48, seed=i))
    cfg = ModelConfig()
    cfg.backbone.weights = "random"
    cfg.backbone.runtime = runtime
    cfg.features.image_size = 64
    model = fit([root / "train"], cfg, calibration_fraction=0.25, progress=False)
    return model.save(root / "model")


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy_onnx")
    return root, _model(root, "onnxruntime")


def test_an_onnx_bundle_scores_like_its_model(onnx_model, tmp_path):
    root, model_dir = onnx_model
    tests = [write_image(tmp_path / f"t{i}.png", rgb_image(48, seed=100 + i)) for i in range(3)]
    manifest = export_model(model_dir, tmp_path / "bundle", "onnx")
    bundle = tmp_path / "bundle"
    on_disk = json.loads((bundle / "manifest.json").read_text())
    assert on_disk == manifest and manifest["format"] == "onnx"
    (graph,) = manifest["backbone"]["graphs"]
    assert (bundle / graph["onnx"]).is_file() and graph["input"]["shape"] == [None, 3, 64, 64]
    assert [o["name"] for o in graph["outputs"]] == ["stage0", "stage1"]
    assert manifest["preprocess"]["mean"] == [0.5, 0.5, 0.5]
    assert (bundle / manifest["scorer"]["state"]).is_file()
    listed = json.loads((bundle / "checksums.json").read_text())["files"]
    assert "manifest.json" in listed and graph["onnx"] in listed
    a, b = load_model(model_dir).score(tests), load_model(bundle).score(tests)
    assert [r.score for r in a] == [r.score for r in b]
    assert manifest["threshold"] == pytest.approx(load_model(bundle).threshold)
    (bundle / "manifest.json").write_text("{}")  # the bundle is verified like a model
    with pytest.raises(ModelFormatError, match="manifest.json"):
        load_model(bundle)


def test_export_refuses_another_runtime_and_an_existing_folder(onnx_model, tmp_path, capsys):
    _, model_dir = onnx_model
    with pytest.raises(ExportMismatchError, match="fitted with runtime onnxruntime f32.*--format onnx"):
        export_model(model_dir, tmp_path / "ov", "openvino")
    assert not (tmp_path / "ov").exists()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        export_model(model_dir, tmp_path / "taken", "onnx", overwrite=True)
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
    assert main(["export", str(model_dir), "--format", "openvino", "--out", str(tmp_path / "x")]) == 1
    assert "Re-fit with --runtime openvino" in capsys.readouterr().err
    assert main(["export", "--format", "onnx", "--out", str(tmp_path / "y.onnx")]) == 1
    assert "give its MODEL_DIR" in capsys.readouterr().err


def test_an_openvino_bundle_carries_a_faithful_ir(tmp_path):
    pytest.importorskip("openvino")
    import openvino as ov

    model_dir = _model(tmp_path, "openvino")
    assert main(["export", str(model_dir), "--format", "openvino", "--out", str(tmp_path / "ov"),
                 "--quiet"]) == 0
    manifest = json.loads((tmp_path / "ov" / "manifest.json").read_text())
    (graph,) = manifest["backbone"]["graphs"]
    assert manifest["runtime"] == "openvino" and graph["openvino"]["max_rel_diff_vs_onnx"] < 1e-5
    xml = tmp_path / "ov" / graph["openvino"]["xml"]
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    x = np.zeros((1, 3, 64, 64), np.float32)
    assert [tuple(np.asarray(compiled(x)[o]).shape) for o in compiled.outputs] == [
        (1, *o["shape"][1:]) for o in graph["outputs"]]
    tests = [write_image(tmp_path / "t.png", rgb_image(48, seed=7))]
    assert load_model(tmp_path / "ov").score(tests)[0].score == load_model(model_dir).score(tests)[0].score
