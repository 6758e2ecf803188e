"""Arguments refused when parsed (exit 2, one line naming the flag), before any work: empty
paths, a --out that cannot be checked, seeds and image sizes beyond what the code can use,
bench-coreset's empty or repeated --variants, a ratio or a worker count given twice."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from anomaly_inspect.cli import build_parser, main
from anomaly_inspect.config import (
    MAX_IMAGE_SIZE,
    SEED_LIMIT,
    ConfigError,
    FeatureConfig,
    ModelConfig,
    load_config,
)

#: (command line with the empty value, the argument argparse names): every path (or name)
#: argument of every command; before, "" silently meant the current folder
EMPTY_PATHS = [
    (["fit", "--train", "", "--out", "o"], "--train"),
    (["fit", "--train", "t", "--out", ""], "--out"),
    (["fit", "--train", "t", "--out", "o", "--calibration", ""], "--calibration"),
    (["fit", "--train", "t", "--out", "o", "--config", ""], "--config"),
    (["fit", "--train", "t", "--out", "o", "--weights", ""], "--weights"),
    (["fit", "--train", "t", "--out", "o", "--output-json", ""], "--output-json"),
    (["fit", "--train", "t", "--out", "o", "--auto", "--tune-cache", ""], "--tune-cache"),
    (["screen", "", "i", "--out", "o"], "MODEL_DIR"),
    (["screen", "m", "", "--out", "o"], "INPUT"),
    (["screen", "m", "i", "--out", ""], "--out"),
    (["screen", "m", "i", "--out", "o", "--labels", ""], "--labels"),
    (["explain", "", "i", "--out", "o"], "MODEL_DIR"),
    (["explain", "m", "", "--out", "o"], "IMAGE"),
    (["explain", "m", "i", "--out", ""], "--out"),
    (["export", "", "--out", "x.onnx"], "MODEL_DIR"),
    (["export", "--out", ""], "--out"),
    (["evaluate", "--root", ""], "--root"),
    (["evaluate", "--dataset", "folder", "--train-dir", ""], "--train-dir"),
    (["evaluate", "--dataset", "folder", "--test-normal-dir", ""], "--test-normal-dir"),
    (["evaluate", "--dataset", "folder", "--test-anomalous-dir", ""], "--test-anomalous-dir"),
    (["evaluate", "--dataset", "folder", "--mask-dir", ""], "--mask-dir"),
    (["evaluate-lt", "--root", "", "--categories", "c"], "--root"),
    (["evaluate-lt", "--root", "r", "--categories", "c", "--manifest-dir", ""], "--manifest-dir"),
    (["evaluate-lt", "--root", "r", "--categories", "c", "--manifest", ""], "--manifest"),
    (["ood-benchmark", "--config", ""], "--config"),
    (["ood-benchmark", "--config", "c", "--data-root", ""], "--data-root"),
    (["ood-benchmark", "--config", "c", "--cache-dir", ""], "--cache-dir"),
    (["tune", "--train", ""], "--train"),
    (["tune", "--root", ""], "--root"),
    (["bench-coreset", "--root", ""], "--root"),
    (["bench-scale", "", "i"], "MODEL_DIR"),
    (["bench-scale", "m", ""], "INPUT"),
    (["bench-backbone", "--weights", ""], "--weights"),
    (["demo", "--out", ""], "--out"),
]


def _refused(capsys, argv: list[str]) -> str:
    """The one-line argparse error ``argv`` exits 2 with."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(("argv", "name"), EMPTY_PATHS, ids=[" ".join(a) for a, _ in EMPTY_PATHS])
def test_an_empty_path_is_refused_naming_the_argument(capsys, argv, name):
    assert f"error: argument {name}: empty path (" in _refused(capsys, argv)


def test_no_command_takes_a_path_argument_unchecked():
    """Every ``type=Path`` became the checked type: a new one would let "" through again."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    unchecked = [f"{name} {a.dest}" for name, sub in commands.choices.items()
                 for a in sub._actions if a.type is Path]
    assert unchecked == []


def test_paths_and_names_are_parsed_as_before():
    args = build_parser().parse_args(["screen", "m", "a", "b", "--out", "o", "--labels", "none"])
    assert args.inputs == ["a", "b"] and args.labels == "none" and args.out == Path("o")
    args = build_parser().parse_args(["fit", "--train", "t", "--out", "o", "--weights", "random",
                                      "--config", "patchcore"])
    assert args.train == ["t"] and args.weights == "random" and args.config == Path("patchcore")


def test_an_out_folder_that_cannot_be_checked_is_an_argparse_error_not_a_traceback(tmp_path, capsys):
    long = tmp_path / ("a" * 300)  # ENAMETOOLONG from stat, which argparse would not catch
    err = _refused(capsys, ["fit", "--train", "t", "--out", str(long), "--quiet"])
    assert f"error: argument --out: {long}: cannot check it (File name too long)" in err
    err = _refused(capsys, ["screen", "m", "i", "--out", str(long)])
    assert f"error: argument --out: {long}: cannot check it (File name too long)" in err


def test_an_out_folder_this_process_may_not_search_is_refused_naming_the_reason(tmp_path, capsys,
                                                                               monkeypatch):
    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "stat", denied)  # root may search anything: the EACCES a user gets
    err = _refused(capsys, ["explain", "m", "i", "--out", str(tmp_path / "x")])
    assert f"error: argument --out: {tmp_path / 'x'}: cannot check it (Permission denied)" in err


@pytest.mark.parametrize("command", [["fit", "--train", "t", "--out", "o"],
                                     ["ood-benchmark", "--config", "c"]])
@pytest.mark.parametrize("seed", [str(SEED_LIMIT), "18446744073709551616"])
def test_a_seed_beyond_every_consumers_range_is_refused_when_parsed(capsys, command, seed):
    err = _refused(capsys, [*command, "--seed", seed])
    assert f"argument --seed: must be below 2**31 (faiss's IVF clustering takes a 32-bit " \
           f"seed), got {seed!r}" in err


def test_the_largest_seed_is_parsed_and_works_in_every_consumer():
    import faiss
    import torch


    seed = SEED_LIMIT - 1
    args = build_parser().parse_args(["fit", "--train", "t", "--out", "o", "--seed", str(seed)])
    assert args.seed == seed
    faiss.ClusteringParameters().seed = seed  # the smallest consumer: a C int
    with pytest.raises(OverflowError):
        faiss.ClusteringParameters().seed = SEED_LIMIT
    torch.Generator().manual_seed(seed)
    np.random.default_rng(seed)
    from anomaly_inspect.scorers.nn_index import APPROX_MIN_ITEMS, NearestNeighbours

    bank = np.random.default_rng(0).standard_normal((APPROX_MIN_ITEMS, 8)).astype(np.float32)
    nn = NearestNeighbours("ivf", seed=seed).fit(bank)  # before: an OverflowError after the work
    assert nn.resolved_kind == "ivf"


def test_a_config_seed_beyond_the_limit_is_refused_in_the_same_words(tmp_path):
    with pytest.raises(ConfigError, match=r"^config: seed: must be below 2\*\*31 \(faiss's IVF "
                                          r"clustering takes a 32-bit seed\), got 2147483648$"):
        ModelConfig(seed=SEED_LIMIT).check_new_fit()
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"seed": 99999999999999999999999}))
    with pytest.raises(ConfigError, match=rf"^{path}: seed: must be below 2\*\*31"):
        load_config(path)
    assert ModelConfig(seed=SEED_LIMIT - 1).seed == SEED_LIMIT - 1


def test_an_image_size_beyond_the_maximum_is_refused_on_the_command_line_and_in_a_config(capsys):
    for command in (["fit", "--train", "t", "--out", "o"], ["bench-backbone"]):
        err = _refused(capsys, [*command, "--image-size", "100000000"])
        assert f"argument --image-size: must be at most {MAX_IMAGE_SIZE} pixels, got '100000000'" in err
    assert build_parser().parse_args(["bench-backbone", "--image-size", str(MAX_IMAGE_SIZE)]).image_size \
        == MAX_IMAGE_SIZE
    big = ModelConfig(features=FeatureConfig(image_size=MAX_IMAGE_SIZE + 1))  # a saved model's
    with pytest.raises(ConfigError, match=rf"^config: features: image_size: must be at most "
                                          rf"{MAX_IMAGE_SIZE}, got 4097$"):
        big.check_new_fit()
    assert MAX_IMAGE_SIZE == 4096


def test_a_saved_model_beyond_the_new_fit_bounds_still_loads(tmp_path):
    """The seed and size bounds are for new fits: a model fitted before they existed is done,
    and refusing it would lose that work."""
    from anomaly_inspect.screening.model import load_model
    from anomaly_inspect.screening.model_dir import MODEL_JSON, write_checksums
    from layout_writer import fit_tiny_model

    _, model_dir = fit_tiny_model(tmp_path)
    path = model_dir / MODEL_JSON
    info = json.loads(path.read_text())
    info["config"]["seed"] = 4294967296
    info["config"]["features"]["image_size"] = 4608
    path.write_text(json.dumps(info))
    write_checksums(model_dir)
    cfg = load_model(model_dir).cfg
    assert (cfg.seed, cfg.features.image_size) == (4294967296, 4608)


@pytest.mark.parametrize(("value", "reason"), [
    ("", "no variant names"), (",", "no variant names"), ("exact,", "an empty name"),
    ("exact,exact", "exact given twice"), ("two_round,exact,two_round", "two_round given twice")])
def test_bench_coreset_refuses_empty_and_repeated_variants(capsys, value, reason):
    err = _refused(capsys, ["bench-coreset", "--root", "r", "--category", "c", "--variants", value])
    assert f"argument --variants: {reason}" in err


def test_bench_coreset_parses_its_variants_into_a_list():
    args = build_parser().parse_args(["bench-coreset", "--variants", "exact,two_round"])
    assert args.variants == ["exact", "two_round"]


# A ratio or a worker count given twice is refused when parsed.
# ------------------------------------------------------ a value given twice in a list


@pytest.mark.parametrize("argv, message", [
    (["bench-coreset", "--root", "r", "--category", "c", "--ratios", "0.1,0.25,0.10"],
     "argument --ratios: 0.1 given twice in '0.1,0.25,0.10'; each ratio is one row"),
    (["bench-scale", "m", "x", "--workers", "1,2,1"],
     "argument --workers: 1 given twice in '1,2,1'; each value is one run"),
])
def test_a_value_given_twice_is_refused_when_parsed(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and message in err, err
