"""Scenario 7, second half: the same rows pushed with Bokeh's ``push_notebook``.

A real JupyterLab (``jupyter lab`` on 127.0.0.1, its own token, its own temporary HOME and
Jupyter dirs) opens a notebook in Debian's Chromium. The notebook shows a Bokeh figure with
``show(fig, notebook_handle=True)`` (BokehJS inlined: ``output_notebook(resources=INLINE)``)
and then runs a loop that takes its orders from files the benchmark writes: for each step of a
ladder (offered rows/s x pushes/s) it calls ``source.stream(batch, rollover=100_000)`` and
``push_notebook(handle=handle)`` ``pushes`` times a second for ``warmup + seconds``.

Measured inside the page over the last ``seconds`` of each step, on the machine's one clock,
exactly as for the livestream page (``benchmarks/browser.py``): rows BokehJS streamed into the
plot's document (``ColumnsStreamed`` document events), animation frames
(``requestAnimationFrame`` callbacks), and the lag of the newest row at each ``stream``
(``Date.now()`` minus the row's append time). Recorded besides, to explain the figures: the
comm messages the page's kernel connection received (and their lag behind the kernel's
``header.date``), the time BokehJS spent in each ``apply_json_patch``, main-thread long tasks,
the kernel's time inside ``push_notebook``, and the Jupyter server's "IOPub message rate
exceeded" warnings. After each step the benchmark waits (bounded) until the page has applied
the last row pushed, and reports how long that took.

Each ``push_notebook`` with ``{time, price, volume}`` numpy columns is ``3 + 2 x 3 = 9`` comm
messages (header, metadata, content, then a header and a binary payload per column), all on
the IOPub channel, so the Jupyter server's default IOPub limit (1,000 messages/s over 3 s)
is reached at about 111 pushes/s whatever the batch size (earlier when the server's loop
falls behind and then handles a burst). A dropped message can leave BokehJS's ``Receiver``
out of step with the 9-part messages, after which nothing more reaches the plot (seen here:
``rows_lost`` equal to all rows pushed, in every later step).

``push_notebook`` in JupyterLab 4 and Notebook 7 needs the ``jupyter_bokeh`` extension: it
hands BokehJS the kernel (``Bokeh.embed.kernels``) on which the comm target is registered;
without it ``push_notebook`` sends comm messages that nothing in the page receives. It is not
a project dependency. Either install it where JupyterLab is, or, to leave that JupyterLab
untouched, into a prefix of its own and point ``LIVESTREAM_BENCH_JUPYTER_BOKEH`` at it::

    pip install --no-deps --prefix /tmp/jb jupyter_bokeh==4.1.0
    LIVESTREAM_BENCH_JUPYTER_BOKEH=/tmp/jb python -m benchmarks --scenarios notebook

The prefix is added to ``PYTHONPATH`` and ``JUPYTER_PATH`` of the JupyterLab process only.
When ``jupyter_bokeh``, JupyterLab or Chromium is missing the scenario says so and measures
nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

from .clients import CHROMIUM, CHROMIUM_ARGS
from .common import HOST, percentile

PREFIX_ENV = "LIVESTREAM_BENCH_JUPYTER_BOKEH"
ROLLOVER = 100_000
QUIET_MS = 3000  # no comm message for this long after the last push: nothing more will come

# Cell 1: the figure. Cell 2: the push loop, steered through files in CTL (bounded in time).
SETUP_CELL = """\
import json, os, time
import numpy as np
from bokeh.io import output_notebook, push_notebook, show
from bokeh.models import ColumnDataSource, Range1d
from bokeh.plotting import figure
from bokeh.resources import INLINE
output_notebook(resources=INLINE, hide_banner=True)  # BokehJS inlined: no CDN on this machine
source = ColumnDataSource(data={{"time": np.zeros(0), "price": np.zeros(0),
                                "volume": np.zeros(0, dtype=np.int64)}})
fig = figure(width=900, height=350, x_axis_type="datetime", y_range=Range1d(99, 101))
fig.line("time", "price", source=source)
handle = show(fig, notebook_handle=True)
with open({ctl!r} + "/comm.json", "w") as f:
    json.dump({{"comm_id": handle.comms.comm_id, "root_id": fig.id}}, f)"""

LOOP_CELL = """\
import traceback
CTL, ROLLOVER = {ctl!r}, {rollover!r}
quit_by = time.time() + {budget!r}  # never outlive the benchmark
rng = np.random.default_rng(1)

def run_step(rate, pushes, duration):
    batch = max(1, round(rate / pushes))
    interval = batch / rate
    price = 100 + np.cumsum(rng.normal(0, 0.01, batch * 8))
    volume = rng.integers(1, 1000, batch * 8, dtype=np.int64)
    n = late = 0
    in_push = push_max = 0.0
    start = time.time()
    end = start + duration
    due = time.monotonic()
    last = 0.0
    while time.time() < end:
        lo = (n % 8) * batch
        last = time.time() * 1000.0
        source.stream({{"time": np.full(batch, last), "price": price[lo:lo + batch],
                        "volume": volume[lo:lo + batch]}}, rollover=ROLLOVER)
        t = time.perf_counter()
        push_notebook(handle=handle)
        dt = time.perf_counter() - t
        in_push += dt
        push_max = max(push_max, dt)
        n += 1
        due += interval
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -1.0:  # more than a second behind: give up the backlog, count it
            late += 1
            due = time.monotonic()
    return {{"start": start, "stop": time.time(), "pushes": n, "rows": n * batch,
            "batch": batch, "last": last, "in_push_s": in_push, "push_max_s": push_max,
            "late": late, "comm_closed": bool(getattr(handle.comms, "_closed", False))}}

step = 0
try:
    while time.time() < quit_by:
        cmd_path = f"{{CTL}}/cmd-{{step}}.json"
        if not os.path.exists(cmd_path):
            time.sleep(0.05)
            continue
        with open(cmd_path) as f:
            cmd = json.load(f)
        if cmd.get("quit"):
            break
        result = run_step(cmd["rate"], cmd["pushes"], cmd["duration"])
        with open(f"{{CTL}}/done-{{step}}.tmp", "w") as f:
            json.dump(result, f)
        os.replace(f"{{CTL}}/done-{{step}}.tmp", f"{{CTL}}/done-{{step}}.json")
        step += 1
except BaseException:
    with open(f"{{CTL}}/error.txt", "w") as f:
        f.write(traceback.format_exc())
    raise"""

# Installed once the figure is in the page: records every ColumnsStreamed event, animation
# frame, comm message received by the notebook's kernel connection, apply_json_patch call and
# main-thread long task (page clock = machine clock).
PAGE_RECORDER = """
(commId) => {
  const w = window;
  if (w.__bench) return true;
  const docs = (w.Bokeh && w.Bokeh.documents) || [];
  const nb = w.jupyterapp && w.jupyterapp.shell.currentWidget;
  const kernel = nb && nb.sessionContext && nb.sessionContext.session &&
    nb.sessionContext.session.kernel;
  if (!docs.length || !kernel) return false;
  const b = w.__bench = {events: [], frames: [], comms: [], applies: [], long: [], newest: 0,
                         lastComm: Date.now(),
                         docs: docs.length, hasComm: kernel.hasComm(commId),
                         kernels: Object.keys(w.Bokeh.embed.kernels || {}).length};
  for (const doc of docs) {
    doc.on_change((ev) => {
      if (ev.kind !== "ColumnsStreamed") return;
      const t = ev.data.time;
      const n = t.length;
      const now = Date.now();
      b.events.push([now, n, n ? t[n - 1] : 0]);
      if (n && t[n - 1] > b.newest) b.newest = t[n - 1];
    });
    const apply = doc.apply_json_patch;
    doc.apply_json_patch = function (...args) {
      const t0 = performance.now();
      try { return apply.apply(this, args); }
      finally { b.applies.push([Date.now(), performance.now() - t0]); }
    };
  }
  kernel.anyMessage.connect((_, a) => {
    if (a.direction !== "recv" || a.msg.header.msg_type !== "comm_msg") return;
    b.lastComm = Date.now();
    b.comms.push([b.lastComm, Date.parse(a.msg.header.date)]);
  });
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries())
        b.long.push([performance.timeOrigin + e.startTime, e.duration]);
    }).observe({type: "longtask"});
  } catch (e) { b.long = null; }
  const tick = () => { b.frames.push(Date.now()); requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
  return true;
}
"""

# Takes (and clears) what the recorder holds; a function so that wait_for_function bounds it.
PAGE_TAKE = """
() => {
  const b = window.__bench;
  const out = {events: b.events, frames: b.frames, comms: b.comms, applies: b.applies,
               long: b.long, newest: b.newest};
  b.events = []; b.frames = []; b.comms = []; b.applies = []; b.long = b.long && [];
  return JSON.stringify(out);
}
"""


def _prefix() -> Path | None:
    value = os.environ.get(PREFIX_ENV)
    return Path(value) if value else None


def _prefix_paths(prefix: Path) -> tuple[str, str]:
    """(site-packages, share/jupyter) of a ``pip install --prefix`` directory."""
    site = sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)})
    return site, str(prefix / "share" / "jupyter")


def missing() -> str | None:
    """Why push_notebook cannot be measured here, or None when it can."""
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        return "JupyterLab is not installed"
    prefix = _prefix()
    if prefix is not None:
        site, share = _prefix_paths(prefix)
        if (
            not (Path(site) / "jupyter_bokeh").is_dir()
            or not (Path(share) / "labextensions" / "@bokeh" / "jupyter_bokeh").is_dir()
        ):
            return f"{PREFIX_ENV}={prefix} holds no jupyter_bokeh (pip install --prefix)"
    else:
        try:
            import jupyter_bokeh  # noqa: F401
        except ImportError:
            return (
                "the jupyter_bokeh extension is not installed: in JupyterLab 4 and Notebook 7 "
                "it is what registers push_notebook's comm target in the page (pip install "
                f"jupyter_bokeh, or pip install --prefix DIR and {PREFIX_ENV}=DIR)"
            )
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing"
    return None


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("jupyterlab", "jupyter_server", "ipykernel", "bokeh"):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    prefix = _prefix()
    if prefix is not None:
        site, _ = _prefix_paths(prefix)
        for meta in Path(site).glob("jupyter_bokeh-*.dist-info"):
            out["jupyter_bokeh"] = meta.name.removesuffix(".dist-info").split("-")[1]
    else:
        with contextlib.suppress(PackageNotFoundError):
            out["jupyter_bokeh"] = version("jupyter_bokeh")
    return out


def _lab_env(root: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "HOME": str(root / "home"),
        "JUPYTER_CONFIG_DIR": str(root / "config"),
        "JUPYTER_DATA_DIR": str(root / "data"),
        "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(root / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(root / "workspaces"),
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    }
    prefix = _prefix()
    if prefix is not None:
        site, share = _prefix_paths(prefix)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (site, env.get("PYTHONPATH")) if p)
        env["JUPYTER_PATH"] = os.pathsep.join(p for p in (share, env.get("JUPYTER_PATH")) if p)
    # No news toast, no update check: nothing in the page but the notebook.
    settings = root / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    return env


def _notebook(cells: list[str]) -> str:
    return json.dumps(
        {
            "cells": [
                {
                    "cell_type": "code",
                    "metadata": {},
                    "execution_count": None,
                    "outputs": [],
                    "source": c,
                }
                for c in cells
            ],
            "metadata": {
                "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
            },
            "nbformat": 4,
            "nbformat_minor": 5,
        }
    )


def _take(page: Any, timeout: float) -> dict[str, Any] | None:
    """The page's records, or None when the page cannot answer within ``timeout`` seconds."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        handle = page.wait_for_function(PAGE_TAKE, timeout=timeout * 1000, polling=100)
    except PlaywrightTimeout:
        return None
    return dict(json.loads(handle.json_value()))


def _wait_file(path: Path, timeout: float) -> bool:
    end = time.monotonic() + timeout
    error = path.parent / "error.txt"
    while not path.exists():
        if error.exists():
            raise RuntimeError(f"the notebook failed: {error.read_text()[-2000:]}")
        if time.monotonic() > end:
            return False
        time.sleep(0.1)
    return True


def _summarise(
    rec: dict[str, Any], done: dict[str, Any], *, rate: int, pushes: int, warmup: float
) -> dict[str, Any]:
    t0, t1 = (done["start"] + warmup) * 1000.0, done["stop"] * 1000.0
    span = max(1e-9, (t1 - t0) / 1000.0)

    def inside(rows: list[Any]) -> list[Any]:
        return [r for r in rows if t0 <= r[0] < t1]

    events, comms, applies = inside(rec["events"]), inside(rec["comms"]), inside(rec["applies"])
    frames = [f for f in rec["frames"] if t0 <= f < t1]
    lags = [e[0] - e[2] for e in events if e[1] and e[2] > 1e12]
    comm_lags = [c[0] - c[1] for c in comms if c[1] is not None]
    long = rec["long"]
    long_in = [d for s, d in (long or []) if t0 <= s < t1]
    applied = sum(e[1] for e in rec["events"] if e[0] >= done["start"] * 1000)
    return {
        "server": "push_notebook (JupyterLab)",
        "offered": rate,
        "pushes_per_s_offered": pushes,
        "batch": done["batch"],
        "appended_per_s": done["rows"] / max(1e-9, done["stop"] - done["start"]),
        "pushes_per_s": done["pushes"] / max(1e-9, done["stop"] - done["start"]),
        "rows_per_s": sum(e[1] for e in events) / span,
        "streams_per_s": len(events) / span,
        "fps": len(frames) / span,
        "lag_p50": percentile(lags, 50),
        "lag_p99": percentile(lags, 99),
        "lag_max": max(lags) if lags else float("nan"),
        "comm_msgs_per_s": len(comms) / span,
        "comm_lag_p50": percentile(comm_lags, 50),
        "comm_lag_p99": percentile(comm_lags, 99),
        "apply_ms_p50": percentile([a[1] for a in applies], 50),
        "apply_ms_max": max((a[1] for a in applies), default=float("nan")),
        "busy_long_tasks": (sum(long_in) / 1000.0 / span) if long is not None else None,
        "long_task_max_ms": max(long_in, default=0.0) if long is not None else None,
        "kernel_push_ms": 1000.0 * done["in_push_s"] / max(1, done["pushes"]),
        "kernel_push_max_ms": 1000.0 * done["push_max_s"],
        "kernel_late_resets": done["late"],
        "comm_closed_by_page": done["comm_closed"],
        "rows_pushed_total": done["rows"],
        "rows_applied_total": applied,
        "rows_lost": done["rows"] - applied,
        "newest_applied_is_last_pushed": rec["newest"] >= done["last"],
    }


def push_notebook_page(
    rates: list[int],
    *,
    seconds: float,
    warmup: float,
    log: Any,
    pushes: list[int] | tuple[int, ...] = (10, 100),
    drain: float = 30.0,
    iopub_msg_rate_limit: float | None = None,
) -> list[dict[str, Any]]:
    """One JupyterLab page, one kernel; a step per (rate, pushes/s), rates ascending.

    A step whose rows the page has not applied within ``drain`` seconds after the kernel
    stopped pushing ends the ladder: what follows would measure that backlog.
    ``iopub_msg_rate_limit`` overrides the Jupyter server's IOPub message limit (default
    1,000 messages/s; 0 turns it off); None keeps the default, what a user gets.
    """
    reason = missing()
    if reason is not None:
        log(f"  push_notebook: not measured: {reason}")
        return [{"server": "push_notebook", "error": reason}]
    from playwright.sync_api import sync_playwright

    steps = [(rate, p) for rate in sorted(rates) for p in sorted(pushes) if p <= rate]
    duration = warmup + seconds
    budget = 120 + len(steps) * (duration + drain + 15)
    rows: list[dict[str, Any]] = []
    info = versions()
    log(f"  push_notebook: {', '.join(f'{k} {v}' for k, v in info.items())}")
    with tempfile.TemporaryDirectory(prefix="lsb-nb-") as tmp:
        root = Path(tmp)
        ctl = root / "ctl"
        ctl.mkdir()
        (root / "nb").mkdir()
        (root / "nb" / "push.ipynb").write_text(
            _notebook(
                [
                    SETUP_CELL.format(ctl=str(ctl)),
                    LOOP_CELL.format(ctl=str(ctl), rollover=ROLLOVER, budget=float(budget)),
                ]
            )
        )
        token = secrets.token_hex(16)
        lab_log = root / "lab.log"
        with open(lab_log, "wb") as out:
            lab = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "jupyter",
                    "lab",
                    "--no-browser",
                    f"--ip={HOST}",
                    "--port=0",
                    f"--IdentityProvider.token={token}",
                    f"--ServerApp.root_dir={root / 'nb'}",
                    "--LabApp.expose_app_in_browser=True",
                    "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                    "--ServerApp.open_browser=False",
                    *(
                        [f"--ZMQChannelsWebsocketConnection.iopub_msg_rate_limit={limit}"]
                        if (limit := iopub_msg_rate_limit) is not None
                        else []
                    ),
                    *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=_lab_env(root),
            )
        console: list[str] = []
        base: str | None = None
        try:
            port = _lab_port(lab_log, lab, timeout=60)
            base = f"http://{HOST}:{port}"
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    page = browser.new_page(viewport={"width": 1280, "height": 900})
                    page.on(
                        "console",
                        lambda m: (
                            console.append(f"{m.type}: {m.text}"[:300])
                            if m.type in ("error", "warning")
                            else None
                        ),
                    )
                    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"[:300]))
                    page.goto(f"{base}/lab/tree/push.ipynb?token={token}", timeout=90_000)
                    page.wait_for_function(
                        "() => { const a = window.jupyterapp; const w = a && a.shell.currentWidget;"
                        " const k = w && w.sessionContext && w.sessionContext.session &&"
                        " w.sessionContext.session.kernel; return !!k && k.status === 'idle'; }",
                        timeout=120_000,
                        polling=250,
                    )
                    # Not awaited: the command's promise settles only when every cell has
                    # run, and the push loop's cell runs until the benchmark says "quit".
                    page.evaluate(
                        "() => { window.jupyterapp.commands.execute('notebook:run-all-cells');"
                        " return true; }"
                    )
                    if not _wait_file(ctl / "comm.json", 120):
                        raise TimeoutError("the notebook did not show the figure within 120 s")
                    comm = json.loads((ctl / "comm.json").read_text())
                    page.wait_for_function(
                        PAGE_RECORDER, arg=comm["comm_id"], timeout=60_000, polling=100
                    )
                    state = page.evaluate(
                        "() => ({docs: window.__bench.docs, hasComm: window.__bench.hasComm,"
                        " kernels: window.__bench.kernels})"
                    )
                    log(
                        f"  push_notebook: figure shown; {state['docs']} Bokeh document(s), "
                        f"Bokeh.embed.kernels has {state['kernels']} entr(y/ies), page holds "
                        f"the comm: {state['hasComm']}"
                    )
                    for i, (rate, per_s) in enumerate(steps):
                        log(
                            f"  push_notebook: {rate:,} rows/s offered, {per_s} pushes/s "
                            f"({max(1, round(rate / per_s))} rows a push)"
                        )
                        _take(page, 10)  # forget what came before this step
                        (ctl / f"cmd-{i}.json").write_text(
                            json.dumps({"rate": rate, "pushes": per_s, "duration": duration})
                        )
                        if not _wait_file(ctl / f"done-{i}.json", duration + 60):
                            raise TimeoutError("the notebook's push loop did not finish in time")
                        done = json.loads((ctl / f"done-{i}.json").read_text())
                        waited = time.monotonic()
                        drained = True
                        # Caught up: the last row pushed is in the plot, or no comm message
                        # came for QUIET ms (the Jupyter server dropped the rest: see
                        # rows_lost). A page still receiving, or frozen, is not.
                        try:
                            page.wait_for_function(
                                "([t, quiet]) => window.__bench.newest >= t ||"
                                " Date.now() - window.__bench.lastComm > quiet",
                                arg=[done["last"], QUIET_MS],
                                timeout=drain * 1000,
                                polling=200,
                            )
                        except Exception:
                            drained = False
                        drain_s = time.monotonic() - waited
                        rec = _take(page, 30)
                        if rec is not None and drained and rec["newest"] < done["last"]:
                            drain_s = max(0.0, drain_s - QUIET_MS / 1000)
                        if rec is None:
                            log("    the page did not answer within 30 s")
                            rows.append(
                                {
                                    "server": "push_notebook (JupyterLab)",
                                    "offered": rate,
                                    "pushes_per_s_offered": per_s,
                                    "error": "page unresponsive",
                                }
                            )
                            break
                        r = _summarise(rec, done, rate=rate, pushes=per_s, warmup=warmup)
                        r["drained"] = drained
                        r["drain_s"] = drain_s
                        r["iopub_limit_hits"] = _iopub_hits(lab_log)
                        r["iopub_msg_rate_limit"] = (
                            1000.0 if iopub_msg_rate_limit is None else iopub_msg_rate_limit
                        )
                        rows.append(r)
                        log(
                            f"    {r['rows_per_s']:,.0f} rows/s into the plot "
                            f"(pushed {r['appended_per_s']:,.0f}), {r['fps']:.1f} fps, "
                            f"lag p50 {r['lag_p50']:.0f} ms, p99 {r['lag_p99']:.0f} ms; "
                            f"{r['comm_msgs_per_s']:.0f} comm msgs/s in the page; apply p50 "
                            f"{r['apply_ms_p50']:.1f} ms; {r['rows_lost']:,} rows lost; caught up "
                            + (
                                f"{drain_s:.1f} s after the last push"
                                if drained
                                else f"NOT within {drain:.0f} s"
                            )
                            + f"; IOPub limit hits so far {r['iopub_limit_hits']}"
                        )
                        if not drained:
                            log("    the page is behind: the rest of the ladder is not run")
                            break
                        time.sleep(1.0)
                    (ctl / f"cmd-{len(rows)}.json").write_text(json.dumps({"quit": True}))
                    time.sleep(0.5)
                finally:
                    browser.close()
        finally:
            _stop_lab(lab, base, token)
            for line in console[:20]:
                log(f"    page console: {line}")
    for r in rows:
        r["versions"] = info
    return rows


def _iopub_hits(lab_log: Path) -> int:
    try:
        return lab_log.read_text(errors="replace").count("IOPub message rate exceeded")
    except OSError:
        return 0


def _lab_port(lab_log: Path, lab: subprocess.Popen[bytes], timeout: float) -> int:
    """The port JupyterLab bound (``--port=0``), read from its log: no free-port race."""
    end = time.monotonic() + timeout
    pattern = re.compile(rf"http://{re.escape(HOST)}:(\d+)/lab")
    while time.monotonic() < end:
        if lab.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {lab.returncode}")
        m = pattern.search(lab_log.read_text(errors="replace"))
        if m:
            return int(m.group(1))
        time.sleep(0.3)
    raise TimeoutError(f"jupyter lab did not start within {timeout:.0f} s")


def _stop_lab(lab: subprocess.Popen[bytes], base: str | None, token: str) -> None:
    """Shut the kernels and the server down; then end whatever of theirs is left."""
    import psutil

    try:
        family = psutil.Process(lab.pid).children(recursive=True)
    except psutil.Error:
        family = []
    if base is not None and lab.poll() is None:
        import urllib.request

        with contextlib.suppress(Exception):
            req = urllib.request.Request(
                f"{base}/api/shutdown",
                method="POST",
                headers={"Authorization": f"token {token}"},
            )
            urllib.request.urlopen(req, timeout=10).close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            lab.wait(15)
    if lab.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(lab.pid, signal.SIGTERM)
        try:
            lab.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(lab.pid, signal.SIGKILL)
            lab.wait(5)
    # Kernels run in sessions of their own (jupyter_client), outside the server's group.
    for child in family:
        with contextlib.suppress(psutil.Error):
            child.kill()
    psutil.wait_procs(family, timeout=5)
