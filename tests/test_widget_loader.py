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

import nbformat
import pytest
from jupyter_support import kernel_manager, socket_dir
from nbclient import NotebookClient
from playwright.sync_api import Page, expect
from test_browser_widgets import (  # noqa: F401  (fixtures: notebook_url, notebook)
    WAIT_MS,
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


#: Ten widgets, as in docs/notebooks.md's measurement (before the loader: 2,156,936 bytes).
TEN_WIDGETS = [
    "import livestream as ls\nfrom ipywidgets import VBox, HBox\n"
    "prices = ls.stream('prices')\n"
    "prices.append({'time': [1.7e12, 1.7e12 + 50], 'price': [101.5, 101.75]})",
    "VBox([\n"
    "    HBox([ls.LivePlot(prices, y='price'), ls.LivePlot(prices, y='price', kind='scatter')]),\n"
    "    HBox([ls.LiveValue(prices, 'price'), ls.LiveValue(prices, 'price', label='Last'),\n"
    "          ls.Status(prices)]),\n"
    "    HBox([ls.LiveTable(prices), ls.LiveTable(prices, rows=5)]),\n"
    "    HBox([ls.Controls(prices), ls.Status(prices, compact=True),\n"
    "          ls.Dashboard(prices, y='price')]),\n"
    "])",
]


@pytest.mark.timeout(300)
def test_a_saved_notebook_holds_no_copy_of_the_code(tmp_path: Path) -> None:
    """The measurement of docs/notebooks.md: a notebook with ten widgets, executed and saved
    with its widget state, holds ten loaders and no stylesheet, not ten copies of each."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in TEN_WIDGETS])
    with socket_dir() as sockets:
        NotebookClient(
            nb,
            km=kernel_manager(sockets),
            timeout=120,
            kernel_name="python3",
            startup_timeout=120,
            store_widget_state=True,
            shutdown_kernel="graceful",
        ).execute()
    saved = tmp_path / "ten-widgets.ipynb"
    nbformat.write(nb, saved)
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    ours = [
        m["state"] for m in state.values() if m["state"].get("_esm", "").find("livestream") >= 0
    ]
    assert len(ours) == 10, f"{len(ours)} livestream models in the saved state"
    bundle = (STATIC / "widget.bundle.js").read_text("utf-8")
    esm = sum(len(m["_esm"]) for m in ours)
    css = sum(len(m.get("_css", "")) for m in ours)
    assert esm < len(bundle) and css == 0, f"_esm {esm:,} bytes, _css {css:,} bytes: over one copy"
    assert saved.stat().st_size < 400_000, f"the saved notebook is {saved.stat().st_size:,} bytes"
