"""A saved model or bundle whose checksums.json was removed is refused where its model.json was
written by a version that always saves one (before, it loaded with "saved by an older version"
and no integrity check at all); a saved model's damaged graph is refused, never exported again
into its folder; a loaded bf16 model on a CPU that OpenVINO runs at f32 says what to do with a
model (screen has no --precision)."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from anomaly_inspect.cli import main
from anomaly_inspect.features.backbone import SavedGraphError
from anomaly_inspect.screening import ModelFormatError, load_model
from anomaly_inspect.screening.deploy import export_model
from anomaly_inspect.screening.model_dir import (
    BACKBONE_DIR,
    CHECKSUMS_JSON,
    MODEL_JSON,
    SAVED_WITH_CHECKSUMS_KEY,
)
from layout_writer import fit_tiny_model, rgb_image, small_config, write_image


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("integrity")
    model, model_dir = fit_tiny_model(root)
    return root, model, model_dir


def _without_checksums(src, dst, older: bool = False):
    """A copy of ``src`` without its checksum list; ``older``: as a model saved before
    checksums existed (its model.json without the key every later save writes)."""
    shutil.copytree(src, dst)
    (dst / CHECKSUMS_JSON).unlink()
    if older:
        info = json.loads((dst / MODEL_JSON).read_text())
        del info[SAVED_WITH_CHECKSUMS_KEY]
        (dst / MODEL_JSON).write_text(json.dumps(info))
    return dst


def test_every_save_writes_the_key_that_says_it_has_checksums(tiny):
    _, _, model_dir = tiny
    info = json.loads((model_dir / MODEL_JSON).read_text())
    assert SAVED_WITH_CHECKSUMS_KEY in info and (model_dir / CHECKSUMS_JSON).is_file()


def test_the_backbone_finds_a_saved_models_graphs_under_the_model_folders_names(tiny, tmp_path):
    from anomaly_inspect.features import backbone

    _, model, model_dir = tiny
    assert (backbone.SAVED_MODEL_JSON, backbone.SAVED_GRAPHS_DIR) == (MODEL_JSON, BACKBONE_DIR)
    assert load_model(model_dir).extractor.backbone.loaded
    assert not model.extractor.backbone.loaded  # fitted: its graphs lie in the user cache
    assert not backbone.saved_model_graphs(tmp_path)


def test_a_model_or_bundle_whose_checksums_were_removed_is_refused(tiny, tmp_path, capsys):
    root, _, model_dir = tiny
    export_model(model_dir, tmp_path / "bundle")
    for folder in (_without_checksums(model_dir, tmp_path / "m"),
                   _without_checksums(tmp_path / "bundle", tmp_path / "b")):
        with pytest.raises(ModelFormatError) as info:
            load_model(folder)
        assert str(info.value) == (
            f"{folder / CHECKSUMS_JSON}: missing, but model.json was written by a version that "
            f"saves it with every model, so the files cannot be verified; restore the model "
            f"directory or re-fit")
        assert main(["screen", str(folder), str(root / "train"), "--out",
                     str(tmp_path / f"o-{folder.name}"), "--quiet"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{folder / CHECKSUMS_JSON}: missing" in err
        with pytest.raises(ModelFormatError, match="checksums.json: missing"):
            export_model(folder, tmp_path / f"x-{folder.name}")


def test_a_model_saved_before_checksums_still_loads_with_a_warning(tiny, tmp_path, caplog):
    root, model, model_dir = tiny
    old = _without_checksums(model_dir, tmp_path / "old", older=True)
    with caplog.at_level(logging.WARNING):
        loaded = load_model(old)
    assert "saved by an older version): file integrity not verified" in caplog.text
    assert loaded.threshold == model.threshold
    probe = [root / "train" / "0.png"]
    assert loaded.score(probe)[0].score == pytest.approx(model.score(probe)[0].score, rel=1e-5)


def test_a_saved_models_unreadable_graph_is_refused_not_exported_into_its_folder(
        tiny, tmp_path, capsys):
    root, _, model_dir = tiny
    old = _without_checksums(model_dir, tmp_path / "old", older=True)  # nothing verifies it
    (graph,) = (old / BACKBONE_DIR).glob("*.onnx")
    graph.write_bytes(graph.read_bytes()[:1000])  # truncated
    before = {p.name: p.read_bytes() for p in (old / BACKBONE_DIR).iterdir()}
    with pytest.raises(SavedGraphError) as info:
        load_model(old).score([root / "train" / "0.png"])
    assert str(info.value).startswith(f"{graph}: unreadable backbone graph of a saved model (")
    assert str(info.value).endswith("it is not exported again into the model's folder: restore "
                                    "the model directory or re-fit")
    assert main(["screen", str(old), str(root / "train"), "--out", str(tmp_path / "o"),
                 "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{graph}: unreadable backbone graph" in err
    assert {p.name: p.read_bytes() for p in (old / BACKBONE_DIR).iterdir()} == before


def test_a_graph_exported_into_a_saved_models_folder_then_damaged_is_refused(tiny, tmp_path):
    """A graph with its own checksum beside it (exported there after the save) that no longer
    matches it: damaged, refused as well."""
    from anomaly_inspect.features.runtime import checksum_path
    from anomaly_inspect.files import file_sha256

    root, _, model_dir = tiny
    m = tmp_path / "m"
    shutil.copytree(model_dir, m)
    (graph,) = (m / BACKBONE_DIR).glob("*.onnx")
    checksum_path(graph).write_text(file_sha256(graph))
    data = bytearray(graph.read_bytes())
    data[len(data) // 2:len(data) // 2 + 400] = bytes(400)  # same size: the list's size check passes
    graph.write_bytes(bytes(data))
    listed = json.loads((m / CHECKSUMS_JSON).read_text())
    del listed["files"][f"{BACKBONE_DIR}/{graph.name}"]  # not the model's own graph: unlisted
    (m / CHECKSUMS_JSON).write_text(json.dumps(listed))
    with pytest.raises(SavedGraphError, match=rf"^{graph}: damaged backbone graph of a saved "
                                              rf"model \(changed since it was written"):
        load_model(m).score([root / "train" / "0.png"])


def test_a_loaded_bf16_model_on_a_cpu_running_f32_says_what_to_do_with_a_model(
        tmp_path, monkeypatch, capsys):
    pytest.importorskip("openvino")
    from anomaly_inspect.features import runtime
    from anomaly_inspect.features.runtime import PrecisionError
    from anomaly_inspect.screening import fit

    for i in range(6):
        write_image(tmp_path / "train" / f"{i}.png", rgb_image(48, seed=i))
    cfg = small_config(runtime="openvino", precision="bf16")
    # as on a CPU without bf16: OpenVINO reads back f32 as the precision it runs
    monkeypatch.setattr(runtime, "openvino_precision", lambda compiled, asked: "f32")
    with pytest.raises(PrecisionError) as fitting:
        fit([tmp_path / "train"], cfg, calibration_fraction=0.34, progress=False)
    assert str(fitting.value).endswith("instead: use --precision f32, or a CPU that runs bf16")
    monkeypatch.undo()
    if not _runs_bf16():
        pytest.skip("this CPU does not run OpenVINO bf16: no bf16 model to load")
    saved = fit([tmp_path / "train"], cfg, calibration_fraction=0.34,
                progress=False).save(tmp_path / "model")
    monkeypatch.setattr(runtime, "openvino_precision", lambda compiled, asked: "f32")
    assert main(["screen", str(saved), str(tmp_path / "train"), "--out", str(tmp_path / "o"),
                 "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "use --precision" not in err
    assert err.rstrip().endswith("precision bf16: openvino runs f32 on this CPU, not bf16; the "
                                 "backbone is not run at another precision instead: this model "
                                 "was fitted at bf16: use it on a CPU that runs bf16, or fit it "
                                 "again with --precision f32")


def _runs_bf16() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
