"""Issue 14, "the producer thread is the notebook's path": livestream against raw Tornado
with each of the two subscriber clients, and a check for bistability.

* :func:`run` (``--scenarios issue14``): for each client (``light``: headers only,
  ``benchmarks.wsclient``; ``websockets``: the ``websockets`` library decoding every frame
  and checking offsets row by row, ``benchmarks.wslib_client``), at N = 1, 10, 100:

  - 1,000-row batches: ``raw`` (awaits every write: lossless), ``livestream`` (async
    producer on the server's loop, as fast as it can), ``livestream-thread`` (a producer
    thread offering the rate raw delivered in this run with this client),
    ``livestream-thread-wait`` (a producer thread as fast as it can, on a stream made with
    ``overflow="wait"``: it should skip nothing);
  - single rows: ``raw`` and ``livestream-thread-free`` (a thread appending one row at a
    time as fast as it can);
  - latency at 1,000 rows/s in batches of 10 to 10 subscribers: raw, a producer thread and
    an async producer on the loop, taking turns.

* :func:`bistable` (``--scenarios bistable``): the async producer on the loop at full speed
  to 10 subscribers, ten short runs of a fresh server each, rows/s per subscriber and %
  skipped per run; a run that skipped rows while others skipped none is flagged.

Both are opt-in (not in the default ``python -m benchmarks``); each run is bounded (a few
seconds of window, every wait bounded as in ``benchmarks.scenarios``).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

from . import scenarios

FULL = {
    "ns": [1, 10, 100],
    "duration": 3.0,
    "warmup": 1.5,
    "batch_variants": ["raw", "livestream", "livestream-thread", "livestream-thread-wait"],
    "tick_variants": ["raw", "livestream-thread-free"],
    # 12 s of rows per variant in 6 turns: a p99 over 1,200 frames (over 600 it moved by
    # +-0.5 ms between quiet runs of the same code).
    "latency": {"n": 10, "rate": 1000.0, "batch": 10, "duration": 12.0, "warmup": 1.0},
    "latency_rounds": 6,
}
QUICK = {
    "ns": [1],
    "duration": 1.5,
    "warmup": 1.0,
    "batch_variants": ["raw", "livestream", "livestream-thread", "livestream-thread-wait"],
    "tick_variants": ["raw", "livestream-thread-free"],
    "latency": {"n": 10, "rate": 1000.0, "batch": 10, "duration": 2.0, "warmup": 1.0},
    "latency_rounds": 1,
}
BISTABLE = {"runs": 10, "n": 10, "duration": 2.5, "warmup": 1.0}
BISTABLE_QUICK = {"runs": 3, "n": 10, "duration": 1.5, "warmup": 0.5}


def run(
    *,
    clients: tuple[str, ...],
    log: Callable[[str], None],
    quick: bool = False,
    ns: list[int] | None = None,
    repeat: int = 1,
) -> dict[str, Any]:
    """``repeat``: the fan-out runs (batches and single rows) that many times, one after the
    other; the target table then gives the median ratio of the repeats and their range (on
    a shared machine one pair of runs can be off by 2x either way)."""
    cfg = dict(QUICK if quick else FULL)
    if ns:
        cfg["ns"] = ns
    cfg["repeat"] = repeat
    out: dict[str, Any] = {"clients": list(clients), "config": cfg, "batches": [], "ticks": []}
    for rep in range(repeat):
        _fanouts(out, cfg, clients, log, rep)
    out["latency"] = []
    _latency(out, cfg, clients, log)
    return out


def _fanouts(
    out: dict[str, Any],
    cfg: dict[str, Any],
    clients: tuple[str, ...],
    log: Callable[[str], None],
    rep: int,
) -> None:
    for key, what, batch, shape, variants in (
        ("batches", "1,000-row batches", 1000, "arrays", "batch_variants"),
        ("ticks", "single rows", 1, "scalars", "tick_variants"),
    ):
        log(f"  issue 14: {what} (repeat {rep + 1})")
        rows = scenarios.fanout(
            cfg["ns"],
            batch=batch,
            shape=shape,
            duration=cfg["duration"],
            warmup=cfg["warmup"],
            variants=cfg[variants],
            bokeh_max_n=0,
            log=log,
            clients=clients,
        )
        for r in rows:
            r["repeat"] = rep
        out[key] += rows


def _latency(
    out: dict[str, Any], cfg: dict[str, Any], clients: tuple[str, ...], log: Callable[[str], None]
) -> None:
    for client in clients:
        log(f"  issue 14: latency, {client} client")
        lat = cfg["latency"]
        try:
            out["latency"] += scenarios.latency(
                n=lat["n"],
                rate=lat["rate"],
                batch=lat["batch"],
                duration=lat["duration"],
                warmup=lat["warmup"],
                rounds=cfg["latency_rounds"],
                nice=-10,
                log=log,
                loop_producer=True,
                client=client,
            )
        except Exception as exc:
            log(f"    failed: {type(exc).__name__}: {exc}")
            out["latency"].append({"client": client, "error": f"{type(exc).__name__}: {exc}"})


def bistable(
    *, clients: tuple[str, ...], log: Callable[[str], None], quick: bool = False
) -> dict[str, Any]:
    cfg = BISTABLE_QUICK if quick else BISTABLE
    runs: list[dict[str, Any]] = []
    for client in clients:
        for i in range(cfg["runs"]):
            log(
                f"  bistable: run {i + 1}/{cfg['runs']}, {client} client, async producer on the "
                f"loop at full speed, N={cfg['n']}"
            )
            try:
                r = scenarios.measure(
                    "livestream",
                    cfg["n"],
                    batch=1000,
                    duration=cfg["duration"],
                    warmup=cfg["warmup"],
                    produce_options={"on": "loop"},
                    client=client,
                )
            except Exception as exc:
                log(f"    failed: {type(exc).__name__}: {exc}")
                r = {"error": f"{type(exc).__name__}: {exc}"}
            r["client"] = client
            r["run"] = i + 1
            if "error" not in r:
                r["loss_pct"] = (
                    100.0
                    * r["gap_rows"]
                    / max(1.0, r["gap_rows"] + r["total_rows"] * cfg["duration"])
                )
                log(
                    f"    {r['rows_per_sub']:,.0f} rows/s per subscriber, skipped "
                    f"{r['loss_pct']:.2f}%, server CPU {r['cpu']:.0f}%"
                )
            runs.append(r)
    for client in clients:
        mine = [r for r in runs if r["client"] == client and "error" not in r]
        kept_up = [r for r in mine if r["loss_pct"] <= 0.01]
        for r in mine:
            # Flagged: this run skipped rows while at least one other run kept up.
            r["flag"] = r["loss_pct"] > 0.01 and any(o is not r for o in kept_up)
    return {"config": cfg, "runs": runs}


# --------------------------------------------------------------------------- the tables


Key = tuple[str, int, str, int]


def _by(rows: list[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    return {
        (r.get("client", "light"), r["n"], r["variant"], r.get("repeat", 0)): r
        for r in rows
        if "error" not in r
    }


def _ns_per_row(r: dict[str, Any]) -> float:
    """Server CPU per delivered row, in ns (CPU % of a core over rows/s delivered, all
    subscribers together)."""
    return r["cpu"] * 1e7 / r["total_rows"] if r.get("total_rows") else math.nan


def target_rows(res: dict[str, Any]) -> list[tuple[str, str, dict[str, str]]]:
    """The issue's target table: (measure, N, {client: cell})."""
    clients = res["clients"]
    b, t = _by(res.get("batches", [])), _by(res.get("ticks", []))
    ns = sorted({k[1] for k in b} | {k[1] for k in t})
    reps = sorted({k[3] for k in b} | {k[3] for k in t})
    out: list[tuple[str, str, dict[str, str]]] = []

    def cell(table: dict[Key, dict[str, Any]], client: str, n: int, variant: str, what: str) -> str:
        pairs = [
            (table[(client, n, variant, k)], table[(client, n, "raw", k)])
            for k in reps
            if (client, n, variant, k) in table
            and table.get((client, n, "raw", k), {}).get("rows_per_sub")
        ]
        if not pairs:
            return "-"
        errors = sum(r.get("errors_run") or 0 for r, _ in pairs)
        tail = f", {errors:,} rows in error" if errors else ""
        if len(pairs) == 1:
            r, raw = pairs[0]
            ratio = r["rows_per_sub"] / raw["rows_per_sub"]
            if what == "cpu":
                a, c = _ns_per_row(r), _ns_per_row(raw)
                return f"{ratio:.2f} ({a:,.0f} / {c:,.0f} ns, {a / c:.2f}x){tail}"
            text = f"{ratio:.2f} ({r['rows_per_sub']:,.0f} / {raw['rows_per_sub']:,.0f})"
            return text + f", {r['loss_pct']:.1f} % skipped{tail}"
        ratios = [r["rows_per_sub"] / raw["rows_per_sub"] for r, raw in pairs]
        text = f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
        if what == "cpu":
            cpu = [_ns_per_row(r) / _ns_per_row(raw) for r, raw in pairs]
            return text + f", CPU/row {statistics.median(cpu):.2f}x{tail}"
        loss = [r["loss_pct"] for r, _ in pairs]
        return text + f", {statistics.median(loss):.1f} % skipped (max {max(loss):.1f}){tail}"

    for label, table, variant, what in (
        (
            "loop producer, 1,000-row batches: / raw (server CPU per row: ls / raw)",
            b,
            "livestream",
            "cpu",
        ),
        ("thread at raw's delivered rate: / raw, skipped", b, "livestream-thread", "loss"),
        (
            "single rows from a thread: / raw single rows, skipped",
            t,
            "livestream-thread-free",
            "loss",
        ),
        (
            'thread at max rate, overflow="wait": / raw, skipped',
            b,
            "livestream-thread-wait",
            "loss",
        ),
    ):
        for n in ns:
            out.append((label, str(n), {c: cell(table, c, n, variant, what) for c in clients}))
    lat = {(r["client"], r["variant"]): r for r in res.get("latency", []) if "error" not in r}
    for variant, label in (
        ("raw", "latency p50 / p99 ms, raw (1,000 rows/s, N = 10)"),
        ("livestream", "latency p50 / p99 ms, producer thread"),
        ("livestream-loop", "latency p50 / p99 ms, async producer on the loop"),
    ):
        cells = {}
        for c in clients:
            r = lat.get((c, variant))
            cells[c] = f"{r['p50']:.2f} / {r['p99']:.2f}" if r else "-"
        out.append((label, "10", cells))
    return out


def render(res: dict[str, Any], fmt: Callable[..., str], table: Callable[..., str]) -> str:
    parts = []
    clients = res["clients"]
    body = [[label, n, *(cells[c] for c in clients)] for label, n, cells in target_rows(res)]
    parts.append(
        "Issue 14: producer threads and loop producers against raw Tornado "
        "(ratios of rows/s per subscriber, same run, same client)\n"
        + table(["measure", "N", *(f"{c} client" for c in clients)], body)
    )
    rows = []
    for key in ("batches", "ticks"):
        for r in res.get(key, []):
            if "error" in r:
                rows.append(
                    [
                        key,
                        r.get("client", ""),
                        str(r["n"]),
                        r["variant"],
                        "failed: " + r["error"][:70],
                    ]
                    + [""] * 7
                )
                continue
            rows.append(
                [
                    key,
                    r["client"],
                    str(r["n"]),
                    r["variant"],
                    fmt(r["rows_per_sub"]),
                    fmt(r["min_rows_per_sub"]),
                    fmt(r["rows_per_frame"]),
                    fmt(r["cpu"]),
                    fmt(r["client_cpu"]),
                    fmt(_ns_per_row(r)),
                    fmt(r["loss_pct"], 2),
                    fmt(r.get("errors_run")),
                ]
            )
    parts.append(
        "Issue 14: every run\n"
        + table(
            [
                "rows",
                "client",
                "N",
                "variant",
                "rows/s/sub",
                "min/sub",
                "rows/frame",
                "server CPU%",
                "clients CPU%",
                "server ns/row",
                "skipped%",
                "errors",
            ],
            rows,
        )
    )
    return "\n\n".join(parts)


def render_bistable(res: dict[str, Any], fmt: Callable[..., str], table: Callable[..., str]) -> str:
    body = []
    for r in res["runs"]:
        if "error" in r:
            body.append([r["client"], str(r["run"]), "failed: " + r["error"][:70], "", "", ""])
            continue
        body.append(
            [
                r["client"],
                str(r["run"]),
                fmt(r["rows_per_sub"]),
                fmt(r["min_rows_per_sub"]),
                fmt(r["loss_pct"], 2),
                fmt(r["cpu"]),
                "SKIPPED WHERE OTHERS KEPT UP" if r.get("flag") else "",
            ]
        )
    summary = []
    for client in sorted({r["client"] for r in res["runs"]}):
        ok = [r for r in res["runs"] if r["client"] == client and "error" not in r]
        if ok:
            rates = [r["rows_per_sub"] for r in ok]
            summary.append(
                f"{client}: rows/s per subscriber median {statistics.median(rates):,.0f} "
                f"(min {min(rates):,.0f}, max {max(rates):,.0f}); runs with skips "
                f"{sum(r['loss_pct'] > 0.01 for r in ok)} of {len(ok)}; flagged "
                f"{sum(bool(r.get('flag')) for r in ok)}"
            )
    return (
        f"Bistability: async producer on the loop at full speed, N = {res['config']['n']}, "
        f"{res['config']['runs']} runs of {res['config']['duration']} s\n"
        + table(["client", "run", "rows/s/sub", "min/sub", "skipped%", "server CPU%", "flag"], body)
        + "\n"
        + "\n".join(summary)
    )


# --------------------------------------------------------------------------- docs tables


def markdown(paths: list[str]) -> str:
    """The target table of one or more runs (JSON files written by ``--json``) side by
    side, as Markdown: a column per (run, client). ``python -m benchmarks.issue14 A.json
    [B.json ...]``."""
    import json
    from pathlib import Path

    runs = [json.loads(Path(p).read_text()) for p in paths]
    names = [Path(p).stem for p in paths]
    columns: list[tuple[int, str]] = []
    tables = []
    for i, res in enumerate(runs):
        part = res.get("issue14")
        tables.append({(label, n): cells for label, n, cells in target_rows(part)} if part else {})
        for c in part["clients"] if part else []:
            columns.append((i, c))
    keys: list[tuple[str, str]] = []
    for t in tables:
        for k in t:
            if k not in keys:
                keys.append(k)
    head = ["measure", "N", *(f"{names[i]}, {c}" for i, c in columns)]
    lines = ["| " + " | ".join(head) + " |", "| --- | ---: |" + " ---: |" * len(columns)]
    for label, n in keys:
        cells = [tables[i].get((label, n), {}).get(c, "-") for i, c in columns]
        lines.append("| " + " | ".join([label, n, *cells]) + " |")
    out = ["\n".join(lines)]
    for name, res in zip(names, runs, strict=True):
        bi = res.get("bistable")
        if not bi:
            continue
        rows = ["| client | run | rows/s per subscriber | skipped % | server CPU % | flag |"]
        rows.append("| --- | ---: | ---: | ---: | ---: | --- |")
        for r in bi["runs"]:
            if "error" in r:
                rows.append(f"| {r['client']} | {r['run']} | failed | | | |")
                continue
            rows.append(
                f"| {r['client']} | {r['run']} | {r['rows_per_sub']:,.0f} | {r['loss_pct']:.2f} "
                f"| {r['cpu']:.0f} | {'skipped where others kept up' if r.get('flag') else ''} |"
            )
        out.append(f"Bistability, {name}:\n\n" + "\n".join(rows))
    return "\n\n".join(out)


if __name__ == "__main__":
    import sys

    print(markdown(sys.argv[1:]))
