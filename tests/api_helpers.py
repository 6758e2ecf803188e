"""Fixtures and builders shared by the Python API's tests (test_api_arguments, test_api_config)."""

from __future__ import annotations

from anomaly_inspect.data.mvtec import AnomalyDataset
from anomaly_inspect.data.samples import Sample


def labelled_dataset(labels=(0, 1)) -> AnomalyDataset:
    return AnomalyDataset("tiny", [Sample(f"train{i}.png", 0, "train") for i in range(2)],
                          [Sample(f"test{i}.png", label) for i, label in enumerate(labels)])
