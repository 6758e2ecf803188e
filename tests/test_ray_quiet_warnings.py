"""--no-shared-storage on a small input: the byte-reading tasks are no more than the blocks they
get, so Ray Data's warning that its concurrency limit exceeds its inputs (with its
``warnings.warn`` line, even under --quiet) is not raised."""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass

import pytest

from anomaly_inspect.pipeline import make_engine


@dataclass
class SizeTask:
    """Yields, per batch, the sizes of the shipped copies."""

    batch_size: int = 8

    def setup(self) -> None:
        pass

    def run(self, paths, local_copies=None):
        yield len(paths), [p.stat().st_size for p in local_copies or paths]


@pytest.fixture(scope="module")
def pickled_by_value(ray_session):
    ray_session.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # tests/ is not on
    yield ray_session  # the workers' path


def test_one_batch_shipped_to_two_workers_raises_no_concurrency_warning(pickled_by_value,
                                                                         tmp_path):
    files = [tmp_path / f"{i}.png" for i in range(3)]
    for i, f in enumerate(files):
        f.write_bytes(b"x" * (i + 1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outs = list(make_engine("ray", workers=2, shared_storage=False).map(SizeTask(), files))
    assert outs == [[1, 2, 3]]  # one batch: one block for the readers
    assert not [w for w in caught if "concurrent tasks" in str(w.message)], \
        [str(w.message) for w in caught]
