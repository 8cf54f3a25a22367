"""The widget stylesheet stays in its box (issue 9): anywidget puts livestream.css into the
whole notebook page, so it must not restyle the host, and a widget must follow the host's
theme rather than the OS's.

* By reading the files: every rule of livestream.css styles `ls-` elements, nothing styles
  `:root`, `html` or `body`; the tokens are declared once, on the roots, each colour as
  ``light-dark(light, dark)``; `color-scheme` is set on widget roots only; what only the
  standalone pages need is in page.css, which both pages link after livestream.css.
* On a standalone page in Chromium: the page follows the OS theme.
* In a real JupyterLab in Chromium, the OS dark (``emulate_media(color_scheme="dark")``)
  and JupyterLab's light theme: JupyterLab's own colours (toolbar button, notebook panel,
  inputs, menu and status bars, the page) are the same with and without a widget on the
  page; every rule of the widget stylesheet matches elements inside widgets only; the widget
  is light. Then JupyterLab's dark theme with the OS light: the widget is dark, and
  JupyterLab's colours are the same with the widget stylesheet on or off.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_support import JupyterServer, chromium
from support import write_notebook
from test_jupyterlab import (  # the module's JupyterLab  # noqa: F401
    WAIT_MS,
    lab,
    open_notebook,
    open_page,
    run_all,
)

from livestream.server import Server

STATIC = Path(__file__).resolve().parent.parent / "livestream" / "static"
WIDGET_CSS = STATIC / "livestream.css"
PAGE_CSS = STATIC / "page.css"

#: Classes of the standalone pages' frame, styled by page.css alone.
PAGE_ONLY = ("ls-page", "ls-topbar", "ls-brand", "ls-crumb", "ls-main")

#: The palette's colours as computed: light and dark (livestream.css's tokens).
LIGHT = {"text": "rgb(31, 35, 40)", "surface": "rgb(255, 255, 255)", "bg": "rgb(245, 246, 248)"}
DARK = {"text": "rgb(230, 237, 243)", "surface": "rgb(21, 27, 35)", "bg": "rgb(13, 17, 23)"}


# --------------------------------------------------------------------------- reading the CSS


def style_rules(css: str) -> list[tuple[tuple[str, ...], str, str]]:
    """(enclosing at-rules, selector list, declarations) of every style rule of ``css``."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    stack: list[str] = []
    rules: list[tuple[tuple[str, ...], str, str]] = []
    buf = ""
    for ch in css:
        if ch == "{":
            stack.append(" ".join(buf.split()))
            buf = ""
        elif ch == "}":
            prelude = stack.pop()
            if not prelude.startswith("@") and not any(a.startswith("@keyframes") for a in stack):
                rules.append((tuple(stack), prelude, buf.strip()))
            buf = ""
        else:
            buf += ch
    assert not stack, "unbalanced braces"
    return rules


def split_top(text: str, sep: str = ",") -> list[str]:
    """``text`` split at ``sep`` outside parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == sep and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return [*parts, cur.strip()]


def bare(selector: str) -> str:
    """``selector`` without the arguments of its pseudo-classes (``:where(...)``, ``:not(...)``)."""
    while (stripped := re.sub(r"\([^()]*\)", "", selector)) != selector:
        selector = stripped
    return selector.strip()


def subject(selector: str) -> str:
    """The compound selector a complex selector styles (its last), arguments removed."""
    return re.split(r"\s*[ >+~]\s*", bare(selector))[-1]


def declarations(body: str) -> dict[str, str]:
    return {
        name.strip(): value.strip()
        for name, _, value in (d.partition(":") for d in split_top(body, ";") if d.strip())
    }


def test_every_widget_rule_styles_ls_elements_only() -> None:
    for at, selectors, body in style_rules(WIDGET_CSS.read_text("utf-8")):
        for selector in split_top(selectors):
            where = f"{selector!r} in {' '.join(at)} of livestream.css"
            assert not re.search(r":root|(?<![\w-])html(?![\w-])", selector), (
                f"{where} styles the page"
            )
            assert ".ls-" in bare(selector), f"{where} styles elements that are not ours"
            assert not re.search(r"(?<![\w-])body(?![\w-])", subject(selector)), (
                f"{where} styles <body>"
            )
            assert not any(c in selector for c in PAGE_ONLY[1:]), f"{where} is page-only"
        if "color-scheme" in declarations(body):
            assert all(subject(s) == ".ls-root" for s in split_top(selectors)), (
                f"color-scheme on {selectors!r}: only a widget root may set its scheme"
            )


def test_each_token_and_colour_is_declared_once() -> None:
    css = WIDGET_CSS.read_text("utf-8")
    declared: dict[str, list[str]] = {}
    for _, selectors, body in style_rules(css):
        for name, value in declarations(body).items():
            if name.startswith("--ls-"):
                declared.setdefault(name, []).append(selectors)
                if re.search(r"#[0-9a-f]{3,8}\b|rgba?\(", value) and "-shadow" not in name:
                    assert value.startswith("light-dark("), f"{name}: {value} has one theme"
    twice = {name: where for name, where in declared.items() if len(where) > 1}
    assert not twice, f"tokens declared more than once: {twice}"
    assert {s for where in declared.values() for s in where} == {".ls-root, .ls-page"}
    assert len(declared) >= 25, sorted(declared)
    # The dark palette stands once: its background is written in one place.
    assert css.count("#0d1117") == 1
    assert "prefers-color-scheme" not in css, "a widget follows its host, not the OS directly"


def test_page_css_holds_the_page_frame_and_both_pages_link_it() -> None:
    page = PAGE_CSS.read_text("utf-8")
    for _, selectors, _ in style_rules(page):
        for selector in split_top(selectors):
            assert selector == ":root" or any(c in selector for c in PAGE_ONLY), (
                f"{selector!r} in page.css is not page-only: it belongs in livestream.css"
            )
    for name, prefix in (("index.html", "static/"), ("stream.html", "../static/")):
        html = (STATIC / name).read_text("utf-8")
        links = re.findall(r'<link rel="stylesheet" href="([^"]+)">', html)
        assert links == [f"{prefix}livestream.css", f"{prefix}page.css"], f"{name}: {links}"


# --------------------------------------------------------------------------- standalone page

#: Computed colours of the page's body and of a card on it.
PAGE_COLOURS = """() => {
  const body = getComputedStyle(document.body);
  return {bg: body.backgroundColor, text: body.color, scheme: getComputedStyle(document.documentElement).colorScheme};
}"""


@pytest.mark.browser
def test_standalone_page_follows_the_os(live_server: Server) -> None:
    with chromium() as b:
        context = b.new_context()
        try:
            page = context.new_page()
            page.goto(f"{live_server.base_url}/")
            page.wait_for_function(
                "() => [...document.styleSheets].filter((s) => s.href).length === 2",
                timeout=10_000,
            )
            for scheme, palette in (("dark", DARK), ("light", LIGHT)):
                page.emulate_media(color_scheme=scheme)
                colours = page.evaluate(PAGE_COLOURS)
                assert colours == {
                    "bg": palette["bg"],
                    "text": palette["text"],
                    "scheme": "light dark",
                }, f"OS {scheme}: {colours}"
        finally:
            context.close()


# --------------------------------------------------------------------------- in JupyterLab

NOTEBOOK = """\
import math, random, time
import livestream as ls

theme = ls.stream("css-theme", history=1_000)

@theme.producer(every=0.2, params={"level": ls.Float(1.0, min=0, max=2, label="Level")})
def tick(params):
    return {"time": time.time() * 1000, "value": params.level * random.random()}

ls.Controls(theme)
"""

#: JupyterLab's own elements whose colours the widget stylesheet must leave alone.
HOST_ELEMENTS = {
    "page": "html",
    "body": "body",
    "menu bar": "#jp-menu-panel",
    "toolbar button": ".jp-NotebookPanel-toolbar .jp-ToolbarButtonComponent",
    "cell type select": ".jp-NotebookPanel-toolbar select",
    "notebook panel": ".jp-NotebookPanel",
    "notebook": ".jp-Notebook",
    "command palette input": ".lm-CommandPalette-input",
    "add-cell button": "button.jp-Notebook-footer",
    "cell editor": ".jp-CodeCell .cm-content",
    "status bar": "#jp-main-statusbar",
}
PROPERTIES = ("color-scheme", "background-color", "color", "border-top-color", "accent-color")

HOST_COLOURS = """([elements, properties]) => {
  const out = {};
  for (const [name, selector] of Object.entries(elements)) {
    const el = document.querySelector(selector);
    if (!el) { out[name] = null; continue; }
    const style = getComputedStyle(el);
    out[name] = Object.fromEntries(properties.map((p) => [p, style.getPropertyValue(p)]));
  }
  return out;
}"""

#: The widget's scheme and colours: its root's text, and its card's surface.
WIDGET_COLOURS = """() => {
  const root = document.querySelector(".ls-widget-controls");
  const button = root.querySelector(".ls-run-toggle[aria-pressed=false]");
  return {
    scheme: getComputedStyle(root).colorScheme,
    text: getComputedStyle(root).color,
    surface: getComputedStyle(button).backgroundColor,
  };
}"""

#: Every style rule of the widget stylesheet, and the elements it matches outside a widget.
STRAY_MATCHES = """async () => {
  // A <link> to the livestream server's origin (its rules are not readable from the page),
  // or a <style> (relay route): parse the same text into a sheet of our own.
  const node = document.getElementById("livestream-css");
  if (!node?.sheet) return null;
  const sheet = new CSSStyleSheet();
  sheet.replaceSync(node.href ? await (await fetch(node.href)).text() : node.textContent);
  const stray = [];
  let rules = 0;
  const walk = (list) => {
    for (const rule of list) {
      if (rule.selectorText !== undefined) {
        rules++;
        const selector = rule.selectorText.replace(/::?(before|after|-webkit-[\\w-]+)/g, "");
        for (const el of document.querySelectorAll(selector)) {
          if (!el.closest(".ls-root")) stray.push(`${rule.selectorText} matches ${el.tagName}.${el.className}`);
        }
      } else if (rule.cssRules && !(rule instanceof CSSKeyframesRule)) {
        walk(rule.cssRules);
      }
    }
  };
  walk(sheet.cssRules);
  return {rules, stray};
}"""


def host_colours(page: Any) -> dict[str, Any]:
    page.mouse.move(0, 0)  # no hover on what is measured
    colours: dict[str, Any] = page.evaluate(HOST_COLOURS, [HOST_ELEMENTS, PROPERTIES])
    missing = [name for name, value in colours.items() if value is None]
    assert not missing, f"JupyterLab elements not found: {missing}"
    return colours


@pytest.fixture
def theme_page(
    lab: JupyterServer,  # noqa: F811
    open_page: Callable[[str], Any],  # noqa: F811
) -> Iterator[Any]:
    page = open_notebook(lab, open_page, write_notebook(lab.root, "css-theme.ipynb", [NOTEBOOK]))
    yield page
    lab.delete_kernels()


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_jupyterlab_keeps_its_colours_and_the_widget_follows_its_theme(
    theme_page: Any, tmp_path: Path
) -> None:
    page = theme_page
    where = os.environ.get("LIVESTREAM_TEST_ARTIFACTS")
    artifacts = Path(where) if where else tmp_path
    artifacts.mkdir(parents=True, exist_ok=True)
    page.emulate_media(color_scheme="dark")
    assert page.evaluate("document.body.dataset.jpThemeLight") == "true"
    without = host_colours(page)
    assert without["page"]["color-scheme"] == "normal", without["page"]

    run_all(page)
    page.locator(".ls-widget-controls .ls-param").wait_for(timeout=WAIT_MS)
    matches = page.evaluate(STRAY_MATCHES)
    assert matches is not None, "the widget stylesheet is not on the page"
    assert matches["rules"] > 100, matches
    assert not matches["stray"], "widget rules style JupyterLab:\n" + "\n".join(matches["stray"])
    with_widget = host_colours(page)
    changed = {
        name: (without[name], with_widget[name])
        for name in HOST_ELEMENTS
        if with_widget[name] != without[name]
    }
    assert not changed, f"a widget on the page changed JupyterLab's colours: {changed}"

    # JupyterLab light, OS dark: the widget is light.
    widget = page.evaluate(WIDGET_COLOURS)
    assert widget == {"scheme": "light", "text": LIGHT["text"], "surface": LIGHT["surface"]}
    page.screenshot(path=str(artifacts / "theme-lab-light-os-dark.png"))

    # JupyterLab dark, OS light: the widget is dark; JupyterLab's colours do not depend on
    # the widget stylesheet either.
    page.emulate_media(color_scheme="light")
    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Settings$")).click()
    page.locator(".lm-Menu-item", has_text=re.compile(r"^Theme$")).hover()
    page.locator(".lm-Menu-item", has_text=re.compile(r"^JupyterLab Dark$")).click()
    page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'", timeout=WAIT_MS)
    # JupyterLab shows its splash screen while it swaps the theme: measure once it is gone.
    page.locator("#jupyterlab-splash").wait_for(state="detached", timeout=WAIT_MS)
    page.wait_for_function(
        f"() => getComputedStyle(document.querySelector('.ls-widget-controls')).color === {DARK['text']!r}",
        timeout=WAIT_MS,
    )
    widget = page.evaluate(WIDGET_COLOURS)
    assert widget == {"scheme": "dark", "text": DARK["text"], "surface": DARK["surface"]}
    page.screenshot(path=str(artifacts / "theme-lab-dark-os-light.png"))
    dark_with = host_colours(page)
    page.evaluate("() => { document.getElementById('livestream-css').disabled = true; }")
    dark_without = host_colours(page)
    page.evaluate("() => { document.getElementById('livestream-css').disabled = false; }")
    changed = {
        name: (dark_without[name], dark_with[name])
        for name in HOST_ELEMENTS
        if dark_with[name] != dark_without[name]
    }
    assert not changed, f"the widget stylesheet changed JupyterLab's dark colours: {changed}"
    assert dark_with["notebook panel"] != without["notebook panel"], "the theme did not change"

    # Back to the light theme for whatever runs next in this JupyterLab.
    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Settings$")).click()
    page.locator(".lm-Menu-item", has_text=re.compile(r"^Theme$")).hover()
    page.locator(".lm-Menu-item", has_text=re.compile(r"^JupyterLab Light$")).click()
    page.wait_for_function("() => document.body.dataset.jpThemeLight === 'true'", timeout=WAIT_MS)
    page.locator("#jupyterlab-splash").wait_for(state="detached", timeout=WAIT_MS)


PLOT_NOTEBOOK = NOTEBOOK.replace("ls.Controls(theme)", "ls.LivePlot(theme, y='value')")

#: The colour bokeh.js gave the plot's axis labels (PLOT_COLORS.light.text or .dark.text).
AXIS_LABEL_COLOUR = """() => {
  const el = document.querySelector(".ls-widget-plot [data-source-id]");
  if (!el || !window.Bokeh) return null;
  for (const doc of Bokeh.documents) {
    if (!doc.get_model_by_id(el.dataset.sourceId)) continue;
    const roots = typeof doc.roots === "function" ? doc.roots() : doc.roots;
    return roots[0]?.below?.[0]?.major_label_text_color ?? null;
  }
  return null;
}"""


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_jupyterlab_plot_follows_its_theme(
    lab: JupyterServer,  # noqa: F811
    open_page: Callable[[str], Any],  # noqa: F811
) -> None:
    page = open_notebook(
        lab, open_page, write_notebook(lab.root, "css-plot.ipynb", [PLOT_NOTEBOOK])
    )
    try:
        page.emulate_media(color_scheme="dark")
        run_all(page)
        page.wait_for_function(f"() => ({AXIS_LABEL_COLOUR})() !== null", timeout=WAIT_MS)
        scheme = page.evaluate(
            "() => getComputedStyle(document.querySelector('.ls-widget-plot')).colorScheme"
        )
        assert scheme == "light"
        # PLOT_COLORS.light.text of bokeh.js: the plot is drawn for the light widget it is in.
        assert page.evaluate(AXIS_LABEL_COLOUR) == "#57606a"
    finally:
        lab.delete_kernels()
