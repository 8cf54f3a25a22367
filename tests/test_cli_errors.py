"""Every ``livestream`` command against bad input, as real subprocesses: a message, no traceback.

Each case runs one command (bounded by a timeout) and checks that it failed with a non-zero
status, that stderr holds no ``Traceback``, and that the message names the problem and the
fix (each case lists the words that must appear). docs/api.md "Command line" promises
``livestream: <message>`` and status 1 for a failure, argparse's status 2 for a bad flag
value, and 130 after Ctrl-C.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support import ROOT, WS_URL, Running, livestream_env
from test_cli import TOKEN

from livestream import ConfigError, Server

TIMEOUT = 30.0  # seconds any one command may take; a server that started anyway is killed


def run(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None) -> Any:
    """``python -m livestream ARGS`` to its end (killed after TIMEOUT: subprocess.run kills
    the child when its timeout expires, so a serve that unexpectedly starts is not left)."""
    return subprocess.run(
        [sys.executable, "-m", "livestream", *args],
        cwd=ROOT,
        env={**livestream_env(), **(env or {})},
        input=stdin,
        capture_output=True,
        timeout=TIMEOUT,
    )


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """The websocket URL of one ``livestream serve --token TOKEN`` for the client cases."""
    proc = Running("serve", "--port", "0", "--token", TOKEN)
    try:
        url = proc.expect(WS_URL).group(1)
        done = run("publish", "known", "-", "--url", url, "--token", TOKEN, stdin=b'{"x": 1.5}\n')
        assert done.returncode == 0, done.stderr
        yield url
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that this test process holds (bound and listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture(scope="module")
def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Input files, good and bad, by name."""
    where = tmp_path_factory.mktemp("inputs")
    contents = {
        "good.csv": b"t,temp\n1,20.5\n",
        "short.csv": b"t,temp\n1,20.5\n2\n",
        "extra.csv": b"t,temp\n1,20.5\n2,21.5,22\n",
        "quote.csv": b't,temp\n1,"20.5\n2,21.5\n',
        "quote-big.csv": b't,note\n1,"open\n' + b"2,some words\n" * 20_000,
        "empty.csv": b"",
        "twice.csv": b"t,t\n1,2\n",
        "latin1.csv": "t,room\n1,caf\u00e9\n".encode("latin-1"),
        "bad.jsonl": b'{"t": 1}\n{"t": \n',
        "foreign.parquet": b"this is not parquet\n",
        "list.jsonl": b'{"t": 1}\n[1, 2]\n',
        "table.txt": b"t,temp\n1,20.5\n",
    }
    for name, data in contents.items():
        (where / name).write_bytes(data)
    return where


@dataclass
class Case:
    """One command line (``{url}``, ``{busy}``, ``{free}``, ``{dir}`` filled in) and what
    its stderr must say."""

    argv: list[str]
    says: list[str]
    status: int = 1
    stdin: bytes | None = None
    env: dict[str, str] = field(default_factory=dict)
    not_says: list[str] = field(default_factory=list)


T = ["--token", TOKEN]


def publish_file(name: str) -> list[str]:
    """``livestream publish s FILE`` of the input file ``name`` to the module's server."""
    return ["publish", "s", "{dir}/" + name, "--url", "{url}", *T]


#: publish of an input file (``files``) → what its refusal says.
BAD_FILES: dict[str, tuple[str, list[str]]] = {
    "publish missing file": (
        "missing.jsonl",
        ["cannot read", "missing.jsonl", "pass a JSON-lines or CSV file"],
    ),
    "publish non-UTF-8 file": (
        "latin1.csv",
        ["line 2 of", "not UTF-8", "0xe9", "save it as UTF-8"],
    ),
    "publish CSV short row": (
        "short.csv",
        ["line 3 of", "has 1 field but the header names 2 (t, temp)", "add the missing"],
    ),
    "publish CSV extra field": (
        "extra.csv",
        ["line 3 of", "has 3 fields but the header names 2", "quote a value that holds a comma"],
    ),
    "publish CSV unterminated quote in a large file": (
        "quote-big.csv",
        ["line 2 of", "a quote that never closes", "close the quote"],
    ),
    "publish CSV empty": ("empty.csv", ["is empty", "header line"]),
    "publish CSV column named twice": ("twice.csv", ["column 't' more than once", "its own name"]),
    "publish JSON lines bad line": (
        "bad.jsonl",
        ["line 2 of", "is not JSON", "one JSON object per line"],
    ),
    "publish JSON lines not an object": (
        "list.jsonl",
        ["line 2 of", "is a list, not an object", "one JSON object per line"],
    ),
    "publish CSV without .csv": ("table.txt", ["line 1 of", "not JSON", "--format csv"]),
}

CASES: dict[str, Case] = {
    **{name: Case(publish_file(f), says) for name, (f, says) in BAD_FILES.items()},
    # serve and demo
    "serve port in use": Case(
        ["serve", "--port", "{busy}", *T], ["port is in use", "--port 0", "stop the server"]
    ),
    "demo port in use": Case(
        ["demo", "--no-browser", "--port", "{busy}", *T], ["port is in use", "--port 0"]
    ),
    "serve host not of this machine": Case(
        ["serve", "--port", "0", "--host", "10.255.255.1", *T],
        ["10.255.255.1 is not an address of this machine", "pass 127.0.0.1"],
    ),
    "demo host not of this machine": Case(
        ["demo", "--no-browser", "--port", "0", "--host", "10.255.255.1", *T],
        ["not an address of this machine"],
    ),
    "serve host that does not resolve": Case(
        ["serve", "--port", "0", "--host", "no-such-host.invalid", *T],
        ["does not resolve", "pass an IP address"],
    ),
    "serve port out of range": Case(
        ["serve", "--port", "70000", *T], ["--port", "from 0 to 65535", "'70000'"], status=2
    ),
    "serve port not a number": Case(["serve", "--port", "http", *T], ["--port", "'http'"], 2),
    "serve LIVESTREAM_PORT not a number": Case(
        ["serve", *T],
        ["LIVESTREAM_PORT expects a port number", "'abc'"],
        env={"LIVESTREAM_PORT": "abc"},
    ),
    "serve history 0": Case(["serve", "--port", "0", "--history", "0"], ["1 or more"], 2),
    "serve max-age negative": Case(["serve", "--port", "0", "--max-age", "-3"], ["above 0"], 2),
    "serve short token": Case(["serve", "--port", "0", "--token", "short"], ["8 characters"]),
    "demo bad limit": Case(
        ["demo", "--no-browser", "--port", "0", "--max-cells", "many"], ["whole number", "'many'"]
    ),
    # publish: the input
    "publish CSV unterminated quote": Case(
        publish_file("quote.csv"),
        ["line 2 of", "never closes", "close the quote"],
        not_says=["published"],
    ),
    "publish JSON lines NaN inside a list": Case(
        ["publish", "s-nan", "-", "--url", "{url}", *T],
        [
            "lines 1-2 of standard input refused",
            "column 'x'",
            "JSON cannot carry",
            "send it as text",
        ],
        stdin=b'{"x": [1]}\n{"x": [1, NaN]}\n',
    ),
    "publish stdin bad line": Case(
        ["publish", "s", "-", "--url", "{url}", *T],
        ["line 1 of standard input is not JSON"],
        stdin=b"not json\n",
    ),
    # publish and tail: the server
    "publish wrong token": Case(
        ["publish", "s", "{dir}/good.csv", "--url", "{url}", "--token", "not-the-token-1"],
        ["refused the token (HTTP 403)", "--token TOKEN", "LIVESTREAM_TOKEN"],
        not_says=["{", "?token="],
    ),
    "publish missing token": Case(
        ["publish", "s", "{dir}/good.csv", "--url", "{url}"],
        ["needs a token", "pass --token TOKEN or set LIVESTREAM_TOKEN"],
        not_says=["?token=", "{"],
    ),
    "publish no server listening": Case(
        ["publish", "s", "{dir}/good.csv", "--url", "ws://127.0.0.1:{free}", *T],
        ["ws://127.0.0.1:{free}/ws", "no server is listening", "livestream serve", "--url"],
    ),
    "publish not a livestream URL": Case(
        ["publish", "s", "{dir}/good.csv", "--url", "ftp://127.0.0.1:{free}", *T],
        ["url must be ws://", "'ftp://"],
    ),
    "publish batch 0": Case(["publish", "s", "-", "--batch", "0"], ["--batch", "1 or more"], 2),
    "publish negative rate": Case(["publish", "s", "-", "--rate", "-5"], ["--rate", "above 0"], 2),
    "publish unknown format": Case(["publish", "s", "-", "--format", "xml"], ["--format"], 2),
    "tail unknown stream": Case(
        ["tail", "nope", "--url", "{url}", *T],
        ["unknown stream 'nope'", "known streams: known", "check the name"],
    ),
    "tail wrong token": Case(
        ["tail", "known", "--url", "{url}", "--token", "not-the-token-1"],
        ["refused the token", "--token TOKEN"],
        not_says=["{"],
    ),
    "tail missing token": Case(
        ["tail", "known", "--url", "{url}"], ["needs a token", "LIVESTREAM_TOKEN"]
    ),
    "tail no server listening": Case(
        ["tail", "known", "--url", "ws://127.0.0.1:{free}", *T],
        ["no server is listening", "livestream serve", "LIVESTREAM_URL"],
    ),
    "tail negative last": Case(["tail", "s", "--last", "-1"], ["--last", "0 or more"], 2),
    "tail count not a number": Case(["tail", "s", "--count", "all"], ["--count", "'all'"], 2),
    # record and replay
    "record no server listening": Case(
        ["record", "s", "--out", "{dir}/rec", "--url", "ws://127.0.0.1:{free}", *T],
        ["no server is listening", "livestream serve", "--url"],
    ),
    "record unknown stream": Case(
        ["record", "nope", "--out", "{dir}/rec2", "--url", "{url}", *T],
        ["unknown stream 'nope'", "known"],
    ),
    "replay missing folder": Case(
        ["replay", "{dir}/no-such-recording", "--port", "0"],
        ["does not exist", "expected a recording folder"],
    ),
    "replay foreign file": Case(
        ["replay", "{dir}/foreign.parquet", "--port", "0"],
        ["foreign.parquet", "not a readable Parquet file", "expected a recording folder"],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_bad_input_gets_a_message_not_a_traceback(
    name: str, server: str, busy_port: int, free_port: int, files: Path
) -> None:
    case = CASES[name]
    values = {"url": server, "busy": str(busy_port), "free": str(free_port), "dir": str(files)}

    def fill(text: str) -> str:
        for key, value in values.items():
            text = text.replace("{" + key + "}", value)
        return text

    done = run(*(fill(a) for a in case.argv), stdin=case.stdin, env=case.env)
    stderr = done.stderr.decode()
    assert "Traceback" not in stderr, stderr
    assert done.returncode == case.status, f"status {done.returncode}; stderr: {stderr}"
    if case.status == 1:
        assert stderr.startswith("livestream: "), stderr
        assert stderr.count("\n") == 1, f"one line expected: {stderr}"
    else:  # argparse: usage, then the flag and what it expects
        assert "error: argument" in stderr, stderr
    for words in case.says:
        assert fill(words) in stderr, f"{fill(words)!r} not in: {stderr}"
    for words in case.not_says:
        assert words not in stderr, f"{words!r} in: {stderr}"


def test_the_matrix_covers_every_command() -> None:
    """A new command (``record``, ``replay``, ...) must be added to the cases above."""
    from livestream.cli import build_parser

    commands = next(
        set(action.choices)
        for action in build_parser()._actions
        if isinstance(action.choices, dict)
    )
    covered = {case.argv[0] for case in CASES.values()}
    assert commands <= covered, f"add cases for `livestream {sorted(commands - covered)}`"


def test_a_text_in_a_float_column_is_shown_with_its_line(server: str, tmp_path: Path) -> None:
    first = tmp_path / "first.csv"
    first.write_text("t,temp\n1,20.5\n")
    more = tmp_path / "more.csv"
    more.write_text("t,temp\n2,21.5\n3,abc\n4,22\n")
    done = run("publish", "floats", str(first), "--url", server, *T)
    assert done.returncode == 0, done.stderr
    done = run("publish", "floats", str(more), "--url", server, *T)
    stderr = done.stderr.decode()
    assert done.returncode == 1 and "Traceback" not in stderr, stderr
    assert stderr.startswith(
        f"livestream: line 3 of {more} refused for stream 'floats': column 'temp'"
    ), stderr
    assert "(e.g. 'abc')" in stderr and "21.5" not in stderr, stderr
    assert "send float64 values" in stderr

    # One row per batch: the rows before the bad one went out, and the message says so.
    done = run("publish", "floats", str(more), "--url", server, *T, "--batch", "1")
    stderr = done.stderr.decode()
    assert done.returncode == 1, stderr
    assert f"line 3 of {more}" in stderr and "(e.g. 'abc')" in stderr, stderr
    assert "published 1 rows before stopping" in stderr, stderr


@pytest.mark.parametrize(
    ("argv", "ready"),
    [
        # serve: it says it is listening
        (["serve", "--port", "0", *T], "Ctrl-C to stop"),
        # tail: the table's header, it is subscribed and waiting
        (["tail", "known", "--url", "{url}", *T], r"^\s+x$"),
    ],
    ids=["serve", "tail"],
)
def test_ctrl_c_stops_quietly_with_status_130(
    argv: list[str], ready: str, request: pytest.FixtureRequest
) -> None:
    if "{url}" in argv:
        url = request.getfixturevalue("server")
        argv = [a.replace("{url}", url) for a in argv]
    proc = Running(*argv)
    try:
        proc.expect(ready)
        proc.proc.send_signal(signal.SIGINT)
        assert proc.proc.wait(TIMEOUT) == 130
    finally:
        proc.stop()
    rest = [line for line in iter(proc.lines.get, None)]
    assert not any("Traceback" in line for line in proc.output + rest), proc.output + rest


# --------------------------------------------------------------------------- Python API


def test_ls_serve_on_a_port_in_use_raises_config_error_alone(busy_port: int) -> None:
    """In a fresh interpreter (the default server is once per process): the ConfigError,
    without the OSError chained under it."""
    done = subprocess.run(
        [sys.executable, "-c", f"import livestream as ls; ls.serve(port={busy_port})"],
        cwd=ROOT,
        env=livestream_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"livestream.errors.ConfigError: cannot listen on 127.0.0.1:{busy_port}: the port is in use"
    ), done.stderr
    assert "OSError" not in done.stderr and "During handling" not in done.stderr, done.stderr


def _holding_a_port() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, sock.getsockname()[1]


@pytest.mark.parametrize(
    ("start", "name"),
    [(lambda s: s.start(), "start"), (lambda s: asyncio.run(s.start_async()), "start_async")],
)
def test_server_on_a_port_in_use_raises_config_error(
    start: Callable[[Server], Any], name: str
) -> None:
    sock, port = _holding_a_port()
    with sock:
        server = Server("127.0.0.1", port, token=TOKEN)
        with pytest.raises(ConfigError) as info:
            start(server)
    message = str(info.value)
    assert f"cannot listen on 127.0.0.1:{port}: the port is in use" in message, name
    assert "port=0" in message and "--port 0" in message and "stop the server" in message
    assert not server.running


def test_server_on_an_address_of_another_machine_raises_config_error() -> None:
    server = Server("10.255.255.1", 0, token=TOKEN)
    with pytest.raises(ConfigError, match=r"10\.255\.255\.1 is not an address of this machine"):
        server.start()
    assert not server.running
