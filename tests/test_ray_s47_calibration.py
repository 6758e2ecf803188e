"""A distributed fit refuses calibration images that are training images in every form the
local fit warns about (the same path, the same file by a link, a byte-identical copy), before
any backbone is built, and the local fit's warning is given once. A distributed fit compared
paths only: a copy of the training folder as calibration passed with a too-low threshold, and
the warning was printed twice. The engine is the local one run as a distributed one (no Ray)."""

from __future__ import annotations

import logging
import shutil

import pytest

from anomaly_inspect.config import ModelConfig
from anomaly_inspect.pipeline import LocalEngine
from anomaly_inspect.screening import fit
from layout_writer import rgb_image, write_image

OVERLAP = "calibration images are also training images"


class Distributed(LocalEngine):
    """The local engine, taken for a distributed one (``fit`` goes through fit_on_engine)."""

    in_process = False


@pytest.fixture
def train(tmp_path):
    for i in range(5):
        write_image(tmp_path / "train" / f"n{i}.png", rgb_image(40, seed=i))
    return tmp_path / "train"


def _cfg():
    return ModelConfig.from_dict({"backbone": {"weights": "random", "runtime": "torch"},
                                  "features": {"image_size": 64, "batch_size": 4}}, "test")


@pytest.mark.parametrize("form", ["same", "link", "copy"])
def test_every_form_of_overlap_is_refused_once_warned(train, tmp_path, caplog, monkeypatch,
                                                      form):
    import anomaly_inspect.screening.distributed_fit as distributed_fit

    cal = tmp_path / "cal"
    if form == "same":
        cal = train
    elif form == "link":
        cal.symlink_to(train, target_is_directory=True)
    else:
        shutil.copytree(train, cal)
    monkeypatch.setattr(distributed_fit, "build", lambda *a, **k: pytest.fail("backbone built"))
    with caplog.at_level(logging.WARNING), pytest.raises(ValueError) as err:
        fit(train, _cfg(), calibration=cal, progress=False, engine=Distributed())
    assert str(err.value).startswith(f"5 {OVERLAP} (the same files or copies of them, in {cal}); "
                                     f"a distributed fit needs the two disjoint")
    assert sum(OVERLAP in r.getMessage() for r in caplog.records) == 1


def test_disjoint_calibration_images_fit_without_the_warning(train, tmp_path, caplog):
    write_image(tmp_path / "cal" / "c0.png", rgb_image(40, seed=7))
    with caplog.at_level(logging.WARNING):
        model = fit(train, _cfg(), calibration=tmp_path / "cal", progress=False,
                    engine=Distributed())
    assert len(model.info.calibration_images) == 1 and len(model.info.train_images) == 5
    assert not any(OVERLAP in r.getMessage() for r in caplog.records)
