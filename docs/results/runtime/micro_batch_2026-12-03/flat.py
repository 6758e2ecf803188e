import time, numpy as np, faiss
rng = np.random.default_rng(0)
xb = rng.standard_normal((121760, 232), dtype=np.float32)
idx = faiss.IndexFlatL2(232); idx.add(xb)
print("faiss", faiss.__version__, "omp threads", faiss.omp_get_max_threads(), "blas threshold", faiss.cvar.distance_compute_blas_threshold)
for nq in (8, 64, 256, 1024, 4096):
    q = rng.standard_normal((nq, 232), dtype=np.float32)
    idx.search(q, 1)
    t = time.perf_counter(); idx.search(q, 1); dt = time.perf_counter() - t
    print(nq, f"{dt:.3f} s, {dt/nq*1e3:.2f} ms/query, {nq*121760*232*2/dt/1e9:.0f} GFLOP/s")
# numpy GEMM reference
q = rng.standard_normal((256, 232), dtype=np.float32)
t = time.perf_counter(); d = q @ xb.T; dt = time.perf_counter() - t
print("numpy gemm 256", f"{dt:.3f}")
