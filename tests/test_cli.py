"""The ``livestream`` command, run as real subprocesses: serve, publish, tail, demo."""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import no_thread_leaks_fixture, wait_until  # noqa: F401 - fixtures

from livestream.demo import market
from livestream.errors import InvalidParam
from livestream.stream import Stream

TOKEN = "sometoken123"
ROOT = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVESTREAM_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Running:
    """A ``python -m livestream`` process whose stdout lines are read on a helper thread."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "livestream", *args],
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, name="cli-test-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def expect(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        """The first output line matching ``pattern`` (bounded wait)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(left, 0.0))
            except queue.Empty:
                pytest.fail(f"no line matching {pattern!r} within {timeout} s; got {self.output}")
            if line is None:
                pytest.fail(
                    f"the process ended (rc {self.proc.poll()}) without a line matching "
                    f"{pattern!r}; output: {self.output}"
                )
            self.output.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def running() -> Iterator[Any]:
    """Start ``python -m livestream ARGS``; every process is terminated at teardown."""
    started: list[Running] = []

    def start(*args: str) -> Running:
        proc = Running(*args)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.stop()


def livestream_cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "livestream", *args],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


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

    done = livestream_cli(
        "tail",
        "sensors",
        "--count",
        "7",
        "--last",
        "100",
        "--format",
        "jsonl",
        "--url",
        ws_url,
        "--token",
        TOKEN,
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert rows == [
        {"t": 0, "temp": 20.0, "room": "lab"},
        {"t": 1, "temp": 21.0, "room": "lab"},
        {"t": 2, "temp": 22.0, "room": "lab"},
        {"t": 3, "temp": 23.0, "room": "lab"},
        {"t": 4, "temp": 24.0, "room": "lab"},
        {"t": 5, "temp": 25.5, "room": "hall"},
        {"t": 6, "temp": 26.0, "room": "hall"},
    ]

    done = livestream_cli(
        "tail",
        "sensors",
        "--count",
        "2",
        "--last",
        "2",
        "--format",
        "jsonl",
        "--url",
        ws_url,
        "--token",
        TOKEN,
    )
    assert [json.loads(line)["t"] for line in done.stdout.splitlines()] == [5, 6]


def test_publish_with_a_wrong_token_fails_clearly(running: Any, tmp_path: Path) -> None:
    server = running("serve", "--port", "0", "--token", TOKEN)
    ws_url = server.expect(r"websocket: (ws://\S+)").group(1)
    rows = tmp_path / "r.jsonl"
    rows.write_text('{"x": 1}\n')
    done = livestream_cli("publish", "s", str(rows), "--url", ws_url, "--token", "wrong-token-1")
    assert done.returncode == 1
    assert "403" in done.stderr and "Traceback" not in done.stderr


def test_publish_of_a_missing_file_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"
    done = livestream_cli(
        "publish", "s", str(missing), "--url", "ws://127.0.0.1:9", "--token", TOKEN
    )
    assert done.returncode == 1
    assert f"cannot read {missing}" in done.stderr
    assert "Traceback" not in done.stderr


def test_demo_prints_a_dashboard_url_and_its_prices_grow(running: Any) -> None:
    demo = running("demo", "--port", "0", "--no-browser")
    dashboard = demo.expect(r"dashboard: (http://127\.0\.0\.1:\d+/\?token=\S+)").group(1)
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
