"""The BokehJS private internals livestream/static/bokeh.js relies on, in the BokehJS the
server serves, in Chromium.

None of them is public API (bokeh.js isolates each in one function): ``Bokeh.documents``
(forgetDocument), ``LegendView._render_items`` (afterLegendRebuild),
``LegendView._paint_glyphs`` (paintLegendSwatches) and
``PlotView._range_manager.warn_initial_ranges`` (quietInitialRanges), plus
``View.children()`` to find the legends and plots. Also the two public halves of
``embed_item`` that embedPlot calls apart: ``Document.from_json`` (bokeh-api) and
``embed.add_document_standalone``. A BokehJS release that renames or reshapes one fails here, not silently in a
notebook; pyproject.toml bounds bokeh to the versions this passed with.

Chromium must be installed at /usr/bin/chromium; this test fails, never skips, without it.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from bokeh.embed import json_item
from bokeh.models import ColumnDataSource
from bokeh.plotting import figure
from packaging.specifiers import SpecifierSet
from playwright.sync_api import sync_playwright
from support import CHROMIUM, CHROMIUM_ARGS

from livestream.server import Server

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent

#: Embeds the figure, then checks each internal: it exists, and does what bokeh.js expects.
CHECK = """async (item) => {
  const el = document.createElement("div");
  document.body.append(el);
  const views = await Bokeh.embed.embed_item(item, el);
  const doc = views.roots[0].model.document;
  const legends = [];
  const queue = [...views.roots];
  while (queue.length) {
    const view = queue.shift();
    if (view.model?.type === "Legend") legends.push(view);
    if (typeof view.children === "function") queue.push(...view.children());
  }
  const legend = legends[0];
  const found = {
    version: Bokeh.version,
    documents: Array.isArray(Bokeh.documents) && Bokeh.documents.includes(doc),
    children: typeof views.roots[0].children === "function",
    legends: legends.length,
    render_items: typeof legend?._render_items === "function",
    paint_glyphs: typeof legend?._paint_glyphs === "function",
    rebuilt_on_stream: false,
    painted: false,
  };
  if (!found.render_items || !found.paint_glyphs) return found;
  // bokeh.js wraps _render_items: BokehJS must still call it when the source streams.
  const rebuilt = new Promise((resolve) => {
    const original = legend._render_items;
    legend._render_items = function (...args) {
      const result = original.apply(this, args);
      resolve(true);
      return result;
    };
  });
  const source = doc.get_model_by_id(item.source_id);
  source.stream({x: [3], y: [30]});
  found.rebuilt_on_stream = await Promise.race([
    rebuilt, new Promise((resolve) => setTimeout(() => resolve(false), 5000)),
  ]);
  legend._paint_glyphs();  // throws if its shape changed
  found.painted = true;
  // quietInitialRanges: the plot view's RangeManager has the switch, on by default; an
  // emptied source logs "could not set initial ranges" at its next paint only while it is on.
  const manager = views.roots[0]._range_manager;
  found.warn_initial_ranges = manager?.warn_initial_ranges;
  const paint = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  const empty = async (marker) => {
    console.info(marker);
    source.data = {x: [], y: []};
    await paint();
    source.data = {x: [1, 2], y: [10, 20]};
    await paint();
  };
  if (typeof found.warn_initial_ranges === "boolean") {
    await empty("livestream-check: switch on");
    manager.warn_initial_ranges = false;
    await empty("livestream-check: switch off");
  }
  return found;
}"""


def test_the_bokehjs_internals_we_rely_on_exist(server: Server) -> None:
    source = ColumnDataSource(data={"x": [1, 2], "y": [10, 20]})
    fig = figure(width=400, height=250)
    fig.line("x", "y", source=source, legend_label="y")
    item: dict[str, Any] = {**json_item(fig), "source_id": source.id}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            console: list[str] = []
            page.on("console", lambda msg: console.append(msg.text))
            # A same-origin document with no script of its own, then the served BokehJS.
            page.goto(f"{server.base_url}/static/livestream.css")
            page.add_script_tag(url=f"{server.base_url}/static/js/bokeh.min.js")
            page.add_script_tag(url=f"{server.base_url}/static/js/bokeh-api.min.js")
            found = page.evaluate(CHECK, item)
            public = page.evaluate(
                """() => [typeof Bokeh.Document?.from_json,
                          typeof Bokeh.embed.add_document_standalone]"""
            )
        finally:
            browser.close()
    assert not errors, errors
    assert found == {
        "version": found["version"],
        "documents": True,
        "children": True,
        "legends": 1,
        "render_items": True,
        "paint_glyphs": True,
        "rebuilt_on_stream": True,
        "painted": True,
        "warn_initial_ranges": True,
    }, f"a BokehJS internal that livestream/static/bokeh.js relies on changed: {found}"
    assert public == ["function", "function"], f"embedPlot's BokehJS API changed: {public}"
    on = console.index("livestream-check: switch on")
    off = console.index("livestream-check: switch off")
    warned = [i for i, text in enumerate(console) if "could not set initial ranges" in text]
    assert any(on < i < off for i in warned), f"an empty source did not warn: {console}"
    assert not any(i > off for i in warned), (
        f"warn_initial_ranges = false did not quiet it: {console}"
    )
    # The BokehJS tested is within the bound pyproject.toml declares.
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    bokeh = next(d for d in deps if re.match(r"bokeh\b", d))
    spec = SpecifierSet(bokeh.removeprefix("bokeh"))
    assert any(s.operator in ("<", "<=") for s in spec), (
        f"bokeh has no upper bound in pyproject.toml ({bokeh!r}): bokeh.js uses private "
        "BokehJS internals, so bound it to the versions this test passed with"
    )
    assert found["version"] in spec, (
        f"BokehJS {found['version']} is served, but pyproject.toml says {bokeh!r}"
    )
