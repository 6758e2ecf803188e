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


def _model(root, runtime: str, precision: str = "f32"):
    for i in range(8):
        write_image(root / "train" / f"{i}.png", rgb_image(48, seed=i))
    cfg = ModelConfig()
    cfg.backbone.weights = "random"
    cfg.backbone.runtime = runtime
    cfg.backbone.precision = precision
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
    assert main(["export", str(model_dir), "--out", str(tmp_path / "ov"), "--quiet"]) == 0
    manifest = json.loads((tmp_path / "ov" / "manifest.json").read_text())
    (graph,) = manifest["backbone"]["graphs"]
    assert manifest["format"] == manifest["runtime"] == "openvino"  # the model's format by default
    assert graph["openvino"]["max_rel_diff_vs_onnx"] < 1e-5
    xml = tmp_path / "ov" / graph["openvino"]["xml"]
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype(np.float32)
    ir = [np.asarray(compiled(x)[o]) for o in compiled.outputs]
    assert [a.shape for a in ir] == [(2, *o["shape"][1:]) for o in graph["outputs"]]
    from anomaly_inspect.features.runtime import OnnxRunner

    ort = OnnxRunner(tmp_path / "ov" / graph["onnx"], "onnxruntime")(x)  # another runtime
    assert max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(ir, ort, strict=True)) < 1e-4
    tests = [write_image(tmp_path / "t.png", rgb_image(48, seed=7))]
    assert load_model(tmp_path / "ov").score(tests)[0].score == load_model(model_dir).score(tests)[0].score


def test_a_bundle_copies_only_the_model_and_never_lands_inside_it(onnx_model, tmp_path):
    _, model_dir = onnx_model
    (model_dir / "notes.txt").write_text("a user's file")
    (model_dir / "backbone" / "stray.onnx").write_bytes(b"")  # not the model's: not listed
    try:
        manifest = export_model(model_dir, tmp_path / "b")
        assert manifest["format"] == "onnx"  # the model's own runtime's format by default
        assert not (tmp_path / "b" / "notes.txt").exists()
        assert not (tmp_path / "b" / "backbone" / "stray.onnx").exists()
        for inside in (model_dir, model_dir / "bundle"):
            with pytest.raises(ValueError, match="outside the model directory"):
                export_model(model_dir, inside, overwrite=True)
        assert not (model_dir / "bundle").exists() and load_model(model_dir) is not None
        export_model(tmp_path / "b", tmp_path / "b2")  # a bundle exports like a model
        assert json.loads((tmp_path / "b2" / "manifest.json").read_text())["source_model"] == str(tmp_path / "b")
        with pytest.raises(FileExistsError):
            export_model(model_dir, tmp_path / "b")
        export_model(model_dir, tmp_path / "b", overwrite=True)  # replaces a bundle
        assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    finally:
        (model_dir / "notes.txt").unlink()
        (model_dir / "backbone" / "stray.onnx").unlink()


def test_export_refuses_backbone_options_with_a_model_and_names_a_missing_one(onnx_model, tmp_path,
                                                                             capsys):
    _, model_dir = onnx_model
    assert main(["export", str(model_dir), "--out", str(tmp_path / "b"), "--runtime", "torch",
                 "--pooled"]) == 1
    assert "--pooled --runtime: not used with MODEL_DIR" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nope"), "--out", str(tmp_path / "b")]) == 1
    assert str(tmp_path / "nope") in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_an_int8_bundle_says_which_graph_runs(tmp_path):
    model_dir = _model(tmp_path, "onnxruntime", precision="int8")
    manifest = export_model(model_dir, tmp_path / "b")
    runs = [g for g in manifest["backbone"]["graphs"] if g["runs"]]
    assert len(manifest["backbone"]["graphs"]) == 2 and len(runs) == 1
    assert runs[0]["precision"] == "int8" and "-int8-" in runs[0]["onnx"]
    assert manifest["backbone"]["graphs"][0] is runs[0] or manifest["backbone"]["graphs"][0] == runs[0]
