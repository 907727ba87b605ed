"""The import layers of ../DESIGN.md hold: torch only in models/training/inference; nothing imports cli;
lower layers never import higher ones."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "femurseg"

LAYER = {
    "errors": 0, "conventions": 0, "geometry": 0, "config": 0, "atomic": 0, "_version": 0,
    "io": 1,
    "phantom": 2, "models": 2, "evaluation": 2, "qct": 2, "mesh": 2, "viz": 2,
    "training": 3, "inference": 3,
    "protocol": 4,
    "cli": 5,
}
TORCH_OK = {"models", "training", "inference", "protocol", "cli"}
#: Libraries that import torch themselves: the same rule.
TORCH_LIKE = {"torch", "monai", "safetensors"}


def _unit(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = rel.parts
    if parts[0] == "evaluation" and len(parts) > 1 and parts[1] in {"protocol", "report"}:
        return "protocol"
    return parts[0]


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at_top_level) of every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, id(node) in top))
    return out


FILES = sorted(p for p in SRC.rglob("*.py") if p.relative_to(SRC).parts[0] in LAYER or p.parent == SRC)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_respect_layers(path: Path) -> None:
    unit = _unit(path) if path.parent != SRC else path.stem
    if unit not in LAYER:  # __init__, __main__ of the package itself
        return
    for module, _ in _imports(path):
        root = module.split(".")[0]
        if root in TORCH_LIKE:
            assert unit in TORCH_OK, f"{path.name} imports {root} (torch); only models, training, inference may"
        if module == "femurseg":
            # The package root re-exports the public API (inference, layer 3): only the CLI may import it; others
            # import what they need from its module (e.g. femurseg._version).
            assert unit == "cli", f"{path.relative_to(SRC)} imports from the package root 'femurseg'"
            continue
        if root != "femurseg":
            continue
        target = module.split(".")[1]
        target_unit = "protocol" if module.startswith(("femurseg.evaluation.protocol", "femurseg.evaluation.report")) else target
        if target_unit not in LAYER:
            continue
        assert target_unit != "cli" or unit == "cli", f"{path} imports the CLI"
        assert LAYER[target_unit] <= LAYER[unit] or target_unit == unit, (
            f"{path.relative_to(SRC)} (layer {LAYER[unit]}) imports {module} (layer {LAYER[target_unit]})"
        )


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def test_no_import_cycles_among_top_level_imports() -> None:
    """Module-level imports form no cycle (a lazy import inside a function is how a cycle is broken)."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:  # module level only
            if isinstance(node, ast.Import):
                wanted = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # "from femurseg.a import b" imports the module femurseg.a.b when there is one, else a name of a.
                wanted = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                          for a in node.names]
            else:
                continue
            for module in wanted:
                while module not in modules and "." in module:
                    module = module.rsplit(".", 1)[0]
                if module in modules and module != name and module.startswith("femurseg"):
                    deps.add(module)
        graph[name] = deps
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_package_import_does_not_load_torch() -> None:
    import subprocess
    import sys

    code = "import sys, femurseg, femurseg.cli.main; femurseg.cli.main.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
