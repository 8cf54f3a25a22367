"""``livestream demo --redis URL`` on two ports, one page on each (Debian's Chromium): both
plots move, and a pause pressed on one node's page shows on the other's, whose resume
starts both again (issue 10's demo)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from support import CHROMIUM, CHROMIUM_ARGS
from test_browser_dashboard import WAIT_MS, source_length, wait_plot_rows
from test_redis import TOKEN, Node, redis_factory  # noqa: F401  (fixtures)


@pytest.fixture
def chromium() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_the_demo_on_two_nodes_moves_on_both_pages(
    redis_factory: Any,  # noqa: F811
    running: Any,
    chromium: Browser,
) -> None:
    redis = redis_factory()
    args = ("demo", "--port", "0", "--token", TOKEN, "--redis", redis.url, "--no-browser")
    first = Node(running(*args))
    second_proc = running(*args)
    second_proc.expect(r"the feeds run on node")
    second = Node(second_proc)
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    pages: list[Page] = []
    try:
        for node in (first, second):
            page = context.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{node.base}/streams/prices?token={TOKEN}")
            pages.append(page)
        a, b = pages
        for page in pages:
            start = wait_plot_rows(page, 3)
            wait_plot_rows(page, start + 5)  # moving
        a.get_by_role("button", name="Pause", exact=True).click()
        for page in pages:  # the other node's page hears of it through Redis
            expect(page.locator("#header-status .ls-stream-pill")).to_have_attribute(
                "data-status", "paused", timeout=WAIT_MS
            )
        b.get_by_role("button", name="Paused", exact=True).click()
        for page in pages:
            expect(page.locator("#header-status .ls-stream-pill")).to_have_attribute(
                "data-status", "running", timeout=WAIT_MS
            )
            wait_plot_rows(page, source_length(page) + 5)
    finally:
        context.close()
    assert not errors, f"JavaScript errors in the pages: {errors}"
