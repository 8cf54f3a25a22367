"""The codebase keeps its own rules: ruff clean, mypy strict clean (shared/STYLE.md 8, 11)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_ruff_finds_nothing() -> None:
    result = _run("ruff", "check", "livestream", "tests", "benchmarks", "conftest.py")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_changes_nothing() -> None:
    result = _run("ruff", "format", "--check", "livestream", "tests", "benchmarks", "conftest.py")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_finds_nothing() -> None:
    result = _run("mypy")  # packages, strictness and options come from pyproject.toml
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout


# Each module of the package and the modules of the package it may import: arrows point
# down only, from the adapters (server, relay, widgets, cli) to the pure core (protocol,
# columns), never back. The same map, with a line on what each module owns, is in
# docs/explanation.md ("The module map"). Imports made only for type checking (under
# `if TYPE_CHECKING:`) do not count: they run nothing.
ALLOWED_IMPORTS: dict[str, set[str]] = {
    "errors": set(),
    "version": set(),
    "limits": {"errors"},
    "columns": {"errors"},
    "protocol": {"columns", "errors", "limits"},
    "controls": {"errors"},
    "producer": {"columns", "controls", "errors"},
    "streams": {"columns", "controls", "errors", "limits", "producer", "recording"},
    "hub": {"columns", "errors", "limits", "protocol", "streams", "version"},
    "views": {"columns", "errors"},
    "session": {"errors", "hub", "protocol"},
    "security": {"errors"},
    "plots": {"columns", "errors"},
    "server": {
        "columns",
        "errors",
        "hub",
        "limits",
        "plots",
        "protocol",
        "security",
        "session",
        "streams",
    },
    "relay": {"errors", "protocol", "security", "server", "session"},
    "jupyter": {"server", "streams"},
    "client": {"columns", "errors", "limits", "protocol"},
    "widgets": {"columns", "controls", "errors", "jupyter", "plots", "relay", "server", "streams"},
    "demo": {"controls", "jupyter", "server", "streams"},
    "recording": {"client", "columns", "controls", "errors"},
    "cli": {"client", "columns", "demo", "errors", "limits", "protocol", "recording", "server"},
    "__main__": {"cli"},
}


def _package_imports(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports at run time (anywhere in the file)."""
    import ast

    tree = ast.parse(path.read_text())
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    found: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or id(node) in typing_only:
            continue
        if node.level == 1 and node.module:
            found.add(node.module.split(".")[0])
        elif node.level == 1:
            found.update(alias.name for alias in node.names)
        elif node.module and node.module.split(".")[0] == "livestream":
            found.add(node.module.split(".")[1] if "." in node.module else "__init__")
    return found


def test_imports_point_down_only() -> None:
    modules = {p.stem: p for p in (ROOT / "livestream").glob("*.py") if p.stem != "__init__"}
    assert set(modules) == set(ALLOWED_IMPORTS), (
        "a module was added or removed: place it in ALLOWED_IMPORTS and in the module map "
        "of docs/explanation.md"
    )
    wrong = {
        name: sorted(_package_imports(path) - ALLOWED_IMPORTS[name])
        for name, path in modules.items()
        if _package_imports(path) - ALLOWED_IMPORTS[name]
    }
    assert not wrong, f"imports that point up or sideways: {wrong}"


def test_the_allowed_imports_have_no_cycle() -> None:
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        if name in done:
            return
        for dep in ALLOWED_IMPORTS[name]:
            visit(dep, (*path, name))
        done.add(name)

    for name in ALLOWED_IMPORTS:
        visit(name, ())


def test_the_module_map_in_the_docs_names_every_module() -> None:
    text = (ROOT / "docs" / "explanation.md").read_text()
    section = text.split("## The module map", 1)[1].split("\n## ", 1)[0]
    missing = [name for name in ALLOWED_IMPORTS if f"`{name}.py`" not in section]
    assert not missing, f"docs/explanation.md's module map lacks {missing}"
