"""Lower layers never import higher ones (DESIGN.md 1.2), checked by parsing every import."""

import ast
from pathlib import Path

import flowmatch

ROOT = Path(flowmatch.__file__).parent

# Subpackage/module -> layer. A module may import flowmatch modules of its own or lower layers.
LAYERS = {
    "_version": 0,
    "interfaces": 0,
    "utils": 0,
    "registry": 0,
    "paths": 1,
    "times": 1,
    "sources": 1,
    "sources_extra": 1,
    "sources_learned": 2,
    "couplings": 1,
    "data": 1,
    "solvers": 2,
    "models": 2,
    "objectives": 2,
    "latent": 2,
    "guidance": 3,
    "sampling": 3,
    "fewstep": 3,
    "metrics": 3,
    "train": 4,
    "viz": 5,
    "config": 5,
    "api": 6,
    "cli": 7,
    "__main__": 7,
    "__init__": 8,
}


def _layer(module: str) -> int:
    parts = module.split(".")
    assert parts[0] == "flowmatch", module
    return LAYERS[parts[1] if len(parts) > 1 else "__init__"]


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.startswith("flowmatch")]
        elif (
            isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("flowmatch")
        ):
            if node.module == "flowmatch":  # `from flowmatch import api`: the submodules
                out += [f"flowmatch.{a.name}" for a in node.names]
            else:
                out.append(node.module)
    return out


def test_every_module_has_a_layer():
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        assert rel.parts[0] in LAYERS, f"add {rel.parts[0]!r} to LAYERS"


def test_no_upward_imports():
    violations = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        own = LAYERS[rel.parts[0]]
        for mod in _imports(path):
            if _layer(mod) > own:
                violations.append(f"{rel} (layer {own}) imports {mod} (layer {_layer(mod)})")
    assert not violations, "\n".join(violations)
