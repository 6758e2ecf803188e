"""Backbone runtimes: ONNX exports agree with torch, are cached by key, and fall back to torch."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from anomaly_inspect.choices import DEFAULT_RUNTIME, check_runtime
from anomaly_inspect.cli import main
from anomaly_inspect.config import BackboneConfig, ConfigError, ModelConfig, load_config
from anomaly_inspect.features import backbone
from anomaly_inspect.features import backbone as bbmod
from anomaly_inspect.features import runtime as rt
from anomaly_inspect.features.backbone import Backbone
from anomaly_inspect.features.cache import precision_key
from anomaly_inspect.features.runtime import (
    DamagedGraphError,
    export_key,
    int8_key,
    runtime_available,
)

SIZE = 64  # small inputs keep the export and the runs fast


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def x():
    torch.manual_seed(1)
    return torch.randn(3, 3, SIZE, SIZE)


def random_backbone(runtime: str, cache_dir=None, **kw) -> Backbone:
    """Lite0 with seed-0 random weights; ``cache_dir`` None = the test session's export cache,
    shared with bench-backbone's and the other tests' exports (each export takes seconds)."""
    return Backbone("tf_efficientnet_lite0", weights="random", runtime=runtime,
                    cache_dir=cache_dir, **kw)


def test_onnxruntime_equals_torch_on_random_weights(x):
    ref, ort_bb = random_backbone("torch"), random_backbone("onnxruntime")
    maps, want = ort_bb(x), ref(x)
    assert [m.shape for m in maps] == [m.shape for m in want]
    assert all(rel_diff(a, b) < 1e-4 for a, b in zip(maps, want, strict=True))
    (pm, pooled), (rm, rpooled) = ort_bb.forward_with_pooled(x), ref.forward_with_pooled(x)
    assert pooled.shape == rpooled.shape == (3, 1280)
    assert rel_diff(pooled, rpooled) < 1e-4
    assert all(rel_diff(a, b) < 1e-4 for a, b in zip(pm, rm, strict=True))
    # one export per (input size, pooled?), both in the cache directory
    assert [p.parent for p in ort_bb.exports] == [rt.default_cache_dir()] * 2
    assert ort_bb.runs_on == "onnxruntime f32"


def test_full_graph_gives_the_final_map_for_block_norms_as_torch_does(x):
    ref, bb = random_backbone("torch"), random_backbone("onnxruntime")
    (maps, final, pooled), (rmaps, rfinal, rpooled) = bb.forward_full(x), ref.forward_full(x)
    assert final.shape == rfinal.shape and final.shape[1] == 1280
    assert all(rel_diff(a, b) < 1e-4 for a, b in zip([*maps, final, pooled],
                                                     [*rmaps, rfinal, rpooled], strict=True))
    assert len(bb.exports) == 1 and bb.runs_on == "onnxruntime f32"


def test_batch_axis_is_dynamic(x):
    bb = random_backbone("onnxruntime")
    one, three = bb(x[:1]), bb(x)
    assert one[0].shape[0] == 1 and three[0].shape[0] == 3
    assert rel_diff(one[1][0], three[1][0]) < 1e-5
    assert len(bb.exports) == 1


def test_micro_batch_by_hand():
    assert rt.MICRO_BATCH_PIXELS == 2 * 320 * 320
    assert [rt.micro_batch(s, s) for s in (64, 256, 320, 448, 453, 1024)] == [50, 4, 2, 2, 1, 1]
    assert rt.micro_batch(320, 640) == 1


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_a_batch_runs_in_micro_batches_with_the_same_outputs(x, runtime, monkeypatch):
    if not runtime_available(runtime) and not os.environ.get("CI"):  # CI installs both
        pytest.skip(f"{runtime} not installed")
    bb = random_backbone(runtime)
    runner = rt.OnnxRunner(bb.export((SIZE, SIZE)), runtime)
    images = torch.cat([x, x.flip(0)]).numpy()  # 6 images
    whole = runner(images)
    calls = []
    run = runner._run
    monkeypatch.setattr(runner, "_run", lambda im: calls.append(len(im)) or run(im))
    monkeypatch.setattr(rt, "MICRO_BATCH_PIXELS", 4 * SIZE * SIZE)
    sliced = runner(images)
    assert calls == [4, 2]
    for a, b in zip(sliced, whole, strict=True):
        assert a.shape == b.shape
        assert float(abs(a - b).max()) <= 1e-5 * float(abs(b).max())


def test_cache_hit_does_not_export_again(x, monkeypatch):
    first = random_backbone("onnxruntime")(x)  # exported now or by an earlier test
    assert random_backbone("onnxruntime").export_path((SIZE, SIZE), "stages").is_file()
    calls = []
    monkeypatch.setattr("anomaly_inspect.features.backbone.export_onnx",
                        lambda *a, **k: calls.append(a))
    bb = random_backbone("onnxruntime")  # a new backbone, same key
    again = bb(x)
    bb.release()  # sessions freed; reloaded from the cache on the next batch
    after_release = bb(x)
    assert calls == []
    assert bb.exports and bb.runs_on == "onnxruntime f32"
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(first, after_release, strict=True))


def test_unreadable_cache_entry_is_exported_again(x, tmp_path, caplog):
    bb = random_backbone("onnxruntime", tmp_path)
    path = bb.export_path((SIZE, SIZE), "stages")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not an onnx file")
    with caplog.at_level(logging.WARNING):
        maps = bb(x)
    assert "unreadable cached export" in caplog.text
    assert rel_diff(maps[0], random_backbone("torch")(x)[0]) < 1e-4


def _damage_in_place(path):
    """400 bytes in the middle of ``path`` zeroed: its size kept, and it still reads as a graph."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 400] = bytes(400)
    path.write_bytes(bytes(data))
    assert rt.graph_signature(path) is not None


def _recorded(path) -> bool:
    return rt.checksum_path(path).read_text().strip() == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_cached_export_damaged_in_place_or_without_its_checksum_is_exported_again(
        x, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("ANOMALY_INSPECT_CACHE", str(tmp_path))
    want = random_backbone("torch")(x)
    path = random_backbone("onnxruntime").export((SIZE, SIZE))
    assert path.parent == rt.default_cache_dir() and _recorded(path)
    _damage_in_place(path)
    with caplog.at_level(logging.WARNING):
        bb = random_backbone("onnxruntime")
        maps = bb(x)
    assert (f"{path}: damaged cached export (changed since it was written: its sha256 is not the "
            f"one {path.name}.sha256 records); exporting again") in caplog.text
    assert bb.exports == [path] and bb.runs_on == "onnxruntime f32" and _recorded(path)
    assert all(rel_diff(a, b) < 1e-4 for a, b in zip(maps, want, strict=True))
    # a user-cache entry that records no checksum (an older version's): exported again too
    rt.checksum_path(path).unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        random_backbone("onnxruntime")(x)
    assert f"{path}: damaged cached export (no checksum recorded: {path.name}.sha256 is missing)" \
        in caplog.text
    assert _recorded(path)
    # and what export() hands out (the export command) is checked alike
    _damage_in_place(path)
    assert random_backbone("onnxruntime").export((SIZE, SIZE)) == path and _recorded(path)


def test_a_cached_int8_graph_damaged_in_place_is_quantised_again(x, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("ANOMALY_INSPECT_CACHE", str(tmp_path))
    made = random_backbone("onnxruntime", precision="int8")
    made.calibrate(x.numpy())
    want = made(x)
    f32, int8 = made.exports
    assert int8.parent == rt.default_cache_dir() and _recorded(f32) and _recorded(int8)
    _damage_in_place(int8)
    again = random_backbone("onnxruntime", precision="int8")
    again.calibrate(x.numpy())
    with caplog.at_level(logging.WARNING):
        got = again(x)
    assert f"{int8}: damaged cached int8 graph (changed since it was written" in caplog.text
    assert again.exports == [f32, int8] and _recorded(int8)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


def test_a_cached_graph_is_hashed_once_per_process_not_per_batch(x, tmp_path, monkeypatch):
    path = random_backbone("onnxruntime", tmp_path).export((SIZE, SIZE))
    hashed = []
    real = rt.stream_sha256
    monkeypatch.setattr(rt, "stream_sha256", lambda f: hashed.append(str(f.name)) or real(f))
    bb = random_backbone("onnxruntime", tmp_path)
    bb(x), bb(x[:1])
    bb.release()  # the session is loaded again, the file is not hashed again
    bb(x)
    random_backbone("onnxruntime", tmp_path)(x)
    assert hashed == [str(path)]


def test_cache_key_changes_with_what_the_graph_depends_on():
    base = dict(name="tf_efficientnet_lite0", weights_checksum="abc", layers=[2, 3],
                input_hw=(320, 320), outputs="stages")
    key = export_key(**base)
    assert export_key(**base) == key
    for change in ({"layers": [1, 2]}, {"input_hw": (256, 256)}, {"outputs": "pooled"},
                   {"outputs": "full"},
                   {"weights_checksum": "abd"}, {"name": "tf_efficientnet_lite2"}):
        assert export_key(**{**base, **change}) != key, change


def test_export_path_follows_cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("ANOMALY_INSPECT_CACHE", str(tmp_path / "c"))
    bb = random_backbone("onnxruntime")
    assert bb.export_path((64, 64), "stages").parent == tmp_path / "c" / "onnx"
    assert random_backbone("onnxruntime", tmp_path / "m").export_path((64, 64), "stages").parent == tmp_path / "m"


def test_export_failure_falls_back_to_torch_with_one_warning(x, tmp_path, monkeypatch, caplog):
    def broken(*a, **k):
        raise RuntimeError("unsupported operator Foo\nlong traceback text")

    monkeypatch.setattr("anomaly_inspect.features.backbone.export_onnx", broken)
    bb = random_backbone("onnxruntime", tmp_path)
    with caplog.at_level(logging.WARNING):
        maps = bb(x)
        bb(x)  # no second attempt, no second warning
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING
                and r.name == "anomaly_inspect.features.backbone"]
    assert len(warnings) == 1
    assert "unsupported operator Foo" in warnings[0].getMessage()
    assert "\n" not in warnings[0].getMessage()
    assert all(torch.equal(a, b) for a, b in zip(maps, random_backbone("torch")(x), strict=True))
    assert bb.runs_on == "torch (export failed)"
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_runtime_and_precision_are_checked():
    check_runtime("openvino", "bf16")
    with pytest.raises(ValueError, match="bf16 needs runtime openvino"):
        check_runtime("onnxruntime", "bf16")
    check_runtime("onnxruntime", "int8")
    with pytest.raises(ValueError, match="int8 needs runtime onnxruntime"):
        check_runtime("openvino", "int8")
    with pytest.raises(ValueError, match="runtime must be one of"):
        check_runtime("tensorrt", "f32")
    with pytest.raises(ConfigError, match="backbone: precision must be one of"):
        BackboneConfig(precision="int4")


def test_config_round_trip_and_old_configs_get_the_default(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("backbone:\n  runtime: torch\n")
    cfg = load_config(path)
    assert (cfg.backbone.runtime, cfg.backbone.precision) == ("torch", "f32")
    again = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    old = cfg.to_dict()
    del old["backbone"]["runtime"], old["backbone"]["precision"]  # a model saved before runtimes
    assert ModelConfig.from_dict(old).backbone.runtime == DEFAULT_RUNTIME == "onnxruntime"
    path.write_text("backbone:\n  runtime: onnxruntime\n  precision: bf16\n")
    with pytest.raises(ConfigError, match="bf16 needs runtime openvino"):
        load_config(path)


def test_cli_runtime_flag_overrides_config():
    from anomaly_inspect.cli import build_parser
    from anomaly_inspect.commands.common import model_config_from_args

    args = build_parser().parse_args(["evaluate", "--root", "x", "--runtime", "torch"])
    assert model_config_from_args(args).backbone.runtime == "torch"
    args = build_parser().parse_args(["evaluate", "--root", "x"])
    assert model_config_from_args(args).backbone.runtime == "onnxruntime"


@pytest.mark.skipif(not runtime_available("openvino") and not os.environ.get("CI"),
                    reason="openvino (in the dev / openvino extras) not installed")
def test_openvino_f32_equals_torch_and_bf16_is_close(x):
    ref = random_backbone("torch")(x)
    f32 = random_backbone("openvino")(x)
    assert all(rel_diff(a, b) < 1e-4 for a, b in zip(f32, ref, strict=True))
    bf16 = random_backbone("openvino", precision="bf16")(x)
    assert all(a.shape == b.shape for a, b in zip(bf16, ref, strict=True))
    assert all(rel_diff(a, b) < 0.2 for a, b in zip(bf16, ref, strict=True))


def test_bench_backbone_reports_every_runtime_against_torch(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench-backbone", "--weights", "random", "--image-size", str(SIZE),
                 "--batch-size", "2", "--rounds", "1", "--runtime", "onnxruntime",
                 "--output-json", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    rows = {(r["runtime"], r["precision"]): r for r in result["runtimes"]}
    assert set(rows) == {("torch", "f32"), ("onnxruntime", "f32"), ("onnxruntime", "int8")}
    assert rows[("torch", "f32")]["ratio_to_torch_f32"] == 1.0
    assert rows[("onnxruntime", "f32")]["max_rel_diff_vs_torch"] < 1e-4
    assert rows[("onnxruntime", "f32")]["images_per_second"] > 0
    assert "onnxruntime f32" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "tf_efficientnet_lite1",
                                  "tf_efficientnet_lite2"])
def test_supported_backbones_export_and_agree(name, x):
    ref = Backbone(name, weights="random", runtime="torch")
    bb = Backbone(name, weights="random", runtime="onnxruntime")  # Lite0: the cache of the tests above
    (maps, pooled), (rmaps, rpooled) = bb.forward_with_pooled(x), ref.forward_with_pooled(x)
    assert bb.runs_on == "onnxruntime f32"  # exported, no fallback
    assert all(rel_diff(a, b) < 1e-4 for a, b in zip([*maps, pooled], [*rmaps, rpooled], strict=True))


def fit_random_model(tmp_path, precision: str = "f32"):
    """A screening model fitted on 6 random images with random weights, and its saved folder."""
    import cv2
    import numpy as np

    from anomaly_inspect.screening import fit

    rng = np.random.default_rng(0)
    (tmp_path / "train").mkdir()
    for i in range(6):
        cv2.imwrite(str(tmp_path / "train" / f"{i}.png"), rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
    cfg = ModelConfig()
    cfg.backbone.weights, cfg.features.image_size, cfg.features.batch_size = "random", SIZE, 4
    cfg.backbone.precision = precision
    model = fit([tmp_path / "train"], cfg, target_fpr=0.2, progress=False)
    return model, model.save(tmp_path / "m")


def test_saved_model_records_runtime_and_carries_its_export(tmp_path, monkeypatch):
    from anomaly_inspect.screening import load_model

    model, saved = fit_random_model(tmp_path)
    info = json.loads((saved / "model.json").read_text())
    assert info["config"]["backbone"]["runtime"] == "onnxruntime"
    assert [p.name for p in (saved / "backbone").glob("*.onnx")] == [model.extractor.backbone.exports[0].name]

    def no_export(*a, **k):
        raise AssertionError("a saved model must not need a new export")

    monkeypatch.setattr("anomaly_inspect.features.backbone.export_onnx", no_export)
    again = load_model(saved)
    a, b = model.score([tmp_path / "train"]), again.score([tmp_path / "train"])
    assert [x.score for x in a] == pytest.approx([x.score for x in b], rel=1e-5)
    assert again.extractor.backbone.exports[0].parent == saved / "backbone"
    # a model saved before runtimes existed loads with the default runtime
    del info["config"]["backbone"]["runtime"], info["config"]["backbone"]["precision"]
    del info["train_image_sha256"]  # nor this key (written with every checksum list)
    (saved / "model.json").write_text(json.dumps(info))
    (saved / "checksums.json").unlink()  # nor checksums
    assert load_model(saved).cfg.backbone.runtime == "onnxruntime"


def _as_made_by_another_torch(path):
    """``path`` renamed as an export keyed by another torch version would be (what a saved
    model's folder holds after torch is upgraded)."""
    other = path.with_name(f"{path.name.split('-')[0]}-{'0' * 24}.onnx")
    path.rename(other)
    return other


def test_a_graph_under_another_key_runs_only_for_the_weights_and_stages_it_records(x, tmp_path,
                                                                                  monkeypatch):
    import onnx

    made = random_backbone("onnxruntime", tmp_path)
    made(x)
    (export,) = made.exports
    record = {p.key: p.value for p in onnx.load(str(export)).metadata_props}
    assert record == rt.export_record(made.name, made.weight_source.checksum, made.layers)
    assert rt.graph_signature(export)[2] == record
    graph = _as_made_by_another_torch(export)
    # the same weights and stages: the graph is found and run, nothing is exported
    calls = []
    real = rt.export_onnx
    monkeypatch.setattr("anomaly_inspect.features.backbone.export_onnx",
                        lambda *a, **k: calls.append(a) or real(*a, **k))
    same = random_backbone("onnxruntime", tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(same(x), made(x), strict=True))
    assert same.exports == [graph] and calls == []
    # other weights, or other stages with as many outputs: exported anew, never that graph
    for other in (random_backbone("onnxruntime", tmp_path, seed=2),
                  random_backbone("onnxruntime", tmp_path, layers=(1, 3))):
        maps = other(x)
        assert other.exports == [other.export_path((SIZE, SIZE), "stages")] != [graph]
        want = other.torch_forward(x)
        assert max(rel_diff(a, b) for a, b in zip(maps, want, strict=True)) < 1e-4
    assert len(calls) == 2


def test_a_graph_exported_before_records_runs_where_it_computes_what_torch_does(x, tmp_path,
                                                                              caplog):
    """Graphs saved by older versions record nothing: one runs where it gives the backbone's
    own torch outputs on a test input; otherwise the backbone is exported anew."""
    import onnx

    made = random_backbone("onnxruntime", tmp_path)
    made(x)
    (export,) = made.exports
    legacy = onnx.load(str(export))
    del legacy.metadata_props[:]
    onnx.save(legacy, str(export))
    assert rt.graph_signature(export)[2] == {}
    graph = _as_made_by_another_torch(export)
    again = random_backbone("onnxruntime", tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(again(x), made(x), strict=True))
    assert again.exports == [graph]
    # another backbone's weights: not run (it would give that backbone's features)
    with caplog.at_level(logging.WARNING):
        other = random_backbone("onnxruntime", tmp_path, seed=2)
        maps = other(x)
    assert other.exports == [other.export_path((SIZE, SIZE), "stages")]
    assert max(rel_diff(a, b) for a, b in zip(maps, other.torch_forward(x), strict=True)) < 1e-4
    assert f"{graph}: exported by an older version from other weights" in caplog.text
    # beside a graph that records other weights: still the legacy graph, which alone matches
    third = random_backbone("onnxruntime", tmp_path)
    third(x)
    assert third.exports == [graph]


def test_export_command_writes_a_checked_onnx_file(tmp_path, capsys):
    import onnxruntime as ort

    out = tmp_path / "backbone.onnx"
    args = ["export", "--out", str(out), "--weights", "random", "--image-size", str(SIZE), "--pooled",
            "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "max rel diff vs torch" in printed
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["stage0", "stage1", "pooled"]
    assert main(args) == 1  # refuses to overwrite
    assert "already exists" in capsys.readouterr().err


def test_torch_export_is_the_fallback_of_the_torchscript_exporter(x, tmp_path, monkeypatch):
    real = torch.onnx.export
    used = []

    def no_torchscript(*a, dynamo=True, **k):
        used.append(dynamo)
        if not dynamo:
            raise RuntimeError("the TorchScript exporter cannot trace this model")
        return real(*a, dynamo=True, **k)

    monkeypatch.setattr(torch.onnx, "export", no_torchscript)
    bb = random_backbone("onnxruntime", tmp_path)
    maps = bb(x[:1]), bb(x)  # the torch.export graph has a dynamic batch axis too
    assert used == [False, True] and bb.runs_on == "onnxruntime f32"
    want = random_backbone("torch")(x)
    assert all(rel_diff(a, b) < 1e-4 for a, b in zip(maps[1], want, strict=True))
    assert rel_diff(maps[0][0][0], want[0][0]) < 1e-4


@pytest.mark.parametrize("size", [64, 65, (48, 71)])
def test_static_same_padding_computes_what_the_dynamic_one_does(size):
    """Odd, even and non-square inputs: TF "same" pads asymmetrically; the constant pads of the
    copy must equal what ``Conv2dSame`` works out at run time, and the original is untouched."""
    from timm.layers.conv2d_same import Conv2dSame

    hw = (size, size) if isinstance(size, int) else size
    model = random_backbone("torch").model
    static = rt.static_same_padding(model, hw)
    assert any(type(m) is Conv2dSame for m in model.modules())
    assert not any(type(m) is Conv2dSame for m in static.modules())
    torch.manual_seed(2)
    inp = torch.randn(2, 3, *hw)
    with torch.no_grad():
        assert torch.equal(static(inp), model(inp))


def test_exported_graph_has_every_pad_folded_into_a_conv(tmp_path):
    """What makes the graph fast: after ONNX Runtime's optimisation no ``Pad`` node is left
    (an unfused Pad costs a third of the speed on Lite0)."""
    import collections

    import onnx
    import onnxruntime as ort

    path = random_backbone("onnxruntime", tmp_path).export((SIZE, SIZE))
    raw = collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    assert raw["Pad"] == 4 and raw["Conv"] == 33  # Lite0's four stride-2 "same" convolutions
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    done = collections.Counter(n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node)
    assert done["Pad"] == 0 and done["Conv"] == 33


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def test_int8_is_calibrated_on_the_images_given_then_found_beside_its_export(x, tmp_path):
    bb = random_backbone("onnxruntime", cache_dir=tmp_path, precision="int8")
    with pytest.raises(rt.CalibrationError, match="calibrated on the training images"):
        bb(x)  # never calibrated silently on whatever comes first
    bb.calibrate(x.numpy())
    maps, ref = bb(x), random_backbone("torch")(x)
    assert all(cosine(a, b) > 0.9 for a, b in zip(maps, ref, strict=True))  # close, not equal
    assert not all(rel_diff(a, b) < 1e-4 for a, b in zip(maps, ref, strict=True))
    f32, int8 = bb.exports  # the int8 graph and the f32 export it was made from
    assert int8.name == f"{f32.stem}-int8-{int8_key(x.numpy())}.onnx"
    assert sorted(tmp_path.glob("*.onnx")) == sorted([f32, int8])
    # a backbone that is not calibrated (a loaded model) runs the one calibrated graph there
    again = random_backbone("onnxruntime", cache_dir=tmp_path, precision="int8")
    assert all(torch.equal(a, b) for a, b in zip(again(x), maps, strict=True))
    (tmp_path / f"{f32.stem}-int8-other.onnx").write_bytes(int8.read_bytes())
    with pytest.raises(rt.CalibrationError, match="more than one"):
        random_backbone("onnxruntime", cache_dir=tmp_path, precision="int8")(x)


def test_int8_model_is_calibrated_on_its_training_images_and_saved_with_both_graphs(tmp_path):
    from anomaly_inspect.screening import load_model

    model, saved = fit_random_model(tmp_path, "int8")
    assert len(list((saved / "backbone").glob("*-int8-*.onnx"))) == 1
    assert len(list((saved / "backbone").glob("*.onnx"))) == 2
    again = load_model(saved)
    assert again.extractor.backbone.runs_on == "onnxruntime int8"
    a, b = model.score([tmp_path / "train"]), again.score([tmp_path / "train"])
    assert [s.score for s in a] == pytest.approx([s.score for s in b], rel=1e-5)


def test_bench_backbone_refuses_a_pair_that_does_not_exist():
    from anomaly_inspect.commands.bench_backbone import selected_variants

    with pytest.raises(ValueError, match=r"--runtime onnxruntime --precision bf16: no such pair"):
        selected_variants(["onnxruntime"], ["bf16"])
    assert selected_variants(["torch"], None) == [("torch", "f32")]
    assert selected_variants(["onnxruntime"], ["f32"]) == [("torch", "f32"), ("onnxruntime", "f32")]


def test_int8_never_runs_a_graph_it_finds_in_the_user_cache(x):
    """Only a saved model's folder is searched for a calibrated graph: the user cache holds
    graphs calibrated on other runs' images (another dataset, bench-backbone's noise)."""
    made = random_backbone("onnxruntime", precision="int8")
    made.calibrate(x.numpy())
    made(x)
    assert made.exports[1].parent == rt.default_cache_dir()  # a calibrated graph lies there now
    for cache_dir in (None, rt.default_cache_dir()):
        with pytest.raises(rt.CalibrationError, match="is not calibrated"):
            random_backbone("onnxruntime", cache_dir=cache_dir, precision="int8")(x)


def test_calibrating_on_other_images_drops_the_graphs_made_before(x, tmp_path):
    bb = random_backbone("onnxruntime", cache_dir=tmp_path, precision="int8")
    bb.calibrate(x.numpy())
    first = bb(x)
    assert bb.calibration_digest == int8_key(x.numpy())
    bb.calibrate(x.numpy())  # the same images: the graph is kept
    assert bb.exports[1].name.endswith(f"-int8-{int8_key(x.numpy())}.onnx")
    other = (x * 3).numpy()
    bb.calibrate(other)
    assert bb.exports == [] and bb.calibration_digest == int8_key(other)
    again = bb(x)
    assert bb.exports[1].name.endswith(f"-int8-{int8_key(other)}.onnx")
    assert not all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


def test_bench_backbone_keeps_its_noise_calibrated_int8_graph_to_itself(tmp_path, monkeypatch,
                                                                        caplog):
    monkeypatch.setenv("ANOMALY_INSPECT_CACHE", str(tmp_path / "cache"))
    with caplog.at_level(logging.INFO, logger="anomaly_inspect"):
        assert main(["bench-backbone", "--weights", "random", "--image-size", str(SIZE),
                     "--batch-size", "2", "--rounds", "1", "--runtime", "onnxruntime",
                     "--precision", "int8"]) == 0
    assert not list((tmp_path / "cache").rglob("*-int8-*"))  # nothing another command could run
    said = [r.getMessage() for r in caplog.records if "quantising" in r.getMessage()]
    assert said == ["quantising the backbone to int8 (calibrated on 2 random inputs (a speed "
                    "figure only))"]


def test_bench_backbone_fails_on_a_named_runtime_that_is_not_installed(monkeypatch, capsys, caplog):
    from anomaly_inspect.commands.bench_backbone import selected_variants

    monkeypatch.setattr(rt, "runtime_available", lambda r: r != "openvino")
    hint = 'pip install "openvino>=2024.4"'
    assert main(["bench-backbone", "--runtime", "openvino", "--weights", "random"]) == 1
    assert capsys.readouterr().err == (
        "error: bench-backbone --runtime openvino needs the openvino package, which is not "
        f"installed: {hint}\n")
    with pytest.raises(rt.RuntimeUnavailableError, match="openvino package"):
        selected_variants(None, ["bf16"])  # the filters leave openvino alone
    with caplog.at_level(logging.WARNING):  # the default, every runtime: openvino is skipped
        assert selected_variants(None, None) == [("torch", "f32"), ("onnxruntime", "f32"),
                                                 ("onnxruntime", "int8")]
    assert "openvino is not installed: openvino f32, openvino bf16 not measured" in caplog.text
    with pytest.raises(rt.RuntimeUnavailableError, match=r'runtime openvino needs .*openvino>=2024.4'):
        random_backbone("openvino")


@pytest.mark.parametrize(("layers", "says"), [
    ([], "layers must not be empty"),
    ([2, 2], r"layers must be increasing indices without repeats \(shallow to deep\), got \[2, 2\]"),
    ([3, 2], r"layers must be increasing indices without repeats \(shallow to deep\), got \[3, 2\]"),
])
def test_backbone_refuses_empty_repeated_or_decreasing_layers(layers, says):
    with pytest.raises(ValueError, match=says):
        Backbone("tf_efficientnet_lite0", layers=layers, weights="random", runtime="torch")


def test_runs_on_says_which_inputs_fell_back_to_torch(x, tmp_path, monkeypatch):
    real = rt.export_onnx

    def fails_at_48(model, layers, input_hw, outputs, path, record=None):
        if tuple(input_hw) == (48, 48):
            raise RuntimeError("no export at 48 px")
        return real(model, layers, input_hw, outputs, path, record)

    monkeypatch.setattr("anomaly_inspect.features.backbone.export_onnx", fails_at_48)
    bb = random_backbone("onnxruntime", tmp_path)
    bb(x)
    assert bb.runs_on == "onnxruntime f32"
    bb(x[..., :48, :48])
    assert bb.runs_on == "onnxruntime f32 (torch where the export failed)"
    bb.release()
    assert bb.runs_on == "onnxruntime f32 (torch where the export failed)"


def test_a_graph_that_runs_at_another_precision_is_an_error_at_the_first_batch(x, tmp_path,
                                                                              monkeypatch):
    """As OpenVINO bf16 on a CPU without bf16 (it runs f32): refused at the first batch, not
    after a whole fit whose model could then not be saved as what it records."""
    class Downgraded(rt.OnnxRunner):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.runs_precision = "f16"

    monkeypatch.setattr("anomaly_inspect.features.backbone.OnnxRunner", Downgraded)
    bb = random_backbone("onnxruntime", tmp_path)
    with pytest.raises(rt.PrecisionError, match="precision f32: onnxruntime runs f16 on this CPU, "
                                                "not f32; .* use --precision f16"):
        bb(x)


def test_openvino_precision_is_read_back_from_the_compiled_model():
    class Compiled:
        def __init__(self, value):
            self.value = value

        def get_property(self, name):
            assert name == "INFERENCE_PRECISION_HINT"
            if isinstance(self.value, Exception):
                raise self.value
            return self.value

    class OvType:  # what openvino returns: <Type: 'bfloat16'> with type_name 'bf16'
        def __init__(self, short):
            self.type_name = short

    assert rt.openvino_precision(Compiled(OvType("bf16")), "bf16") == "bf16"
    assert rt.openvino_precision(Compiled(OvType("f32")), "bf16") == "f32"
    assert rt.openvino_precision(Compiled("float32"), "bf16") == "f32"
    assert rt.openvino_precision(Compiled(RuntimeError("no such property")), "bf16") == "bf16"


@pytest.mark.skipif(not runtime_available("openvino") and not os.environ.get("CI"),
                    reason="openvino (in the dev / openvino extras) not installed")
def test_openvino_runner_reports_what_the_cpu_runs(x):
    import openvino as ov

    bb = random_backbone("openvino", precision="bf16")
    bb(x)
    runner = next(iter(bb._runners.values()))
    hint = runner._compiled.get_property("INFERENCE_PRECISION_HINT").type_name
    assert runner.runs_precision == hint and bb.runs_on.startswith(f"openvino {hint}")
    assert "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES") or hint == "bf16"


def test_export_key_changes_with_the_timm_version(monkeypatch):
    args = ("tf_efficientnet_lite0", "abc", [2, 3], (320, 320), "stages")
    key = export_key(*args)
    monkeypatch.setattr(rt, "timm_version", lambda: "0.0.1")
    assert export_key(*args) != key


def test_shared_helpers_by_hand():
    import numpy as np

    assert rt.max_rel_diff([np.array([1.0, 2.0]), np.array([0.0, 10.0])],
                           [np.array([1.0, 4.0]), np.array([1.0, 10.0])]) == pytest.approx(0.5)
    assert rt.max_rel_diff([torch.tensor([1e-13])], [torch.tensor([0.0])]) == pytest.approx(0.1)
    assert rt.first_line(RuntimeError("  first\nsecond")) == "first"
    assert rt.first_line(RuntimeError("x" * 300)) == "x" * 200
    assert rt.first_line(RuntimeError("")) == ""


def test_a_failed_int8_quantisation_is_an_error_not_a_silent_torch_f32(x, tmp_path, monkeypatch,
                                                                       caplog):
    def broken(*a, **k):
        raise RuntimeError("quantiser cannot handle Foo\nlong traceback text")

    monkeypatch.setattr("anomaly_inspect.features.backbone.quantize_int8", broken)
    bb = random_backbone("onnxruntime", tmp_path, precision="int8")
    bb.calibrate(x.numpy())
    with caplog.at_level(logging.WARNING), pytest.raises(rt.PrecisionError) as err:
        bb(x)
    assert str(err.value) == ("precision int8: quantising "
                              f"{bb.export_path((SIZE, SIZE), 'stages').name} failed (RuntimeError: "
                              "quantiser cannot handle Foo); the backbone is not run at another "
                              "precision instead: use --precision f32")
    assert "exporting again" not in caplog.text  # the f32 export was fine: not blamed
    assert not bb._ran and not list(tmp_path.glob("*-int8-*"))
    # nor where the f32 export itself fails (no torch f32 in int8's place)
    monkeypatch.setattr("anomaly_inspect.features.backbone.export_onnx", broken)
    other = random_backbone("onnxruntime", tmp_path / "other", precision="int8")
    other.calibrate(x.numpy())
    with pytest.raises(rt.PrecisionError, match=r"^precision int8: ONNX export / onnxruntime load "
                       r"failed \(RuntimeError: quantiser cannot handle Foo\); the backbone is not "
                       r"run in torch f32 instead: use --precision f32$"):
        other(x)


def test_a_damaged_int8_graph_is_quantised_again_and_a_damaged_f32_export_exported_again(
        x, tmp_path, caplog):
    made = random_backbone("onnxruntime", tmp_path, precision="int8")
    made.calibrate(x.numpy())
    want = made(x)
    f32, int8 = made.exports
    int8.write_bytes(int8.read_bytes()[:1000])  # truncated
    again = random_backbone("onnxruntime", tmp_path, precision="int8")
    again.calibrate(x.numpy())
    with caplog.at_level(logging.WARNING):
        got = again(x)
    assert f"{int8}: damaged cached int8 graph (changed since it was written" in caplog.text
    assert again.exports == [f32, int8] and again.runs_on == "onnxruntime int8"
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    # a loaded model's folder cannot quantise again (no training images): one clear line (a
    # saved model's graphs record no checksum beside them: its checksums.json covers them)
    int8.write_bytes(b"not an onnx file")
    rt.checksum_path(int8).unlink()
    with pytest.raises(rt.CalibrationError, match=r"unreadable int8 graph .*fit it again$"):
        random_backbone("onnxruntime", tmp_path, precision="int8")(x)
    # the f32 export it is quantised from is unreadable: exported again, then quantised
    int8.unlink()
    f32.write_bytes(b"not an onnx file")
    caplog.clear()
    third = random_backbone("onnxruntime", tmp_path, precision="int8")
    third.calibrate(x.numpy())
    with caplog.at_level(logging.WARNING):
        got = third(x)
    assert f"{f32}: damaged cached export (changed since it was written" in caplog.text
    assert third.runs_on == "onnxruntime int8"
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


def test_the_unreadable_export_warning_is_one_line(x, tmp_path, monkeypatch, caplog):
    real = rt.OnnxRunner
    calls = []

    def first_fails(*a, **k):
        calls.append(a)
        if len(calls) == 1:
            raise RuntimeError("cannot load the graph\nsecond line of the message")
        return real(*a, **k)

    random_backbone("onnxruntime", tmp_path).export((SIZE, SIZE))
    monkeypatch.setattr("anomaly_inspect.features.backbone.OnnxRunner", first_fails)
    with caplog.at_level(logging.WARNING):
        random_backbone("onnxruntime", tmp_path)(x)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                  and r.name == "anomaly_inspect.features.backbone"]
    assert warning.endswith("unreadable cached export (cannot load the graph); exporting again")


def test_onnx_runner_takes_no_thread_count():
    import inspect

    assert list(inspect.signature(rt.OnnxRunner).parameters) == ["path", "runtime", "precision"]


def test_export_command_exports_a_damaged_cached_graph_again(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ANOMALY_INSPECT_CACHE", str(tmp_path / "cache"))
    bb = random_backbone("onnxruntime")
    cached = bb.export((SIZE, SIZE))
    cached.write_bytes(cached.read_bytes()[:20000])  # truncated
    out = tmp_path / "backbone.onnx"
    assert main(["export", "--out", str(out), "--weights", "random", "--image-size", str(SIZE),
                 "--quiet"]) == 0
    assert rt.graph_signature(out) is not None and rt.graph_signature(cached) is not None
    assert "max rel diff vs torch" in capsys.readouterr().out


def test_export_command_writes_nothing_that_fails_its_check(tmp_path, monkeypatch, capsys):
    out = tmp_path / "backbone.onnx"
    args = ["export", "--out", str(out), "--weights", "random", "--image-size", str(SIZE),
            "--quiet"]
    monkeypatch.setattr(rt, "max_rel_diff", lambda got, want: 2e-4)
    assert main(args) == 1
    assert capsys.readouterr().err == (
        f"error: {out}: not written: the exported graph differs from torch by 2.0e-04 (max "
        "relative difference on one random batch), more than the f32 tolerance 1e-04\n")
    assert not out.exists() and not list(tmp_path.iterdir())
    # a graph onnxruntime cannot load: one line, and an existing --out is left as it was
    out.write_bytes(b"the old file")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not an onnx file")
    monkeypatch.setattr(Backbone, "export", lambda self, *a, **k: garbage)
    assert main([*args, "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out}: not written: onnxruntime cannot run the exported graph (")
    assert err.count("\n") == 1
    assert out.read_bytes() == b"the old file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backbone.onnx", "garbage.onnx"]


def test_bench_backbone_reports_what_ran_and_marks_a_fallback(tmp_path, monkeypatch, capsys):
    def broken(*a, **k):
        raise RuntimeError("export failed")

    monkeypatch.setenv("ANOMALY_INSPECT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("anomaly_inspect.features.backbone.export_onnx", broken)
    out = tmp_path / "bench.json"
    assert main(["bench-backbone", "--weights", "random", "--image-size", str(SIZE),
                 "--batch-size", "2", "--rounds", "1", "--runtime", "onnxruntime",
                 "--precision", "f32", "--output-json", str(out), "--quiet"]) == 0
    rows = {(r["runtime"], r["precision"]): r for r in json.loads(out.read_text())["runtimes"]}
    assert (rows[("onnxruntime", "f32")]["runs_on"], rows[("onnxruntime", "f32")]["fell_back"]) == (
        "torch (export failed)", True)
    assert (rows[("torch", "f32")]["runs_on"], rows[("torch", "f32")]["fell_back"]) == ("torch", False)
    assert "onnxruntime f32 (ran: torch (export failed))" in capsys.readouterr().out


def test_bench_backbone_gives_a_variant_that_cannot_run_a_row_and_measures_the_others(
        tmp_path, monkeypatch, capsys):
    """int8 whose quantisation fails is a PrecisionError: its row says why; before, the
    error ended the whole benchmark and every other variant's figure was lost."""
    def broken(*a, **k):
        raise RuntimeError("quantiser broke")

    monkeypatch.setenv("ANOMALY_INSPECT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("anomaly_inspect.features.backbone.quantize_int8", broken)
    out = tmp_path / "bench.json"
    assert main(["bench-backbone", "--weights", "random", "--image-size", str(SIZE),
                 "--batch-size", "2", "--rounds", "1", "--runtime", "onnxruntime",
                 "--precision", "int8", "--output-json", str(out), "--quiet"]) == 0
    rows = {(r["runtime"], r["precision"]): r for r in json.loads(out.read_text())["runtimes"]}
    int8 = rows[("onnxruntime", "int8")]
    assert int8["images_per_second"] is None and int8["runs_on"].startswith("failed: precision int8")
    assert rows[("torch", "f32")]["images_per_second"] > 0
    assert "failed: precision int8: quantising" in capsys.readouterr().out


# An int8 graph's name (and the feature cache keys of its features) hold what it is made from:
# the calibration images, the quantisation settings and the onnxruntime version that quantised it.
@pytest.fixture(scope="module")
def int8_backbone(tmp_path_factory):
    return bbmod.Backbone("tf_efficientnet_lite0", weights="random", runtime="onnxruntime",
                          precision="int8", cache_dir=tmp_path_factory.mktemp("int8"))


def _keys(bb, images):
    bb.calibrate(images)
    return bb._int8_path(Path("/c/g.onnx")), precision_key(bb)["calibration"]


def test_the_int8_key_holds_the_images_the_settings_and_the_onnxruntime_version(
        int8_backbone, monkeypatch):
    import onnxruntime

    images = np.zeros((2, 3, 8, 8), np.float32)
    path, key = _keys(int8_backbone, images)
    assert path.parent == Path("/c") and path.name.startswith("g-int8-")
    assert path.name == f"g-int8-{int8_backbone.calibration_digest}.onnx"
    assert _keys(int8_backbone, images) == (path, key)  # stable
    changed = {"images": lambda: _keys(int8_backbone, images + 1)}
    for what, value in (("INT8_FORMAT", rt.INT8_FORMAT + 1), ("__version__", "0.0.1")):
        def under(what=what, value=value):
            with monkeypatch.context() as m:
                m.setattr(rt if what == "INT8_FORMAT" else onnxruntime, what, value)
                return _keys(int8_backbone, images)
        changed[what] = under
    seen = {(path, key)}
    for what, keys in changed.items():
        got = keys()
        assert got[0] != path and got[1] != key, what  # a new graph name and feature cache key
        seen.add(got)
    assert len(seen) == 4
    assert rt.calibration_digest(images) not in path.name  # not the images' digest alone


def test_a_saved_model_finds_its_int8_graph_whatever_key_named_it(tmp_path):
    """A saved model's folder holds the one int8 graph it was fitted with: found by the f32
    export's name, so that models saved before the key held the quantiser still load."""
    old = tmp_path / f"g-int8-{rt.calibration_digest(np.zeros((2, 3, 8, 8), np.float32))}.onnx"
    old.write_bytes(b"graph")
    loaded = bbmod.Backbone("tf_efficientnet_lite0", weights="random", runtime="onnxruntime",
                            precision="int8", cache_dir=tmp_path)  # not calibrated: a loaded model
    assert loaded._int8_path(tmp_path / "g.onnx") == old


# The damaged-export warning is written in one place, for export() and for a run alike.
def test_the_damaged_export_warning_lives_once():
    assert Path(backbone.__file__).read_text(encoding="utf-8").count("damaged cached export") == 1


def test_a_damaged_graph_is_not_reused_and_is_named_once(tmp_path, monkeypatch, caplog):
    path = tmp_path / "backbone.onnx"
    path.write_bytes(b"graph")

    def damaged(p):
        raise DamagedGraphError("changed since it was written")

    monkeypatch.setattr(backbone, "graph_signature", lambda p: "sig")
    monkeypatch.setattr(backbone, "check_graph", damaged)
    with caplog.at_level(logging.WARNING):
        assert not backbone._reusable(path)
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: damaged cached export (changed since it was written); exporting again"]
    monkeypatch.setattr(backbone, "check_graph", lambda p: None)
    assert backbone._reusable(path)
