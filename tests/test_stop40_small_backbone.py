"""The damaged-export warning is written in one place, for export() and for a run alike."""

from __future__ import annotations

import logging
from pathlib import Path

from anomaly_inspect.features import backbone
from anomaly_inspect.features.runtime import DamagedGraphError


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
