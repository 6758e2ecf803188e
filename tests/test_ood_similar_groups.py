"""data.similar_groups in an MVTec colour config: a split's colour is looked up by the split's
name among the manifest's colour groups, so a name that is not one, a single group, or a split
that holds images of other groups is refused in one line naming the config, the key, the
category and the manifest's groups."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly_inspect.config import ConfigError
from anomaly_inspect.data.mvtec_ood import (
    check_colour_splits,
    check_similarity_groups,
    colour_similarity,
)
from anomaly_inspect.evaluation.ood_benchmark import OODBenchmarkConfig, build_data

MANIFEST = """category,path,colour_group,mask_mean_r,mask_mean_g,mask_mean_b
tiny,test/scratch/000.png,red,200,40,40
tiny,test/scratch/001.png,red,190,50,50
tiny,test/stain/000.png,yellow,200,200,60
tiny,test/stain/001.png,blue,40,40,200
other,test/stain/000.png,green,40,200,40
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small synthetic MVTec-layout category (64 px) and a colour manifest of its defects:
    scratch = red, stain = one yellow and one blue image."""
    from anomaly_inspect.data.synthetic import generate_dataset

    root = generate_dataset(tmp_path_factory.mktemp("data"), "tiny", n_train=8, n_test_good=4,
                            n_test_per_defect=2, image_size=64, defects=("scratch", "stain")).parent
    (root / "colours.csv").write_text(MANIFEST)
    return root


def _colour_cfg(root, ood_groups, similar_groups) -> OODBenchmarkConfig:
    return OODBenchmarkConfig.from_dict({
        "benchmark": "mvtec_heldout", "splits": ["similar", "dissimilar"], "scorers": ["nan"],
        "data": {"root": str(root), "category": "tiny", "id_groups": ["good"], "ood_groups": ood_groups,
                 "colour_manifest": str(root / "colours.csv"), "similar_groups": similar_groups,
                 "folds": 2}}, "c.yaml")


PREFIX = r"^c\.yaml: data\.similar_groups: category 'tiny' \(.*colours\.csv\): "


@pytest.mark.parametrize("ood_groups, similar, message", [
    ({"red_spots": ["colour:red"], "yellow_spots": ["colour:yellow"]}, ["red_spots", "yellow_spots"],
     r"\['red_spots', 'yellow_spots'\] are not colour groups of the manifest, whose groups for this "
     r"category are \['blue', 'red', 'yellow'\]; a group's colour is looked up by its name"),
    ({"red": ["colour:red"], "all": ["scratch", "stain"]}, ["red", "all"],
     r"\['all'\] are not colour groups of the manifest, whose groups for this category are "
     r"\['blue', 'red', 'yellow'\]"),
    ({"red": ["colour:red"], "yellow": ["colour:yellow"]}, ["red"],
     r"needs at least 2 colour groups to compare, got \['red'\]$"),
])
def test_similar_groups_the_rule_cannot_look_up_are_named_in_one_line(tiny, ood_groups, similar, message):
    with pytest.raises(ConfigError, match=PREFIX + message) as err:
        build_data(_colour_cfg(tiny, ood_groups, similar))
    assert "\n" not in str(err.value)


def test_a_split_named_after_a_colour_group_holding_other_groups_images_is_refused(tiny):
    """Its colour would be its red rows' only: the blue image in it would go unmeasured."""
    cfg = _colour_cfg(tiny, {"red": ["colour:red", "colour:blue"], "yellow": ["colour:yellow"]},
                      ["red", "yellow"])
    with pytest.raises(ConfigError, match=PREFIX + r"split 'red' holds 1 image\(s\) outside colour group "
                                          r"'red' \(first: .*stain/001\.png\); the rule gives the split "
                                          r"that group's colour, so it must hold only colour:red images$"):
        build_data(cfg)


def test_splits_named_after_their_colour_group_get_the_rule(tiny):
    """A defect folder holding exactly one group's images passes as well as a colour: entry."""
    data, _ = build_data(_colour_cfg(tiny, {"red": ["scratch"], "blue": ["colour:blue"]}, ["red", "blue"]))
    rule = data.notes["colour_similarity"]
    assert {rule["similar"], rule["dissimilar"]} == {"red", "blue"}
    assert {s.group for s in data.ood["similar"]} == {rule["similar"]}
    assert {s.group for s in data.ood["dissimilar"]} == {rule["dissimilar"]}
    assert len(data.ood["similar"]) + len(data.ood["dissimilar"]) == 3  # 2 red, 1 blue


def test_the_rule_itself_refuses_what_the_benchmark_checks(tmp_path):
    rgb = {"red": np.array([200.0, 0, 0]), "blue": np.array([0, 0, 200.0])}
    with pytest.raises(ValueError, match=r"\['green'\] are not colour groups"):
        colour_similarity(np.zeros(3), rgb, ["red", "green"])
    check_similarity_groups(rgb, ["red", "blue"])
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "a.png").touch()
    check_colour_splits({"red": [tmp_path / "test" / "a.png"]}, {"red": ["test/a.png"]}, tmp_path)
    with pytest.raises(ValueError, match=r"split 'blue' holds 1 image"):
        check_colour_splits({"blue": [tmp_path / "test" / "a.png"]}, {"red": ["test/a.png"]}, tmp_path)
