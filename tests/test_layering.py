"""Imports flow one way down the package layout (STYLE.md): a subpackage may import only
from subpackages before it in LAYERS. ``_utils`` is at the bottom; ``cli`` at the top."""

import ast
from pathlib import Path

LAYERS = ["_utils", "groups", "check", "data", "o3", "tp", "nn", "symmetrize", "models",
          "weights", "train", "cli"]
ROOT = Path(__file__).resolve().parents[1] / "src" / "equikit"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "equikit" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_every_subpackage_is_in_the_layer_list():
    subpackages = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert subpackages <= set(LAYERS), f"add {sorted(subpackages - set(LAYERS))} to LAYERS"


def test_imports_flow_one_way():
    violations = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if len(rel.parts) == 1:
            continue  # equikit/__init__.py and __main__.py sit above everything
        layer = LAYERS.index(rel.parts[0])
        # the command-line glue of a capability belongs to the cli layer
        if path.name == "_cli.py":
            layer = LAYERS.index("cli")
        for imported in _imports(path):
            if imported in LAYERS and LAYERS.index(imported) > layer:
                violations.append(f"{rel} imports equikit.{imported}")
    assert not violations, "imports must flow down the layers:\n" + "\n".join(violations)
