"""The import layers of ../DESIGN.md hold: torch only in models/training/inference; nothing imports cli;
lower layers never import higher ones."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "femurseg"

LAYER = {
    "errors": 0, "conventions": 0, "geometry": 0, "config": 0, "atomic": 0,
    "io": 1,
    "phantom": 2, "models": 2, "evaluation": 2, "qct": 2, "mesh": 2, "viz": 2,
    "training": 3, "inference": 3,
    "protocol": 4,
    "cli": 5,
}
TORCH_OK = {"models", "training", "inference", "protocol", "cli"}


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
        if root == "torch":
            assert unit in TORCH_OK, f"{path.name} imports torch; only models, training, inference may"
        if root != "femurseg" or module == "femurseg":
            continue
        target = module.split(".")[1]
        target_unit = "protocol" if module.startswith(("femurseg.evaluation.protocol", "femurseg.evaluation.report")) else target
        if target_unit not in LAYER:
            continue
        assert target_unit != "cli" or unit == "cli", f"{path} imports the CLI"
        assert LAYER[target_unit] <= LAYER[unit] or target_unit == unit, (
            f"{path.relative_to(SRC)} (layer {LAYER[unit]}) imports {module} (layer {LAYER[target_unit]})"
        )


def test_package_import_does_not_load_torch() -> None:
    import subprocess
    import sys

    code = "import sys, femurseg, femurseg.cli.main; femurseg.cli.main.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
