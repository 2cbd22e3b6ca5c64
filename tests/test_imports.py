"""The project's imports read top-down: no module of models/, components/ or pipeline/ imports,
at its top, a module that imports it back (directly or through others).

Imports inside functions are the one documented boundary (`pipeline/cli.py`'s docstring): they keep
TensorFlow, TFX, Beam and MLflow out of the CLI's configuration path, which
`tests/test_config.py::test_the_defaults_and_a_flow_config_need_no_tensorflow` checks. This test
reads the sources with `ast` only, so it imports nothing."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "components", "pipeline")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["tfflows", *parts])


def _top_level_imports(tree: ast.Module):
    """The import statements run when the module is imported: its body, and the bodies of its
    top-level ``if`` / ``try`` blocks, except ``if TYPE_CHECKING:``."""
    pending = list(tree.body)
    while pending:
        node = pending.pop(0)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                pending.extend(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            pending.extend(node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body])


def _all_imports(tree: ast.Module):
    """Every import statement of the module, inside functions too, except under ``if TYPE_CHECKING:``."""
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            pending.extend(node.orelse)
        else:
            pending.extend(ast.iter_child_nodes(node))


def import_graph(inside_functions: bool = False) -> dict[str, set[str]]:
    """module -> the project modules it imports at its top (``inside_functions``: anywhere)."""
    imports = _all_imports if inside_functions else _top_level_imports
    files = {_module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        edges = graph.setdefault(name, set())
        for node in imports(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative: from the module's package upwards
                    anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import sub` imports the submodule pkg.sub; `from mod import name`, mod
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            edges.update(t for t in targets if t in files and t != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of ``graph`` as [a, b, ..., a], or [] if there is none."""
    done: set[str] = set()
    for start in sorted(graph):
        stack, path, on_path = [(start, iter(sorted(graph[start])))], [start], {start}
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                on_path.discard(node)
                done.add(node)
            elif child in on_path:
                return path[path.index(child):] + [child]
            elif child not in done:
                stack.append((child, iter(sorted(graph.get(child, ())))))
                path.append(child)
                on_path.add(child)
    return []


def test_the_graph_is_read():
    graph = import_graph()
    assert "tfflows.components.config" in graph["tfflows.pipeline.config"]
    assert "tfflows.components.errors" in graph["tfflows.pipeline.cli"]


def test_no_import_cycle_among_the_projects_modules():
    cycle = find_cycle(import_graph())
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_no_import_cycle_hidden_in_a_function():
    """An import inside a function may delay a heavy module (the boundary above), never break a
    cycle: e.g. runner -> pipeline -> registry -> runner, or serving <-> beam_scoring, which now share
    `pipeline.config.tracking_uri` and `pipeline.scoring` instead."""
    cycle = find_cycle(import_graph(inside_functions=True))
    assert not cycle, "import cycle (through an import inside a function): " + " -> ".join(cycle)


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []
