"""Widgets carry their code once per page: each model's ``_esm`` is static/loader.js (a few
KB), which imports widget.bundle.js and livestream.css once for every widget of the page.

The browser test renders several widgets in the notebook stand-in page of
tests/test_browser_widgets.py (each ``_esm`` imported from a blob URL of its own, as
anywidget does) and counts the page's requests for the bundle and the stylesheet. The relay
and proxy ways of loading are exercised in a real JupyterLab by tests/test_jupyter_routes.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from test_browser_widgets import (  # noqa: F401  (fixtures: browser, notebook_url, notebook)
    WAIT_MS,
    browser,
    mount,
    notebook,
    notebook_url,
    wait_status,
)

import livestream as ls
from livestream.server import Server
from livestream.widgets import LiveWidget

STATIC = Path(ls.__file__).parent / "static"


def test_a_model_carries_a_loader_not_the_code(server: Server) -> None:
    stream = server.stream("loader", schema={"time": "float64", "price": "float64"})
    state = ls.LiveTable(stream).get_state()
    bundle = (STATIC / "widget.bundle.js").read_bytes()
    assert len(state["_esm"]) < 8_000, f"_esm is {len(state['_esm'])} bytes: the code, not a loader"
    assert state["_css"] == "", "the stylesheet travels with every model"
    assert bundle.decode()[:2_000] not in state["_esm"]
    # The loader asks for the files by their content's hash: a rebuild is never a stale cache.
    version = hashlib.sha256(bundle + (STATIC / "livestream.css").read_bytes()).hexdigest()[:16]
    assert f'"{version}"' in state["_esm"]
    assert "__LIVESTREAM_BUNDLE__" not in state["_esm"]


@pytest.mark.browser
def test_a_page_loads_the_widget_code_once(server: Server, notebook: Page) -> None:  # noqa: F811
    stream = server.stream("once", schema={"time": "float64", "price": "float64"})
    stream.append({"time": [1.7e12, 1.7e12 + 50], "price": [101.5, 101.75]})
    requested: list[str] = []
    notebook.on("request", lambda r: requested.append(r.url))
    widgets: list[LiveWidget] = [
        ls.LiveTable(stream),
        ls.LiveValue(stream, "price"),
        ls.Status(stream),
        ls.Controls(stream),
    ]
    for i, widget in enumerate(widgets):
        mount(notebook, widget, f"w{i}")
    for i in range(len(widgets)):
        wait_status(notebook, f"w{i}", "open")
    expect(notebook.locator("#w0 tbody tr")).to_have_count(2, timeout=WAIT_MS)
    bundles = [u for u in requested if "/static/widget.bundle.js" in u]
    sheets = [u for u in requested if "/static/livestream.css" in u]
    assert len(bundles) == 1 and bundles[0].startswith(server.base_url), requested
    assert len(sheets) == 1 and sheets[0].startswith(server.base_url), requested
    # The stylesheet applies: a rule of livestream.css styles the widget.
    assert notebook.evaluate(
        "() => [...document.styleSheets].some((s) => s.href?.includes('/static/livestream.css'))"
    )
    assert notebook.evaluate("() => window.__sockets.length") == 1, "one socket per page"
