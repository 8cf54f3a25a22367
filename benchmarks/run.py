"""Run the livestream benchmarks and print figures and ratios measured in the same run.

    python -m benchmarks                     # everything (about 12 minutes on 2 cores)
    python -m benchmarks --quick             # a short smoke run (about 2 minutes)
    python -m benchmarks --scenarios fanout --n 1 --quick
    python -m benchmarks --json out.json --plot docs/images/benchmarks-fanout.png

Scenarios (``--scenarios``, comma-separated): ``fanout`` (1), ``ticks`` (2), ``latency``
(3), ``slow`` (4), ``many`` (5), ``producer`` (6), ``browser`` (7, the livestream page) and
``notebook`` (7, Bokeh's ``push_notebook`` in JupyterLab; needs ``jupyter_bokeh``) and
``abuse`` (8, a bystander while an abusive client runs; ``--abuse-seconds``,
``--attacks``), ``record`` (9, a recorder attached, recorder throughput, bytes per row)
and ``replay`` (10, from Parquet as fast as possible). Opt-in, not in the default run:
``issue14`` (producer threads and loop producers against raw Tornado with both subscriber
clients, about 6 minutes) and ``bistable`` (ten short runs of the loop producer at full
speed, N = 10), and ``cluster`` (issue 10: three servers through Redis beside one server;
needs ``redis-server``, see benchmarks/cluster.py). ``--client light|websockets|both`` picks the subscribers of livestream and
raw Tornado for fanout, ticks and latency (default ``light``); issue14 and bistable run
both unless it is given. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from benchmarks import scenarios
from benchmarks.common import start_process

ALL = (
    "fanout",
    "ticks",
    "latency",
    "slow",
    "many",
    "producer",
    "browser",
    "notebook",
    "abuse",
    "record",
    "replay",
)
#: Scenarios run only when named in ``--scenarios`` (issue 14; see benchmarks/issue14.py).
OPT_IN = ("issue14", "bistable", "cluster")

#: The sections whose module renders its own table, in the printout's order:
#: (key of the results, module of benchmarks/, its function taking (figures, _fmt, _table)).
SECTIONS = (
    ("large_windows", "browser", "render"),
    ("abuse", "abuse", "render"),
    ("recording", "recording", "render"),
    ("cluster", "cluster", "render"),
    ("issue14", "issue14", "render"),
    ("bistable", "issue14", "render_bistable"),
)

FULL = {
    "fanout": {
        "ns": [1, 10, 100],
        "duration": 6.0,
        "warmup": 2.0,
        "variants": [
            "raw",
            "livestream",
            "livestream-thread",
            "livestream-thread-free",
            "bokeh",
            "bokeh-ws",
        ],
        "bokeh_max_n": 10,
    },
    "ticks": {
        "ns": [1, 10, 100],
        "duration": 6.0,
        "warmup": 2.0,
        "variants": ["raw", "livestream", "livestream-thread-free", "bokeh", "bokeh-ws"],
        "bokeh_max_n": 10,
    },
    "latency": {
        "n": 10,
        "rate": 1000.0,
        "batch": 10,
        "duration": 24.0,
        "warmup": 1.5,
        "rounds": 6,
        "nice": -10,
    },
    "slow": {"duration": 30.0, "baseline": 15.0, "raw_limit_s": 20.0, "raw_limit_mib": 2048.0},
    "many": {"n": 1000, "rate": 100.0, "duration": 20.0},
    "producer": {"sizes": [1, 100, 10_000], "seconds": 1.0},
    "browser": {"rates": [1_000, 10_000, 50_000], "seconds": 8.0, "warmup": 3.0},
    # Issue 12: run with "browser" (benchmarks.browser.large_windows, section 7b).
    "large_windows": {
        "windows": [10_000, 100_000, 1_000_000, 10_000_000],
        "rates": [10_000, 100_000, 1_000_000],
        "seconds": 5.0,
        "warmup": 2.0,
        "backends": ["canvas", "webgl"],
        "pages": ["ceiling", "livestream", "perspective"],
    },
    "notebook": {
        "rates": [10, 100, 1_000, 10_000, 50_000],
        "pushes": [10, 100],
        "seconds": 8.0,
        "warmup": 3.0,
    },
    "abuse": {},  # benchmarks.abuse.DEFAULTS
    "record": {},  # benchmarks.recording.FULL
    "replay": {},
}
QUICK = {
    "fanout": {
        "ns": [1, 10],
        "duration": 2.0,
        "warmup": 1.0,
        "variants": ["raw", "livestream", "livestream-thread", "bokeh"],
        "bokeh_max_n": 1,
    },
    "ticks": {
        "ns": [10],
        "duration": 2.0,
        "warmup": 1.0,
        "variants": ["raw", "livestream"],
        "bokeh_max_n": 0,
    },
    "latency": {
        "n": 10,
        "rate": 1000.0,
        "batch": 10,
        "duration": 4.0,
        "warmup": 1.0,
        "rounds": 2,
        "nice": -10,
    },
    "slow": {"duration": 5.0, "baseline": 4.0, "raw_limit_s": 4.0, "raw_limit_mib": 1024.0},
    "many": {"n": 200, "rate": 100.0, "duration": 3.0},
    "producer": {"sizes": [1, 100, 10_000], "seconds": 0.2},
    "browser": {"rates": [10_000], "seconds": 3.0, "warmup": 1.5},
    "large_windows": {
        "windows": [10_000],
        "rates": [10_000],
        "seconds": 2.0,
        "warmup": 1.0,
        "backends": ["canvas"],
        "pages": ["ceiling", "livestream", "perspective"],
    },
    "notebook": {"rates": [1_000], "pushes": [10], "seconds": 3.0, "warmup": 1.5},
    "abuse": {
        "duration": 1.0,
        "warm": 0.5,
        "after": 0.8,
        "history_rows": 100_000,
        "streams": 1_000,
        "columns": 40_000,
        "big_mib": 3.0,
        "max_requests": 50,
        "grace": 2.0,
        "drain_s": 0.5,
    },
    "record": {},  # benchmarks.recording.QUICK
    "replay": {},
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    import bokeh
    import numpy
    import pandas
    import psutil
    import tornado

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {
        "tornado": tornado.version,
        "bokeh": bokeh.__version__,
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
        "psutil": psutil.__version__,
    }
    try:
        from importlib.metadata import version

        versions["playwright"] = version("playwright")
    except Exception:
        pass
    try:
        import subprocess

        out = subprocess.run(
            ["/usr/bin/chromium", "--version"], capture_output=True, text=True, timeout=20
        )
        versions["chromium"] = out.stdout.strip()
    except Exception:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "loadavg_at_start": os.getloadavg(),
    }


# --------------------------------------------------------------------------- the table


def _fmt(v: Any, digits: int = 0) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    for r in rows:
        out.append(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    return "\n".join(out)


#: The livestream variant each scenario's targets are judged by: for 1,000-row batches the
#: producer on the server's loop, where raw Tornado's runs; for single rows (a tick feed,
#: which arrives on a thread reading a socket or a device) the producer thread, whose rows
#: the loop merges while it writes.
PRIMARY = {"fanout": "livestream", "ticks": "livestream-thread-free"}


def fanout_ratios(
    rows: list[dict[str, Any]], primary: str = "livestream"
) -> dict[int, dict[str, float]]:
    """livestream / raw and livestream / Bokeh per N, from rows of the same run.

    ``vs_raw``, ``loss_pct`` and the Bokeh ratios use the ``primary`` variant; the others
    name theirs: ``loop_vs_raw`` (async producer at full speed), ``paced_vs_raw`` (async
    producer at raw's rate), ``thread_vs_raw`` (producer thread at raw's rate),
    ``thread_free_vs_raw`` (producer thread at full speed; delivered rows)."""
    by: dict[int, dict[str, dict[str, Any]]] = {}
    for r in rows:
        if "error" not in r:
            by.setdefault(r["n"], {})[r["variant"]] = r
    out: dict[int, dict[str, float]] = {}
    for n, v in by.items():
        ratios: dict[str, float] = {}
        raw = v.get("raw", {}).get("rows_per_sub")

        def over(
            variant: str, base: float | None, v: dict[str, dict[str, Any]] = v
        ) -> float | None:
            got = v.get(variant, {}).get("rows_per_sub")
            return got / base if got is not None and base else None

        for key, variant, base in (
            ("vs_raw", primary, raw),
            ("vs_bokeh", primary, v.get("bokeh", {}).get("rows_per_sub")),
            ("vs_bokeh_ws", primary, v.get("bokeh-ws", {}).get("rows_per_sub")),
            ("loop_vs_raw", "livestream", raw),
            ("paced_vs_raw", "livestream-paced", raw),
            ("thread_vs_raw", "livestream-thread", raw),
            ("thread_free_vs_raw", "livestream-thread-free", raw),
        ):
            ratio = over(variant, base)
            if ratio is not None:
                ratios[key] = ratio
        loss = v.get(primary, {}).get("loss_pct")
        if loss is not None:
            ratios["loss_pct"] = loss
        out[n] = ratios
    return out


def _fanout_tables(key: str, title: str, rows: list[dict[str, Any]]) -> list[str]:
    """The table of a fan-out scenario's runs and its ratios (rows of one client)."""
    parts: list[str] = []
    body: list[list[str]] = []
    for r in rows:
        if "error" in r:
            body.append([r["variant"], str(r["n"]), "failed: " + r["error"][:60]] + [""] * 8)
            continue
        body.append(
            [
                r["variant"],
                str(r["n"]),
                _fmt(r["rows_per_sub"]),
                _fmt(r["min_rows_per_sub"]),
                _fmt(r["total_rows"]),
                _fmt(r["mb_per_s"], 1),
                _fmt(r["rows_per_frame"]),
                _fmt(r["cpu"]),
                _fmt(r.get("client_cpu")),
                _fmt(r["loss_pct"], 1),
                _fmt(r["offered"]),
                _fmt(r.get("lag_p50")),
            ]
        )
    parts.append(
        f"{title}\n"
        + _table(
            [
                "server",
                "N",
                "rows/s/sub",
                "min/sub",
                "rows/s total",
                "MB/s",
                "rows/frame",
                "server CPU%",
                "clients CPU%",
                "loss%",
                "produced/s",
                "lag p50 ms",
            ],
            body,
        )
    )
    ratio_rows = [
        [
            str(n),
            _fmt(v.get("vs_raw"), 2),
            _fmt(v.get("loss_pct"), 1),
            _fmt(v.get("vs_bokeh"), 1),
            _fmt(v.get("vs_bokeh_ws"), 1),
            _fmt(v.get("loop_vs_raw"), 2),
            _fmt(v.get("paced_vs_raw"), 2),
            _fmt(v.get("thread_vs_raw"), 2),
            _fmt(v.get("thread_free_vs_raw"), 2),
        ]
        for n, v in sorted(fanout_ratios(rows, PRIMARY[key]).items())
    ]
    parts.append(
        f"ratios (same run; rows/s per subscriber; targets judged by {PRIMARY[key]})\n"
        + _table(
            [
                "N",
                "livestream/raw (target >= 0.8)",
                "its loss%",
                "livestream/Bokeh page (target >= 20)",
                "livestream/Bokeh protocol client",
                "loop/raw",
                "paced/raw",
                "thread/raw",
                "thread-free/raw (with loss)",
            ],
            ratio_rows,
        )
    )
    return parts


def render(results: dict[str, Any]) -> str:
    parts: list[str] = []
    for key, title in (
        ("fanout", "1. Fan-out, 1,000-row batches, producer at full speed"),
        ("ticks", "2. Single-row appends (a tick feed), producer at full speed"),
    ):
        every = results.get(key)
        if not every:
            continue
        groups = sorted({r.get("client", "light") for r in every if r.get("server") != "bokeh"})
        for client in groups or ["light"]:
            rows = [
                r
                for r in every
                if r.get("client", "light") == client
                or (r.get("server") == "bokeh" and client == groups[0])
            ]
            named = f"{title} ({client} client)" if len(groups) > 1 else title
            parts.extend(_fanout_tables(key, named, rows))
    lat_all = results.get("latency") or []
    for client in sorted({r.get("client", "light") for r in lat_all}):
        lat = [r for r in lat_all if r.get("client", "light") == client]
        suffix = f" ({client} client)" if client != "light" else ""
        body = [
            [
                r["variant"],
                _fmt(r["p50"], 2),
                _fmt(r["p90"], 2),
                _fmt(r["p99"], 2),
                _fmt(r["p99_median_of_rounds"], 2),
                _fmt(r["max"], 2),
                _fmt(r["samples"]),
                _fmt(r["cpu"]),
                " ".join(f"{x:.1f}" for x in r["rounds_p99"]),
            ]
            for r in lat
        ]
        by = {r["variant"]: r for r in lat}
        diff = by["livestream"]["p99"] - by["raw"]["p99"]
        diff_med = by["livestream"]["p99_median_of_rounds"] - by["raw"]["p99_median_of_rounds"]
        parts.append(
            f"3. Latency, 1,000 rows/s in batches of 10 to 10 subscribers (ms){suffix}\n"
            + _table(
                [
                    "server",
                    "p50",
                    "p90",
                    "p99",
                    "p99 median of rounds",
                    "max",
                    "rows",
                    "CPU%",
                    "p99 of each round",
                ],
                body,
            )
            + f"\np99 livestream - raw = {diff:+.2f} ms pooled, {diff_med:+.2f} ms as "
            "median of rounds (target <= 5 ms)"
        )
    slow = results.get("slow")
    if slow:
        a, b, raw = slow["without_slow"], slow["with_slow"], slow["raw_nowait"]
        body = [
            [
                "livestream, 1 normal subscriber (2 runs)",
                _fmt(a["rows_per_s"]),
                _fmt(a["rss_start_mib"]),
                _fmt(a["rss_at_3s_mib"]),
                _fmt(a["rss_max_mib"]),
                _fmt(a["growth_mib"], 1),
                _fmt(a["growth_after_3s_mib"], 1),
                _fmt(a["resets"]),
            ],
            [
                f"livestream, + 1 that never reads ({b['seconds']:.0f} s)",
                _fmt(b["rows_per_s"]),
                _fmt(b["rss_start_mib"]),
                _fmt(b["rss_at_3s_mib"]),
                _fmt(b["rss_max_mib"]),
                _fmt(b["growth_mib"], 1),
                _fmt(b["growth_after_3s_mib"], 1),
                _fmt(b["resets"]),
            ],
            [
                f"raw Tornado nowait ({raw['seconds']:.0f} s)",
                "-",
                _fmt(raw["rss_start_mib"]),
                "-",
                _fmt(raw["rss_max_mib"]),
                _fmt(raw["growth_mib"], 1),
                "-",
                "-",
            ],
        ]
        parts.append(
            "4. Slow viewer (producer at full speed)\n"
            + _table(
                [
                    "run",
                    "normal sub rows/s",
                    "RSS start MiB",
                    "RSS at 3 s",
                    "RSS max MiB",
                    "growth MiB",
                    "growth after 3 s",
                    "resets",
                ],
                body,
            )
            + f"\nnormal subscriber with / without the slow one = {slow['ratio']:.2f} "
            f"(target >= 0.8); livestream RSS growth {b['growth_mib']:.1f} MiB (target < 50)"
        )
    many = results.get("many")
    if many:
        m = many
        parts.append(
            f"5. Many viewers: {m['connected']:,} subscribers, {m['rate']:.0f} rows/s\n"
            + _table(
                [
                    "delivered rows",
                    "expected",
                    "lost",
                    "rows/s/sub",
                    "frames/s/sub",
                    "CPU%",
                    "RSS base MiB",
                    "RSS streaming MiB",
                    "KiB/conn",
                ],
                [
                    [
                        _fmt(m["rows_delivered"]),
                        _fmt(m["rows_expected"]),
                        _fmt(m["lost"]),
                        _fmt(m["rows_per_sub_per_s"], 1),
                        _fmt(m["frames_per_sub_per_s"], 1),
                        _fmt(m["cpu"]),
                        _fmt(m["rss_base_mib"]),
                        _fmt(m["rss_streaming_mib"]),
                        _fmt(m["kib_per_conn_streaming"], 1),
                    ]
                ],
            )
        )
    cost = results.get("producer")
    if cost:
        body = [
            [
                r["label"],
                _fmt(r["rows"]),
                _fmt(r["us_per_call"], 1),
                _fmt(r["ns_per_row"]),
                _fmt(r["cpu_us_per_call"], 1),
                _fmt(r["rows_per_s"]),
            ]
            for r in cost
        ]
        parts.append(
            "6. Producer cost of Stream.append (from a thread)\n"
            + _table(
                ["input", "rows/append", "us/append", "ns/row", "CPU us/append", "rows/s"], body
            )
        )
    br = (results.get("browser") or []) + (results.get("notebook") or [])
    if br:
        body = [
            [
                r["server"]
                + (
                    f", {r['pushes_per_s_offered']} pushes/s" if "pushes_per_s_offered" in r else ""
                ),
                _fmt(r["offered"]),
                _fmt(r["rows_per_s"]),
                _fmt(r["fps"], 1),
                _fmt(r["lag_p50"]),
                _fmt(r["lag_p99"]),
                _fmt(r["streams_per_s"], 1),
                _fmt(r.get("rows_lost")),
            ]
            if "error" not in r
            else [r["server"], "not measured (below)"] + [""] * 6
            for r in br
        ]
        notes = "".join(f"\n{r['server']} not measured: {r['error']}" for r in br if "error" in r)
        parts.append(
            "7. Browser: Chromium page, Bokeh plot with a 50,000-row window (the largest it streams)\n"
            + _table(
                [
                    "page",
                    "offered rows/s",
                    "ingested rows/s",
                    "fps",
                    "lag p50 ms",
                    "lag p99 ms",
                    "stream() calls/s",
                    "rows lost",
                ],
                body,
            )
            + notes
        )
    for key, module, function in SECTIONS:
        if results.get(key):
            render_section = getattr(importlib.import_module(f"benchmarks.{module}"), function)
            parts.append(render_section(results[key], _fmt, _table))
    return "\n\n".join(parts)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run (~2 minutes)")
    parser.add_argument(
        "--scenarios",
        default=",".join(ALL),
        help=f"comma-separated subset of {', '.join(ALL)} (default: all of these); "
        f"opt-in: {', '.join(OPT_IN)}",
    )
    parser.add_argument(
        "--client",
        default=None,
        choices=["light", "websockets", "both"],
        help="subscribers of livestream and raw Tornado: light (headers only, the default "
        "for fanout/ticks/latency), websockets (the websockets library, every frame decoded "
        "and offsets checked row by row) or both (issue14 and bistable default to both)",
    )
    parser.add_argument(
        "--n", default=None, help="subscriber counts for fanout/ticks, e.g. 1,10,100"
    )
    parser.add_argument(
        "--variants",
        default=None,
        help="servers for fanout/ticks: raw,livestream,livestream-paced,livestream-thread,"
        "livestream-thread-free,livestream-thread-wait,bokeh,bokeh-ws",
    )
    parser.add_argument(
        "--abuse-seconds", type=float, default=None, help="abuse: seconds each attack runs"
    )
    parser.add_argument(
        "--attacks",
        default=None,
        help="abuse: comma-separated subset of raw,none,resubscribe,list_noread,wide_publish,"
        "big_json,big_binary,list_pipelined,plot_wide,slow_action",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="issue14: run its fan-out runs this many times (the table gives the median "
        "ratio and the range); browser: its large-window runs (medians and spread)",
    )
    parser.add_argument(
        "--windows", default=None, help="browser, large windows: plot windows, e.g. 10000,10000000"
    )
    parser.add_argument(
        "--rates", default=None, help="browser, large windows: offered rows/s, e.g. 100000,1000000"
    )
    parser.add_argument(
        "--pages",
        default=None,
        help="browser, large windows: a subset of ceiling,livestream,perspective",
    )
    parser.add_argument("--json", default=None, help="write all figures to this JSON file")
    parser.add_argument("--plot", default=None, help="write the fan-out PNG here")
    args = parser.parse_args(argv)

    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in ALL + OPT_IN]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}; choose from {', '.join(ALL + OPT_IN)}")
    both = tuple(scenarios.CLIENTS)
    picked = both if args.client == "both" else (args.client,) if args.client else None
    cfg = json.loads(json.dumps(QUICK if args.quick else FULL))
    for key in ("fanout", "ticks"):
        if args.n:
            cfg[key]["ns"] = [int(x) for x in args.n.split(",")]
        if args.variants:
            cfg[key]["variants"] = [v.strip() for v in args.variants.split(",")]
            if "bokeh" in cfg[key]["variants"]:
                cfg[key]["bokeh_max_n"] = max(cfg[key]["bokeh_max_n"], *cfg[key]["ns"])

    if args.abuse_seconds is not None:
        cfg["abuse"]["duration"] = args.abuse_seconds
    if args.attacks:
        cfg["abuse"]["attacks"] = [a.strip() for a in args.attacks.split(",") if a.strip()]

    started = time.monotonic()
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:]),
        "quick": args.quick,
        "machine": machine(),
        "config": {
            k: cfg[k]
            for k in chosen + (["large_windows"] if "browser" in chosen else [])
            if k in cfg
        },
        "client": args.client or "light",
    }
    log(f"livestream benchmarks ({'quick' if args.quick else 'full'}): {', '.join(chosen)}")
    if "fanout" in chosen:
        log("1. fan-out, 1,000-row batches")
        results["fanout"] = scenarios.fanout(
            batch=1000, shape="arrays", log=log, clients=picked or ("light",), **cfg["fanout"]
        )
    if "ticks" in chosen:
        log("2. single-row appends")
        results["ticks"] = scenarios.fanout(
            batch=1, shape="scalars", log=log, clients=picked or ("light",), **cfg["ticks"]
        )
    if "latency" in chosen:
        log("3. latency")
        results["latency"] = []
        for client in picked or ("light",):
            results["latency"] += scenarios.latency(log=log, client=client, **cfg["latency"])
    if "slow" in chosen:
        log("4. slow viewer")
        results["slow"] = scenarios.slow_viewer(log=log, **cfg["slow"])
    if "many" in chosen:
        log("5. many viewers")
        results["many"] = scenarios.many_viewers(log=log, **cfg["many"])
    if "producer" in chosen:
        log("6. producer cost")
        from benchmarks import producer_cost

        proc = start_process(
            producer_cost.run, cfg["producer"]["sizes"], cfg["producer"]["seconds"], timeout=300
        )
        results["producer"] = proc.info["results"]
        proc.stop()
    if "browser" in chosen:
        log("7. browser")
        from benchmarks import browser

        results["browser"] = browser.livestream_page(log=log, **cfg["browser"])
        large = dict(cfg["large_windows"], repeat=args.repeat)
        for key in ("windows", "rates"):
            if getattr(args, key):
                large[key] = [int(x) for x in getattr(args, key).split(",")]
        if args.pages:
            large["pages"] = [x.strip() for x in args.pages.split(",") if x.strip()]
        results["large_windows"] = browser.large_windows(log=log, **large)
    if "notebook" in chosen:
        log("7. browser: push_notebook in JupyterLab")
        from benchmarks import notebook

        try:
            results["notebook"] = notebook.push_notebook_page(log=log, **cfg["notebook"])
        except Exception as exc:
            log(f"  push_notebook failed: {type(exc).__name__}: {exc}")
            results["notebook"] = [
                {"server": "push_notebook", "error": f"{type(exc).__name__}: {exc}"}
            ]
    if "abuse" in chosen:
        log("8. abuse: a bystander while an abusive client runs")
        from benchmarks import abuse

        results["abuse"] = abuse.run(log=log, **cfg["abuse"])
    if "record" in chosen or "replay" in chosen:
        log("9, 10. record and replay")
        from benchmarks import recording

        figures = recording.QUICK if args.quick else recording.FULL
        results["recording"] = recording.run(log=log, scenarios=set(chosen), **figures)
    if "issue14" in chosen:
        log("issue 14: producer threads and loop producers against raw Tornado")
        from benchmarks import issue14

        results["issue14"] = issue14.run(
            clients=picked or both,
            log=log,
            quick=args.quick,
            ns=[int(x) for x in args.n.split(",")] if args.n else None,
            repeat=args.repeat,
        )
    if "bistable" in chosen:
        log("issue 14: bistability of the loop producer at full speed")
        from benchmarks import issue14

        results["bistable"] = issue14.bistable(clients=picked or both, log=log, quick=args.quick)
    if "cluster" in chosen:
        log("issue 10: several servers through Redis, beside a single server")
        from benchmarks import cluster

        results["cluster"] = cluster.run(log=log, quick=args.quick)
    results["elapsed_s"] = round(time.monotonic() - started, 1)

    print(render(results))
    print(
        f"\n({results['elapsed_s']:.0f} s; {results['machine']['nproc']} cores, "
        f"{results['machine']['cpu']}; ratios are from this run)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float))
        log(f"figures written to {args.json}")
    if args.plot and results.get("fanout"):
        from benchmarks import plot

        plot.fanout_png(results, args.plot)
        log(f"fan-out plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
