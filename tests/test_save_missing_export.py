"""A fitted model saves although its backbone graphs left the user cache while it was fitted
(``anomaly-inspect cache --clear onnx`` in another shell): the f32 export is made again under
its key, an int8 graph quantised again from the calibration images the backbone holds, and
the saved model scores as the fitted one. A graph that cannot be made again is an error that
names it, raised before anything of the model directory is written."""

from __future__ import annotations

import pytest

from anomaly_inspect.screening import fit, load_model
from anomaly_inspect.screening.model_dir import save_model_dir
from layout_writer import rgb_image, small_config, write_image


def _fit(root, precision: str):
    for i in range(8):
        write_image(root / "train" / f"{i}.png", rgb_image(48, seed=i))
    write_image(root / "probe.png", rgb_image(48, seed=99))
    return fit([root / "train"], small_config(runtime="onnxruntime", precision=precision),
               calibration_fraction=0.25, progress=False)


@pytest.mark.parametrize("precision", ["f32", "int8"])
def test_a_model_saves_its_graphs_after_the_cache_lost_them(tmp_path, monkeypatch, precision):
    monkeypatch.setenv("ANOMALY_INSPECT_CACHE", str(tmp_path / "cache"))
    model = _fit(tmp_path, precision)
    graphs = model.extractor.backbone.exports
    assert len(graphs) == (2 if precision == "int8" else 1)
    want = model.score([tmp_path / "probe.png"])[0].score
    for g in graphs:  # what `cache --clear onnx` does meanwhile
        g.unlink()
    saved = model.save(tmp_path / "model")
    assert sorted(p.name for p in (saved / "backbone").iterdir()) == sorted(g.name for g in graphs)
    assert all(g.is_file() for g in graphs)  # made again under the same names (key, digest)
    again = load_model(saved)
    assert again.score([tmp_path / "probe.png"])[0].score == pytest.approx(want, rel=1e-5)


def test_a_graph_that_cannot_be_made_again_is_named_before_anything_is_written(tmp_path,
                                                                              monkeypatch):
    monkeypatch.setenv("ANOMALY_INSPECT_CACHE", str(tmp_path / "cache"))
    model = _fit(tmp_path, "f32")
    backbone = model.extractor.backbone
    (graph,) = backbone.exports
    graph.unlink()

    def refused(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(backbone, "export", refused)
    with pytest.raises(FileNotFoundError, match=rf"{graph.name}.*gone.*could not be made again.*"
                                                r"disk full"):
        model.save(tmp_path / "out" / "model")
    assert not (tmp_path / "out").exists()
    # a file gone between that and the copy (or any file to save with the model): named first
    with pytest.raises(FileNotFoundError, match=rf"{graph.name} \(to be saved as "
                                                rf"backbone/{graph.name}\): gone"):
        save_model_dir(tmp_path / "out" / "model", model.info, model.scorer,
                       extra_files={f"backbone/{graph.name}": graph})
    assert not (tmp_path / "out").exists()
