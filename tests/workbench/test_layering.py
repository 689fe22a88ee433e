"""The library depends downward only: `workbench/` never imports `analysis/` or `benchmarks/`, and no module of
`workbench.training` reaches itself again through its imports; function-level (lazy) imports count too."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[2]


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth of its code (the project writes absolute imports only)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: a relative import"
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return out


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def library_graph() -> nx.DiGraph:
    files = {module_name(p): p for p in (ROOT / "workbench").rglob("*.py")}
    graph = nx.DiGraph()
    for name, path in files.items():
        graph.add_node(name)
        for target in imports(path):
            if target in files:
                graph.add_edge(name, target)
    return graph


def test_the_library_never_imports_analysis_or_benchmarks():
    upward = {(module_name(p), m) for p in (ROOT / "workbench").rglob("*.py") for m in imports(p)
              if m.split(".")[0] in ("analysis", "benchmarks")}  # fmt: skip
    assert not upward, sorted(upward)


def test_the_check_sees_a_lazy_import(tmp_path):
    """The scan is not vacuous: an import inside a function body is found."""
    lazy = tmp_path / "probe.py"
    lazy.write_text("def f():\n    from analysis.report import report\n    return report\n")
    assert "analysis.report" in imports(lazy)


def test_training_has_no_import_cycle():
    graph = library_graph()
    training = graph.subgraph(n for n in graph if n.startswith("workbench.training"))
    assert list(nx.simple_cycles(training)) == []
    assert len(training) >= 10  # the scan found the package's modules


def test_the_library_never_imports_the_training_app():
    """`workbench.training` (and its CLI, `workbench.train`) sit on top: the model, data, losses, probes, checkpoints
    and timing below them work without the app's configs."""
    app = ("workbench.train", "workbench.training")
    library = [p for p in (ROOT / "workbench").rglob("*.py") if not module_name(p).startswith(app)]
    upward = {(module_name(p), m) for p in library for m in imports(p) if m.startswith(app)}
    assert not upward, sorted(upward)
    assert len(library) >= 20  # the scan found the library's modules
