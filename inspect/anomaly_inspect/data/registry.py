"""Dataset registry: name -> adapter, so that ``--dataset NAME`` finds it.

Adding a dataset is one adapter module (a function returning an
:class:`~.mvtec.AnomalyDataset`) plus one line in :data:`DATASETS`, as adding a
scorer is one module plus one line in ``scorers._REGISTRY``. Options reach the
adapter by parameter name.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

from .mvtec import AnomalyDataset

#: name -> "module:function", relative to this package; imported on first use
DATASETS = {
    "mvtec": "mvtec:load_mvtec",  # MVTec AD layout (also magnetic tile, metal nut, ...)
    "folder": "folder:load_folders",  # plain folders of normal / anomalous images
}


def available_datasets() -> list[str]:
    return sorted(DATASETS)


def dataset_loader(name: str):
    try:
        module, fn = DATASETS[name].split(":")
    except KeyError:
        raise ValueError(f"unknown dataset '{name}'; available: {', '.join(available_datasets())}") from None
    return getattr(importlib.import_module(f".{module}", __package__), fn)


def dataset_options(name: str) -> tuple[list[str], list[str]]:
    """(required, optional) option names of dataset ``name``."""
    params = inspect.signature(dataset_loader(name)).parameters.values()
    required = [p.name for p in params if p.default is inspect.Parameter.empty]
    return required, [p.name for p in params if p.default is not inspect.Parameter.empty]


def load_dataset(name: str, flags: Mapping[str, str] | None = None, /,
                 **options: Any) -> AnomalyDataset:
    """Load dataset ``name``: the one check of its options. Options left unset (None / empty) are
    ignored, so that a caller may pass every adapter's options (as ``evaluate`` passes its flags);
    a set one the adapter does not take (a misspelt name would silently drop, e.g., the masks) is
    a one-line ``TypeError`` naming the options it takes, a missing required one a ``ValueError``.
    ``flags`` (option -> the command-line flag that sets it) makes both errors the user's: a
    ``ValueError`` saying ``--dataset NAME`` and the flags (options without one are not offered)."""
    required, optional = dataset_options(name)
    given = {k: v for k, v in options.items() if v is not None and v != [] and v != ()}
    unknown = [k for k in given if k not in required + optional]
    missing = [k for k in required if k not in given]
    if flags is not None:
        def flag(option: str) -> str:
            return flags.get(option, f"{option} (no flag sets it)")

        if missing:
            raise ValueError(f"--dataset {name} needs {', '.join(map(flag, missing))}")
        if unknown:
            raise ValueError(f"--dataset {name} does not take {', '.join(map(flag, unknown))}; it takes "
                             f"{', '.join(flags[k] for k in required + optional if k in flags)}")
    if unknown:
        raise TypeError(f"dataset '{name}' does not take {', '.join(unknown)}; it takes "
                        f"{', '.join(required + optional)}")
    if missing:
        raise ValueError(f"dataset '{name}' needs {', '.join(missing)}")
    return dataset_loader(name)(**given)
