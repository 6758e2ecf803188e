"""From a security review: inputs that cost far more than their size or gave a traceback. A
YAML alias bomb in a config (a few hundred bytes whose error message repr()ed gigabytes), a
damaged scorer.json whose ``params`` is no object, a saved model declaring an input side no fit
could have used (gigabytes per image), and bench-scale's image list losing names that hold a
line break or bytes that are not UTF-8."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from anomaly_inspect.choices import shown
from anomaly_inspect.config import (
    ConfigError,
    FeatureConfig,
    ModelConfig,
    load_config,
    read_yaml_mapping,
)


def _bomb(depth: int) -> str:
    """Nested aliases: ``depth`` levels of nine references to the level below (9**depth)."""
    items = ['&a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    items += [f"&a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, depth + 1)]
    return "[" + ", ".join(items) + "]"


# ------------------------------------------------------------------- a YAML alias bomb


@pytest.mark.parametrize("text", [
    f"seed: {_bomb(8)}\n",  # the reviewer's: 430 bytes, a MemoryError at 2.5 GB
    f"features:\n  image_size: {_bomb(8)}\n",
    f"backbone:\n  layers: {_bomb(8)}\n",
    f"method: knn\nscorer:\n  k: {_bomb(8)}\n",
    # merges nest too: each level's two keys merge the level below, 2**30 values
    "l0: &l0 {a: 1, b: 2}\n" + "".join(f"l{i}: &l{i} {{a: {{<<: *l{i - 1}}}, b: {{<<: *l{i - 1}}}}}\n"
                                       for i in range(1, 31)) + "seed: *l30\n",
])
def test_a_yaml_alias_bomb_is_one_short_line_at_once(tmp_path, text):
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert time.perf_counter() - start < 1.0
    assert len(message) < 500 and "\n" not in message
    assert message.startswith(f"{path}: line ") and "aliases" in message


def test_aliases_and_merges_of_a_real_size_still_read(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("backbone: {layers: &l [1, 2], name: tf_efficientnet_lite0}\n"
                    "method: patchcore\nscorer: {<<: {coreset_ratio: 0.2}, coreset_ratio: 0.1}\n"
                    "features: {<<: &f {image_size: 64, batch_size: 4}, batch_size: 2}\n")
    cfg = load_config(path)
    assert (cfg.backbone.layers, cfg.scorer) == ([1, 2], {"coreset_ratio": 0.1})
    assert (cfg.features.image_size, cfg.features.batch_size) == (64, 2)
    path.write_text("a: &x [1, 2]\nb: *x\nc: {<<: [{k: 1}, {k: 2, j: *x}]}\n")
    assert read_yaml_mapping(path) == {"a": [1, 2], "b": [1, 2], "c": {"k": 1, "j": [1, 2]}}


def test_a_recursive_alias_is_refused_in_one_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: knn\nscorer:\n  k: &a [1, *a]\n")
    with pytest.raises(ConfigError, match=rf"^{path}: line 3, column 6: .*refers to itself"):
        load_config(path)


def test_a_value_shown_in_a_config_error_is_cut_short():
    shared = ["lol"] * 9
    for _ in range(12):  # built in code, as a YAML alias builds it: 9**13 strings by reference
        shared = [shared] * 9
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        ModelConfig(seed=shared)
    assert time.perf_counter() - start < 1.0
    assert str(info.value).startswith("seed: expected an integer, got [[[[")
    assert len(str(info.value)) < 200
    with pytest.raises(ConfigError, match=r"^features: resize must be one of .*, got 'x+\.\.\.x+'$"):
        FeatureConfig(resize="x" * 100_000)
    assert shown([1, 2, "a"]) == "[1, 2, 'a']" and shown("ab") == "'ab'"  # short: repr's own
    assert len(shown(list(range(1000)))) <= 80
    with pytest.raises(ConfigError, match=r"^features: image_size: expected an integer, got 'abc'$"):
        FeatureConfig(image_size="abc")


# -------------------------------------------------- scorer.json whose params is no object


@pytest.fixture
def saved_scorer(tmp_path):
    from anomaly_inspect.features.extractor import Features
    from anomaly_inspect.scorers.patchcore import PatchCore

    scorer = PatchCore(coreset_ratio=0.5, progress=False).fit(
        Features(patches=np.random.default_rng(0).normal(size=(4, 3, 3, 8)).astype(np.float32)))
    scorer.save(tmp_path / "scorer")
    return tmp_path / "scorer"


@pytest.mark.parametrize(("params", "kind"), [([1, 2], "list"), ("k=1", "str"), (None, "NoneType")])
def test_scorer_params_that_are_no_object_are_a_format_error_naming_the_file(saved_scorer, params, kind):
    from anomaly_inspect.scorers.base import Scorer, ScorerFormatError

    path = saved_scorer / "scorer.json"
    meta = json.loads(path.read_text())
    Scorer.load(saved_scorer)  # as saved: loads
    meta["params"] = params
    path.write_text(json.dumps(meta))
    with pytest.raises(ScorerFormatError) as info:  # before: AttributeError: 'list' object ...
        Scorer.load(saved_scorer)
    assert str(info.value) == f"{path}: params must be an object (a mapping), got {kind}"


# ------------------------------------------------- a saved model's input size, bounded


def test_a_saved_model_with_an_input_side_no_fit_can_use_is_refused_naming_model_json(tmp_path):
    from anomaly_inspect.config import MAX_SAVED_IMAGE_SIZE
    from anomaly_inspect.screening.model import load_model
    from anomaly_inspect.screening.model_dir import MODEL_JSON, ModelFormatError, write_checksums
    from layout_writer import fit_tiny_model

    _, model_dir = fit_tiny_model(tmp_path)
    path = model_dir / MODEL_JSON
    info = json.loads(path.read_text())
    for features in ({"image_size": 60000}, {"image_size": 60000, "crop_size": 64},
                     {"image_size": MAX_SAVED_IMAGE_SIZE + 1}):
        info["config"]["features"].update(features)
        path.write_text(json.dumps(info))
        write_checksums(model_dir)
        with pytest.raises(ModelFormatError) as raised:  # before: 11 GB per image, then MemoryError
            load_model(model_dir)
        message = str(raised.value)
        assert message.startswith(f"{model_dir}/{MODEL_JSON}: config: features: image_size: must be "
                                  f"at most {MAX_SAVED_IMAGE_SIZE}")
        assert "\n" not in message and message.endswith(f"got {features['image_size']}")
        info["config"]["features"].pop("crop_size", None)


# ------------------------------------------------ bench-scale's image list, lossless


def _names(tmp_path):
    names = [tmp_path / "a\nb.png", tmp_path / "c\u2028d.png", tmp_path / "plain e.png",
             tmp_path / "tab\tand\r.png"]
    return [*map(str, names), os.fsdecode(os.fsencode(str(tmp_path)) + b"/\xe9\xff.png")]


def test_the_path_list_round_trips_every_name(tmp_path):
    from anomaly_inspect.screening.scale_bench import read_path_list, write_path_list

    names = _names(tmp_path)
    write_path_list(names, tmp_path / "paths.json")
    assert read_path_list(tmp_path / "paths.json") == names
    json.loads((tmp_path / "paths.json").read_text(encoding="utf-8"))  # valid UTF-8 JSON


def test_bench_scale_hands_its_runs_the_names_it_was_given(tmp_path, monkeypatch):
    from anomaly_inspect.screening import scale_bench

    handed = []

    def fake(call, grace=scale_bench.STOP_GRACE_S):
        handed.append(call)
        return subprocess.CompletedProcess([], 1, "", "ValueError: stubbed\n")

    monkeypatch.setattr(scale_bench, "run_child", fake)
    names = _names(tmp_path)
    scale_bench.bench_scale(tmp_path / "m", [*map(Path, names)], [("local", None)],
                            tmp_path / "w", progress=False)
    assert len(handed) == 1 and str(tmp_path / "w" / "paths.json") in handed[0]
    assert scale_bench.read_path_list(tmp_path / "w" / "paths.json") == names
    created = []  # files of such names, where the file system takes them, are found again
    for name in (b"x\ny.png", "p\u2028q.png".encode(), b"\xe9.png"):
        try:
            (tmp_path / os.fsdecode(name)).write_bytes(b"")
            created.append(tmp_path / os.fsdecode(name))
        except OSError:
            continue
    scale_bench.write_path_list(created, tmp_path / "real.json")
    read = scale_bench.read_path_list(tmp_path / "real.json")
    assert read == [*map(str, created)] and all(os.path.exists(p) for p in read)
