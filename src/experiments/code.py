"""Which source files a piece of this project runs: the transitive closure of its imports of
`src` and `pipelines` modules, read from the code (ast), never kept by hand.

The result store keys results by a fingerprint of the training code's closure, and the DVC
deps test checks that every stage's deps cover its closure, so neither can go stale.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository root (holds src/ and pipelines/)
PACKAGES = ("src", "pipelines")

# The modules whose closure determines a training result: the training entry points. The
# analysis at the end of a run (sharpness, gains) is part of it through the callbacks.
TRAINING_ENTRY = ("src.training.run",)


def module_path(module: str, root: Path = ROOT) -> Path | None:
    """The file of a `src`/`pipelines` module (a package's __init__.py), None if none."""
    base = root.joinpath(*module.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """The project modules a file imports anywhere in it (functions included), with the
    packages that contain them (importing a.b.c runs a/__init__ and a/b/__init__)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # `from src.runtime import tracking` imports the module src.runtime.tracking
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    found = set()
    for name in names:
        if name.split(".")[0] not in PACKAGES:
            continue
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if module_path(prefix, root) is not None:
                found.add(prefix)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the project modules it imports, for every module under PACKAGES."""
    graph = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            graph[".".join(parts)] = imported_modules(path, root)
    return graph


def closure(entries: Iterable[str], root: Path = ROOT) -> list[Path]:
    """The files of `entries` and of every project module they import, transitively."""
    seen: set[str] = set()
    todo = list(entries)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = module_path(module, root)
        if path is None:
            if root.joinpath(*module.split(".")).is_dir():  # a namespace package: no code
                continue
            raise ModuleNotFoundError(f"{module}: no such module under {root}")
        parts = module.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages
        todo.extend(imported_modules(path, root) - seen)
    paths = (module_path(module, root) for module in seen)
    return sorted(path for path in paths if path is not None)  # namespace packages: no file


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """Hash of the source files that determine a training result (the closure of
    TRAINING_ENTRY): changing any of them must not let an old result be reused."""
    digest = hashlib.sha1()
    for path in closure(TRAINING_ENTRY):
        digest.update(path.relative_to(ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
