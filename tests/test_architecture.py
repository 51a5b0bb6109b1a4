"""The package's shape: the layers the README draws, and no import cycles (type-only imports too)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import nbagent

PACKAGE = Path(nbagent.__file__).resolve().parent

LAYERS = [
    {"cli", "magic", "mcp", "__init__", "__main__"},  # interfaces: parse, call the API, print
    {"batch"},
    {"repro"},
    {"agent"},
    {"tools"},
    {"notebook"},
    {"records"},
    {"execution"},
    {"models", "kernel_code", "testing"},
    {"exceptions", "_version"},
]
"""Top to bottom: a module may import from its own layer's package or from layers below it."""


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(("nbagent", *parts[:-1]) if parts[-1] == "__init__" else ("nbagent", *parts))
        found[name] = path
    return found


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Every nbagent module each module imports, wherever the import stands (TYPE_CHECKING too)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                module = ".".join([*base, *([node.module] if node.module else [])])
                targets = [module, *(f"{module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            edges[name].update(t for t in targets if t in modules and t != name)
    return edges


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    return next(i for i, layer in enumerate(LAYERS) if top in layer)


def test_the_package_has_few_top_level_modules() -> None:
    top_level = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top_level) <= 12, top_level


def test_every_top_level_name_has_a_layer() -> None:
    names = {p.stem for p in PACKAGE.glob("*.py")} | {
        p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()
    }
    for name in names:
        assert any(name in layer for layer in LAYERS), f"nbagent/{name} is in no layer of LAYERS"


def test_imports_go_down_the_layers_only() -> None:
    upward = [
        f"{a} -> {b}"
        for a, targets in _imports(_modules()).items()
        for b in sorted(targets)
        if a != "nbagent" and _layer(b) < _layer(a)
    ]
    assert upward == []


def test_no_import_cycles() -> None:
    edges = _imports(_modules())
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(_modules()):
        if module not in state:
            visit(module, [module])
    assert cycles == []
