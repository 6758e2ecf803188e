import time, resource, torch, sys, os
sys.path.insert(0, os.environ["SRC"])
from anomaly_inspect.features.patch_embed import PatchEmbedding
from anomaly_inspect.resources import release_free_memory
from anomaly_inspect.features.extractor import patch_array
torch.set_num_threads(2)
g = torch.Generator().manual_seed(0)
maps = [torch.randn(32, 40, 40, 40, generator=g), torch.randn(32, 112, 20, 20, generator=g)]
for kw in [dict(), dict(finest="full"), dict(finest="mean", equal_weights=False)]:
    emb = PatchEmbedding(**kw)
    ref = emb(maps, 32) if os.environ.get("NEW") else emb(maps)
    res = {k: [] for k in ((None, 1, 2, 4, 8) if os.environ.get("NEW") else (None,))}
    for k in res:
        if k: assert torch.equal(emb(maps, k), ref), k
    for rep in range(5):
        for k in res:
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt; t = time.perf_counter()
            for _ in range(5):
                arr = patch_array(emb(maps, k) if k else emb(maps))
                del arr
                release_free_memory()
            res[k].append(((time.perf_counter() - t) / 5 * 1000, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) // 5))
    for k, v in res.items(): print(kw, k, "best ms", round(min(a for a, _ in v), 1), "faults/batch", v[-1][1])
