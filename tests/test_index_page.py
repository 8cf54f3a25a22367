"""The home page (``/``, index.html) in Debian's Chromium, driven by Playwright, against a
real server (issue 13, item 7).

What a person sees there: a card per stream with a sparkline of its first value column and
its newest value, drawn on a small canvas and moving as rows arrive; the card opens the
stream's page; the header sums the server's list (streams, viewers, rows/s), leaving out the
page's own sparkline subscriptions; only the cards in view subscribe; names and values from
publishers are shown as text; a service of several nodes (the Redis backplane, with a real
redis-server) shows its nodes; and the page logs no warning or error to the console.

Chromium must be installed at /usr/bin/chromium (scripts/test.sh installs it); these tests
fail, never skip, without it.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect
from support import open_pages, wait_until
from test_redis import RedisProcess  # a real redis-server on a free port

from livestream.server import Server

pytestmark = pytest.mark.browser

WAIT_MS = 10_000

#: A column name that is markup, and would run script if a page took it as HTML.
HOSTILE = '<img src=x onerror="window.__pwned=1"><b>bold</b>'

#: Whether a canvas has any pixel drawn, and a fingerprint of what it shows.
CANVAS = """(canvas) => {
  // Read a copy (a canvas made for reading back), not the page's canvas.
  const copy = document.createElement("canvas");
  copy.width = canvas.width;
  copy.height = canvas.height;
  const ctx = copy.getContext("2d", {willReadFrequently: true});
  ctx.drawImage(canvas, 0, 0);
  const data = ctx.getImageData(0, 0, copy.width, copy.height).data;
  let drawn = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] > 0) drawn++;
  return {drawn, image: canvas.toDataURL()};
}"""


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    """Open a URL in a fresh page (``open_page(url, width=..., height=...)``). At teardown:
    no JavaScript error, and no console message of warning or error level, in any page."""
    with open_pages(browser, height=800, console=True) as open_:
        yield open_


def home(server: Server) -> str:
    return f"{server.base_url}/?token={server.token}"


def api_streams(server: Server) -> dict[str, dict[str, Any]]:
    url = f"{server.base_url}/api/streams?token={server.token}"
    with urllib.request.urlopen(url, timeout=5) as r:
        return {s["name"]: s for s in json.load(r)["streams"]}


def card(page: Page, name: str) -> Any:
    return page.locator(f'.ls-stream-card[data-stream="{name}"]')


def number(text: str) -> float:
    return float(text.replace(",", "").replace("\u202f", "").strip())


def test_a_card_draws_a_moving_sparkline_of_its_newest_values_and_opens_its_stream(
    server: Server, open_page: Callable[..., Page]
) -> None:
    alpha = server.stream("alpha", history=10_000)
    # `time` is the x axis, so the first value column is `level`.
    t0 = time.time() * 1000.0
    alpha.append({"time": [t0 + i for i in range(300)], "level": [i * 0.25 for i in range(300)]})
    odd = server.stream("odd:name-1.x", history=100)
    odd.append({HOSTILE: [1.5, -2.25], "note": ["<script>window.__pwned=2</script>", "ok"]})

    page = open_page(home(server))
    a = card(page, "alpha")
    expect(a).to_have_attribute("data-watching", "true", timeout=WAIT_MS)
    expect(a.locator(".ls-trend-column")).to_have_text("level")
    value = a.locator(".ls-trend-value")
    expect(value).to_have_attribute("data-value", "74.75", timeout=WAIT_MS)  # 299 * 0.25
    expect(value).to_have_text("74.75")
    expect(a.locator(".ls-trend")).to_have_attribute("data-points", "120")
    canvas = a.locator("canvas.ls-trend-canvas")
    before = canvas.evaluate(CANVAS)
    assert before["drawn"] > 50, "the sparkline drew (almost) nothing"

    # New rows: the newest value and the line follow (a dip, so the line's shape changes).
    alpha.append(
        {"time": [t0 + 300 + i for i in range(20)], "level": [10.0 - i for i in range(20)]}
    )
    expect(value).to_have_attribute("data-value", "-9", timeout=WAIT_MS)
    expect(value).to_have_text("-9")
    after = canvas.evaluate(CANVAS)
    assert after["drawn"] > 50
    assert after["image"] != before["image"], "the sparkline did not move with new rows"

    # Publishers' text stays text: the hostile column name is the sparkline's label and a
    # chip, verbatim, and no element came out of it.
    odd_card = card(page, "odd:name-1.x")
    expect(odd_card.locator(".ls-trend-column")).to_have_text(HOSTILE, timeout=WAIT_MS)
    expect(odd_card.locator(".ls-trend-value")).to_have_text("-2.25", timeout=WAIT_MS)
    expect(odd_card.locator(".ls-chip").first).to_contain_text(HOSTILE)
    assert (
        page.locator(".ls-stream-list img, .ls-stream-list b, .ls-stream-list script").count() == 0
    )
    assert page.evaluate("() => window.__pwned") is None

    # The card is a link to the stream's page, which draws the stream.
    assert a.get_attribute("href") == "streams/alpha"
    a.click()
    page.wait_for_url(f"{server.base_url}/streams/alpha", timeout=WAIT_MS)
    expect(page.locator("#stream-name")).to_have_text("alpha")
    expect(page.locator(".ls-plot-target")).to_have_attribute(
        "data-attached", "true", timeout=WAIT_MS
    )


def test_the_header_sums_the_list_without_the_pages_own_sparklines(
    server: Server, open_page: Callable[..., Page]
) -> None:
    for name, every in (("fast", 0.02), ("slow", 0.1)):
        stream = server.stream(name, history=5_000)
        stream.producer(every=every)(lambda: {"time": time.time() * 1000.0, "v": 1.0})
    # Somebody watches `fast` on its own page.
    viewer = open_page(f"{server.base_url}/streams/fast?token={server.token}")
    expect(viewer.locator(".ls-plot-target")).to_have_attribute(
        "data-attached", "true", timeout=WAIT_MS
    )
    watching = api_streams(server)["fast"]["subscribers"]
    assert watching >= 1

    page = open_page(home(server))
    for name in ("fast", "slow"):
        expect(card(page, name)).to_have_attribute("data-watching", "true", timeout=WAIT_MS)
        expect(card(page, name).locator(".ls-trend")).not_to_have_attribute(
            "data-points", "0", timeout=WAIT_MS
        )
    totals = page.locator("#totals")
    expect(totals.locator('[data-total="nodes"]')).to_be_hidden()  # one server: no nodes figure

    # Ask the page to refresh, and hold what it was told against what it shows.
    for _ in range(5):
        with page.expect_response(lambda r: "/api/streams" in r.url, timeout=WAIT_MS) as answer:
            page.evaluate("() => window.livestreamPage.list.refresh()")
        listed = answer.value.json()["streams"]
        shown = {
            key: totals.locator(f'[data-total="{key}"] dd').inner_text()
            for key in ("streams", "viewers", "rate")
        }
        # The page's own sparklines are counted by the server (one per card), not shown.
        if sum(s["subscribers"] for s in listed) == watching + 2:
            break
    else:
        pytest.fail(f"the server never counted the page's two sparklines: {listed}")
    assert len(listed) == 2
    # The page draws the totals of that answer at its next frame: wait for them (bounded).
    expect(totals.locator('[data-total="streams"] dd')).to_have_text("2", timeout=WAIT_MS)
    expect(totals.locator('[data-total="viewers"] dd')).to_have_text(str(watching), timeout=WAIT_MS)
    rate = sum(s["rate"] for s in listed)
    assert rate > 10
    shown["rate"] = totals.locator('[data-total="rate"] dd').inner_text()
    # A refresh of its own may have come in between: the same feeds, a rate within 10 %.
    assert abs(number(shown["rate"]) - rate) <= max(0.5, 0.1 * rate), (shown, rate)
    expect(card(page, "fast").locator('[data-stat="viewers"] dd')).to_have_text(str(watching))
    expect(card(page, "slow").locator('[data-stat="viewers"] dd')).to_have_text("0")


def test_only_the_cards_in_view_subscribe(server: Server, open_page: Callable[..., Page]) -> None:
    names = [f"s{i:02d}" for i in range(48)]
    for i, name in enumerate(names):
        server.stream(name, history=100).append({"v": [float(i), float(i + 1)]})
    page = open_page(home(server), width=1280, height=700)
    expect(page.locator(".ls-stream-card")).to_have_count(len(names), timeout=WAIT_MS)
    expect(card(page, "s00")).to_have_attribute("data-watching", "true", timeout=WAIT_MS)
    watched = page.locator(".ls-stream-card[data-watching]")
    first = watched.count()
    assert 3 <= first <= 15, f"{first} cards subscribed with 3 in a row and 700 px of window"

    def subscribed() -> set[str]:
        return {n for n, s in api_streams(server).items() if s["subscribers"]}

    deadline = time.monotonic() + WAIT_MS / 1000
    while subscribed() != {c.get_attribute("data-stream") for c in watched.all()}:
        assert time.monotonic() < deadline, (
            "the server's subscriptions differ from the cards in view"
        )
        page.wait_for_timeout(50)
    # Scrolled to the end: the last cards subscribe, the first ones leave.
    page.keyboard.press("End")
    expect(card(page, names[-1])).to_have_attribute("data-watching", "true", timeout=WAIT_MS)
    expect(card(page, "s00")).not_to_have_attribute("data-watching", "true", timeout=WAIT_MS)
    expect(card(page, names[-1]).locator(".ls-trend-value")).to_have_text(str(len(names)))
    assert watched.count() <= 15


def test_a_service_of_several_nodes_shows_them(
    server_factory: Callable[..., Server], tmp_path: Path, open_page: Callable[..., Page]
) -> None:
    """Two servers sharing a real redis-server (the Redis backplane): the list names the
    nodes, and the page shows them, in the header and on the card."""
    redis = RedisProcess(tmp_path).start()
    try:
        a = server_factory(redis=redis.url)
        server_factory(redis=redis.url)
        a.stream("shared", history=100).append({"v": [1.0, 2.0]})
        wait_until(
            lambda: api_streams(a).get("shared", {}).get("nodes") == 2,
            10,
            "the list of node a to name two nodes",
        )
        page = open_page(home(a))
        nodes = page.locator('#totals [data-total="nodes"]')
        expect(nodes).to_be_visible(timeout=WAIT_MS)
        expect(nodes.locator("dd")).to_have_text("2")
        expect(card(page, "shared").locator('[data-stat="nodes"] dd')).to_have_text("2")
    finally:
        redis.kill()
