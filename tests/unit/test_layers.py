"""The harness's modules form layers: no module imports, even inside a function or
for type checking only, a module that imports it back. A cycle hidden in a function
still ties the two steps together; here it is found by reading the source (ast),
so no import order can hide it."""

import ast
from pathlib import Path

import harness

PACKAGE = Path(harness.__file__).parent


def _modules(package: Path) -> dict[str, Path]:
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _package(name: str, modules: dict[str, Path]) -> str:
    """The module itself if it is a package, else the package that holds it."""
    return name if modules[name].name == "__init__.py" else name.rpartition(".")[0]


def _targets(name: str, node: ast.AST, modules: dict[str, Path]) -> set[str]:
    """The harness modules an import statement in `name` runs: the one it names and,
    when it reaches into another package, that package's __init__ and its parents'
    (Python runs them first). Its own packages are running already."""
    if isinstance(node, ast.Import):
        named = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        named = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                 else node.module for a in node.names]
    else:
        return set()
    own = _package(name, modules)
    found = set()
    for target in named:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        while target and not (own == target or own.startswith(target + ".")):
            found.add(target)
            target = target.rpartition(".")[0]
    return found - {name}


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the modules of `package` its import statements run, wherever they stand."""
    modules = _modules(package)
    return {name: set().union(*(_targets(name, node, modules)
                                for node in ast.walk(ast.parse(path.read_text()))))
            for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a path that ends where it starts; [] when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def test_harness_modules_import_each_other_without_a_cycle():
    cycle = find_cycle(import_graph())
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_a_cycle_behind_a_function_import_and_type_checking_is_found(tmp_path: Path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from pkg.sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\n"
                                      "from pkg.sub import c\n"
                                      "if TYPE_CHECKING:\n    from pkg.a import f\n")
    (pkg / "sub" / "c.py").write_text("import os\n")
    graph = import_graph(pkg)
    # A reaches into pkg.sub: Python runs its __init__ first; b's own package is not an edge.
    assert graph["pkg.a"] == {"pkg.sub", "pkg.sub.b"}
    assert graph["pkg.sub.b"] == {"pkg.sub.c", "pkg.a"}
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.a"]
    (pkg / "sub" / "b.py").write_text("from pkg.sub import c\n")
    assert find_cycle(import_graph(pkg)) == []
