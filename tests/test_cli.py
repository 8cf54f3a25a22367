"""The ``livestream`` command, run as real subprocesses: serve, publish, tail, demo."""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from support import ROOT, livestream_cli, wait_until

from livestream.demo import market
from livestream.errors import InvalidParam
from livestream.streams import Stream

TOKEN = "sometoken123"


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def test_serve_publish_and_tail(running: Any, tmp_path: Path) -> None:
    server = running("serve", "--port", "0", "--token", TOKEN)
    ws_url = server.expect(r"websocket: (ws://127\.0\.0\.1:\d+/ws)").group(1)
    assert f"token: {TOKEN}" in server.output[-1]
    assert any(f"?token={TOKEN}" in line for line in server.output)

    jsonl = tmp_path / "readings.jsonl"
    jsonl.write_text(
        "".join(json.dumps({"t": t, "temp": 20.0 + t, "room": "lab"}) + "\n" for t in range(5))
        + "\n"
    )
    done = livestream_cli("publish", "sensors", str(jsonl), "--url", ws_url, "--token", TOKEN)
    assert done.returncode == 0, done.stderr
    assert "published 5 rows to sensors" in done.stderr

    table = tmp_path / "more.csv"
    table.write_text("t,temp,room\n5,25.5,hall\n6,26,hall\n")
    done = livestream_cli(
        "publish", "sensors", str(table), "--url", ws_url, "--token", TOKEN, "--batch", "1"
    )
    assert done.returncode == 0, done.stderr
    assert "published 2 rows to sensors" in done.stderr

    def tail(count: int, last: int) -> list[dict[str, Any]]:
        """``livestream tail sensors`` of ``count`` rows from ``last`` back, as JSON lines."""
        done = livestream_cli("tail", "sensors", "--count", str(count), "--last", str(last),
                              "--format", "jsonl", "--url", ws_url, "--token", TOKEN)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines()]

    assert tail(7, 100) == [
        {"t": 0, "temp": 20.0, "room": "lab"},
        {"t": 1, "temp": 21.0, "room": "lab"},
        {"t": 2, "temp": 22.0, "room": "lab"},
        {"t": 3, "temp": 23.0, "room": "lab"},
        {"t": 4, "temp": 24.0, "room": "lab"},
        {"t": 5, "temp": 25.5, "room": "hall"},
        {"t": 6, "temp": 26.0, "room": "hall"},
    ]

    assert [row["t"] for row in tail(2, 2)] == [5, 6]


def test_publish_with_a_wrong_token_fails_clearly(running: Any, tmp_path: Path) -> None:
    server = running("serve", "--port", "0", "--token", TOKEN)
    ws_url = server.expect(r"websocket: (ws://\S+)").group(1)
    rows = tmp_path / "r.jsonl"
    rows.write_text('{"x": 1}\n')
    done = livestream_cli("publish", "s", str(rows), "--url", ws_url, "--token", "wrong-token-1")
    assert done.returncode == 1
    assert "403" in done.stderr and "Traceback" not in done.stderr
    assert "--token TOKEN or LIVESTREAM_TOKEN" in done.stderr
    assert "{" not in done.stderr, "the server's JSON answer, not its message"


def test_publish_of_a_missing_file_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"
    done = livestream_cli(
        "publish", "s", str(missing), "--url", "ws://127.0.0.1:9", "--token", TOKEN
    )
    assert done.returncode == 1
    assert f"cannot read {missing}" in done.stderr
    assert "Traceback" not in done.stderr


def _quickstart_demo_output() -> list[str]:
    """The demo's output as docs/quickstart.md shows it (the block after `livestream demo`)."""
    text = (ROOT / "docs" / "quickstart.md").read_text()
    block = re.search(r"```\n(livestream demo on .*?)```", text, re.DOTALL)
    assert block is not None, "docs/quickstart.md no longer shows the demo's output"
    return block.group(1).splitlines()


def test_demo_prints_a_dashboard_url_and_its_prices_grow(running: Any) -> None:
    demo = running("demo", "--port", "0", "--no-browser")
    dashboard = demo.expect(r"dashboard: (http://127\.0\.0\.1:\d+/\?token=\S+)").group(1)
    # The lines, in order, are those docs/quickstart.md shows, the URL to open last.
    port = re.escape(dashboard.split(":")[2].split("/")[0])
    printed = [re.sub(rf"127\.0\.0\.1:{port}", "127.0.0.1:8765", line) for line in demo.output]
    printed = [re.sub(r"token=\S+", "token=...", line) for line in printed]
    printed = [re.sub(r"\(token: [^)]+\)", "(token: ...)", line) for line in printed]
    assert [line.rstrip("\n") for line in printed] == _quickstart_demo_output()
    assert demo.output[-1].startswith("Open the dashboard: http://")
    base, token = dashboard.split("/?token=")
    api = f"{base}/api/streams/prices?token={token}"

    first = get_json(api)
    assert first["name"] == "prices"
    wait_until(
        lambda: get_json(api)["offset"] > first["offset"] + 3,
        timeout=10,
        message="the demo's prices stream to grow",
    )
    prices = get_json(api)
    assert list(prices["schema"]) == ["time", "price", "volume"]
    assert prices["state"]["status"] == "running"
    volatility = prices["controls"]["params"]["volatility"]
    assert volatility["type"] == "float"
    assert volatility["min"] < volatility["default"] < volatility["max"]
    assert "shock" in prices["controls"]["actions"]
    names = {s["name"] for s in get_json(f"{base}/api/streams?token={token}")["streams"]}
    assert names == {"prices", "sensors"}


def test_market_declares_a_bounded_numeric_volatility() -> None:
    stream = Stream("prices")
    tick = market(stream, every=0.01, seed=1)
    try:
        spec = stream.controls.describe()["params"]["volatility"]
        assert spec["type"] in ("float", "int")
        assert isinstance(spec["min"], (int, float)) and isinstance(spec["max"], (int, float))
        assert spec["min"] <= spec["default"] <= spec["max"]
        wait_until(lambda: stream.end >= 3)
        stream.set(volatility=spec["max"])
        with pytest.raises(InvalidParam, match="volatility"):
            stream.set(volatility=spec["max"] * 2 + 1)
    finally:
        tick.stop()


# --------------------------------------------------------------------------- limit flags


def test_serve_and_demo_have_a_flag_for_every_limit() -> None:
    import dataclasses

    from livestream.limits import Limits

    for command in ("serve", "demo"):
        done = livestream_cli(command, "--help")
        assert done.returncode == 0, done.stderr
        for field in dataclasses.fields(Limits):
            flag = "--" + field.name.replace("_", "-")
            assert flag in done.stdout, f"`livestream {command} --help` lacks {flag}"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--max-json-size", "1KiB", "--max-message-size", "2M"], {"max_json_size": 1024}),
        (["--max-message-size", "2MB"], {"max_message_size": 2_000_000}),
        (["--outbound-budget", "512k", "--max-cells", "1000"], {"outbound_budget": 512 * 1024}),
        (["--header-timeout", "500ms", "--body-timeout", "2.5"], {"header_timeout": 0.5}),
        (["--write-timeout", "3s", "--max-depth", "8", "--max-streams", "10"], {"max_depth": 8}),
        (["--max-columns", "12"], {"max_columns": 12}),
    ],
)
def test_limit_flags_build_the_servers_limits(argv: list[str], expected: dict[str, Any]) -> None:
    from livestream.cli import _make_server, build_parser

    args = build_parser().parse_args(["serve", "--port", "0", "--token", TOKEN, *argv])
    server = _make_server(args)  # not started: nothing listens
    for name, value in expected.items():
        assert getattr(server.limits, name) == value
    assert server.hub.limits == server.limits


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--max-json-size", "2X", "expects a size in bytes"),
        ("--max-message-size", "0", "must be more than 0"),
        ("--header-timeout", "soon", "expects seconds"),
        ("--body-timeout", "-1", "expects seconds"),
        ("--max-cells", "1.5", "expects a whole number"),
    ],
)
def test_a_bad_limit_value_names_the_flag_and_exits_1(flag: str, value: str, says: str) -> None:
    done = livestream_cli("serve", "--port", "0", f"{flag}={value}")
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(f"livestream: {flag} "), done.stderr
    assert says in done.stderr and repr(value) in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_enforces_the_limit_flags(running: Any) -> None:
    server = running(
        "serve",
        "--port",
        "0",
        "--token",
        TOKEN,
        "--max-json-size",
        "1KiB",
        "--header-timeout",
        "0.5",
    )
    base = server.expect(r"livestream serving on (http://127\.0\.0\.1:\d+)").group(1)
    small, body = (json.dumps([{"x": i} for i in range(n)]).encode() for n in (80, 200))
    assert len(small) < 1024 < len(body)
    request = urllib.request.Request(
        f"{base}/api/streams/s?token={TOKEN}", data=small, method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert resp.status == 200
    request = urllib.request.Request(
        f"{base}/api/streams/s?token={TOKEN}", data=body, method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 413
    assert "limit of 1024 bytes" in json.loads(refused.value.read())["error"]["message"]
    # Headers that never end are cut after --header-timeout.
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        assert sock.recv(100) == b""
        assert time.monotonic() - started < 3
