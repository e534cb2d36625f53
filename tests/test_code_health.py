"""The package's import graph, read from the source with ast: no import cycles (module-level and lazy imports alike,
a package's __init__ counting as a module) and no imports of another module's private names."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src"


def modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "maporl").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, str]]:
    """(imported module, imported name or '') for every import in the file, resolved to modules of the package."""
    out = []
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, "") for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:  # `from pkg import submodule` imports the submodule
                out.append((f"{base}.{a.name}", "") if f"{base}.{a.name}" in known else (base, a.name))
    return [(m, n) for m, n in out if m in known or m.startswith("maporl.")]


def test_no_import_cycles():
    known = modules()
    graph = {m: {i for i, _ in imports(m, p, known) if i in known and i != m} for m, p in known.items()}
    cycles, index, low, stack, counter = [], {}, {}, [], [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                cycles.append(sorted([v, *component]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert len(known) > 40 and sum(len(e) for e in graph.values()) > 80  # the walk sees the real graph
    assert cycles == []


def test_no_module_imports_another_modules_private_names():
    known = modules()
    private = [
        f"{m} imports {i}.{n}"
        for m, p in known.items()
        for i, n in imports(m, p, known)
        if n.startswith("_") and i != m and not n.startswith("__")
    ]
    assert private == []


def test_the_checks_catch_what_they_look_for(tmp_path, monkeypatch):
    """A cycle (through a package __init__ and a lazy import) and a private import, planted in a copy of the tree."""
    import shutil

    copy = tmp_path / "src"
    shutil.copytree(SRC / "maporl", copy / "maporl", ignore=shutil.ignore_patterns("assets", "__pycache__"))
    (copy / "maporl" / "verifiers" / "label.py").write_text("from maporl.verifiers import build_verifier\n")
    (copy / "maporl" / "cli" / "rundir.py").write_text("def f():\n    from maporl.study.report import _page\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", copy)
    with pytest.raises(AssertionError, match="maporl.verifiers.label"):
        test_no_import_cycles()
    with pytest.raises(AssertionError, match="maporl.cli.rundir imports maporl.study.report._page"):
        test_no_module_imports_another_modules_private_names()
