"""Widgets in ipywidgets containers size themselves (issue 13): a LivePlot, a Controls and a
LiveTable in an ``HBox``, a ``VBox``, a ``GridBox`` and an ``AppLayout``, in a real
JupyterLab, with no layout of their own.

The widgets come from a real kernel and a live stream; the sizes are measured in Chromium
from the widgets' roots (the anywidget views' elements) and from what they draw: the
Bokeh canvas of the plot, the controls' card and the table. Each container gets its
screenshot (``layout-<container>.png`` in the test's temporary directory, or in
``$LIVESTREAM_TEST_ARTIFACTS`` when set), and its measured widths are printed (``-s``).
The notebook page logs no warning or error to the console while the widgets render.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jupyter_support import JupyterServer
from support import write_notebook
from test_jupyterlab import (  # the module's JupyterLab  # noqa: F401
    WAIT_MS,
    lab,
    open_notebook,
    open_page,
    run_all,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

SETUP = """\
import math, random, time
import ipywidgets as w
import livestream as ls

prices = ls.stream("layout-prices", history=5_000)
last = {"price": 100.0}

@prices.producer(every=0.1, params={
    "volatility": ls.Float(0.02, min=0, max=0.2, step=0.005, label="Volatility"),
})
def tick(params):
    last["price"] *= math.exp(params.volatility * 0.2 * random.gauss(0, 1))
    return {"time": time.time() * 1000, "price": last["price"], "volume": random.randint(1, 50)}

def trio(name):
    return (
        ls.LivePlot(prices, y="price", title=f"Price in a {name}"),
        ls.Controls(prices),
        ls.LiveTable(prices, rows=4),
    )
"""

#: Each container, built with no layout for its children: the class marks it in the page.
CONTAINERS = {
    "hbox": "plot, controls, _ = trio('HBox')\nbox = w.HBox([plot, controls])",
    "hbox3": "box = w.HBox(list(trio('HBox of three')))",
    "vbox": "box = w.VBox(list(trio('VBox')))",
    "gridbox": (
        "box = w.GridBox(list(trio('GridBox')), "
        "layout=w.Layout(grid_template_columns='repeat(2, 1fr)'))"
    ),
    "applayout": (
        "plot, controls, table = trio('AppLayout')\n"
        "box = w.AppLayout(center=plot, right_sidebar=controls, footer=table)"
    ),
}

#: The rectangles of a container's parts, read from the page: the container, each widget's
#: root, and what each draws (the plot's Bokeh canvas, the controls' card, the table).
MEASURE = """(name) => {
  const box = document.querySelector(`.t-${name}`);
  if (!box) return null;
  const rect = (el) => {
    if (!el) return null;
    const r = el.getBoundingClientRect();
    return {left: r.left, top: r.top, right: r.right, bottom: r.bottom, width: r.width, height: r.height};
  };
  const canvas = box.querySelector(".ls-widget-plot .ls-plot-canvas");
  // Bokeh draws in its own shadow DOM: its canvas is the plot as seen, title included.
  const findCanvas = (root) => {
    for (const el of root.querySelectorAll("*")) {
      if (el.tagName === "CANVAS" && el.getBoundingClientRect().width > 0) return el;
      const inner = el.shadowRoot && findCanvas(el.shadowRoot);
      if (inner) return inner;
    }
    return null;
  };
  const plotRoot = box.querySelector(".ls-widget-plot .ls-plot-root");
  const drawn = plotRoot ? rect(findCanvas(plotRoot)) : null;
  return {
    box: rect(box),
    plot: rect(box.querySelector(".ls-widget-plot")),
    plotCanvas: rect(canvas),
    plotDrawn: drawn,
    controls: rect(box.querySelector(".ls-widget-controls")),
    controlsCard: rect(box.querySelector(".ls-widget-controls .ls-controls")),
    table: rect(box.querySelector(".ls-widget-table")),
    tableScroll: rect(box.querySelector(".ls-widget-table .ls-table-scroll")),
  };
}"""

#: A container's plot has drawn rows and its table shows some.
READY = """(name) => {
  const box = document.querySelector(`.t-${name}`);
  const el = box && box.querySelector("[data-source-id]");
  if (!el || !window.Bokeh) return false;
  if (box.querySelector(".ls-widget-table") && !box.querySelector(".ls-widget-table tbody tr"))
    return false;
  if (!box.querySelector(".ls-widget-controls .ls-param")) return false;
  for (const doc of Bokeh.documents) {
    const source = doc.get_model_by_id(el.dataset.sourceId);
    if (source) return source.get_length() >= 3;
  }
  return false;
}"""

Rect = dict[str, float]


def artifacts(server: JupyterServer) -> Path:
    where = os.environ.get("LIVESTREAM_TEST_ARTIFACTS")
    path = Path(where) if where else server.home.parent / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


def intersect(a: Rect, b: Rect, slack: float = 1.0) -> bool:
    return (
        min(a["right"], b["right"]) - max(a["left"], b["left"]) > slack
        and min(a["bottom"], b["bottom"]) - max(a["top"], b["top"]) > slack
    )


def inside(inner: Rect, outer: Rect, slack: float = 1.0) -> bool:
    return (
        inner["left"] >= outer["left"] - slack
        and inner["top"] >= outer["top"] - slack
        and inner["right"] <= outer["right"] + slack
        and inner["bottom"] <= outer["bottom"] + slack
    )


def test_widgets_size_themselves_in_containers(
    lab: JupyterServer,  # noqa: F811
    open_page: Callable[[str], Any],  # noqa: F811
) -> None:
    cells = [SETUP] + [
        f"{code}\nbox.add_class('t-{name}')\nbox" for name, code in CONTAINERS.items()
    ]
    page = open_notebook(lab, open_page, write_notebook(lab.root, "layout.ipynb", cells))
    console: list[str] = []
    page.on(
        "console",
        lambda m: console.append(f"{m.type}: {m.text}") if m.type in ("warning", "error") else None,
    )
    run_all(page)
    out = artifacts(lab)
    failures: list[str] = []
    for name in CONTAINERS:
        box = page.locator(f".t-{name}")
        box.scroll_into_view_if_needed(timeout=WAIT_MS)
        page.wait_for_function(READY, arg=name, timeout=WAIT_MS)
        m: dict[str, Rect | None] = page.evaluate(MEASURE, name)
        shot = out / f"layout-{name}.png"
        box.screenshot(path=str(shot), timeout=WAIT_MS)
        assert shot.stat().st_size > 5_000, f"{shot} is nearly empty"
        print(name, {k: round(v["width"]) for k, v in m.items() if v is not None})

        def check(ok: bool, what: str, name: str = name, m: Any = m) -> None:
            if not ok:
                failures.append(f"{name}: {what} (measured {m})")

        box_rect, plot, controls, drawn = m["box"], m["plot"], m["controls"], m["plotDrawn"]
        assert box_rect and plot and controls, f"{name}: a widget is missing ({m})"
        assert drawn is not None, f"{name}: the plot drew no canvas"
        parts = {k: r for k in ("plot", "controls", "table") if (r := m[k]) is not None}
        # Every widget stays in its container, and no two overlap.
        for part, r in parts.items():
            check(inside(r, box_rect), f"the {part} sticks out of the container")
        names = list(parts)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                check(not intersect(parts[a], parts[b]), f"the {a} and the {b} overlap")
        # What a widget draws stays in it: the plot's canvas (its title included) does not
        # run under the controls.
        check(inside(drawn, plot), "the plot's canvas runs out of the plot widget")
        check(
            not intersect(drawn, controls),
            "the controls cover the plot's canvas (its title)",
        )
        if (card := m["controlsCard"]) is not None:
            check(inside(card, controls), "the controls run out of their box")
        # Sensible sizes: the plot fills its widget and is wide enough to read, the
        # controls and the table keep a usable width.
        check(drawn["width"] >= 0.9 * plot["width"] - 4, "the plot does not fill its box")
        check(plot["width"] >= 300, "the plot is collapsed")
        check(controls["width"] >= 220, "the controls are squeezed")
        if (table := m["table"]) is not None:
            check(table["width"] >= 220, "the table is squeezed")
        if name == "hbox":
            check(
                plot["width"] >= 0.5 * box_rect["width"],
                "the plot takes less than half of the row",
            )
        if name == "hbox3":
            check(
                plot["width"] >= 0.4 * box_rect["width"]
                and all(plot["width"] > r["width"] for k, r in parts.items() if k != "plot"),
                "the plot is not the widest of the row, at 40% of it or more",
            )
        if name == "vbox":
            for part, r in parts.items():
                check(r["width"] >= 0.95 * box_rect["width"] - 8, f"the {part} is not full width")
    assert not failures, "\n".join(failures)
    # A plot in each container, and not one console warning or error (BokehJS
    # warned "could not set initial ranges" at each paint of a plot without rows).
    assert not console, f"console warnings or errors in the notebook: {console}"
