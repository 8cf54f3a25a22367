"""The fan-out figure for docs/benchmarks.md, drawn with Bokeh and photographed by Chromium.

matplotlib is not installed here and Bokeh's own ``export_png`` needs Selenium and a
WebDriver, which are not either; so the figure is a standalone Bokeh HTML page (BokehJS
inlined, nothing fetched) and Debian's Chromium, driven by Playwright, takes the PNG.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

COLORS = {
    "livestream": "#2563eb",
    "livestream-paced": "#1e40af",
    "livestream-thread": "#60a5fa",
    "livestream-thread-free": "#93c5fd",
    "raw": "#111827",
    "bokeh": "#f59e0b",
    "bokeh-ws": "#b45309",
}
LABELS = {
    "livestream": "livestream, async producer on the server loop, as fast as it can",
    "livestream-paced": "livestream, async producer offering the raw ceiling's rate",
    "livestream-thread": "livestream, producer thread offering the raw ceiling's rate",
    "livestream-thread-free": "livestream, producer thread as fast as it can (never waits)",
    "raw": "raw Tornado broadcast (awaits every write)",
    "bokeh": "Bokeh server (Chromium pages)",
    "bokeh-ws": "Bokeh server (Bokeh protocol clients, no page)",
}


def _panel(rows: list[dict[str, Any]], title: str) -> Any:
    from bokeh.models import Legend, LegendItem, NumeralTickFormatter
    from bokeh.plotting import figure

    fig = figure(
        title=title,
        width=620,
        height=620,
        x_axis_type="log",
        y_axis_type="log",
        x_axis_label="subscribers (N)",
        y_axis_label="rows/s delivered per subscriber",
        toolbar_location=None,
    )
    items = []
    for variant in COLORS:
        pts = sorted(
            (r["n"], r["rows_per_sub"])
            for r in rows
            if r.get("variant") == variant and "error" not in r and r["rows_per_sub"] > 0
        )
        if not pts:
            continue
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        color = COLORS[variant]
        line = fig.line(
            xs,
            ys,
            color=color,
            line_width=3,
            line_dash="dashed" if variant.startswith("livestream-thread") else "solid",
        )
        dots = fig.scatter(xs, ys, color=color, size=9)
        items.append(LegendItem(label=LABELS[variant], renderers=[line, dots]))
    fig.xaxis.ticker = [1, 10, 100, 1000]
    fig.xaxis.major_label_overrides = {1: "1", 10: "10", 100: "100", 1000: "1000"}
    fig.yaxis.formatter = NumeralTickFormatter(format="0.[0]a")
    fig.add_layout(Legend(items=items, label_text_font_size="10pt"), "below")
    fig.title.text_font_size = "13pt"
    return fig


def fanout_png(results: dict[str, Any], path: str) -> None:
    """Write a PNG with the fan-out (and, if measured, the single-row) figures."""
    from bokeh.embed import file_html
    from bokeh.layouts import row
    from bokeh.resources import INLINE
    from playwright.sync_api import sync_playwright

    from .clients import CHROMIUM, CHROMIUM_ARGS

    panels = [_panel(results["fanout"], "1,000-row batches")]
    if results.get("ticks"):
        panels.append(_panel(results["ticks"], "single-row appends (ticks)"))
    html = file_html(row(*panels), INLINE, "livestream fan-out")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        page_path = Path(tmp) / "fanout.html"
        page_path.write_text(html)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(
                    viewport={"width": 620 * len(panels) + 40, "height": 660},
                    device_scale_factor=1.5,
                )
                page.goto(page_path.as_uri())
                page.wait_for_function(
                    "() => window.Bokeh && Bokeh.documents.length > 0 && "
                    "document.querySelectorAll('.bk-Row, .bk-Figure, canvas').length > 0",
                    timeout=30_000,
                )
                page.wait_for_timeout(800)
                page.screenshot(path=str(out), full_page=True)
            finally:
                browser.close()
