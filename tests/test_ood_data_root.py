"""ood-benchmark names a missing dataset root as such, with what a relative root was read
relative to (it said a file inside the dataset was missing, e.g. index.csv). A packaged config's
paths are relative to a data folder (--data-root, else $ANOMALY_INSPECT_DATA, else
../shared/data), so that --data-root can point it at data anywhere; a user's own file's stay
relative to --data-root or the current folder."""

from pathlib import Path

import pytest

from anomaly_inspect.choices import ConfigError
from anomaly_inspect.config import CONFIG_DIR, packaged_configs
from anomaly_inspect.evaluation.ood_benchmark import (
    OODBenchmarkConfig,
    build_data,
    data_paths,
    load_ood_config,
)


def _cfg(root):
    return OODBenchmarkConfig.from_dict({"benchmark": "mvtec_heldout", "splits": ["all"],
                                         "scorers": ["nan"],
                                         "data": {"root": root, "category": "bottle",
                                                  "ood_groups": {"all": ["x"]}}}, "m.yaml")


def test_a_relative_root_read_from_the_wrong_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"m\.yaml: data\.root: .* is not a folder \(\.\./shared/data/mvtec_ad "
                                          r"is read relative to the current folder .*--data-root\)"):
        build_data(_cfg("../shared/data/mvtec_ad"))


def test_a_data_root_that_is_missing_or_does_not_hold_the_root(tmp_path):
    cfg = _cfg("mvtec_ad")
    with pytest.raises(ConfigError, match=r"relative to --data-root /nonexist, which is not a folder; "
                                          r"check data\.root and --data-root\)$"):
        build_data(cfg, Path("/nonexist"))
    with pytest.raises(ConfigError, match=r"which does not hold it; check data\.root and --data-root\)$"):
        build_data(cfg, tmp_path)


def test_an_absolute_root_is_named_without_a_hint(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.root: .*gone is not a folder$"):
        build_data(_cfg(str(tmp_path / "gone")), tmp_path)


def test_a_home_relative_root_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "mvtec_ad").mkdir()
    # the root is found (the error is now about the category inside it)
    with pytest.raises(FileNotFoundError, match=r"mvtec_ad/bottle: category folder not found"):
        build_data(_cfg("~/mvtec_ad"))


def test_an_existing_root_reports_the_missing_category_and_where_it_is(tmp_path):
    (tmp_path / "mvtec_ad" / "bottle" / "train" / "good").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"bottle: category folder not found .*; bottle is under "
                                                r".*mvtec_ad: pass that as the root"):
        build_data(_cfg(str(tmp_path)))


# --- packaged configs: data paths relative to a data folder ------------------------------
REPO = Path(__file__).resolve().parents[1]
#: each packaged OOD config's data paths as they were written before its paths were made
#: relative to the data folder (read relative to the current folder, the repository root)
BEFORE = {
    "ood/isic_all": {"root": "../shared/data/isic2017_256"},
    "ood/isic_charts": {"root": "../shared/data/isic2017_256"},
    "ood/isic_ink": {"root": "../shared/data/isic2017_256"},
    "ood/isic_archive_example": {
        "image_dir": "/path/to/isic_archive/images", "metadata_csv": "/path/to/isic_archive/metadata.csv",
        "id_list": "/path/to/annotations/training_data.txt",
        "ood_lists.ink_red": "/path/to/annotations/Ink_annotations/red.txt",
        "ood_lists.ink_black": "/path/to/annotations/Ink_annotations/black.txt"},
    "ood/mvtec_bottle_heldout": {"root": "../shared/data/mvtec_ad"},
    **{f"ood/mvtec_{c}_colour": {"root": "../shared/data/mvtec_ad",
                                 "colour_manifest": "../shared/data/meta/mvtec_color_defect_groups.csv"}
       for c in ("pill", "metal_nut")},
}


def test_the_packaged_configs_read_the_same_files_from_the_repository_root(monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("ANOMALY_INSPECT_DATA", raising=False)
    assert set(BEFORE) == {n for n in packaged_configs() if n.startswith("ood/")}
    for name, before in BEFORE.items():
        for ref in (name, f"configs/{name}.yaml"):  # a name, or the path through the checkout's link
            cfg = load_ood_config(ref)
            assert cfg.packaged
            assert {k: p.resolve() for k, p in data_paths(cfg).items()} == \
                {k: (REPO / v).resolve() for k, v in before.items()}, ref


def test_a_packaged_config_reads_data_root_else_the_environment_else_shared_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ANOMALY_INSPECT_DATA", raising=False)
    cfg = load_ood_config("ood/mvtec_pill_colour")
    assert data_paths(cfg) == {"root": Path("../shared/data/mvtec_ad"),
                               "colour_manifest": Path("../shared/data/meta/mvtec_color_defect_groups.csv")}
    monkeypatch.setenv("ANOMALY_INSPECT_DATA", str(tmp_path / "env"))
    assert data_paths(cfg)["root"] == tmp_path / "env" / "mvtec_ad"
    assert data_paths(cfg, tmp_path / "mine") == {  # --data-root wins
        "root": tmp_path / "mine" / "mvtec_ad",
        "colour_manifest": tmp_path / "mine" / "meta" / "mvtec_color_defect_groups.csv"}


def test_a_data_root_elsewhere_finds_a_packaged_configs_dataset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mydata" / "mvtec_ad").mkdir(parents=True)
    # the root is found (the error is now about the category inside it)
    with pytest.raises(FileNotFoundError, match=r"mydata/mvtec_ad/bottle: category folder not found"):
        build_data(load_ood_config("ood/mvtec_bottle_heldout"), tmp_path / "mydata")


def test_a_packaged_config_runs_on_the_real_data_folder_from_elsewhere(shared_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data, _ = build_data(load_ood_config("ood/mvtec_bottle_heldout"), shared_data)
    assert data.id_train and all(s.path.is_relative_to(shared_data / "mvtec_ad" / "bottle") for s in data.id_train)


def test_a_copy_of_a_packaged_config_keeps_the_own_file_rule(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ANOMALY_INSPECT_DATA", str(tmp_path / "env"))  # for packaged configs only
    own = tmp_path / "own.yaml"
    own.write_text((CONFIG_DIR / "ood" / "mvtec_bottle_heldout.yaml").read_text())
    cfg = load_ood_config(own)
    assert not cfg.packaged and data_paths(cfg) == {"root": Path("mvtec_ad")}
    assert data_paths(cfg, tmp_path / "mine") == {"root": tmp_path / "mine" / "mvtec_ad"}


def test_the_hint_of_a_packaged_config_says_where_its_data_folder_came_from(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ANOMALY_INSPECT_DATA", raising=False)
    cfg = load_ood_config("ood/mvtec_bottle_heldout")
    todo = r"give the folder that holds mvtec_ad/ as --data-root DIR or in ANOMALY_INSPECT_DATA\)$"
    with pytest.raises(ConfigError, match=r"^ood/mvtec_bottle_heldout: data\.root: \.\./shared/data/mvtec_ad is not a "
                                          r"folder \(a packaged config reads mvtec_ad in its data folder, here "
                                          r"\.\./shared/data relative to the current folder .* \(the default\), which is not "
                                          r"a folder; " + todo):
        build_data(cfg)
    monkeypatch.setenv("ANOMALY_INSPECT_DATA", "/nonexist")
    with pytest.raises(ConfigError, match=r"data folder, here \$ANOMALY_INSPECT_DATA /nonexist, which is not a "
                                          r"folder; " + todo):
        build_data(cfg)
    with pytest.raises(ConfigError, match=r"data folder, here --data-root .*, which does not hold it; " + todo):
        build_data(cfg, tmp_path)
