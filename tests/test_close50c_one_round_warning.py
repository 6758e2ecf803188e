"""``first_round_ratio: null`` (the plain chunked greedy) at a ratio where "auto" would
oversample is logged once (issue 20: at 1 % a 4096-row chunk gets 41 picks)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

import anomaly_inspect.scorers.coreset as coreset
from anomaly_inspect.core import Features
from anomaly_inspect.evaluation.coreset_bench import bench_coreset_features
from anomaly_inspect.scorers.coreset import ROUND_TWO_BUDGET, TwoRoundCoreset, round_one

LOGGER = "anomaly_inspect.scorers.coreset"


@pytest.fixture(autouse=True)
def fresh(monkeypatch, caplog):
    """No ratio warned about yet in this process; the coreset's warnings captured."""
    monkeypatch.setattr(coreset, "_WARNED_RATIOS", set(), raising=False)
    caplog.set_level(logging.WARNING, LOGGER)


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.levelno == logging.WARNING]


ROWS = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)


def plain(ratio: float, rows: np.ndarray = ROWS) -> np.ndarray:
    coreset = TwoRoundCoreset(ratio, chunk_size=64, first_round_ratio=None)
    coreset.add(rows)
    return coreset.finish()


def test_plain_chunked_greedy_at_a_small_ratio_warns_once(caplog):
    TwoRoundCoreset(0.01, chunk_size=64, first_round_ratio=None)
    assert warnings(caplog) == []  # nothing chunked yet
    plain(0.01)
    plain(0.01)
    (message,) = warnings(caplog)
    assert "first_round_ratio None" in message and "ratio 0.01" in message
    assert "does not oversample" in message and "'auto'" in message
    plain(0.03)  # another ratio: its own
    assert len(warnings(caplog)) == 2


def test_rows_within_one_chunk_get_the_exact_greedy_and_no_warning(caplog):
    picks = plain(0.02, ROWS[:60])
    auto = TwoRoundCoreset(0.02, chunk_size=64)
    auto.add(ROWS[:60])
    np.testing.assert_array_equal(picks, auto.finish())
    assert warnings(caplog) == []


@pytest.mark.parametrize("ratio, chunk_size, first", [
    (0.01, 4096, "auto"),  # the default oversamples
    (0.01, 4096, 0.3),
    (0.01, None, None),  # the exact greedy
    (0.1, 4096, None),  # "auto" keeps the ratio itself here: nothing lost
    (math.sqrt(ROUND_TWO_BUDGET), 4096, None),
])
def test_no_warning_where_round_one_loses_nothing_against_auto(caplog, ratio, chunk_size, first):
    coreset = TwoRoundCoreset(ratio, chunk_size=chunk_size and 64, first_round_ratio=first)
    coreset.add(ROWS)
    coreset.finish()
    assert warnings(caplog) == []


def test_the_distributed_fit_warns_on_the_driver_whatever_its_blocks(caplog):
    """Workers run round 1 on blocks that each fit one chunk (so each keeps 2 % of its block
    and round 2 has nothing to choose): the driver, which sees every row, warns once; the
    workers, whose logs do not reach the user, do not."""
    blocks = np.random.default_rng(0).standard_normal((4, 60, 8)).astype(np.float32)
    driver = TwoRoundCoreset(0.02, chunk_size=64, first_round_ratio=None)
    for stream, block in enumerate(blocks):
        chunks = round_one(block, 0.02, 64, None, None, stream=stream)
        assert warnings(caplog) == []
        driver.add_round_one(chunks, block[np.concatenate(chunks)], len(block))
    driver.finish()
    driver.finish()
    assert len(warnings(caplog)) == 1


def test_bench_coreset_one_round_variant_warns_once_per_run(caplog):
    rng = np.random.default_rng(0)
    train = Features(patches=rng.standard_normal((8, 8, 8, 4)).astype(np.float32))
    test = Features(patches=rng.standard_normal((4, 8, 8, 4)).astype(np.float32))
    rows = bench_coreset_features("synthetic", train, test, np.array([0, 0, 1, 1]),
                                  {"chunk_size": 64}, [0.02], ["two_round", "one_round"],
                                  progress=False)
    assert [r["variant"] for r in rows] == ["two_round", "one_round"]
    assert len(warnings(caplog)) == 1
