# the embedding before (5f19b30 worktree at /tmp/wt_before) and after, bit for bit and timed, on
# stage maps cached by a bottle tune (tune --tune-cache /tmp/tp_cache)
import sys, time, glob, importlib.util, itertools, numpy as np, torch
sys.path.insert(0, '/work/main/inspect')
from anomaly_inspect.features.patch_embed import PatchEmbedding as New
spec = importlib.util.spec_from_file_location('old_pe', '/tmp/wt_before/inspect/anomaly_inspect/features/patch_embed.py')
old = importlib.util.module_from_spec(spec); sys.modules['old_pe'] = old; spec.loader.exec_module(old)
Old = old.PatchEmbedding
d = sorted(glob.glob('/tmp/tp_cache/maps/tf_efficientnet_lite0-320-stretch-*'))[0]
ld = lambda s, n=32: torch.from_numpy(np.array(np.load(f'{d}/stride{s}.npy', mmap_mode='r')[:n]))
m4, m8, m16, m32 = ld(4, 8), ld(8), ld(16), ld(32)
ok = True
for stages in ([m8[:8], m16[:8]], [m4, m8[:8], m16[:8]], [m8[:8], m16[:8], m32[:8]]):
    for fin, ew, ed, agg in itertools.product(("rows", "full", "mean"), (True, False), (1024, None, 96), (1, 3, 5)):
        a, b = Old(agg, ed, fin, ew)(stages), New(agg, ed, fin, ew)(stages)
        if not torch.equal(a, b):
            ok = False; print('DIFF', len(stages), fin, ew, ed, agg, (a - b).abs().max().item())
print('all bit-equal', ok)
rng = torch.Generator().manual_seed(0)
odd = [torch.randn(3, 7, 9, 11, generator=rng), torch.randn(3, 13, 5, 6, generator=rng)]
print('odd shapes equal', all(torch.equal(Old(3, e, f)(odd), New(3, e, f)(odd)) for f in ("rows", "full", "mean") for e in (None, 8)))
def t(f, n=8):
    f(); s = time.perf_counter()
    for _ in range(n): f()
    return (time.perf_counter() - s) / n * 1e3
for fin in ("rows", "full", "mean"):
    o, nw = Old(finest=fin), New(finest=fin)
    mp = [m8, m16]
    r = [(t(lambda: o(mp)), t(lambda: nw(mp))) for _ in range(3)]
    print(fin, 'batch 32 @320 ms old/new', ['%.1f/%.1f' % x for x in r])
mp4 = [m4, m8[:8], m16[:8]]
print('4+8+16 batch 8 old/new', t(lambda: Old()(mp4)), t(lambda: New()(mp4)))
