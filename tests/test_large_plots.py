"""Large windows in Debian's Chromium (issue 12): a stream page whose plot window is ten
million rows draws the server's views of its history and the live rows after them.

The stream holds 5,000,000 rows of history (one per millisecond, 5,000 s) with one outlier
among them, and a producer adds 100,000 rows a second while the page is open. The plot's
data is read from BokehJS itself (``Bokeh.documents`` and the page's ``data-source-id``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import Browser, Page
from support import open_pages, wait_until
from test_browser_widgets import SOURCE_OF, mount, notebook, notebook_url  # noqa: F401

import livestream as ls
from livestream.server import Server

pytestmark = pytest.mark.browser

WAIT_MS = 15_000
HISTORY = 5_000_000
OUTLIER_AT = 3_141_592
OUTLIER = 1000.0
RATE = 100_000  # rows per second arriving
TICK = 0.01  # seconds between the producer's batches

SOURCE = """() => {
  const el = document.querySelector("[data-source-id]");
  if (!el || !window.Bokeh) return null;
  for (const doc of Bokeh.documents) {
    const source = doc.get_model_by_id(el.dataset.sourceId);
    if (source) return {time: Array.from(source.data.time ?? []), y: Array.from(source.data.y ?? [])};
  }
  return null;
}"""

FPS = """async () => {
  let frames = 0;
  const t0 = performance.now();
  await new Promise((done) => {
    const tick = () => {
      frames++;
      if (performance.now() - t0 < 2000) requestAnimationFrame(tick);
      else done();
    };
    requestAnimationFrame(tick);
  });
  return frames / ((performance.now() - t0) / 1000);
}"""

OVERVIEW = "window.livestreamPage.dashboard.plot.overview()"


@pytest.fixture
def big(server_factory: Any) -> Iterator[tuple[Server, np.ndarray, np.ndarray]]:
    """A server whose stream ``big`` holds HISTORY rows (time in ms, y) ending now, and
    gets RATE rows/s more from a producer."""
    server = server_factory()
    stream = server.stream("big", history=HISTORY + 5_000_000)
    now = time.time() * 1000.0
    t = now - HISTORY + np.arange(HISTORY, dtype=np.float64)  # one row per ms
    y = np.sin(np.arange(HISTORY) / 5_000.0) + np.random.default_rng(7).normal(0, 0.05, HISTORY)
    y[OUTLIER_AT] = OUTLIER
    step = 1_000_000
    for i in range(0, HISTORY, step):
        stream.append({"time": t[i : i + step], "y": y[i : i + step]})
    per_tick = int(RATE * TICK)
    last = [now]

    @stream.producer(every=TICK)
    def feed() -> dict[str, Any]:
        # Times that never decrease: from the previous batch's end to now.
        end = max(time.time() * 1000.0, last[0] + 1.0)
        times = np.linspace(last[0], end, per_tick, endpoint=False)
        last[0] = end
        return {
            "time": times,
            "y": np.random.default_rng().normal(0, 0.5, per_tick),
        }

    yield server, t, y


@pytest.fixture
def page(browser: Browser, big: tuple[Server, np.ndarray, np.ndarray]) -> Iterator[Page]:
    server = big[0]
    with open_pages(browser) as open_:
        p = open_(f"{server.base_url}/streams/big?window=10000000&y=y&token={server.token}")
        p.wait_for_function(f"() => {OVERVIEW}?.stats().views >= 1", timeout=WAIT_MS)
        yield p


def source(page: Page) -> dict[str, list[float]]:
    data = page.evaluate(SOURCE)
    assert data is not None, "the page has no plot source"
    return data


def test_the_whole_history_is_drawn_with_its_outlier_at_30_fps(
    page: Page, big: tuple[Server, np.ndarray, np.ndarray]
) -> None:
    _, t, _ = big
    wait_until(lambda: len(source(page)["time"]) > 0, message="the plot never drew rows")
    data = source(page)
    times = np.asarray(data["time"])
    # From the first row of the history to the live edge, in a few thousand rows of view
    # (at most 4 a pixel) and the rows that arrived since it was taken (100 a millisecond).
    assert times.min() == t[0]
    assert times.max() >= t[-1]
    assert len(times) < 100_000
    assert np.all(np.diff(times) >= 0)
    assert page.evaluate(f"{OVERVIEW}.stats().exact") is False
    # The one outlier among five million rows is drawn.
    assert OUTLIER in data["y"]
    assert t[OUTLIER_AT] in data["time"]
    # Rows keep arriving at 100,000 a second and the page keeps its frame rate.
    fps = page.evaluate(FPS)
    assert fps >= 30, f"{fps:.1f} frames/s"
    later = np.asarray(source(page)["time"])
    assert later.max() > times.max(), "the live edge did not move"


def test_zooming_into_one_second_shows_its_raw_rows_then_the_live_edge_is_followed(
    page: Page, big: tuple[Server, np.ndarray, np.ndarray]
) -> None:
    _, t, y = big
    lo_i = 2_000_000
    lo, hi = t[lo_i], t[lo_i] + 999.0  # one second: rows lo_i .. lo_i + 999
    page.evaluate(f"{OVERVIEW}.zoom({lo}, {hi})")
    page.wait_for_function(
        f"() => {OVERVIEW}.stats().exact && {OVERVIEW}.stats().first === {lo_i}",
        timeout=WAIT_MS,
    )
    assert page.evaluate(f"{OVERVIEW}.following()") is False

    def zoomed() -> dict[str, list[float]] | None:
        data = source(page)
        return data if data["time"] and data["time"][0] == lo else None

    data = wait_until(zoomed, message="the zoomed rows were never drawn")
    assert data["time"] == t[lo_i : lo_i + 1000].tolist()
    assert data["y"] == y[lo_i : lo_i + 1000].tolist()
    # Nothing new is drawn while looking at the past.
    page.wait_for_timeout(300)
    assert source(page)["time"] == data["time"]

    # Pan back to the live edge (a range whose right end reaches past the newest row, by
    # 2 s: rows go on arriving while the page is told): follow.
    edge = page.evaluate(
        """() => new Promise((done) => {
          const sub = window.livestreamPage.conn.subscribe("big", {last: 1, columns: ["time"],
            onData: (b) => { sub.unsubscribe(); done(b.columns.time[b.rows - 1]); }});
        })"""
    )
    assert edge > t[-1]
    page.evaluate(f"{OVERVIEW}.zoom({edge - 8_000}, {edge + 2_000})")
    page.wait_for_function(f"() => {OVERVIEW}.following()", timeout=WAIT_MS)

    def newer() -> float | None:
        times = source(page)["time"]
        return times[-1] if times and times[-1] > edge + 1000 else None

    newest = wait_until(newer, timeout=WAIT_MS / 1000, message="the plot did not follow")
    # Following keeps the span of the zoom: about ten seconds up to the newest row (the
    # rows that arrived since the last view add a little).
    x_range = page.evaluate(
        """() => { const el = document.querySelector("[data-source-id]");
          for (const doc of Bokeh.documents) for (const m of doc.all_models)
            if (m.type === "Figure" && el.closest(".ls-plot")) return [m.x_range.start, m.x_range.end];
          return null; }"""
    )
    assert x_range is not None
    assert 9_990 <= x_range[1] - x_range[0] < 10_000 * 1.5
    assert x_range[1] >= edge
    assert newest > edge


@pytest.fixture
def still(server_factory: Any) -> tuple[Server, np.ndarray]:
    """A server whose stream ``still`` holds 1,000,000 rows (time in ms, y) and no producer."""
    server = server_factory()
    stream = server.stream("still", history=1_000_000)
    n = 1_000_000
    t = time.time() * 1000.0 - n + np.arange(n, dtype=np.float64)
    stream.append({"time": t, "y": np.sin(np.arange(n) / 5_000.0)})
    return server, t


def test_the_wheel_zoom_asks_a_view_of_the_new_range_and_reset_follows_again(
    browser: Browser, still: tuple[Server, np.ndarray]
) -> None:
    server, t = still
    with open_pages(browser) as open_:
        page = open_(f"{server.base_url}/streams/still?window=10000000&y=y&token={server.token}")
        page.wait_for_function(f"() => {OVERVIEW}?.stats().views >= 1", timeout=WAIT_MS)
        whole = page.evaluate(f"{OVERVIEW}.stats()")
        assert (whole["first"], whole["stop"], whole["exact"]) == (0, len(t), False)
        box = page.locator(".ls-plot canvas").first.bounding_box()
        assert box is not None
        middle = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.move(*middle)  # the toolbar shows on hover
        page.locator("[title='Wheel Zoom (x-axis)']").first.click()
        page.mouse.move(*middle)
        before = page.evaluate(f"{OVERVIEW}.stats().views")
        for _ in range(6):
            page.mouse.wheel(0, -400)
        # One view for the steps together (debounced), of the range BokehJS shows.
        page.wait_for_function(
            f"() => !{OVERVIEW}.following() && {OVERVIEW}.stats().range !== null "
            f"&& {OVERVIEW}.stats().stop - {OVERVIEW}.stats().first < {len(t) // 2}",
            timeout=WAIT_MS,
        )
        shown = page.evaluate(
            """() => { for (const doc of Bokeh.documents) for (const m of doc.all_models)
                 if (m.type === "Figure") return [m.x_range.start, m.x_range.end]; }"""
        )
        lo, hi = shown
        first = int(np.searchsorted(t, lo, side="left"))
        stop = int(np.searchsorted(t, hi, side="right"))
        # The view drawn is that of the range shown (older ones were cancelled or replaced).
        stats = wait_until(
            lambda: (
                (s := page.evaluate(f"{OVERVIEW}.stats()"))
                and (s["first"], s["stop"]) == (first, stop)
                and s
            ),
            message="no view of the range shown",
        )
        assert stats["range"] == pytest.approx(shown)
        # Fewer views than wheel steps: those within 100 ms of the next were never asked
        # (how many come together depends on how fast this machine sends them).
        assert stats["views"] - before < 6, stats
        # The plot draws that view at its pace (at most 20 redraws a second): wait for it.
        wait_until(
            lambda: (d := source(page)) and min(d["time"]) >= lo and max(d["time"]) <= hi,
            message="the plot does not draw the view of the range shown",
        )
        # The reset tool shows the whole window and follows again.
        page.mouse.move(*middle)
        page.locator("[title='Reset']").first.click()
        page.wait_for_function(
            f"() => {OVERVIEW}.following() && {OVERVIEW}.stats().range === null "
            f"&& {OVERVIEW}.stats().first === 0",
            timeout=WAIT_MS,
        )


def test_a_live_plot_widget_of_ten_million_rows_draws_views(
    still: tuple[Server, np.ndarray],
    notebook: Page,  # noqa: F811 (the fixture of test_browser_widgets)
) -> None:
    server, t = still
    widget = ls.LivePlot(server.stream("still"), y="y", window=10_000_000)
    mount(notebook, widget, "big")

    def drawn() -> dict[str, Any] | None:
        found = notebook.evaluate(SOURCE_OF, "big")
        data = found["columns"] if found else {}
        return data if len(data.get("time", ())) > 100 else None

    data = wait_until(drawn, message="the widget never drew its plot")
    times = np.asarray(data["time"])
    # The whole history, as a view: from its first row to its last, in a few thousand rows.
    assert times.min() == t[0] and times.max() == t[-1]
    assert len(times) < 20 * 1100
    assert set(times.tolist()) <= set(t.tolist())
    assert (
        notebook.evaluate("() => document.querySelector('#big [data-views]')?.dataset.views")
        == "true"
    )


def _reference_candles(
    t: np.ndarray, p: np.ndarray, lo: float, bar: float, n: int
) -> dict[str, list[float]]:
    """Candles of every tick: bar k holds ticks with lo + k*bar <= t < lo + (k+1)*bar."""
    k = np.floor((t - lo) / bar).astype(np.int64)
    keep = (k >= 0) & (k < n)
    k, p = k[keep], p[keep]
    bars, first = np.unique(k, return_index=True)
    last = np.r_[first[1:], len(k)] - 1
    return {
        "time": (lo + bars * bar).tolist(),
        "open": p[first].tolist(),
        "high": np.maximum.reduceat(p, first).tolist(),
        "low": np.minimum.reduceat(p, first).tolist(),
        "close": p[last].tolist(),
    }


def test_ohlc_candles_of_a_view_are_the_candles_of_every_tick(
    browser: Browser, server_factory: Any
) -> None:
    server = server_factory()
    stream = server.stream("ticks", history=1_000_000)
    n = 1_000_000
    t0 = 1_700_000_000_000.0
    t = t0 + np.arange(n, dtype=np.float64)  # one tick per ms
    price = 100 + np.cumsum(np.random.default_rng(5).normal(0, 0.05, n))
    price[500_123] = 500.0  # a spike: the high of its bar
    stream.append({"time": t, "price": price})
    with open_pages(browser) as open_:
        page = open_(
            f"{server.base_url}/streams/ticks?kind=ohlc&window=100000&y=price&token={server.token}"
        )
        page.wait_for_function(f"() => {OVERVIEW}?.stats().views >= 1", timeout=WAIT_MS)
        # Zoom to 300 s: 1-second bars (the interval), 300,000 ticks drawn by their M4 rows.
        lo, hi = t0 + 400_000.0, t0 + 700_000.0 - 1
        page.evaluate(f"{OVERVIEW}.zoom({lo}, {hi})")
        page.wait_for_function(
            f"() => !{OVERVIEW}.following() && {OVERVIEW}.stats().first === 400000",
            timeout=WAIT_MS,
        )
        assert page.evaluate(f"{OVERVIEW}.stats().exact") is False
        want = _reference_candles(t, price, lo, 1000.0, 300)
        assert len(want["time"]) == 300 and max(want["high"]) == 500.0

        def drawn() -> dict[str, list[float]] | None:
            data = page.evaluate(
                """() => { const el = document.querySelector("[data-source-id]");
                  for (const doc of Bokeh.documents) { const s = doc.get_model_by_id(el.dataset.sourceId);
                    if (s) return Object.fromEntries(["time", "open", "high", "low", "close"]
                      .map((c) => [c, Array.from(s.data[c])])); } return null; }"""
            )
            return data if data and data["time"][:1] == [lo] else None

        got = wait_until(drawn, message="the candles of the zoomed range were never drawn")
        assert got == want


def test_the_screenshot_script_shoots_a_large_window_zoomed_out_and_in(
    browser: Browser, tmp_path: Any
) -> None:
    """scripts/screenshots.py's large-window pictures (docs/images), with fewer rows."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "screenshots.py"
    spec = importlib.util.spec_from_file_location("screenshots", script)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    written = module.shoot_large(tmp_path, rows=1_000_000, browser=browser)
    assert [f.name for f in written] == ["large-window-out.png", "large-window-in.png"]
    out, zoomed = (f.read_bytes() for f in written)
    assert out[:8] == zoomed[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(out) > 10_000 and len(zoomed) > 10_000 and out != zoomed


def test_an_x_that_goes_back_is_drawn_by_views_by_offset(
    browser: Browser, server_factory: Any
) -> None:
    """The server refuses a view of an x-range when x decreases somewhere; the plot then
    asks views by offset and still draws the whole history, spike included."""
    server = server_factory()
    stream = server.stream("jitter", history=200_000)
    n = 200_000
    t = 1_700_000_000_000.0 + np.arange(n, dtype=np.float64)
    t[100_000] -= 5_000.0  # one clock step back
    y = np.sin(np.arange(n) / 1_000.0)
    y[150_000] = 42.0
    stream.append({"time": t, "y": y})
    with open_pages(browser) as open_:
        page = open_(f"{server.base_url}/streams/jitter?window=1000000&y=y&token={server.token}")
        page.wait_for_function(f"() => {OVERVIEW}?.stats().views >= 1", timeout=WAIT_MS)
        data = wait_until(
            lambda: (d := source(page)) and len(d["time"]) > 100 and d,
            message="the plot never drew the history",
        )
        assert 42.0 in data["y"]
        assert data["time"][0] == t[0] and data["time"][-1] == t[-1]
        assert len(data["time"]) < n
        assert page.evaluate(f"{OVERVIEW}.stats()")["first"] == 0
