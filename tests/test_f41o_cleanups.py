"""One dataset-option check (load_dataset's, naming evaluate's flags); public names where modules
share a helper; one debug switch; bench-scale's steady rate only where it means something;
folder masks pairing across Unicode forms."""

from __future__ import annotations

import ast
import types
import unicodedata
from pathlib import Path

import pytest

from anomaly_inspect.data import folder as folder_module
from anomaly_inspect.data import registry
from anomaly_inspect.data.folder import load_folders
from anomaly_inspect.data.registry import available_datasets, dataset_options, load_dataset
from anomaly_inspect.screening import scale_bench
from layout_writer import rgb_image, write_image, write_mask

PACKAGE = Path(__file__).resolve().parents[1] / "inspect" / "anomaly_inspect"


# ------------------------------------------------------------------ 1. one dataset-option check


def test_a_required_option_without_a_flag_is_one_line_not_a_traceback(monkeypatch, capsys):
    """evaluate's own check looked the flag up in its table: KeyError (a traceback)."""
    from anomaly_inspect.cli import main

    def load_tokened(token: str, train_dirs=()):
        raise AssertionError("never reached")

    monkeypatch.setattr(folder_module, "load_tokened", load_tokened, raising=False)
    monkeypatch.setitem(registry.DATASETS, "tokened", "folder:load_tokened")
    assert main(["evaluate", "--dataset", "tokened", "--quiet"]) == 1
    assert capsys.readouterr().err == "error: --dataset tokened needs token (no flag sets it)\n"


def test_load_dataset_names_the_callers_flags(tmp_path):
    from anomaly_inspect.commands.evaluate import OPTION_FLAGS

    with pytest.raises(ValueError, match=r"^--dataset folder needs --train-dir$"):
        load_dataset("folder", OPTION_FLAGS, root=None, train_dirs=[])
    with pytest.raises(ValueError) as err:  # a user's error (the CLI's one line), not a TypeError
        load_dataset("folder", OPTION_FLAGS, train_dirs=[tmp_path], category="c")
    assert not isinstance(err.value, TypeError)
    assert str(err.value) == ("--dataset folder does not take --category; it takes --train-dir, "
                              "--test-normal-dir, --test-anomalous-dir, --mask-dir")
    with pytest.raises(TypeError, match=r"^dataset 'folder' does not take category; it takes "
                                        r"train_dirs, .*, name$"):  # without flags: as before
        load_dataset("folder", train_dirs=[tmp_path], category="c")


def test_every_required_adapter_option_has_an_evaluate_flag():
    from anomaly_inspect.commands.evaluate import OPTION_FLAGS

    options = {o for d in available_datasets() for kind in dataset_options(d) for o in kind}
    required = {o for d in available_datasets() for o in dataset_options(d)[0]}
    assert required <= set(OPTION_FLAGS) <= options
    assert options - set(OPTION_FLAGS) == {"name"}  # folder's display name: no flag


def test_evaluate_checks_the_options_once_in_load_dataset():
    tree = ast.parse((PACKAGE / "commands" / "evaluate.py").read_text(encoding="utf-8"))
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert "dataset_options" not in names


# ------------------------------------------------------------------ 2. public names across modules


def _private_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [f"{node.module}.{a.name}" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
            for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]


@pytest.mark.parametrize("module", ["commands/common.py", "screening/runner.py",
                                    "screening/deploy.py", "scorers/coreset.py"])
def test_no_private_name_is_imported_from_another_module(module):
    assert _private_imports(PACKAGE / module) == []


def test_the_shared_helpers_are_public():
    from anomaly_inspect.features.backbone import create_timm_model
    from anomaly_inspect.scorers.base import sum_is_finite
    from anomaly_inspect.screening.explain import error_reason
    from anomaly_inspect.screening.model_dir import read_checksums

    assert all(map(callable, (create_timm_model, sum_is_finite, error_reason, read_checksums)))


def test_stage_strides_live_with_the_backbone_and_tuning_reexports_them():
    from anomaly_inspect.features import backbone
    from anomaly_inspect.tuning import candidates

    assert candidates.stage_strides is backbone.stage_strides
    assert candidates.layer_strides is backbone.layer_strides
    tree = ast.parse((PACKAGE / "commands" / "common.py").read_text(encoding="utf-8"))
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any(m and m.lstrip(".").startswith("tuning") for m in modules), modules


def test_an_unknown_backbone_keeps_its_messages():
    from anomaly_inspect.config import ModelConfig
    from anomaly_inspect.features.backbone import stage_strides
    from anomaly_inspect.tuning.candidates import Candidate

    with pytest.raises(ValueError, match=r"^backbone 'lite9': not a timm model name$"):
        stage_strides.__wrapped__("lite9")
    with pytest.raises(ValueError, match=r"^candidate lite9-320-8\+16-rows-stretch: backbone "
                                         r"'lite9': not a timm model name \(candidates name "
                                         r"lite0, lite1, lite2 or a timm model, e\.g\. "
                                         r"tf_efficientnet_lite0\)$"):
        Candidate.parse("lite9-320-8+16-rows-stretch").check(ModelConfig())


# ------------------------------------------------------------------ 3. one debug switch


def test_the_debug_switch_is_defined_once():
    from anomaly_inspect import cli, progress
    from anomaly_inspect.pipeline import ray_engine

    assert cli.DEBUG_ENV is progress.DEBUG_ENV is ray_engine.DEBUG_ENV == "ANOMALY_INSPECT_DEBUG"
    literal = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
               if '"ANOMALY_INSPECT_DEBUG"' in p.read_text(encoding="utf-8")]
    assert literal == ["progress.py"]


# ------------------------------------------------------------------ 4. bench-scale's steady rate


def test_the_steady_rate_needs_batches_and_time_after_the_first():
    need = scale_bench.MIN_STEADY_BATCHES
    assert need == 3 and scale_bench.MIN_STEADY_S == 1.0
    # 40 images at batch 32 on Ray: 8 images 0.01 s after the first batch (it printed 758.80)
    assert scale_bench.steady_rate(8, 1, 0.0105) == (None, "1 batch after the first; 3 needed")
    assert scale_bench.steady_rate(0, 0, 0.0) == (None, "one batch")
    # enough batches, but drained at once (finished while the first was in flight)
    assert scale_bench.steady_rate(32, 4, 0.05) == (None, "0.05 s after the first batch; 1 s needed")
    # the recorded 1,000-image runs: ~62 batches over ~20 s, the rate as before
    assert scale_bench.steady_rate(984, 61, 20.17) == (984 / 20.17, None)


class _Batch:
    def __init__(self, n):
        self.images = [types.SimpleNamespace(error="")] * n


class _Model:
    class extractor:  # noqa: N801  (the attribute run_one reads)
        batch_size = 32

    def iter_score(self, paths, **kwargs):
        yield _Batch(32)
        yield _Batch(len(paths) - 32)


def test_a_short_run_has_no_steady_rate(monkeypatch, tmp_path):
    import anomaly_inspect.screening.model as model_module

    monkeypatch.setattr(model_module, "load_model", lambda directory, **kw: _Model())
    (tmp_path / "paths.txt").write_text("\n".join(f"{i}.png" for i in range(40)))
    row = scale_bench.run_one(str(tmp_path / "m"), str(tmp_path / "paths.txt"), "local", None)
    assert row["images"] == 40 and row["steady_img_s"] is None
    assert row["steady_na"] == "1 batch after the first; 3 needed"
    row.update(round=0, load_before=0.0, load_after=0.0)
    assert "steady n/a (1 batch after the first; 3 needed)" in scale_bench.format_row(row, [row])


# ------------------------------------------------------------------ 5. folder masks, Unicode forms


def test_folder_masks_pair_nfc_and_nfd_names(tmp_path):
    nfc, nfd = (unicodedata.normalize(f, "café") for f in ("NFC", "NFD"))
    assert nfc != nfd
    write_image(tmp_path / "good" / "0.png", rgb_image(32, 1))
    write_image(tmp_path / "bad" / f"{nfc}.png", rgb_image(32, 2))
    write_mask(tmp_path / "masks" / f"{nfd}_mask.png")
    ds = load_folders(tmp_path / "good", test_anomalous_dirs=tmp_path / "bad",
                      mask_dir=tmp_path / "masks")
    assert [(s.path.name, s.mask_path.name) for s in ds.test] == [(f"{nfc}.png", f"{nfd}_mask.png")]
