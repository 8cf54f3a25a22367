"""The notebooks in a real JupyterLab (and Notebook 7, and Voila), driven in Debian's Chromium.

What a person does with notebooks 01 and 02: open them, Run All, watch the plots grow,
press Pause and Resume, drag a slider, keep the plots moving while a long cell runs, re-run
the dashboard cell without leaking anything, and watch a standalone server from a notebook.
Plot data is read from BokehJS itself (``Bokeh.documents`` and the widget's
``data-source-id``); what the producer does is read from the livestream server's HTTP API
(``/api/streams/<name>``) with the URL and token that notebook 01 prints.

One JupyterLab and one Chromium serve the whole module; each test opens its own page.
With ``LIVESTREAM_UPDATE_SCREENSHOTS=1`` it also refreshes
``docs/images/notebook-dashboard.png``.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_support import (
    PAGE_RESOURCES,
    REPO,
    JupyterServer,
    http_json,
    jupyter_server,
    port_is_open,
    source_length,
    standalone_server,
    wait_source_length,
    wait_until,
)
from support import open_pages, write_notebook

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

WAIT_MS = 30_000  # one UI step on a busy 2-core machine
RUN_ALL_MS = 120_000
#: Set LIVESTREAM_UPDATE_SCREENSHOTS=1 to refresh the picture in the docs; otherwise the
#: screenshot goes to the test's temporary directory (and is still checked).
DOCS_SCREENSHOT = REPO / "docs" / "images" / "notebook-dashboard.png"
DASHBOARD = ".ls-widget-dashboard"
STATUS_BAR = "#jp-main-statusbar"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    with jupyter_server("lab", tmp_path_factory.mktemp("jupyterlab")) as server:
        yield server


def _upstream_error(exc: Any) -> bool:
    """Notebook 7.6's own settings code throws this on every page, /tree included, with no
    livestream widget anywhere: not ours to fail on."""
    return "reading 'schema'" in str(exc) and "/static/notebook/notebook_core." in (exc.stack or "")


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[[str], Any]]:
    """Open a URL in a fresh page; fails the test on an uncaught JavaScript error."""
    with open_pages(browser, width=1400, height=950, ignore=_upstream_error) as open_:
        yield open_


# --------------------------------------------------------------------------- JupyterLab steps


def kernel_status(page: Any) -> str:
    text = page.locator(STATUS_BAR).inner_text()
    m = re.search(r"\(ipykernel\) \| (\w+)", text)
    return m.group(1) if m else ""


def wait_kernel(page: Any, status: str = "Idle", timeout_ms: float = WAIT_MS) -> None:
    page.locator(STATUS_BAR).get_by_text(re.compile(rf"\(ipykernel\) \| {status}")).wait_for(
        timeout=timeout_ms
    )


def open_notebook(lab: JupyterServer, open_page: Callable[[str], Any], name: str) -> Any:
    # A workspace per notebook: the default one would reopen the notebooks of earlier tests.
    page = open_page(lab.url(f"lab/workspaces/{Path(name).stem}/tree/{name}"))
    # Run All before the kernel exists silently does nothing: wait for it first.
    wait_kernel(page, "Idle", 90_000)
    return page


def run_all(page: Any, expected: str | None = None) -> None:
    """Run ▸ Run All Cells, then wait until every code cell has an execution count, and
    fail on any error text in a cell's stderr, except ``expected`` (a regex: the warning a
    notebook provokes on purpose, which lands in its cell when it comes that soon)."""
    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-item", has_text=re.compile(r"^Run All Cells")).click()
    page.wait_for_function(
        """() => {
          const prompts = [...document.querySelectorAll(
            ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputArea-prompt")];
          return prompts.length > 0 && prompts.every((p) => /\\[\\d+\\]/.test(p.textContent));
        }""",
        timeout=RUN_ALL_MS,
    )
    wait_kernel(page, "Idle", RUN_ALL_MS)
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    tracebacks = [
        t
        for t in errors.all_inner_texts()
        if "Error" in t and not (expected and re.fullmatch(expected, t.strip(), re.DOTALL))
    ]
    assert not tracebacks, f"a cell failed: {tracebacks}"


def add_cell_and_run(page: Any, code: str) -> None:
    """Append a code cell after the last one, type ``code`` and run it (Ctrl+Enter)."""
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").last.locator(
        ".jp-InputArea-prompt"
    ).click()
    page.keyboard.press("Escape")
    page.keyboard.press("b")
    page.keyboard.press("Enter")
    page.keyboard.type(code)
    page.keyboard.press("Control+Enter")


def server_api(page: Any) -> tuple[str, str]:
    """The livestream server's http base URL and token, from the line notebook 01 prints."""
    text = page.locator(".jp-OutputArea-output", has_text="standalone dashboard:").inner_text()
    m = re.search(r"(http://127\.0\.0\.1:\d+)/\?token=([\w-]+)", text)
    assert m, f"no server URL in {text!r}"
    return m.group(1), m.group(2)


def stream_info(base: str, token: str, name: str) -> dict[str, Any]:
    return dict(http_json(f"{base}/api/streams/{name}", token))


def settled(
    page: Any, root: str, base: str, token: str, stream: str, quiet_ms: int = 1500
) -> tuple[int, int]:
    """(page rows, server offset) once neither changed for ``quiet_ms``."""
    deadline = time.monotonic() + WAIT_MS / 1000
    last = (source_length(page, root), stream_info(base, token, stream)["offset"])
    while time.monotonic() < deadline:
        page.wait_for_timeout(quiet_ms)
        now = (source_length(page, root), stream_info(base, token, stream)["offset"])
        if now == last:
            return now
        last = now
    raise AssertionError(f"{stream} never stopped growing: {last}")


# --------------------------------------------------------------------------- tests


def test_quickstart_dashboard(lab: JupyterServer, open_page: Callable[[str], Any]) -> None:
    page = open_notebook(lab, open_page, "01-quickstart.ipynb")
    run_all(page)
    base, token = server_api(page)

    # The plot grows by itself.
    first = wait_source_length(page, DASHBOARD, 5, WAIT_MS)
    wait_source_length(page, DASHBOARD, first + 10, WAIT_MS)
    assert stream_info(base, token, "prices")["subscribers"] == 1  # one socket for the page

    # Pause in the widget: the producer stops, and so does the plot.
    dashboard = page.locator(DASHBOARD)
    dashboard.locator("button[data-action=pause]").click()
    wait_until(
        lambda: stream_info(base, token, "prices")["state"]["status"] == "paused",
        WAIT_MS / 1000,
        "the stream to be paused",
    )
    rows, offset = settled(page, DASHBOARD, base, token, "prices")
    page.wait_for_timeout(1500)
    assert stream_info(base, token, "prices")["offset"] == offset, "the producer kept producing"
    assert source_length(page, DASHBOARD) == rows, "the plot kept growing while paused"

    # Resume: it moves again.
    dashboard.locator("button[data-action=resume]").click()
    wait_until(
        lambda: stream_info(base, token, "prices")["state"]["status"] == "running",
        WAIT_MS / 1000,
        "the stream to be running",
    )
    wait_source_length(page, DASHBOARD, rows + 10, WAIT_MS)

    # A slider: the producer is given the new value.
    slider = dashboard.locator(".ls-param[data-param=volatility] input[type=range]")
    slider.fill("0.035")
    wait_until(
        lambda: stream_info(base, token, "prices")["state"]["params"]["volatility"] == 0.035,
        WAIT_MS / 1000,
        "volatility 0.035 on the server",
    )

    # A long cell: the plot keeps moving while the kernel is busy.
    add_cell_and_run(page, "import time; time.sleep(10)")
    wait_kernel(page, "Busy")
    busy_from = source_length(page, DASHBOARD)
    wait_source_length(page, DASHBOARD, busy_from + 40, 8_000)  # 20 rows/s: about 2 s
    assert kernel_status(page) == "Busy", "the plot only grew once the kernel was idle again"
    wait_kernel(page, "Idle", 60_000)

    # Re-running the dashboard cell replaces the widget and leaks nothing.
    before = page.evaluate(PAGE_RESOURCES)
    assert before["documents"] == 1, before
    page.evaluate(f"() => document.querySelector('{DASHBOARD}').dataset.testOld = '1'")
    cell = page.locator(".jp-CodeCell", has_text="ls.Dashboard(prices")
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Control+Enter")
    page.wait_for_function(
        f"""() => !document.querySelector('{DASHBOARD}[data-test-old]') &&
                  !!document.querySelector('{DASHBOARD} [data-source-id]')""",
        timeout=WAIT_MS,
    )
    wait_kernel(page, "Idle")
    wait_source_length(page, DASHBOARD, 20, WAIT_MS)
    page.wait_for_timeout(1500)  # past the 1 s grace after which an unused socket closes
    after = page.evaluate(PAGE_RESOURCES)
    assert after == before, f"re-running the dashboard leaked: before {before}, after {after}"
    assert stream_info(base, token, "prices")["subscribers"] == 1

    # The picture for the docs: the dashboard in its notebook, without the file browser.
    page.keyboard.press("Escape")
    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^View$")).click()
    page.locator(".lm-Menu-item", has_text=re.compile(r"^Appearance")).hover()
    page.locator(".lm-Menu-item", has_text=re.compile(r"^Show Left Sidebar")).click()
    page.set_viewport_size({"width": 1400, "height": 1180})
    page.locator(".jp-Cell", has_text="3. A dashboard").first.evaluate(
        "(el) => el.scrollIntoView({block: 'start'})"
    )
    wait_source_length(page, DASHBOARD, source_length(page, DASHBOARD) + 5, WAIT_MS)
    screenshot = (
        DOCS_SCREENSHOT
        if os.environ.get("LIVESTREAM_UPDATE_SCREENSHOTS") == "1"
        else lab.home.parent / "notebook-dashboard.png"
    )
    page.screenshot(path=str(screenshot))
    assert screenshot.stat().st_size > 20_000

    # Shutting the kernel down from Jupyter stops its livestream server.
    port = int(base.rsplit(":", 1)[1])
    lab.delete_kernels()
    wait_until(lambda: not port_is_open(port), 30, f"port {port} to close with the kernel")


def test_market_feed_candles_and_controls(
    lab: JupyterServer, open_page: Callable[[str], Any]
) -> None:
    page = open_notebook(lab, open_page, "02-market-feed.ipynb")
    run_all(page)
    candles = ".ls-widget-plot"
    # One candle per second: the source grows by a row a second.
    first = wait_source_length(page, candles, 1, WAIT_MS)
    wait_source_length(page, candles, first + 2, WAIT_MS)
    assert page.locator(".ls-widget-value").count() == 3
    assert page.locator(".ls-widget-table tbody tr").count() > 0

    # Pause and Resume from the Controls widget; the candles go on after Resume.
    controls = page.locator(".ls-widget-controls").first
    controls.locator("button[data-action=pause]").click()
    page.wait_for_function(
        "() => document.querySelector('.ls-widget-controls .ls-controls')?.dataset.status === 'paused'",
        timeout=WAIT_MS,
    )
    controls.locator("button[data-action=resume]").click()
    page.wait_for_function(
        "() => document.querySelector('.ls-widget-controls .ls-controls')?.dataset.status === 'running'",
        timeout=WAIT_MS,
    )
    now = source_length(page, candles)
    wait_source_length(page, candles, now + 1, WAIT_MS)
    lab.delete_kernels()


def test_notebook_attaches_to_a_standalone_server(
    lab: JupyterServer, open_page: Callable[[str], Any]
) -> None:
    token = "standalone-token-0123456789"
    with standalone_server(token) as base:
        code = (
            "import livestream as ls\n"
            f"ls.LivePlot('prices', url={base!r}, token={token!r}, y='price')"
        )
        page = open_notebook(lab, open_page, write_notebook(lab.root, "attach.ipynb", [code]))
        run_all(page)
        first = wait_source_length(page, ".ls-widget-plot", 5, WAIT_MS)
        wait_source_length(page, ".ls-widget-plot", first + 10, WAIT_MS)
        resources = page.evaluate(PAGE_RESOURCES)
        assert [c["url"] for c in resources["connections"]] == [
            base.replace("http://", "ws://") + "/ws"
        ]
        assert http_json(f"{base}/api/streams/prices", token)["subscribers"] == 1
        lab.delete_kernels()


# --------------------------------------------------------------------------- Notebook 7, Voila


def test_notebook7_runs_the_quickstart(tmp_path: Path, open_page: Callable[[str], Any]) -> None:
    with jupyter_server("notebook", tmp_path) as nb7:
        page = open_page(nb7.url("notebooks/01-quickstart.ipynb"))
        wait_until(
            lambda: any(k["execution_state"] == "idle" for k in nb7.kernels()),
            90,
            "the notebook's kernel to be idle",
        )
        page.locator(".jp-Notebook").wait_for(timeout=WAIT_MS)
        page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-item", has_text=re.compile(r"^Run All Cells")).click()
        first = wait_source_length(page, DASHBOARD, 5, RUN_ALL_MS)
        wait_source_length(page, DASHBOARD, first + 10, WAIT_MS)


def test_voila_renders_the_quickstart(tmp_path: Path, open_page: Callable[[str], Any]) -> None:
    with jupyter_server("voila", tmp_path, notebook="01-quickstart.ipynb") as voila:
        page = open_page(voila.base_url)
        first = wait_source_length(page, DASHBOARD, 5, RUN_ALL_MS)
        wait_source_length(page, DASHBOARD, first + 10, WAIT_MS)
        with contextlib.suppress(Exception):
            page.close()
