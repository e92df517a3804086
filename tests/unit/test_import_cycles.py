"""No import cycles among tbpipe's modules, function-level imports included.

Every ``import`` and ``from ... import`` anywhere in a module (module level, inside functions,
under ``TYPE_CHECKING``) is an edge to the tbpipe module it names; ``from pkg import name``
goes to ``pkg.name`` when that is a module, else to ``pkg``. A package's ``__init__`` running
first is Python's doing, not an edge.
"""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: The folders installed under the ``tbpipe`` namespace (pyproject.toml's package-dir).
PACKAGES = {"components": "tbpipe.components", "pipelines": "tbpipe.pipelines"}


def module_files(root: Path, packages: dict[str, str]) -> dict[str, Path]:
    """``{dotted module name: file}`` of every module under the package folders."""
    modules = {}
    for folder, dotted in packages.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(root / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((dotted, *parts))] = path
    return modules


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The known modules that ``name`` (at ``path``) imports anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {target for target in found if target in known and target != name}


def import_graph(root: Path = REPO, packages: dict[str, str] = PACKAGES) -> dict[str, set[str]]:
    modules = module_files(root, packages)
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_tbpipe_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 80 and sum(map(len, graph.values())) > 250  # the walk saw the code
    assert graph["tbpipe.pipelines.cli.main"] >= {"tbpipe.pipelines.cli.completion"}
    assert cycles(graph) == []


def test_a_function_level_cycle_is_found(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from tbpipe.pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import c\n")
    (pkg / "c.py").write_text("def g():\n    import tbpipe.pkg.a\n")
    (pkg / "d.py").write_text("from . import a\n")  # into the cycle, not part of it
    graph = import_graph(tmp_path, {"pkg": "tbpipe.pkg"})
    assert graph["tbpipe.pkg.sub.b"] == {"tbpipe.pkg.c"}
    assert cycles(graph) == [["tbpipe.pkg.a", "tbpipe.pkg.c", "tbpipe.pkg.sub.b"]]
