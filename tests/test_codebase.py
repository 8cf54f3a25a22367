"""The codebase keeps its own rules: ruff clean, mypy strict clean (shared/STYLE.md 8, 11)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.timeout(330)  # a cold mypy run took over 120 s beside another suite
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
    "streams": {"columns", "controls", "errors", "limits", "producer", "recording", "views"},
    "hub": {"columns", "errors", "limits", "protocol", "streams", "version"},
    "views": {"columns", "errors"},
    "session": {"errors", "hub", "protocol"},
    "security": {"errors"},
    "plots": {"columns", "errors"},
    "backplanes/__init__": {"errors", "backplanes/redis"},
    # The one module that imports redis (checked below): imported only when a server is
    # given a Redis URL.
    "backplanes/redis": {"columns", "errors", "hub", "protocol", "streams"},
    "handlers": {
        "columns",
        "errors",
        "limits",
        "plots",
        "protocol",
        "security",
        "session",
        "streams",
    },
    "server": {
        "backplanes/__init__",
        "errors",
        "handlers",
        "hub",
        "limits",
        "security",
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


def _module_name(path: Path) -> str:
    """``hub`` for livestream/hub.py, ``backplanes/redis`` for livestream/backplanes/redis.py."""
    return path.relative_to(ROOT / "livestream").with_suffix("").as_posix()


def _resolve(package: list[str], level: int, module: str | None, names: list[str]) -> set[str]:
    """The package modules an ``from <level dots><module> import <names>`` names."""
    base = package[: len(package) - (level - 1)] if level > 1 else list(package)
    parts = [*base, *(module.split(".") if module else [])]
    candidates = [parts] if module else [[*parts, n] for n in names]
    found = set()
    for cand in candidates:
        for size in range(len(cand), 0, -1):
            path = ROOT / "livestream" / "/".join(cand[:size])
            if path.with_suffix(".py").exists():
                found.add("/".join(cand[:size]))
                break
            if (path / "__init__.py").exists():
                found.add("/".join(cand[:size]) + "/__init__")
                break
    return found


def _package_imports(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports at run time (anywhere in the file)."""
    import ast

    tree = ast.parse(path.read_text())
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    found: set[str] = set()
    package = _module_name(path).split("/")[:-1]
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or id(node) in typing_only:
            continue
        names = [alias.name for alias in node.names]
        if node.level >= 1:
            found |= _resolve(package, node.level, node.module, names)
        elif node.module and node.module.split(".")[0] == "livestream":
            rest = node.module.split(".")[1:]
            found |= _resolve([], 1, ".".join(rest), names) if rest else {"__init__"}
    return found - {_module_name(path)}


def _modules() -> dict[str, Path]:
    root = ROOT / "livestream"
    paths = [*root.glob("*.py"), *root.glob("*/*.py")]
    return {_module_name(p): p for p in paths if p.name != "__init__.py" or p.parent != root}


def test_imports_point_down_only() -> None:
    modules = _modules()
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


def test_only_the_redis_backplane_imports_redis() -> None:
    import ast

    importers = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            mods = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            if any(m == "redis" or m.startswith("redis.") for m in mods):
                importers.append(name)
                break
    assert importers == ["backplanes/redis"], importers


def test_a_server_without_redis_does_not_import_it() -> None:
    code = (
        "import sys, livestream, livestream.cli, livestream.widgets\n"
        "from livestream.server import Server\n"
        "s = Server(port=0).start(); s.stop()\n"
        "print(sorted(m for m in sys.modules if m == 'redis' or 'backplanes.redis' in m))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
