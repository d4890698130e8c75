"""The project's modules import one another as a tree, and the score itself needs nothing installed.

Imports are read from the source with ``ast``, not by importing: every import counts, the lazy
ones inside functions and the ones for type checkers too, since a loop held open by a lazy import
is still a loop a reader has to untangle.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "ichis",
    "fhir_mappings",
    "plumbing",
    "ichis_cli",
    "cds_service",
    "smart_app",
    "cohort",
    "sandbox",
)


def module_files() -> dict[str, Path]:
    """Every module of the project's packages, by dotted name (a package by its ``__init__``)."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported_names(module: str, path: Path) -> Iterator[str]:
    """Every dotted name an import statement of the module names, a ``from`` import's items too."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph() -> dict[str, set[str]]:
    """Which of the project's modules each module imports."""
    files = module_files()
    return {
        module: {name for name in imported_names(module, path) if name in files and name != module}
        for module, path in files.items()
    }


def find_loop(graph: Mapping[str, set[str]]) -> list[str] | None:
    """A chain of imports that comes back to where it started, or None when there is none."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        path.append(module)
        for target in sorted(graph[module]):
            if target in path:
                return [*path[path.index(target) :], target]
            if target not in done and (loop := visit(target)) is not None:
                return loop
        done.add(path.pop())
        return None

    for module in sorted(graph):
        if module not in done and (loop := visit(module)) is not None:
            return loop
    return None


def test_the_import_graph_holds_every_package_of_the_project() -> None:
    graph = import_graph()
    assert {name.partition(".")[0] for name in graph} == set(PACKAGES)
    assert "sandbox.ehr.oauth" in graph["sandbox.ehr.state"]


def test_no_module_imports_itself_back_through_others() -> None:
    loop = find_loop(import_graph())
    assert loop is None, "import loop: " + " -> ".join(loop or ())


def test_a_loop_would_be_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_loop(graph) == ["a", "b", "c", "a"]


def test_ichis_imports_only_the_standard_library() -> None:
    files = module_files()
    outside = sorted(
        f"{module} imports {name}"
        for module, path in files.items()
        if module.partition(".")[0] == "ichis"
        for name in imported_names(module, path)
        if name.partition(".")[0] not in sys.stdlib_module_names and name.partition(".")[0] != "ichis"
    )
    assert outside == []
