"""The public surface: exactly the intended names, each documented; a pure protocol module."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

import livestream

ROOT = Path(__file__).resolve().parent.parent

PUBLIC = {
    # streams, producers and the server
    "stream",
    "replay",
    "serve",
    "shutdown",
    "Server",
    "Stream",
    "Producer",
    "Limits",
    # declared controls
    "Float",
    "Int",
    "Bool",
    "Choice",
    "Action",
    # the client
    "connect",
    "Client",
    "AsyncClient",
    "Subscription",
    "Backoff",
    "ConnectionEvent",
    # notebook widgets
    "LivePlot",
    "LiveTable",
    "LiveValue",
    "Controls",
    "Status",
    "Dashboard",
    # data
    "Batch",
    "to_batch",
    # errors
    "LivestreamError",
    "ProtocolError",
    "SchemaMismatch",
    "ServerError",
    "ConnectionClosed",
    "AllServersFailed",
    "ConfigError",
    "__version__",
}

#: Modules whose import must never load these (shared/STYLE.md, decision 1 of the design).
IO_MODULES = ("tornado", "asyncio", "socket", "redis")


def test_all_lists_exactly_the_public_names() -> None:
    assert sorted(livestream.__all__) == sorted(PUBLIC)
    assert len(livestream.__all__) == len(set(livestream.__all__)), "a name is listed twice"
    for name in livestream.__all__:
        assert hasattr(livestream, name), f"livestream.__all__ names {name!r}, which is missing"


def test_nothing_else_public_leaks_from_the_package() -> None:
    extra = {
        name
        for name, value in vars(livestream).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    } - set(livestream.__all__)
    assert not extra, f"public names not in __all__: {sorted(extra)}"


@pytest.mark.parametrize("name", sorted(PUBLIC - {"__version__"}))
def test_every_public_name_has_a_docstring(name: str) -> None:
    doc = getattr(livestream, name).__doc__  # its own, not one inherited through getdoc
    assert doc and doc.strip(), f"livestream.{name} has no docstring"


CLASSES = sorted(
    n
    for n in PUBLIC - {"__version__"}
    if inspect.isclass(getattr(livestream, n))
    and not issubclass(getattr(livestream, n), BaseException)
)


@pytest.mark.parametrize(
    "name",
    CLASSES,
)
def test_every_public_method_has_a_docstring(name: str) -> None:
    cls = getattr(livestream, name)
    public = [m for m, v in vars(cls).items() if not m.startswith("_") and inspect.isfunction(v)]
    # An override may rely on the docstring of the method it overrides.
    undocumented = [m for m in public if not (inspect.getdoc(getattr(cls, m)) or "").strip()]
    assert not undocumented, f"livestream.{name} methods without a docstring: {undocumented}"


def test_version_is_a_string() -> None:
    assert isinstance(livestream.__version__, str) and livestream.__version__.count(".") == 2


def _loaded_after(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter; the I/O modules it left in sys.modules."""
    probe = code + (
        "\nimport sys, json\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {IO_MODULES!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout.splitlines()[-1]))


def test_the_protocol_module_itself_imports_no_io() -> None:
    # Load livestream.protocol (and what it imports) without running the package's
    # __init__, to check the module's own imports.
    code = (
        "import sys, types\n"
        "pkg = types.ModuleType('livestream')\n"
        f"pkg.__path__ = [{str(ROOT / 'livestream')!r}]\n"
        "sys.modules['livestream'] = pkg\n"
        "import livestream.protocol\n"
    )
    assert _loaded_after(code) == []


def test_import_livestream_protocol_does_not_load_tornado() -> None:
    loaded = _loaded_after("import livestream.protocol")
    assert not [m for m in loaded if m.split(".")[0] == "tornado"], loaded


def test_the_stream_function_and_the_streams_module_are_apart() -> None:
    import livestream.streams as streams_module

    assert callable(livestream.stream) and not inspect.ismodule(livestream.stream)
    assert inspect.ismodule(streams_module) and streams_module.Stream is livestream.Stream


def test_the_version_is_written_once() -> None:
    from livestream import version
    from livestream.hub import Hub

    assert livestream.__version__ == version.__version__ == Hub.version
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and 'path = "livestream/version.py"' in pyproject
    js = (ROOT / "livestream" / "static" / "livestream.js").read_text()
    assert f'VERSION = "{version.__version__}"' in js, "the browser module's VERSION differs"
