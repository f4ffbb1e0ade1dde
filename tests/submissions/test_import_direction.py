"""The volunteer side imports along the loop only: platform -> training -> mobile_api (issue 18).

Read from the source (ast), so a function-local import hidden in a rarely run branch counts too.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLATFORM = ROOT / "platform"
HIGHER = ("training", "mobile_api")  # the rooms after the volunteer side in the loop


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(module, line, inside a function) for every import in a file; relative imports are skipped."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                found.append((child.module, child.lineno, in_function))
            visit(child, nested)

    visit(ast.parse(path.read_text(), filename=str(path)), False)
    return found


def _sources(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "migrations" not in p.parts)


def _is_under(module: str, packages) -> bool:
    return any(module == package or module.startswith(package + ".") for package in packages)


def test_the_volunteer_side_never_imports_a_later_room_inside_a_function():
    """Facts from training come through its selectors, imported at module top; events go the other way."""
    backwards = [
        f"{path.relative_to(ROOT)}:{line} imports {module} inside a function"
        for path in _sources(PLATFORM)
        for module, line, in_function in _imports(path)
        if in_function and _is_under(module, HIGHER)
    ]
    assert backwards == []


def test_the_submissions_modules_import_each_other_in_one_direction():
    modules = {f"submissions.{p.stem}": p for p in (PLATFORM / "submissions").glob("*.py")}
    graph = {
        name: {module for module, _, _ in _imports(path) if module in modules and module != name}
        for name, path in modules.items()
    }

    def cycle_from(start: str, node: str, seen: tuple[str, ...]) -> tuple[str, ...] | None:
        for nxt in sorted(graph[node]):
            if nxt == start:
                return (*seen, nxt)
            if nxt not in seen:
                found = cycle_from(start, nxt, (*seen, nxt))
                if found:
                    return found
        return None

    cycles = [" -> ".join(c) for name in sorted(graph) if (c := cycle_from(name, name, (name,)))]
    assert cycles == []
