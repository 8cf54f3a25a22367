"""The ``livestream`` command: serve, demo, publish, tail."""

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
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO, TypeVar

from .errors import ConfigError
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


def _server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--host",
        default=os.environ.get("LIVESTREAM_HOST", "127.0.0.1"),
        help="address to bind (default 127.0.0.1; 0.0.0.0 exposes it to the network)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("LIVESTREAM_PORT", DEFAULT_PORT)),
        help=f"port (default {DEFAULT_PORT}; 0 picks a free one)",
    )
    p.add_argument(
        "--token",
        default=None,
        help="the access token (default: $LIVESTREAM_TOKEN or a random one)",
    )
    p.add_argument("--history", type=int, default=100_000, help="rows kept per stream")
    p.add_argument("--max-age", type=float, default=None, help="seconds of rows kept per stream")
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


def _make_server(args: argparse.Namespace) -> Any:
    from .server import Server

    return Server(
        args.host,
        args.port,
        token=args.token,
        history=args.history,
        max_age=args.max_age,
        allow_origins=args.allow_origin,
        allow_hosts=args.allow_host,
        limits=_limits(args),
    )


def _announce(server: Any, what: str) -> None:
    print(f"livestream {what} on {server.base_url}", flush=True)
    print(f"  dashboard: {server.url}", flush=True)
    print(f"  websocket: {server.ws_url}  (token: {server.token})", flush=True)
    print("  Ctrl-C to stop", flush=True)


def _run_server(args: argparse.Namespace, what: str, setup: Any = None) -> int:
    """Run a server in the foreground until Ctrl-C; ``setup(server)`` runs once it listens."""
    import asyncio

    server = _make_server(args)

    async def main() -> None:
        await server.start_async()
        if setup is not None:
            setup(server)
        _announce(server, what)
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop_async()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    return _run_server(args, "serving")


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import install

    def setup(server: Any) -> None:
        install(server)
        print("  streams: prices (market ticks), sensors (room sensors)", flush=True)
        if not args.no_browser:
            import webbrowser

            try:
                webbrowser.open(server.url)
            except Exception:  # no browser is fine: the URL is printed
                pass

    return _run_server(args, "demo", setup)


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


def _rows(handle: TextIO, fmt: str) -> Iterator[dict[str, Any]]:
    if fmt == "csv":
        for row in csv.DictReader(handle):
            yield {k: _convert(v) for k, v in row.items()}
        return
    for number, line in enumerate(handle, 1):
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise SystemExit(
                f"line {number}: not JSON ({exc}); expected one JSON object per line"
            ) from None
        if not isinstance(row, dict):
            raise SystemExit(
                f"line {number}: expected a JSON object per line, got {type(row).__name__}"
            )
        yield row


def cmd_publish(args: argparse.Namespace) -> int:
    from .client import connect

    try:
        handle: TextIO = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise SystemExit(f"livestream: cannot read {args.file}: {exc.strerror or exc}") from None
    fmt = args.format or ("csv" if args.file.endswith(".csv") else "jsonl")
    sent = 0
    try:
        with connect(args.url, token=args.token) as client:
            batch: list[dict[str, Any]] = []
            started = time.monotonic()
            per_batch = (
                args.batch if not args.rate else max(1, min(args.batch, math.ceil(args.rate / 20)))
            )
            for row in _rows(handle, fmt):
                batch.append(row)
                if len(batch) >= per_batch:
                    client.publish(args.stream, batch)
                    sent += len(batch)
                    batch = []
                    if args.rate:
                        ahead = sent / args.rate - (time.monotonic() - started)
                        if ahead > 0:
                            time.sleep(ahead)
            if batch:
                client.publish(args.stream, batch)
                sent += len(batch)
    finally:
        if handle is not sys.stdin:
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
    from .client import connect

    with connect(args.url, token=args.token) as client:
        sub = client.subscribe(args.stream, last=args.last)
        header_done = False
        count = 0
        try:
            for batch in sub:
                for row in batch.to_rows():
                    if args.format == "jsonl":
                        print(
                            json.dumps(
                                {
                                    k: (
                                        None if isinstance(v, float) and not math.isfinite(v) else v
                                    )
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
        except KeyboardInterrupt:
            return 0
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="livestream", description=__doc__)
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
        "--rate", type=float, default=None, help="rows per second (default: as fast as possible)"
    )
    p.add_argument("--batch", type=int, default=1000, help="rows per message (default 1000)")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("tail", help="print a stream's rows as they arrive")
    p.add_argument("stream")
    _client_options(p)
    p.add_argument("--format", choices=["table", "jsonl"], default="table")
    p.add_argument("--last", type=int, default=10, help="start with this many of the newest rows")
    p.add_argument("--count", type=int, default=0, help="exit after this many rows (0: never)")
    p.set_defaults(func=cmd_tail)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    from .errors import LivestreamError

    try:
        return int(args.func(args))
    except LivestreamError as exc:
        print(f"livestream: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
