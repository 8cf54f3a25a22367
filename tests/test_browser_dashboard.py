"""The standalone dashboard in Debian's Chromium, driven by Playwright, against a real server.

What a person does on ``/streams/<name>``: watch the plot grow, pause the producer from one
tab (one toggle, pressed while paused) and see another tab agree, resume it, get told when a control is refused or the token
is wrong, and keep a gapless plot across a dropped connection. The plot's data is read from
BokehJS itself (``Bokeh.documents`` and the source id the page puts in ``data-source-id``).

Pages open without a console warning or error. The documentation's screenshots of the
pages (docs/images/) come from ``python scripts/screenshots.py``; a test here runs it into a
temporary directory.

Chromium must be installed at /usr/bin/chromium (scripts/test.sh installs it); these tests
fail, never skip, without it.
"""

from __future__ import annotations

import importlib.util
import itertools
import re
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import Browser, Page, expect
from support import SOURCE_LENGTH, open_pages, refused_amplitude

from livestream import Float, demo
from livestream.server import Server

pytestmark = pytest.mark.browser

WAIT_MS = 10_000

SOURCE_COLUMN = """(name) => {
  const el = document.querySelector("[data-source-id]");
  for (const doc of Bokeh.documents) {
    const source = doc.get_model_by_id(el.dataset.sourceId);
    if (source) return {type: source.data[name].constructor.name, values: Array.from(source.data[name])};
  }
  return null;
}"""


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[[str], Page]]:
    """Open a URL in a fresh page; fails the test on a JavaScript error in any page."""
    with open_pages(browser) as open_:
        yield open_


def dashboard(server: Server, name: str, token: str | None = None) -> str:
    return f"{server.base_url}/streams/{name}?token={token or server.token}"


def source_length(page: Page) -> int:
    return int(page.evaluate(SOURCE_LENGTH))


def wait_plot_rows(page: Page, at_least: int) -> int:
    page.wait_for_function(f"() => ({SOURCE_LENGTH})() >= {at_least}", timeout=WAIT_MS)
    return source_length(page)


def settled_length(page: Page, quiet_ms: int = 500) -> int:
    """The plot's length once it stopped changing for ``quiet_ms`` (rows that were already
    on their way when a pause landed may still arrive)."""
    deadline = time.monotonic() + WAIT_MS / 1000
    length = source_length(page)
    while time.monotonic() < deadline:
        page.wait_for_timeout(quiet_ms)
        now = source_length(page)
        if now == length:
            return now
        length = now
    raise AssertionError(f"the plot never stopped growing ({length} rows)")


def test_plot_source_grows_with_typed_columns(
    server: Server, wave: Any, open_page: Callable[[str], Page]
) -> None:
    page = open_page(dashboard(server, "wave"))
    first = wait_plot_rows(page, 5)
    later = wait_plot_rows(page, first + 10)
    assert later > first
    time_column = page.evaluate(SOURCE_COLUMN, "time")
    assert time_column["type"] == "Float64Array"
    assert all(b > a for a, b in itertools.pairwise(time_column["values"]))
    expect(page.locator(".ls-table tbody tr")).to_have_count(15, timeout=WAIT_MS)


def test_pages_open_without_console_warnings(server: Server, wave: Any, browser: Browser) -> None:
    """A stream page, one opened before its stream has rows, one opened before its stream
    exists, and the home page: no console message of warning or error level (BokehJS warned
    "could not set initial ranges" at each paint of an empty plot, and a plot spec asked for
    too early was a failed resource)."""
    with open_pages(browser, console=True) as open_:
        empty = server.stream("empty", history=1000)
        pages = {name: open_(dashboard(server, name)) for name in ("wave", "empty", "later")}
        wait_plot_rows(pages["wave"], 5)
        for name in ("empty", "later"):  # open, connected, and waiting for rows
            expect(pages[name].locator("#header-status .ls-conn-pill")).to_have_attribute(
                "data-status", "open", timeout=WAIT_MS
            )
            expect(pages[name].locator(".ls-plot-target")).to_have_count(0)
        later = server.stream("later", history=1000)
        for stream in (empty, later):
            stream.append({"x": [1.0, 2.0, 3.0], "y": [0.5, 1.5, 1.0]})
        for page in pages.values():
            expect(page.locator(".ls-plot-target")).to_have_attribute(
                "data-attached", "true", timeout=WAIT_MS
            )
        home = open_(f"{server.base_url}/?token={server.token}")
        expect(home.locator('.ls-stream-card[data-stream="wave"] .ls-trend')).not_to_have_attribute(
            "data-points", "0", timeout=WAIT_MS
        )


def test_pause_stops_growth_and_a_second_page_agrees_then_resume(
    server: Server, wave: Any, open_page: Callable[[str], Page]
) -> None:
    a = open_page(dashboard(server, "wave"))
    b = open_page(dashboard(server, "wave"))
    wait_plot_rows(a, 5)
    wait_plot_rows(b, 5)
    # One toggle whose state is the stream's: "Pause", not pressed, while it runs.
    for page in (a, b):
        expect(page.locator(".ls-controls button")).to_have_count(1, timeout=WAIT_MS)
        toggle = page.get_by_role("button", name="Pause", exact=True)
        expect(toggle).to_have_attribute("aria-pressed", "false", timeout=WAIT_MS)

    def both_show(status: str, toggle: str, pressed: str) -> None:
        """Both pages: the header says ``status``, the one toggle reads ``toggle``."""
        for page in (a, b):
            expect(page.locator("#header-status .ls-stream-pill")).to_have_attribute(
                "data-status", status, timeout=WAIT_MS
            )
            button = page.get_by_role("button", name=toggle, exact=True)
            expect(button).to_have_attribute("aria-pressed", pressed, timeout=WAIT_MS)

    a.get_by_role("button", name="Pause", exact=True).click()
    both_show("paused", "Paused", "true")
    for page in (a, b):
        paused = page.get_by_role("button", name="Paused", exact=True)
        expect(paused).to_have_attribute("title", re.compile("press to resume"))
    assert wave.paused
    a.bring_to_front()
    paused_at = settled_length(a)
    a.wait_for_timeout(1500)
    assert source_length(a) == paused_at, "the plot kept growing while the stream was paused"

    b.get_by_role("button", name="Paused", exact=True).click()
    both_show("running", "Pause", "false")
    wait_plot_rows(a, paused_at + 10)


def test_refused_control_shows_the_server_message(
    server: Server, wave: Any, open_page: Callable[[str], Page]
) -> None:
    refused_amplitude(open_page(dashboard(server, "wave")), "", WAIT_MS)


def test_wrong_token_says_so_and_does_not_retry(
    server: Server, wave: Any, open_page: Callable[[str], Page], browser: Browser
) -> None:
    page = open_page(dashboard(server, "wave", token="not-the-token"))
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    banner = page.locator("#page-alert")
    expect(banner).to_be_visible(timeout=WAIT_MS)
    expect(banner).to_contain_text("token")
    expect(page.locator("#header-status .ls-conn-pill")).to_have_attribute("data-status", "error")
    page.wait_for_timeout(1500)
    assert sockets == [], f"kept trying a rejected token: {sockets}"

    # The home page says so too, and opens no socket for its sparklines with that token.
    home = browser.new_page()
    home_sockets: list[str] = []
    home.on("websocket", lambda ws: home_sockets.append(ws.url))
    try:
        home.goto(f"{server.base_url}/?token=not-the-token")
        expect(home.locator(".ls-stream-list .ls-alert")).to_contain_text("token", timeout=WAIT_MS)
        home.wait_for_timeout(500)
        assert home_sockets == [], (
            f"the home page opened a socket with a rejected token: {home_sockets}"
        )
    finally:
        home.close()


def test_dropped_connection_resumes_without_gap_or_duplicate(
    server: Server, wave: Any, open_page: Callable[[str], Page]
) -> None:
    page = open_page(dashboard(server, "wave"))
    before = wait_plot_rows(page, 20)
    page.evaluate("() => window.livestreamPage.conn._ws.close()")
    expect(page.locator("#header-status .ls-conn-pill")).to_have_attribute(
        "data-status", "open", timeout=WAIT_MS
    )
    wait_plot_rows(page, before + 50)
    k = page.evaluate(SOURCE_COLUMN, "k")["values"]
    steps = {b - a for a, b in itertools.pairwise(k)}
    assert steps == {1}, f"rows missing or repeated across the reconnect: steps {sorted(steps)}"


def test_a_stream_created_after_the_page_opened_appears(
    server: Server, open_page: Callable[[str], Page]
) -> None:
    page = open_page(dashboard(server, "late"))
    expect(page.locator(".ls-dashboard-alert")).to_contain_text("unknown stream", timeout=WAIT_MS)
    stream = server.stream("late", history=1000)
    for i in range(30):
        stream.append({"x": [float(i)], "y": [i * 0.5]})
    wait_plot_rows(page, 30)
    expect(page.locator(".ls-dashboard-alert")).to_be_hidden()


#: In the page: two subscribers of one stream on the page's connection, one taking every
#: row, one only the newest ``tail`` rows of each delivery (and its ``columns``); each
#: delivery's offsets and ``k`` values, and each subscriber's row count, as they arrive.
TAIL_SUBSCRIBERS = """([name, tail]) => {
  const conn = window.livestreamPage.conn;
  const seen = (window.__tail = {all: [], tail: [], allRows: 0, tailRows: 0});
  const keep = (list) => (batch) =>
    list.push({offset: batch.offset, rows: batch.rows, keys: Object.keys(batch.columns).sort(),
               k: Array.from(batch.columns.k), v: Array.from(batch.columns.v || [])});
  const all = conn.subscribe(name, {last: 5000, onData: keep(seen.all)});
  const newest = conn.subscribe(name, {last: 5000, tail, columns: ["k"], onData: keep(seen.tail)});
  window.__tailCounts = () => ({all: all.stats().rows, tail: newest.stats().rows,
                                lastOffset: newest.stats().lastOffset});
}"""


def test_a_tail_subscriber_gets_the_newest_rows_and_counts_them_all(
    server: Server, open_page: Callable[[str], Page]
) -> None:
    """``tail``: a subscriber that keeps only the newest rows (a table, a sparkline) gets
    each delivery cut to them, its offsets and int64 values right, while another
    subscriber of the same stream on the same page gets every row; both count every row."""
    stream = server.stream("tailed", history=20_000, schema={"k": "int64", "v": "float64"})
    # k beyond 32 bits: the page reads both halves of each int64.
    stream.append({"k": np.arange(5000, dtype=np.int64) + 2**40, "v": np.arange(5000.0)})
    page = open_page(dashboard(server, "tailed"))
    page.wait_for_function(
        "() => window.livestreamPage && window.livestreamPage.conn.status === 'open'",
        timeout=WAIT_MS,
    )
    page.evaluate(TAIL_SUBSCRIBERS, ["tailed", 7])
    page.wait_for_function("() => window.__tailCounts().tail >= 5000", timeout=WAIT_MS)
    for lo in (5000, 6000, 7000):  # merged or not, as they arrive
        stream.append(
            {"k": np.arange(lo, lo + 1000, dtype=np.int64) + 2**40, "v": np.arange(1000.0)}
        )
    page.wait_for_function(
        "() => window.__tailCounts().all >= 8000 && window.__tailCounts().tail >= 8000",
        timeout=WAIT_MS,
    )
    seen = page.evaluate("() => window.__tail")
    counts = page.evaluate("() => window.__tailCounts()")
    assert counts == {"all": 8000, "tail": 8000, "lastOffset": 7999}, counts
    # Every row, in order, to the subscriber that wants them all; k is 2**40 + its offset.
    offsets = [b["offset"] + i for b in seen["all"] for i in range(b["rows"])]
    assert offsets == list(range(8000))
    assert [x for b in seen["all"] for x in b["k"]] == [2**40 + o for o in range(8000)]
    # The newest 7 rows of each delivery (every delivery brought 1,000 rows or more), the
    # first ending with the history, the last at the newest row.
    ends = []
    for b in seen["tail"]:
        assert b["keys"] == ["k"] and b["rows"] == 7, b
        assert b["k"] == [2**40 + o for o in range(b["offset"], b["offset"] + 7)], b
        ends.append(b["offset"] + b["rows"])
    assert ends == sorted(set(ends)) and ends[0] == 5000 and ends[-1] == 8000, ends


# ------------------------------------------------------------------------------ screenshots


def _screenshots_script() -> Any:
    """scripts/screenshots.py, which retakes the documentation's screenshots."""
    path = Path(__file__).resolve().parent.parent / "scripts" / "screenshots.py"
    spec = importlib.util.spec_from_file_location("screenshots", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_screenshot_script_shoots_every_page(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    """``python scripts/screenshots.py`` retakes docs/images/; here it writes to a temporary
    directory, so that it stays working: each picture at its size, and not blank."""
    script = _screenshots_script()
    demo.install(server)
    # Fewer rows than for the docs (8 s of ticks): the test checks the script, not the data.
    written = script.capture(browser, server.base_url, server.token, tmp_path, rows=20, points=10)
    assert [p.name for p in written] == list(script.SHOTS)
    for path, (_, width, height) in zip(written, script.SHOTS.values(), strict=True):
        with path.open("rb") as f:
            header = f.read(24)
        assert header[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", header[16:24]) == (width, height)
        assert path.stat().st_size > 20_000, f"{path.name} looks blank"


def test_moving_a_slider_changes_what_the_producer_receives(
    server: Server, open_page: Callable[[str], Page]
) -> None:
    stream = server.stream("knob", history=5_000)
    received: list[float] = []

    @stream.producer(every=0.02, params={"gain": Float(1.0, min=0.0, max=5.0, label="Gain")})
    def tick(params: Any) -> dict[str, Any]:
        received.append(params["gain"])
        return {"time": time.time() * 1000.0, "v": params["gain"]}

    page = open_page(dashboard(server, "knob"))
    wait_plot_rows(page, 5)
    slider = page.locator('[data-param="gain"] input[type=range]')
    expect(slider).to_have_value("1", timeout=WAIT_MS)
    # Drag the slider: pointer down at its middle, move to its right end, release.
    box = slider.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] + 20, box["y"] + box["height"] / 2, steps=8)
    page.mouse.up()

    deadline = time.monotonic() + WAIT_MS / 1000
    while stream.params["gain"] != 5.0 and time.monotonic() < deadline:
        page.wait_for_timeout(20)
    assert stream.params["gain"] == 5.0, f"server-side gain is {stream.params['gain']}"
    seen = len(received)
    while len(received) <= seen and time.monotonic() < deadline:
        page.wait_for_timeout(20)
    assert received[-1] == 5.0, "the producer was not called with the new value"
    # Every viewer is told: the number box beside the slider shows what the server holds.
    expect(page.locator('[data-param="gain"] input[type=number]')).to_have_value("5")
