import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

sys.path.insert(0, "/work/dev/inspect")
from threadpoolctl import threadpool_limits

from anomaly_inspect.scorers.coreset import _greedy_loop

rng = np.random.default_rng(0)
chunks = [rng.standard_normal((4096, 128)).astype(np.float32) for _ in range(16)]
k = 410
for _rep in range(2):
    with threadpool_limits(2):
        t = time.perf_counter()
        [_greedy_loop(c, k, 0, None) for c in chunks]
        print("seq blas2", f"{time.perf_counter() - t:.3f}")
    with threadpool_limits(1):
        t = time.perf_counter()
        [_greedy_loop(c, k, 0, None) for c in chunks]
        print("seq blas1", f"{time.perf_counter() - t:.3f}")
        with ThreadPoolExecutor(2) as ex:
            t = time.perf_counter()
            list(ex.map(lambda c: _greedy_loop(c, k, 0, None), chunks))
            print("par2 blas1", f"{time.perf_counter() - t:.3f}")
