"""The layout shows the architecture: layers point one way and no module imports its way
back to itself."""

from __future__ import annotations

import ast
import pathlib

import trioflow

PACKAGE = pathlib.Path(trioflow.__file__).parent


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: pathlib.Path) -> set[str]:
    """The trioflow modules ``path`` imports at its top level, TYPE_CHECKING included (a type
    is a dependency too); imports inside functions are lazy on purpose and not counted."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    nodes = list(ast.parse(path.read_text()).body)
    for node in nodes:
        if isinstance(node, ast.If):  # `if TYPE_CHECKING:`
            nodes.extend(node.body)
        elif isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")
            base = base[: len(base) - node.level + 1]
            target = ".".join([*base, node.module] if node.module else base)
            found.add(target)
            for alias in node.names:  # `from . import x` may name a submodule
                candidate = f"{target}.{alias.name}"
                if (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py").exists():
                    found.add(candidate)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("trioflow."))
    return {module for module in found if module != name}


def test_no_import_cycles() -> None:
    """The modules' load-time imports form no cycle (the worker does not import the run)."""
    # The package's __init__ re-exports everything by design (the server's names lazily, and
    # for type checkers): it is the facade over the layers, not one of them.
    graph = {_module_name(p): _imports(p) - {"trioflow"} for p in PACKAGE.rglob("*.py")}
    del graph["trioflow"]
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, " -> ".join([*path, module])
        if module in done:
            return
        for imported in graph.get(module, ()):
            visit(imported, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())


def test_the_core_imports_nothing_above_it() -> None:
    """The runtime core imports neither the wire format, the server nor the CLI."""
    for path in (PACKAGE / "_core").glob("*.py"):
        above = {
            m
            for m in _imports(path)
            if m.startswith(("trioflow._wire", "trioflow._server", "trioflow._cli"))
        }
        assert not above, (path.name, above)
