"""An exact search of a few queries runs on one faiss thread (same results, threads restored)."""

from __future__ import annotations

import faiss
import numpy as np

from anomaly_inspect.scorers import nn_index
from anomaly_inspect.scorers.nn_index import ONE_THREAD_MAX_QUERIES, NearestNeighbours


def test_a_few_queries_search_on_one_thread_with_the_same_results(monkeypatch):
    rng = np.random.default_rng(0)
    bank = rng.standard_normal((3000, 16)).astype(np.float32)
    nn = NearestNeighbours("hnsw")
    nn.fit(bank)
    queries = rng.standard_normal((ONE_THREAD_MAX_QUERIES + 5, 16)).astype(np.float32)
    seen = []
    real = nn_index.faiss_threads
    monkeypatch.setattr(nn_index, "faiss_threads", lambda n: seen.append(n) or real(n))
    before = faiss.omp_get_max_threads()
    few_d, few_i = nn.search_exact(queries[:8], 3)
    many_d, many_i = nn.search_exact(queries, 3)
    assert seen == [1]  # only the few queries' search
    assert faiss.omp_get_max_threads() == before
    np.testing.assert_array_equal(few_i, many_i[:8])
    np.testing.assert_allclose(few_d, many_d[:8], rtol=1e-6)
    d2 = ((queries[:8, None] - bank[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(few_i[:, 0], d2.argmin(1))
