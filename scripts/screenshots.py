"""Retake the documentation's screenshots (docs/images/) from a real server and Chromium.

    python scripts/screenshots.py                # the standalone pages: dashboard.png,
                                                 # dashboard-phone.png, index.png
    python scripts/screenshots.py --notebook     # also notebook-dashboard.png, from a real
                                                 # JupyterLab (tests/test_jupyterlab.py)
    python scripts/screenshots.py --out /tmp/x   # somewhere else
    python scripts/screenshots.py --large        # only large-window-out.png and
                                                 # large-window-in.png (below)

The standalone pages are shot here: a livestream server on 127.0.0.1 (port 0) with the
demo's feeds (``livestream demo``'s ``prices`` and ``sensors``), Debian's Chromium
(/usr/bin/chromium) driven by Playwright, each picture once the plot or the sparklines hold
a few seconds of data. The notebook picture needs JupyterLab driven through a notebook, which
tests/test_jupyterlab.py does already: ``--notebook`` runs its quickstart test with
LIVESTREAM_UPDATE_SCREENSHOTS=1, which writes docs/images/notebook-dashboard.png.

The large-window pictures (docs/explanation.md, "Large windows") are of a plot of a
stream holding 10,000,000 rows (a random walk, one row per millisecond, with a spike),
still growing: the whole window, then one second of it (its raw rows).

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

# Chromium's path and flags, and the script that counts a plot's rows, are the tests' own.
sys.path.insert(0, str(ROOT / "tests"))
from support import CHROMIUM, CHROMIUM_ARGS, SOURCE_LENGTH  # noqa: E402

WAIT_MS = 20_000

#: file → (page, width, height): the demo's prices dashboard on a laptop and a phone, and
#: the home page with its cards.
SHOTS: dict[str, tuple[str, int, int]] = {
    "dashboard.png": ("/streams/prices", 1280, 800),
    "dashboard-phone.png": ("/streams/prices", 390, 844),
    "index.png": ("/", 900, 470),
}


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


#: The large-window pictures: the whole 10 M-row window, then one second of it.
LARGE_SHOTS = ("large-window-out.png", "large-window-in.png")
LARGE_ROWS = 10_000_000
OVERVIEW = "window.livestreamPage.dashboard.plot.overview()"


def shoot_large(out_dir: Path, rows: int = LARGE_ROWS, browser: Any = None) -> list[Path]:
    """A server whose stream ``ticks`` holds ``rows`` rows and grows by 20,000 rows/s, its
    page with ``window=10000000``: the plot card zoomed out, then zoomed into one second
    (its raw rows), in ``browser`` (default: a Chromium of its own).
    tests/test_large_plots.py runs it with fewer rows."""
    import time

    import numpy as np
    from playwright.sync_api import sync_playwright

    from livestream.server import Server

    n = rows
    rng = np.random.default_rng(12)
    now = time.time() * 1000.0
    t = now - n + np.arange(n, dtype=np.float64)  # one row per ms: 2.8 hours
    price = 100.0 + np.cumsum(rng.normal(0.0, 0.02, n))
    price[n // 3] += 25.0  # one spike among ten million rows
    out_dir.mkdir(parents=True, exist_ok=True)

    def shoot(browser: Any) -> list[Path]:
        server = Server("127.0.0.1", 0).start()
        try:
            stream = server.stream("ticks", history=n + 2_000_000)
            for i in range(0, n, 1_000_000):
                stream.append({"time": t[i : i + 1_000_000], "price": price[i : i + 1_000_000]})
            state = {"t": t[-1], "p": price[-1]}

            @stream.producer(every=0.05)
            def feed() -> dict[str, Any]:
                end = max(time.time() * 1000.0, state["t"] + 1.0)
                times = np.linspace(state["t"], end, 1000, endpoint=False)
                prices = state["p"] + np.cumsum(rng.normal(0.0, 0.02, 1000))
                state["t"], state["p"] = end, float(prices[-1])
                return {"time": times, "price": prices}

            context = browser.new_context(viewport={"width": 1280, "height": 800})
            try:
                page = context.new_page()
                page.goto(
                    f"{server.base_url}/streams/ticks?window=10000000&y=price&token={server.token}"
                )
                page.wait_for_function(f"() => {OVERVIEW}?.stats().views >= 2", timeout=WAIT_MS)
                card = page.locator(".ls-area-plot")
                page.mouse.move(0, 0)
                page.wait_for_timeout(600)
                written = [out_dir / LARGE_SHOTS[0]]
                card.screenshot(path=str(written[0]))
                lo = float(t[n // 3]) + 60_000.0  # a second a minute after the spike
                page.evaluate(f"{OVERVIEW}.zoom({lo}, {lo + 999.0})")
                page.wait_for_function(
                    f"() => {OVERVIEW}.stats().exact && !{OVERVIEW}.following()", timeout=WAIT_MS
                )
                page.wait_for_timeout(600)
                written.append(out_dir / LARGE_SHOTS[1])
                card.screenshot(path=str(written[1]))
                return written
            finally:
                context.close()
        finally:
            server.stop()

    if browser is not None:
        return shoot(browser)
    with sync_playwright() as p:
        own = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            return shoot(own)
        finally:
            own.close()


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
    parser.add_argument(
        "--large",
        action="store_true",
        help="only the large-window pictures (a 10 M-row plot zoomed out and in)",
    )
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(
            f"screenshots: {CHROMIUM} is missing; install Debian's chromium (scripts/test.sh does)",
            file=sys.stderr,
        )
        return 1
    shots = shoot_large if args.large else lambda out: [*shoot_pages(out), *shoot_large(out)]
    for file in shots(args.out):
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
