"""The layout stays readable: imports between project modules point one way (no cycles, no
imports hidden inside functions to dodge one), layer by layer."""

from __future__ import annotations

import ast

import pytest

from src.experiments.code import ROOT, import_graph, imported_modules

# Lower layers never import higher ones (README, Layout). A module's layer is that of its
# longest matching prefix; `src.train` (the CLI) and `pipelines` (DVC stages) sit on top.
LAYERS = {
    "src": 0,  # the package itself
    "src.core": 0,  # errors, status vocabulary, files, signals, plots: import nothing of ours
    "src.theory": 0,
    "src.analysis": 0,
    "src.domain": 1,  # config, data, models
    "src.runtime": 1,  # tracking, params, console, Hydra callbacks
    "src.training": 2,
    "src.paper": 2,  # tables, statistics, figures: read results, never train
    "src.experiments": 3,
    "src.report": 3,
    "src.train": 4,
    "src.launcher": 4,  # hydra/launcher=batched: trains a multirun's jobs through src.train
    "pipelines": 5,
}
PIPELINE_SCRIPT_MAX_LINES = 150  # a stage script parses, calls src and writes; logic lives in src


def layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the graph as a list of modules, or None (iterative DFS, three colours)."""
    colour = dict.fromkeys(graph, 0)
    for start in graph:
        if colour[start]:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        colour[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                colour[node] = 2
            elif colour.get(child, 2) == 1:
                return path[path.index(child) :] + [child]
            elif colour.get(child) == 0:
                colour[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(graph[child]))))
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def without_parent_packages(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Edges to the packages that contain a module (importing src.a.b runs src/__init__ and
    src/a/__init__) are not dependencies between peers: keep the modules themselves."""
    return {
        m: {d for d in deps if d != m and not m.startswith(d + ".")} for m, deps in graph.items()
    }


def test_imports_are_acyclic():
    graph = without_parent_packages(import_graph())
    assert len(graph) > 30  # the real tree was read
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_imports_point_down_the_layers():
    upward = [
        f"{module} (layer {layer(module)}) imports {dep} (layer {layer(dep)})"
        for module, deps in without_parent_packages(import_graph()).items()
        for dep in deps
        if layer(dep) > layer(module)
    ]
    assert upward == []


@pytest.mark.parametrize("package", ["src", "pipelines"])
def test_no_project_import_is_hidden_inside_a_function(package):
    hidden = []
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text())
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in (
                    "src",
                    "pipelines",
                ):
                    hidden.append(f"{path.relative_to(ROOT)}:{node.lineno}")
                elif isinstance(node, ast.Import) and any(
                    a.name.split(".")[0] in ("src", "pipelines") for a in node.names
                ):
                    hidden.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert hidden == []


def test_import_reader_sees_every_form(tmp_path):
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    for name in ("src/__init__.py", "src/pkg/__init__.py", "src/pkg/mod.py", "src/other.py"):
        (tmp_path / name).write_text("")
    user = tmp_path / "src" / "user.py"
    user.write_text(
        "import os\nfrom src import other\ndef f():\n    from src.pkg.mod import thing\n"
    )
    assert imported_modules(user, tmp_path) == {"src", "src.other", "src.pkg", "src.pkg.mod"}


def test_core_imports_nothing_of_the_project():
    graph = without_parent_packages(import_graph())
    core = {m: deps for m, deps in graph.items() if m.startswith("src.core.")}
    assert "src.core.errors" in core and "src.core.status" in core
    outside = {
        f"{m} -> {d}"
        for m, deps in core.items()
        for d in deps
        if d.split(".")[:2] != ["src", "core"]
    }
    assert outside == set()


def test_pipeline_scripts_are_thin():
    long = {
        path.name: n
        for path in sorted((ROOT / "pipelines").glob("*.py"))
        if (n := len(path.read_text().splitlines())) > PIPELINE_SCRIPT_MAX_LINES
    }
    assert long == {}, f"move logic into src/: {long}"


def test_tests_use_a_stage_only_through_its_entry_point():
    """Tests import what they test from src; from a stage script at most its `main`."""
    imported = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipelines"):
                imported += [
                    f"{path.name}: {node.module}.{a.name}" for a in node.names if a.name != "main"
                ]
    assert imported == []
