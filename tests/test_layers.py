"""The package's import graph: layers never import upwards, and no module imports itself
back through a chain (lazy, function-level imports count: they hide a cycle, not break it)."""

from __future__ import annotations

import ast
from pathlib import Path

import infnet

ROOT = Path(infnet.__file__).parent

# Lowest floor first. A module may import its own layer or a lower one; the packages of one
# layer (serving, experiments) do not import each other.
LAYERS: list[set[str]] = [
    {"infnet", "infnet.config", "infnet.fsutil", "infnet.malloc", "infnet.metrics"},
    {"infnet.data"},
    {"infnet.models"},
    {"infnet.training"},
    {"infnet.streaming.events"},  # the one streaming module the server writes to
    {"infnet.serving", "infnet.experiments"},
    {"infnet.streaming"},
    {"infnet.demo", "infnet.abtest"},
    {"infnet.cli"},
    {"infnet.__main__"},  # `python -m infnet` (and `torchrun -m infnet`) runs the cli
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = ("infnet", *path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every infnet module that `name` imports, anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import sub` imports the submodule pkg.sub when there is one
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            ]
        else:
            continue
        found |= {t for t in targets if t in MODULES and t != name}
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(name: str) -> tuple[int, str]:
    best = None
    for rank, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (name == p or name.startswith(p + ".")) and (best is None or len(p) > len(best[1])):
                best = (rank, p)
    assert best is not None, f"{name} belongs to no layer; add it to LAYERS"
    return best


def test_every_module_has_a_layer():
    for name in MODULES:
        _layer(name)


def test_no_module_imports_a_higher_layer_or_a_sibling_package():
    wrong = []
    for name, targets in GRAPH.items():
        rank, home = _layer(name)
        for t in sorted(targets):
            t_rank, t_home = _layer(t)
            if t_rank > rank or (t_rank == rank and t_home != home and home != "infnet"):
                wrong.append(f"{name} imports {t}")
    assert not wrong, "\n".join(wrong)


def test_there_are_no_import_cycles():
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    cycles = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for t in sorted(GRAPH[name]):
            if state.get(t) == 1:
                cycles.append(" -> ".join([*path[path.index(t) :], t]))
            elif t not in state:
                visit(t, [*path, t])
        state[name] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(cycles)


def test_the_walker_sees_lazy_and_relative_imports():
    # the walker itself: a function-level import is an edge like any other
    assert "infnet.cli" in MODULES and GRAPH["infnet.cli"]
