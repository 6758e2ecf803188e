"""A distributed fit refuses calibration images that are training images in every form the
local fit warns about (the same path, the same file by a link, a byte-identical copy), before
any backbone is built, and the local fit's warning is given once. A distributed fit compared
paths only: a copy of the training folder as calibration passed with a too-low threshold, and
the warning was printed twice. The engine is the local one run as a distributed one (no Ray)."""

from __future__ import annotations

import logging
import os
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


def test_the_overlap_check_reads_each_file_once_however_often_it_runs(tmp_path, monkeypatch):
    """fit, the distributed fit's refusal and its split each check the calibration images
    against the training images: every same-size file is hashed once in the process, and a
    file changed since is hashed again."""
    from anomaly_inspect import files
    from anomaly_inspect.screening import model as model_mod

    calls = []
    real = files.file_sha256
    monkeypatch.setattr(files, "file_sha256", lambda p: calls.append(p) or real(p))
    train = [tmp_path / f"t{i}.bin" for i in range(3)]
    cal = [tmp_path / f"c{i}.bin" for i in range(2)]
    for i, p in enumerate(train + cal):
        p.write_bytes(bytes([i % 3]) * 64)  # every file the same size; c0 = t0, c1 = t1
    assert [model_mod._same_files(cal, train) for _ in range(3)] == [2, 2, 2]
    assert len(calls) == 5 and len(set(calls)) == 5
    cal[1].write_bytes(b"\x09" * 64)  # changed: hashed again, no longer a copy
    st = cal[1].stat()
    os.utime(cal[1], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a coarse clock still sees it
    assert model_mod._same_files(cal, train) == 1
    assert len(calls) == 6
