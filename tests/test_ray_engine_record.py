"""evaluate's JSON says where its fit ran: ``engine`` (local / ray) and ``workers`` (the Ray
actors the engine's last map ran on; null for the local engine). Nothing recorded it, so a
distributed evaluation (its bank differs slightly by design) could not be told from a local one."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import pytest

import anomaly_inspect.commands.evaluate as evaluate_command
from anomaly_inspect.cli import main
from anomaly_inspect.pipeline import LocalEngine, make_engine
from layout_writer import rgb_image, write_image


@pytest.fixture
def folders(tmp_path):
    for i in range(4):
        write_image(tmp_path / "train" / f"n{i}.png", rgb_image(40, seed=i))
    for i in range(2):
        write_image(tmp_path / "good" / f"g{i}.png", rgb_image(40, seed=10 + i))
        write_image(tmp_path / "bad" / f"b{i}.png", rgb_image(40, seed=20 + i))
    return tmp_path


def _evaluate(folders) -> dict:
    out = folders / "eval.json"
    assert main(["evaluate", "--dataset", "folder", "--train-dir", str(folders / "train"),
                 "--test-normal-dir", str(folders / "good"),
                 "--test-anomalous-dir", str(folders / "bad"), "--weights", "random",
                 "--image-size", "64", "--runtime", "torch", "--quiet",
                 "--output-json", str(out)]) == 0
    return json.loads(out.read_text())


def test_a_local_evaluation_says_local(folders):
    got = _evaluate(folders)
    assert got["engine"] == "local" and got["workers"] is None


def test_a_distributed_evaluation_names_its_engine_and_workers(folders, monkeypatch):
    """The local engine run as a distributed one (the fit's remote path), named as Ray names
    itself after a map on 2 actors."""
    class TwoActors(LocalEngine):
        name, in_process = "ray", False

        def map(self, *args, **kwargs):
            self.actors = 2
            return super().map(*args, **kwargs)

    monkeypatch.setattr(evaluate_command, "engine_from_args", lambda args: TwoActors())
    got = _evaluate(folders)
    assert got["engine"] == "ray" and got["workers"] == 2


@dataclass
class Names:
    """A toy task: each batch's names."""

    batch_size: int = 2

    def setup(self) -> None:
        pass

    def run(self, paths, local_copies=None):
        for s in range(0, len(paths), self.batch_size):
            yield len(paths[s:s + self.batch_size]), [p.name for p in paths[s:s + self.batch_size]]


def test_the_ray_engine_keeps_the_actors_its_map_ran_on(ray_session, tmp_path):
    ray_session.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    paths = [tmp_path / f"f{i}" for i in range(4)]
    engine = make_engine("ray", workers=2)
    assert engine.actors is None  # no map yet
    assert [n for out in engine.map(Names(), paths) for n in out] == ["f0", "f1", "f2", "f3"]
    assert engine.actors == 2
