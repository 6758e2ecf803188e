"""Import cycles of a package tree, read as tests/test_architecture.py reads imports (every
import, lazy and TYPE_CHECKING ones too): the strongly connected components of the component
graph and of the module graph.

Usage: python import_cycles.py PACKAGE_DIR  (e.g. a git archive of fcbc93c's inspect/anomaly_inspect)
"""

import importlib.util
import sys
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "arch", Path(__file__).resolve().parents[3] / "tests" / "test_architecture.py")
arch = importlib.util.module_from_spec(spec)
spec.loader.exec_module(arch)
arch.ROOT = Path(sys.argv[1]).resolve()


def sccs(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one node."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


components = {k: set(v) for k, v in arch._component_graph().items()}
modules = {}
for path in sorted(arch.ROOT.rglob("*.py")):
    name = arch._module_name(path)
    if name != arch.PACKAGE:  # the facade may reach anything
        modules[name] = {t for t in arch._imported_modules(path) if t not in (arch.PACKAGE, name)}
print("component cycles:", sccs(components))
print("module cycles:", sccs(modules))
