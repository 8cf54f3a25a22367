"""Retake the documentation's screenshots (docs/images/) from a real server and Chromium.

    python scripts/screenshots.py                # the standalone pages: dashboard.png,
                                                 # dashboard-phone.png, index.png
    python scripts/screenshots.py --notebook     # also notebook-dashboard.png, from a real
                                                 # JupyterLab (tests/test_jupyterlab.py)
    python scripts/screenshots.py --out /tmp/x   # somewhere else

The standalone pages are shot here: a livestream server on 127.0.0.1 (port 0) with the
demo's feeds (``livestream demo``'s ``prices`` and ``sensors``), Debian's Chromium
(/usr/bin/chromium) driven by Playwright, each picture once the plot or the sparklines hold
a few seconds of data. The notebook picture needs JupyterLab driven through a notebook, which
tests/test_jupyterlab.py does already: ``--notebook`` runs its quickstart test with
LIVESTREAM_UPDATE_SCREENSHOTS=1, which writes docs/images/notebook-dashboard.png.

tests/test_browser_dashboard.py runs :func:`capture` into a temporary directory, so this
script stays working.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCS_IMAGES = ROOT / "docs" / "images"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
WAIT_MS = 20_000

#: file → (page, width, height): the demo's prices dashboard on a laptop and a phone, and
#: the home page with its cards.
SHOTS: dict[str, tuple[str, int, int]] = {
    "dashboard.png": ("/streams/prices", 1280, 800),
    "dashboard-phone.png": ("/streams/prices", 390, 844),
    "index.png": ("/", 900, 470),
}

#: Rows in the plot of the page (from BokehJS: the source its `data-source-id` names).
SOURCE_LENGTH = """() => {
  const el = document.querySelector("[data-source-id]");
  if (!el || !window.Bokeh) return -1;
  for (const doc of Bokeh.documents) {
    const source = doc.get_model_by_id(el.dataset.sourceId);
    if (source) return source.get_length();
  }
  return -1;
}"""


def capture(
    browser: Any, base_url: str, token: str, out_dir: Path, *, rows: int = 160, points: int = 120
) -> list[Path]:
    """Shoot every page of :data:`SHOTS` of the server at ``base_url`` (which must serve the
    demo's streams) into ``out_dir``, once the plot holds ``rows`` rows (8 s of prices) and
    each sparkline ``points`` points (the most it shows); return the files written."""
    from playwright.sync_api import expect

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (path, width, height) in SHOTS.items():
        context = browser.new_context(viewport={"width": width, "height": height})
        try:
            page = context.new_page()
            page.goto(f"{base_url}{path}?token={token}")
            if path == "/":
                for stream in ("prices", "sensors"):
                    trend = page.locator(f'.ls-stream-card[data-stream="{stream}"] .ls-trend')
                    page.wait_for_function(
                        "([el, n]) => Number(el.dataset.points) >= n",
                        arg=[trend.element_handle(timeout=WAIT_MS), points],
                        timeout=WAIT_MS,
                    )
            else:
                page.wait_for_function(f"() => ({SOURCE_LENGTH})() >= {rows}", timeout=WAIT_MS)
                expect(page.locator(".ls-table tbody tr")).to_have_count(15, timeout=WAIT_MS)
                expect(page.locator(".ls-value-number")).not_to_have_text("—", timeout=WAIT_MS)
            page.mouse.move(0, 0)
            page.wait_for_timeout(400)  # the last frame and sparkline drawn
            file = out_dir / name
            page.screenshot(path=str(file))
            written.append(file)
        finally:
            context.close()
    return written


def shoot_pages(out_dir: Path) -> list[Path]:
    """Chromium, then a server with the demo's feeds, then :func:`capture`. (Chromium starts
    first: started beside the feeds, it can hold them up for a second on a small machine,
    and the picture shows the gap.)"""
    from playwright.sync_api import sync_playwright

    from livestream import demo
    from livestream.server import Server

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            browser.new_context().close()
            server = Server("127.0.0.1", 0).start()
            try:
                demo.install(server)
                return capture(browser, server.base_url, server.token, out_dir)
            finally:
                server.stop()
        finally:
            browser.close()


def shoot_notebook() -> int:
    """notebook-dashboard.png, by tests/test_jupyterlab.py's quickstart test."""
    env = {**os.environ, "LIVESTREAM_UPDATE_SCREENSHOTS": "1"}
    test = "tests/test_jupyterlab.py::test_quickstart_dashboard"
    return subprocess.call(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test], cwd=ROOT, env=env
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=DOCS_IMAGES, help="where to write (default: docs/images)"
    )
    parser.add_argument(
        "--notebook",
        action="store_true",
        help="also notebook-dashboard.png (JupyterLab; docs/images only)",
    )
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(
            f"screenshots: {CHROMIUM} is missing; install Debian's chromium (scripts/test.sh does)",
            file=sys.stderr,
        )
        return 1
    for file in shoot_pages(args.out):
        print(f"wrote {file.relative_to(ROOT) if file.is_relative_to(ROOT) else file}")
    if args.notebook:
        status = shoot_notebook()
        if status:
            print(
                "screenshots: the JupyterLab test failed; notebook-dashboard.png was not retaken",
                file=sys.stderr,
            )
            return status
        print(f"wrote {(DOCS_IMAGES / 'notebook-dashboard.png').relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
