"""The ``livestream`` command: serve, demo, publish, tail, record, replay.

Every command's expected failures (a busy port, an unreadable or malformed input file, a
refused token, no server at the URL, a request the server refuses) end in one place,
:func:`main`, as ``livestream: <message>`` on stderr and exit status 1; Ctrl-C exits 130
quietly. Anything else is a bug: its traceback is printed with a line asking to report it.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import math
import os
import re
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO, Any, TypeVar

from .errors import ConfigError, ConnectionClosed, LivestreamError, ProtocolError, ServerError
from .limits import Limits

__all__ = ["main"]

DEFAULT_PORT = 8765

_N = TypeVar("_N", int, float)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmg]?)(i?b?)", re.IGNORECASE)
_SECONDS = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(s|ms)?", re.IGNORECASE)


def _parse_size(flag: str, text: str) -> int:
    """Bytes from ``16777216``, ``16MiB``, ``512K`` (powers of 1024) or ``2MB`` (of 1000)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None or (match[3] and not match[2] and match[3].lower() != "b"):
        raise ConfigError(
            f"{flag} expects a size in bytes such as 16777216, 16MiB, 512K or 2MB; got {text!r}"
        )
    number, prefix, suffix = match.groups()
    unit = _UNITS[prefix.lower()]
    if prefix and suffix.lower() == "b":
        unit = 1000 ** "kmg".index(prefix.lower()) * 1000  # KB, MB, GB: powers of 1000
    return _positive(flag, text, int(float(number) * unit))


def _parse_seconds(flag: str, text: str) -> float:
    """Seconds from ``30``, ``2.5``, ``30s`` or ``500ms``."""
    match = _SECONDS.fullmatch(text.strip())
    if match is None:
        raise ConfigError(f"{flag} expects seconds such as 30, 2.5 or 500ms; got {text!r}")
    value = float(match[1]) / (1000 if (match[2] or "").lower() == "ms" else 1)
    return _positive(flag, text, value)


def _parse_count(flag: str, text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ConfigError(f"{flag} expects a whole number such as 1000; got {text!r}") from None
    return _positive(flag, text, value)


def _positive(flag: str, text: str, value: _N) -> _N:
    if value <= 0:
        raise ConfigError(f"{flag} must be more than 0; got {text!r}")
    return value


def _show_size(n: int) -> str:
    for unit, name in ((1024**3, "GiB"), (1024**2, "MiB"), (1024, "KiB")):
        if n % unit == 0:
            return f"{n // unit}{name}"
    return str(n)


#: Every field of :class:`Limits`: its parser, metavar, and what it bounds.
_LIMIT_FLAGS: dict[str, tuple[Callable[[str, str], Any], str, str]] = {
    "max_message_size": (_parse_size, "BYTES", "largest WebSocket message; past it: close 1009"),
    "max_json_size": (_parse_size, "BYTES", "largest JSON text frame, frame header or POST body"),
    "max_columns": (_parse_count, "N", "most columns of a stream"),
    "max_cells": (_parse_count, "N", "most rows x columns in one publish"),
    "max_depth": (_parse_count, "N", "deepest nesting of a value in an object column"),
    "max_streams": (_parse_count, "N", "most streams on the server"),
    "outbound_budget": (_parse_size, "BYTES", "bytes queued to one connection, unwritten"),
    "write_timeout": (_parse_seconds, "SECONDS", "a frame unwritten this long: close 1008"),
    "header_timeout": (_parse_seconds, "SECONDS", "time for request headers, idle keep-alive too"),
    "body_timeout": (_parse_seconds, "SECONDS", "time for a request body"),
}


def _limit_options(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group(
        "limits",
        "What one connection or request may cost (docs/security.md). Sizes in bytes, or with "
        "K/M/G or KiB/MiB/GiB (powers of 1024) or KB/MB/GB (powers of 1000); times in seconds "
        "or with ms.",
    )
    defaults = Limits()
    for field in dataclasses.fields(Limits):
        parse, metavar, text = _LIMIT_FLAGS[field.name]
        default = getattr(defaults, field.name)
        shown = (
            _show_size(default)
            if parse is _parse_size
            else f"{default:g} s"
            if parse is _parse_seconds
            else str(default)
        )
        group.add_argument(
            "--" + field.name.replace("_", "-"),
            dest="limit_" + field.name,
            metavar=metavar,
            default=None,
            help=f"{text}; default {shown}",
        )


def _limits(args: argparse.Namespace) -> Limits:
    """The :class:`Limits` the ``--max-*`` and ``--*-timeout`` flags ask for."""
    given: dict[str, Any] = {}
    for field in dataclasses.fields(Limits):
        text = getattr(args, "limit_" + field.name, None)
        if text is not None:
            parse = _LIMIT_FLAGS[field.name][0]
            given[field.name] = parse("--" + field.name.replace("_", "-"), text)
    return Limits(**given)


class _Failure(LivestreamError):
    """A command that cannot go on; its message is printed as ``livestream: <message>``."""


# --------------------------------------------------------------------------- flag values


def _flag_type(kind: Callable[[str], _N], expects: str, minimum: _N) -> Callable[[str], _N]:
    """An argparse ``type``: a number of ``kind`` at least ``minimum``, or a usage error
    that names what the flag expects and what arrived."""

    def parse(text: str) -> _N:
        try:
            value = kind(text.strip())
        except ValueError:
            value = None
        if value is None or not value >= minimum or (kind is float and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"expects {expects}; got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse


_COUNT = _flag_type(int, "a whole number of 1 or more", 1)
_OPTIONAL_COUNT = _flag_type(int, "a whole number of 0 or more", 0)
_SECONDS_FLAG = _flag_type(float, "a number of seconds above 0", 1e-9)
_RATE = _flag_type(float, "rows per second, a number above 0", 1e-9)


def _port(text: str, source: str = "--port") -> int:
    try:
        port = int(text.strip())
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ConfigError(
            f"{source} expects a port number from 0 to 65535 (0 picks a free one); got {text!r}"
        )
    return port


def _port_flag(text: str) -> int:
    try:
        return _port(text)
    except ConfigError:
        raise argparse.ArgumentTypeError(
            f"expects a port number from 0 to 65535 (0 picks a free one); got {text!r}"
        ) from None


def _server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--host",
        default=os.environ.get("LIVESTREAM_HOST", "127.0.0.1"),
        help="address to bind (default 127.0.0.1; 0.0.0.0 exposes it to the network)",
    )
    p.add_argument(
        "--port",
        type=_port_flag,
        default=None,
        help=f"port (default $LIVESTREAM_PORT or {DEFAULT_PORT}; 0 picks a free one)",
    )
    p.add_argument(
        "--token",
        default=None,
        help="the access token (default: $LIVESTREAM_TOKEN or a random one)",
    )
    p.add_argument("--history", type=_COUNT, default=100_000, help="rows kept per stream")
    p.add_argument(
        "--redis",
        default=None,
        metavar="URL",
        help="serve one set of streams with every server given this Redis "
        "(redis://HOST:PORT/DB; default $LIVESTREAM_REDIS; see docs/redis.md)",
    )
    p.add_argument(
        "--max-age", type=_SECONDS_FLAG, default=None, help="seconds of rows kept per stream"
    )
    p.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="also accept WebSocket connections from this exact origin (repeatable)",
    )
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="HOST",
        help="also accept this Host header on a loopback server (repeatable)",
    )
    _limit_options(p)


def _client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url",
        default=os.environ.get("LIVESTREAM_URL", f"ws://127.0.0.1:{DEFAULT_PORT}"),
        help="server URL (default $LIVESTREAM_URL or ws://127.0.0.1:8765)",
    )
    p.add_argument(
        "--token",
        default=os.environ.get("LIVESTREAM_TOKEN"),
        help="access token (default $LIVESTREAM_TOKEN)",
    )


# --------------------------------------------------------------------------- serve, demo


def _make_server(args: argparse.Namespace) -> Any:
    from .server import Server

    port = args.port
    if port is None:
        env = os.environ.get("LIVESTREAM_PORT")
        port = DEFAULT_PORT if env is None else _port(env, "LIVESTREAM_PORT")
    return Server(
        args.host,
        port,
        token=args.token,
        history=args.history,
        max_age=args.max_age,
        allow_origins=args.allow_origin,
        allow_hosts=args.allow_host,
        limits=_limits(args),
        redis=args.redis,
    )


def _announce(server: Any, what: str) -> None:
    print(f"livestream {what} on {server.base_url}", flush=True)
    if server.backplane is not None:
        print(f"  redis: {server.backplane.shown}  (node {server.backplane.node})", flush=True)
    print(f"  dashboard: {server.url}", flush=True)
    print(f"  websocket: {server.ws_url}  (token: {server.token})", flush=True)
    print("  Ctrl-C to stop", flush=True)


def _run_server(args: argparse.Namespace, ready: Callable[[Any], Any]) -> int:
    """Run a server in the foreground until Ctrl-C; ``ready(server)`` runs once it listens
    (a port in use or a bad host raises ConfigError from ``start_async``)."""
    import asyncio

    server = _make_server(args)

    async def main() -> None:
        await server.start_async()
        try:
            pending = ready(server)
            if pending is not None:
                await pending
            await asyncio.Event().wait()
        finally:
            await server.stop_async()

    asyncio.run(main())
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    return _run_server(args, lambda server: _announce(server, "serving"))


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import install

    async def ready(server: Any) -> None:
        backplane = server.backplane
        elsewhere = None
        if backplane is not None:
            # With Redis, one node runs the demo's producers; the others serve their rows.
            for name in ("prices", "sensors"):
                elsewhere = elsewhere or await backplane.producer_elsewhere(name)
        if elsewhere is None:
            install(server)
        print(f"livestream demo on {server.base_url}", flush=True)
        if backplane is not None:
            print(f"  redis: {backplane.shown}  (node {backplane.node})", flush=True)
            if elsewhere is not None:
                print(f"  the feeds run on node {elsewhere}; this node serves them", flush=True)
        print("  streams: prices (market ticks), sensors (room sensors)", flush=True)
        print(f"  websocket: {server.ws_url}  (token: {server.token})", flush=True)
        print("  Ctrl-C to stop", flush=True)
        print(flush=True)
        print(f"Open the dashboard: {server.url}", flush=True)
        if not args.no_browser:
            import webbrowser

            try:
                webbrowser.open(server.url)
            except Exception:  # no browser is fine: the URL is printed
                pass

    return _run_server(args, ready)


# --------------------------------------------------------------------------- clients


def _connect(args: argparse.Namespace) -> Any:
    """A client for ``--url`` and ``--token``; a refusal or an unreachable server becomes a
    message in command-line terms (flags and environment variables, not URL queries)."""
    from .client import _Refused, connect

    try:
        return connect(args.url, token=args.token)
    except _Refused as exc:
        where = f"the server at {exc.url}"
        if exc.reason == "missing_token":
            raise _Failure(
                f"{where} needs a token: pass --token TOKEN or set LIVESTREAM_TOKEN "
                "(the token `livestream serve` printed)"
            ) from None
        if exc.reason == "bad_token":
            raise _Failure(
                f"{where} refused the token (HTTP {exc.status}): pass the token "
                "`livestream serve` printed with --token TOKEN or LIVESTREAM_TOKEN"
            ) from None
        if exc.reason:
            raise _Failure(
                f"{where} refused the connection (HTTP {exc.status}): {exc.text}"
            ) from None
        raise _Failure(
            f"{where} answered HTTP {exc.status} ({exc.text}), not as a livestream server "
            "would; check --url (or LIVESTREAM_URL): `livestream serve` prints the websocket URL"
        ) from None
    except ConnectionClosed as exc:
        text = str(exc)
        if text.endswith("check the URL"):
            raise _Failure(f"{text} (--url URL or LIVESTREAM_URL)") from None
        raise _Failure(
            f"{text}; check the URL (--url URL or LIVESTREAM_URL) and that the server runs"
        ) from None


def _convert(value: str) -> Any:
    if value == "":
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def _decoded(handle: IO[bytes], name: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line; a line that is not UTF-8 is named with its byte."""
    for number, raw in enumerate(handle, 1):
        try:
            # utf-8-sig on the first line: a byte-order mark (spreadsheet exports) is no data.
            yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise _Failure(
                f"line {number} of {name} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at "
                f"column {exc.start + 1}); save it as UTF-8, e.g. "
                f"`iconv -f latin1 -t utf-8 FILE > FILE.utf8`"
            ) from None


def _fields(n: int) -> str:
    return f"{n} field" + ("" if n == 1 else "s")


def _shown(names: Sequence[str]) -> str:
    return ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")


def _csv_rows(lines: Iterable[tuple[int, str]], name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(first line, row) of each CSV record; the first record is the header. A record with
    too few or too many fields, or broken quoting, stops with its line number."""
    at = [0]  # the number of the line the reader read last

    def text() -> Iterator[str]:
        for number, line in lines:
            at[0] = number
            yield line

    # strict: an unterminated quote is an error, not a field that swallows the rest.
    reader = csv.reader(text(), strict=True)
    start = 1
    header: list[str] | None = None
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            if "field larger than field limit" in str(exc):
                # A quote left open in a large file runs into the limit before the end.
                raise _Failure(
                    f"line {start} of {name} starts a field longer than {csv.field_size_limit()} "
                    "characters, most likely a quote that never closes; close the quote, or "
                    'double a quote inside a quoted field ("say ""hi""")'
                ) from None
            if "unexpected end of data" in str(exc):
                raise _Failure(
                    f"line {start} of {name} opens a quoted field that never closes; close "
                    'the quote, or double a quote inside a quoted field ("say ""hi""")'
                ) from None
            raise _Failure(
                f"line {at[0]} of {name} is not valid CSV ({exc}); quote a whole field that "
                'holds a quote, a comma or a line break, doubling its quotes ("say ""hi""")'
            ) from None
        first, start = start, at[0] + 1
        if not fields:
            continue  # a blank line
        if header is None:
            header = fields
            twice = sorted({n for n in header if header.count(n) > 1})
            if twice:
                raise _Failure(
                    f"the header (line {first} of {name}) names column {twice[0]!r} more than "
                    "once; give every column its own name"
                )
            continue
        if len(fields) != len(header):
            fix = (
                "add the missing fields (an empty field, as in a,,c, is a missing value)"
                if len(fields) < len(header)
                else 'remove the extra ones, quote a value that holds a comma ("1,5"), or '
                "name the column in the header"
            )
            raise _Failure(
                f"line {first} of {name} has {_fields(len(fields))} but the header names "
                f"{len(header)} ({_shown(header)}); {fix}"
            )
        yield first, {k: _convert(v) for k, v in zip(header, fields, strict=True)}
    if header is None:
        raise _Failure(f"{name} is empty; a CSV file starts with a header line naming its columns")


def _jsonl_rows(
    lines: Iterable[tuple[int, str]], name: str
) -> Iterator[tuple[int, dict[str, Any]]]:
    example = 'one JSON object per line, such as {"time": 1, "temp": 21.5}'
    for number, line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _Failure(
                f"line {number} of {name} is not JSON ({exc.msg} at column {exc.colno}); "
                f"expected {example} (for a CSV file pass --format csv)"
            ) from None
        except RecursionError:
            raise _Failure(
                f"line {number} of {name} nests too deeply; expected {example}"
            ) from None
        if not isinstance(row, dict):
            kind = {list: "a list", str: "a string", bool: "true or false"}.get(
                type(row), "null" if row is None else "a number"
            )
            raise _Failure(f"line {number} of {name} is {kind}, not an object; expected {example}")
        yield number, row


_BATCH_ROW = re.compile(r" at row (\d+) of (\d+)")


def _refused_lines(exc: LivestreamError, name: str, lines: list[int], stream: str) -> _Failure:
    """The refusal of a batch, said with the input's line numbers."""
    text = exc.message if isinstance(exc, (ServerError, ProtocolError)) else str(exc)
    row = _BATCH_ROW.search(text)
    if row is not None and int(row[2]) == len(lines) and 1 <= int(row[1]) <= len(lines):
        where = f"line {lines[int(row[1]) - 1]} of {name}"
        text = text[: row.start()] + text[row.end() :]
    elif len(lines) == 1:
        where = f"line {lines[0]} of {name}"
    else:
        where = f"lines {lines[0]}-{lines[-1]} of {name}"
    return _Failure(f"{where} refused for stream {stream!r}: {text}")


def cmd_publish(args: argparse.Namespace) -> int:
    name = "standard input" if args.file == "-" else args.file
    try:
        handle: IO[bytes] = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # noqa: SIM115
    except OSError as exc:
        raise _Failure(
            f"cannot read {args.file}: {exc.strerror or exc}; pass a JSON-lines or CSV file, "
            "or - for standard input"
        ) from None
    fmt = args.format or ("csv" if args.file.lower().endswith(".csv") else "jsonl")
    parse = _csv_rows if fmt == "csv" else _jsonl_rows
    sent = 0
    try:
        with _connect(args) as client:
            batch: list[dict[str, Any]] = []
            lines: list[int] = []
            started = time.monotonic()
            per_batch = (
                args.batch if not args.rate else max(1, min(args.batch, math.ceil(args.rate / 20)))
            )

            def flush() -> None:
                nonlocal sent
                try:
                    client.publish(args.stream, batch)
                except (ServerError, ProtocolError) as exc:
                    raise _refused_lines(exc, name, lines, args.stream) from None
                sent += len(batch)
                batch.clear()
                lines.clear()

            for number, row in parse(_decoded(handle, name), name):
                batch.append(row)
                lines.append(number)
                if len(batch) >= per_batch:
                    flush()
                    if args.rate:
                        ahead = sent / args.rate - (time.monotonic() - started)
                        if ahead > 0:
                            time.sleep(ahead)
            if batch:
                flush()
    except LivestreamError as exc:
        if sent:
            raise _Failure(f"{_message(exc)} (published {sent} rows before stopping)") from None
        raise
    finally:
        if handle is not sys.stdin.buffer:
            handle.close()
    print(f"published {sent} rows to {args.stream}", file=sys.stderr)
    return 0


_TIME_COLUMNS = ("time", "timestamp", "t", "ts", "date", "datetime")


def _format_value(name: str, v: Any) -> str:
    if isinstance(v, float) and name.lower() in _TIME_COLUMNS and 1e11 < v < 1e14:
        import datetime as dt

        # Times travel as ms since the epoch; show them as people read them.
        return dt.datetime.fromtimestamp(v / 1000, dt.UTC).strftime("%H:%M:%S.%f")[:-3]
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def cmd_tail(args: argparse.Namespace) -> int:
    with _connect(args) as client:
        sub = client.subscribe(args.stream, last=args.last)
        header_done = False
        count = 0
        for batch in sub:
            for row in batch.to_rows():
                if args.format == "jsonl":
                    print(
                        json.dumps(
                            {
                                k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                                for k, v in row.items()
                            }
                        ),
                        flush=True,
                    )
                else:
                    if not header_done:
                        print("  ".join(f"{k:>14}" for k in row), flush=True)
                        header_done = True
                    print(
                        "  ".join(f"{_format_value(k, v):>14}" for k, v in row.items()),
                        flush=True,
                    )
                count += 1
                if args.count and count >= args.count:
                    return 0
    return 0


# --------------------------------------------------------------------------- record, replay
# `livestream record` and `livestream replay` (docs/recording.md); the work is in recording.py.


def _replay_speed(text: str) -> float:
    if text.strip().lower() in ("max", "inf", "fastest"):
        return math.inf
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.1 <= value <= 100:
        raise argparse.ArgumentTypeError(
            f"expects a speed from 0.1 to 100 (times the recorded pace) or max; got {text!r}"
        )
    return value


def cmd_record(args: argparse.Namespace) -> int:
    import signal

    from .recording import record_remote

    # A write that fails ends the command with its message: no log line saying it twice.
    logging.getLogger("livestream.recording").setLevel(logging.CRITICAL)

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM stops as cleanly as Ctrl-C

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        with _connect(args) as client:
            rec = record_remote(client, args.streams, args.out, flush=args.flush)
            print(
                f"recording {', '.join(args.streams)} to {args.out} (Ctrl-C to stop)",
                file=sys.stderr,
                flush=True,
            )
            tty = sys.stderr.isatty()
            shown = time.monotonic()
            try:
                while not rec.wait(1.0):
                    if tty or time.monotonic() - shown >= 10:
                        shown = time.monotonic()
                        line = f"{rec.rows:,} rows, {rec.bytes / 1e6:,.1f} MB in {rec.files} files"
                        print(
                            ("\r" if tty else "") + line,
                            end="" if tty else "\n",
                            file=sys.stderr,
                            flush=True,
                        )
            except KeyboardInterrupt:
                pass
            finally:
                if tty:
                    print(file=sys.stderr)
                rec.stop()  # writes what is buffered; raises RecordingError if writing failed
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"recorded {rec.rows:,} rows ({rec.bytes:,} bytes) to {args.out}", file=sys.stderr)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from .recording import replay

    def ready(server: Any) -> None:
        stream = replay(
            args.source, args.stream, args.speed, args.loop, server=server, time=args.time
        )
        _announce(server, f"replaying {args.source} as stream {stream.name!r}")

    return _run_server(args, ready)


def _add_recording_commands(sub: Any) -> None:
    p = sub.add_parser("record", help="record streams of a server to a Parquet dataset")
    p.add_argument("streams", nargs="+", metavar="STREAM", help="the streams to record")
    p.add_argument("--out", required=True, metavar="DIR", help="the dataset folder")
    p.add_argument(
        "--flush",
        type=_SECONDS_FLAG,
        default=1.0,
        metavar="SECONDS",
        help="seconds between files (default 1)",
    )
    _client_options(p)
    p.set_defaults(func=cmd_record)

    p = sub.add_parser("replay", help="serve a recording (or a Parquet file) as a live stream")
    p.add_argument("source", help="a recording folder or a .parquet file")
    p.add_argument(
        "--stream", default=None, metavar="NAME", help="the stream to replay, and its name"
    )
    p.add_argument(
        "--speed",
        type=_replay_speed,
        default=1.0,
        metavar="X",
        help="0.1 to 100 times the recorded pace, or max (default 1)",
    )
    p.add_argument("--loop", action="store_true", help="start over at the end")
    p.add_argument(
        "--time", default="time", metavar="COLUMN", help="the time column (default: time)"
    )
    _server_options(p)
    p.set_defaults(func=cmd_replay)


# --------------------------------------------------------------------------- end of record, replay


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="livestream", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run a standalone server and print its URL with token")
    _server_options(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="a server with demo market and sensor feeds")
    _server_options(p)
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("publish", help="publish rows from a JSON-lines or CSV file (- for stdin)")
    p.add_argument("stream")
    p.add_argument("file")
    _client_options(p)
    p.add_argument(
        "--format", choices=["jsonl", "csv"], help="input format (default: by extension)"
    )
    p.add_argument(
        "--rate", type=_RATE, default=None, help="rows per second (default: as fast as possible)"
    )
    p.add_argument("--batch", type=_COUNT, default=1000, help="rows per message (default 1000)")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("tail", help="print a stream's rows as they arrive")
    p.add_argument("stream")
    _client_options(p)
    p.add_argument("--format", choices=["table", "jsonl"], default="table")
    p.add_argument(
        "--last", type=_OPTIONAL_COUNT, default=10, help="start with this many of the newest rows"
    )
    p.add_argument(
        "--count", type=_OPTIONAL_COUNT, default=0, help="exit after this many rows (0: never)"
    )
    p.set_defaults(func=cmd_tail)
    _add_recording_commands(sub)  # record, replay
    return parser


def _message(exc: BaseException) -> str:
    """What an expected failure says after ``livestream: ``."""
    if isinstance(exc, (ServerError, ProtocolError)):
        return exc.message  # the code is for programs; people read the message
    if isinstance(exc, TimeoutError):
        return "timed out waiting for the server; check that it runs and is not overloaded"
    if isinstance(exc, UnicodeDecodeError):
        return f"the input is not UTF-8 text ({exc.reason}); save it as UTF-8"
    if isinstance(exc, csv.Error):
        return f"the input is not valid CSV ({exc})"
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}"
    return str(exc) or type(exc).__name__


#: Failures of the environment or the input, not of livestream: a message, no traceback.
_EXPECTED = (LivestreamError, OSError, UnicodeDecodeError, csv.Error)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0, 1 for a failure, 2 for a usage
    error, 130 after Ctrl-C)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`livestream tail s | head`): stop quietly, and keep the
        # interpreter's final flush from complaining about the closed pipe.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except _EXPECTED as exc:
        print(f"livestream: {_message(exc)}", file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        print(
            "livestream: this is a bug in livestream, not a problem with your input or setup; "
            "please report it with the traceback above",
            file=sys.stderr,
        )
        return 1
