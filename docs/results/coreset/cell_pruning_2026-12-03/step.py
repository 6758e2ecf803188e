import time, numpy as np, torch
from threadpoolctl import threadpool_limits
from anomaly_inspect.scorers.coreset import _greedy_loop
rng = np.random.default_rng(0)
torch.set_num_threads(1)
with threadpool_limits(1):
    for n in (4096, 3584, 3072, 2048):
        x = rng.standard_normal((n, 128)).astype(np.float32)
        k = int(np.ceil(0.1 * n))
        best = 1e9
        for r in range(5):
            t = time.perf_counter(); _greedy_loop(x, k, 0, None); best = min(best, time.perf_counter() - t)
        print(f"n {n}: {best*1e3:.1f} ms for {k} picks, {best/k*1e6:.1f} us/step, {best/k/n*1e9:.2f} ns/row")
    # bf16 torch mv
    for n in (4096, 2048):
        xt = torch.from_numpy(rng.standard_normal((n, 128)).astype(np.float32))
        for dt in (torch.float32, torch.bfloat16):
            xx = xt.to(dt); c = xx[5].clone()
            t = time.perf_counter()
            for _ in range(400): xx @ c
            print(n, dt, f"{(time.perf_counter()-t)/400*1e6:.1f} us/mv")
        xn = xt.numpy(); c = xn[5].copy()
        t = time.perf_counter()
        for _ in range(400): xn @ c
        print(n, "numpy f32", f"{(time.perf_counter()-t)/400*1e6:.1f} us/mv")
