"""The package's import graph: subpackages depend one way, without cycles.

Every ``import`` in the package is read with ``ast`` (including imports inside
functions and ``TYPE_CHECKING`` blocks: a lazy import still couples modules).
Each module belongs to a component: its subpackage (``data``, ``features``,
...) or, for a top-level module, the module itself (``config``, ``pipeline``).
The package root ``anomaly_inspect/__init__.py`` is the public facade: it may
reach anything (lazily), and importing names such as ``__version__`` from it is
not a dependency on a component.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "anomaly_inspect"
ROOT = Path(__file__).resolve().parents[1] / "inspect" / PACKAGE

# Lowest first: a component may import only components listed before it.
LAYERS = ["choices", "core", "files", "user_cache", "progress", "resources", "data", "features", "scorers", "config",
          "pipeline",
          "evaluation", "tuning", "screening", "commands", "cli"]
SUBPACKAGES = {"data", "features", "scorers", "evaluation", "tuning", "screening", "commands"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported_modules(path: Path) -> set[str]:
    """Absolute names of the package modules that ``path`` imports (at any depth)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != PACKAGE:
                continue
            found.add(target)
            # ``from . import x`` / ``from .scorers import patchcore`` may name submodules
            for alias in node.names:
                sub = ROOT.parent.joinpath(*f"{target}.{alias.name}".split("."))
                if sub.with_suffix(".py").is_file() or (sub / "__init__.py").is_file():
                    found.add(f"{target}.{alias.name}")
    return found


def _component(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the package root


def _component_graph() -> dict[str, dict[str, list[str]]]:
    """component -> imported component -> the importing modules (as 'module -> target')."""
    graph: dict[str, dict[str, list[str]]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        src = _module_name(path)
        src_comp = _component(src)
        if src_comp is None:
            continue  # the facade
        for target in _imported_modules(path):
            dst_comp = _component(target)
            if dst_comp is None or dst_comp == src_comp:
                continue
            graph.setdefault(src_comp, {}).setdefault(dst_comp, []).append(f"{src} -> {target}")
    return graph


GRAPH = _component_graph()


def test_graph_is_not_empty_and_covers_every_component():
    components = {_component(_module_name(p)) for p in ROOT.rglob("*.py")} - {None}
    assert components >= SUBPACKAGES
    assert components <= set(LAYERS), f"unplaced components: {components - set(LAYERS)}"
    assert "core" in GRAPH["scorers"] and "evaluation" in GRAPH["screening"]


def test_no_import_cycle_between_components():
    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in GRAPH.get(node, {}):
                if nxt == start:
                    return path + [start]
                if nxt not in path:
                    stack.append((nxt, path + [nxt]))
        return None

    for comp in GRAPH:
        cycle = cycle_from(comp)
        assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("component", LAYERS)
def test_dependencies_point_down(component):
    allowed = set(LAYERS[: LAYERS.index(component)])
    bad = {dst: edges for dst, edges in GRAPH.get(component, {}).items() if dst not in allowed}
    assert not bad, f"{component} may import only {sorted(allowed)}; found {bad}"


def test_only_cli_imports_commands():
    importers = {src for src, dsts in GRAPH.items() if "commands" in dsts}
    assert importers <= {"cli"}


def test_scorers_do_not_reach_up():
    assert not {"evaluation", "screening", "commands", "cli", "pipeline"} & set(GRAPH["scorers"])


def test_scorers_do_not_import_the_backbone_stack():
    """Scorers read :class:`core.Features`; importing one must not pull in timm / albumentations."""
    assert "features" not in GRAPH["scorers"], GRAPH["scorers"].get("features")


def test_resolver_reads_relative_and_lazy_imports():
    edges = _imported_modules(ROOT / "screening" / "runner.py")
    assert f"{PACKAGE}.screening.html_report" in edges  # imported inside a function
    assert f"{PACKAGE}.data.image_io" in edges


def test_command_line_parser_imports_no_heavy_library():
    """``anomaly-inspect --help`` and argument errors answer at once: building the parser (every
    command's options) loads none of torch, timm, albumentations, faiss or ONNX Runtime; a
    command imports them when it runs."""
    import subprocess
    import sys

    heavy = ("torch", "timm", "albumentations", "faiss", "onnxruntime", "openvino", "ray")
    code = ("import sys; from anomaly_inspect.cli import build_parser; build_parser(); "
            f"print(','.join(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"the parser imported {out.stdout.strip()}"


def test_command_line_sets_a_short_openmp_spin_unless_the_user_did():
    """The command line sets GOMP_SPINCOUNT before torch or faiss load libgomp (spinning OpenMP
    threads take shared cores from other work); a value the user set is kept, and so is the
    spin of a wait policy the user set (GOMP_SPINCOUNT would override it)."""
    import os
    import subprocess
    import sys

    code = ("import os, sys; import anomaly_inspect.cli; assert 'torch' not in sys.modules; "
            "print(os.environ['GOMP_SPINCOUNT'])")
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    code = code.replace("os.environ['GOMP_SPINCOUNT']", "os.environ.get('GOMP_SPINCOUNT')")
    env = {k: v for k, v in env.items() if k != "OMP_WAIT_POLICY"}
    for given, expect in (({}, "10000"), ({"GOMP_SPINCOUNT": "123"}, "123"),
                          ({"OMP_WAIT_POLICY": "PASSIVE"}, "None")):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, env={**env, **given})
        assert out.stdout.strip() == expect


# Public names where modules share a helper; one debug switch.
# ------------------------------------------------------------------ public names across modules


def _private_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [f"{node.module}.{a.name}" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
            for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]


@pytest.mark.parametrize("module", ["commands/common.py", "screening/runner.py",
                                    "screening/deploy.py", "scorers/coreset.py"])
def test_no_private_name_is_imported_from_another_module(module):
    assert _private_imports(ROOT / module) == []


def test_the_shared_helpers_are_public():
    from anomaly_inspect.features.backbone import create_timm_model
    from anomaly_inspect.scorers.base import sum_is_finite
    from anomaly_inspect.screening.explain import error_reason
    from anomaly_inspect.screening.model_dir import read_checksums

    assert all(map(callable, (create_timm_model, sum_is_finite, error_reason, read_checksums)))


def test_stage_strides_live_with_the_backbone_and_tuning_reexports_them():
    from anomaly_inspect.features import backbone
    from anomaly_inspect.tuning import candidates

    assert candidates.stage_strides is backbone.stage_strides
    assert candidates.layer_strides is backbone.layer_strides
    tree = ast.parse((ROOT / "commands" / "common.py").read_text(encoding="utf-8"))
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any(m and m.lstrip(".").startswith("tuning") for m in modules), modules


# ------------------------------------------------------------------ one debug switch


def test_the_debug_switch_is_defined_once():
    from anomaly_inspect import cli, progress
    from anomaly_inspect.pipeline import ray_engine

    assert cli.DEBUG_ENV is progress.DEBUG_ENV is ray_engine.DEBUG_ENV == "ANOMALY_INSPECT_DEBUG"
    literal = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")
               if '"ANOMALY_INSPECT_DEBUG"' in p.read_text(encoding="utf-8")]
    assert literal == ["progress.py"]
