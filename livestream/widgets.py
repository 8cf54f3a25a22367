"""Notebook widgets: live plots, tables, values, controls and status, as real ipywidgets.

Each widget is an ``anywidget.AnyWidget`` whose browser side (``static/widget.js`` and the
modules it imports, bundled as ``static/widget.bundle.js``, loaded once per page by
``static/loader.js``) opens the WebSocket to the livestream server itself: no kernel round
trip per update, so plots keep moving while a cell runs. Widgets compose with ipywidgets'
``VBox``/``HBox``; all widgets of a page share one socket per server.

::

    prices = ls.stream("prices")
    ls.LivePlot(prices, y="price")                 # a live Bokeh line plot
    ls.Dashboard(prices, x="time", y="price")      # plot + value + table + controls + status

``stream`` may be a :class:`~livestream.streams.Stream` (of the default server or any running
:class:`~livestream.server.Server`) or a stream name with ``url=`` and ``token=`` of a
standalone server (``livestream serve``).

How the page reaches the server (``route=``, default the ``LIVESTREAM_ROUTE`` environment
variable, else ``"auto"``): ``"direct"`` to the server's own host and port; ``"proxy"``
through jupyter-server-proxy under the Jupyter base URL (JupyterHub, remote or https
Jupyter); ``"relay"`` through the widget's comm and the kernel (VS Code, Colab; nothing moves
while the kernel is busy). ``"auto"`` takes the first that works, in that order; the widget's
``route`` says which one it uses. See docs/jupyter-routes.md.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anywidget
import traitlets

from .errors import ConfigError
from .relay import Relay
from .streams import Stream

__all__ = [
    "ROUTES",
    "Controls",
    "Dashboard",
    "LivePlot",
    "LiveTable",
    "LiveValue",
    "LiveWidget",
    "Status",
]

_STATIC = Path(__file__).parent / "static"

#: What ``route=`` (and ``LIVESTREAM_ROUTE``) may say: ``auto`` tries the others in order.
ROUTES = ("auto", "direct", "proxy", "relay")


def _route(route: str | None) -> str:
    """The route a widget asks for: ``route``, else ``LIVESTREAM_ROUTE``, else ``auto``."""
    source = "route="
    if route is None:
        route, source = os.environ.get("LIVESTREAM_ROUTE", "").strip() or "auto", "LIVESTREAM_ROUTE"
    value = route.strip().lower()
    if value not in ROUTES:
        raise ConfigError(
            f"{source} must be one of {', '.join(ROUTES)}; got {route!r}. "
            "Use 'auto' to let the widget find the first route that works."
        )
    return value


def _module_source() -> str:
    """The widget bundle: widget.js and the modules it imports, built by js/build.mjs."""
    return (_STATIC / "widget.bundle.js").read_text("utf-8")


def _loader_source() -> str:
    """Every model's ``_esm``: static/loader.js, which imports the bundle and the stylesheet
    once per page (from the server, its Jupyter proxy, or through the comm), so a page and a
    saved notebook carry a few KB per widget instead of the whole code and CSS."""
    files = (_STATIC / "widget.bundle.js").read_bytes() + (_STATIC / "livestream.css").read_bytes()
    version = hashlib.sha256(files).hexdigest()[:16]
    source = (_STATIC / "loader.js").read_text("utf-8").replace("__LIVESTREAM_BUNDLE__", version)
    # Its comments stay in the file: every model carries the code alone.
    source = re.sub(r"^\s*/\*\*.*?\*/\n", "", source, flags=re.S | re.M)
    return "".join(line for line in source.splitlines(True) if not line.lstrip().startswith("//"))


def _hot_reload() -> bool:
    """``ANYWIDGET_HMR=1``: contributors' hot reload (docs/notebooks.md). The models then carry
    the bundle and stylesheet as files, which anywidget watches and pushes on every change."""
    return os.environ.get("ANYWIDGET_HMR") == "1"


def _endpoint(
    stream: Stream | str, url: str | None, token: str | None
) -> tuple[str, str, str, Any]:
    """(stream name, http base URL, token, server or None) for what the user passed."""
    if isinstance(stream, Stream):
        server = stream.server
        if server is None or server.port is None:
            raise ConfigError(
                f"stream {stream.name!r} is not served: create it with ls.stream() or "
                "Server.stream() on a running server"
            )
        return stream.name, url or server.base_url, token or server.token, server
    if not isinstance(stream, str):
        raise ConfigError(f"stream must be a Stream or a stream name; got {type(stream).__name__}")
    if url is None:
        from .jupyter import serve

        server = serve()
        return stream, server.base_url, token or server.token, server
    parts = urlsplit(url)
    if token is None:
        token = (parse_qs(parts.query).get("token") or [""])[0]
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/")
    if path.endswith("/ws"):
        path = path[:-3]
    return stream, f"{scheme}://{parts.netloc}{path}", token or "", None


class LiveWidget(anywidget.AnyWidget):
    """Base of the livestream widgets (one browser module renders every ``kind``).

    ``status`` ("connecting", "open", "reconnecting", "error", "closed"), ``message`` and
    ``route`` (the route in use: "direct", "proxy" or "relay") are reported by the browser;
    ``requested_route`` is the ``route=`` asked for (see the module docstring).
    """

    if _hot_reload():
        _esm: Any = _STATIC / "widget.bundle.js"
        _css: Any = _STATIC / "livestream.css"
    else:
        # The loader, not the code: the code is loaded once per page (see _loader_source).
        _esm = traitlets.Unicode(_loader_source()).tag(sync=True)
        _css = traitlets.Unicode("").tag(sync=True)

    kind = traitlets.Unicode("").tag(sync=True)
    url = traitlets.Unicode("").tag(sync=True)
    token = traitlets.Unicode("").tag(sync=True)
    stream = traitlets.Unicode("").tag(sync=True)
    options = traitlets.Dict().tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)
    message = traitlets.Unicode("").tag(sync=True)
    route = traitlets.Unicode("").tag(sync=True)
    requested_route = traitlets.Unicode("auto").tag(sync=True)

    def __init__(
        self,
        stream: Stream | str = "",
        *,
        url: str | None = None,
        token: str | None = None,
        options: Mapping[str, Any] | None = None,
        route: str | None = None,
        **kwargs: Any,
    ) -> None:
        requested = _route(route)
        name, base, tok, server = _endpoint(stream, url, token)
        self._server = server
        super().__init__(
            stream=name,
            url=base,
            token=tok,
            options=dict(options or {}),
            kind=self._kind,
            requested_route=requested,
            **kwargs,
        )
        # The kernel's end of the relay route, and of "admit this page" for the proxy route.
        self._relay = Relay(
            server, tok, lambda content, buffers: self.send(content, buffers), url=base
        )
        self.on_msg(self._relay.handle)

    def close(self) -> None:
        """Close the widget, and any relay session its views had open."""
        relay = getattr(self, "_relay", None)
        if relay is not None:
            relay.close()
        super().close()

    _kind = ""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} stream={self.stream!r} url={self.url!r} status={self.status!r}>"


#: Windows above this many points are drawn with WebGL unless ``webgl`` says otherwise.
_WEBGL_THRESHOLD = 20_000


def _plot_options(
    stream: Stream | str,
    *,
    x: str | None,
    y: str | Sequence[str] | None,
    kind: str,
    window: int,
    title: str | None,
    webgl: bool | None,
    figure: Any,
    source: Any,
    columns: Mapping[str, str] | None,
    height: int | None,
    interval: float | None,
) -> dict[str, Any]:
    """The ``options`` of a plot view: a ready plot spec when the schema is known (errors
    surface in Python, at once), else what the browser asks the server's plot endpoint for
    once the stream has rows."""
    from . import plots

    schema = stream.schema if isinstance(stream, Stream) else None
    try:
        if figure is not None:
            if source is None:
                raise ConfigError(
                    "with your own `figure`, pass the `source` (its ColumnDataSource) too"
                )
            return {
                "spec": plots.custom_spec(
                    figure, source, columns=columns, window=window, schema=schema or None
                )
            }
        if source is not None or columns is not None:
            raise ConfigError("`source` and `columns` go with your own `figure`; pass figure= too")
        use_webgl = bool(webgl) if webgl is not None else window > _WEBGL_THRESHOLD
        extra: dict[str, Any] = {}
        if height is not None:
            extra["height"] = height
        if interval is not None:
            extra["interval"] = interval
        if schema:
            y_list = [y] if isinstance(y, str) else (list(y) if y is not None else None)
            spec = plots.plot_spec(
                stream.name if isinstance(stream, Stream) else str(stream),
                schema,
                x=x,
                y=y_list,
                kind=kind,
                window=window,
                title=title,
                webgl=use_webgl,
                **extra,
            )
            return {"spec": spec}
        kind = plots.normalize_kind(kind)  # "candlesticks" is "ohlc"; others are refused
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    # Schema not known yet (no rows): the browser fetches the spec once rows exist.
    opts: dict[str, Any] = {"kind": kind, "window": window, **extra}
    if use_webgl:
        opts["webgl"] = True
    if title:
        opts["title"] = title
    if x:
        opts["x"] = x
    if y:
        opts["y"] = [y] if isinstance(y, str) else list(y)
    return opts


class LivePlot(LiveWidget):
    """A live Bokeh plot of a stream.

    ``kind``: ``line``, ``scatter``, ``step``, ``area``, ``bar`` or ``ohlc`` (candlesticks
    built in the browser from a tick stream, ``interval`` ms per bar, ``y`` the price
    column); ``x`` defaults to a time column (a datetime axis that follows the newest data),
    ``y`` to every numeric column; ``window`` is how many points (for ``ohlc``: bars) the
    plot shows: up to 50,000 (``ohlc``: 1,000 bars) the browser keeps them all
    (``rollover``), above it draws the server's views of the visible x-range at its pixel
    width and the new rows after them, so ``window=10_000_000`` works (give the stream a
    ``history`` that long; docs/explanation.md, "Large windows"); ``webgl`` defaults to on
    for windows over 20,000 points (the browser draws with canvas where WebGL runs in
    software); ``height`` is in pixels.

    Bring your own plot: pass ``figure`` (any Bokeh figure or layout) and ``source`` (the
    ColumnDataSource its glyphs draw from) and ``columns`` ({stream column: source
    column}); the stream's rows are streamed into that one source, and the figure keeps
    its own look::

        source = ColumnDataSource(data={"t": [], "p": []})
        fig = figure(x_axis_type="datetime", height=250)
        fig.line("t", "p", source=source)
        ls.LivePlot(prices, figure=fig, source=source, columns={"time": "t", "price": "p"})

    Raises:
        ConfigError: a column that is not in the stream (the message lists those that
            are), an unknown ``kind``, or a ``figure`` without its ``source``.
    """

    _kind = "plot"

    def __init__(
        self,
        stream: Stream | str,
        *,
        x: str | None = None,
        y: str | Sequence[str] | None = None,
        kind: str = "line",
        window: int = 10_000,
        title: str | None = None,
        webgl: bool | None = None,
        height: int | None = None,
        interval: float | None = None,
        figure: Any = None,
        source: Any = None,
        columns: Mapping[str, str] | None = None,
        url: str | None = None,
        token: str | None = None,
        **kwargs: Any,
    ) -> None:
        options = _plot_options(
            stream,
            x=x,
            y=y,
            kind=kind,
            window=window,
            title=title,
            webgl=webgl,
            figure=figure,
            source=source,
            columns=columns,
            height=height,
            interval=interval,
        )
        super().__init__(stream, url=url, token=token, options=options, **kwargs)

    @property
    def source_id(self) -> str | None:
        """The id of the plot's ColumnDataSource (also the view's ``data-source-id``)."""
        spec = self.options.get("spec")
        return spec.get("source_id") if isinstance(spec, dict) else None


class LiveTable(LiveWidget):
    """The newest ``rows`` rows of a stream, newest first, formatted by dtype.

    ``columns`` picks and orders the columns (default: all of them). The table scrolls
    sideways inside its box when its columns are wider than the cell; with ``height`` (in
    pixels) it also scrolls down within that height, the header row staying in view.
    """

    _kind = "table"

    def __init__(
        self,
        stream: Stream | str,
        *,
        rows: int = 20,
        columns: Sequence[str] | None = None,
        height: int | None = None,
        url: str | None = None,
        token: str | None = None,
        **kwargs: Any,
    ) -> None:
        if height is not None and (
            isinstance(height, bool) or not isinstance(height, int) or height < 50
        ):
            raise ConfigError(
                f"height must be a whole number of pixels, at least 50; got {height!r}. "
                "Leave it out to show every row."
            )
        options: dict[str, Any] = {"rows": rows}
        if columns:
            options["columns"] = list(columns)
        if height is not None:
            options["height"] = height
        super().__init__(stream, url=url, token=token, options=options, **kwargs)


#: What ``alarm_above`` / ``alarm_below`` take: a number, or a declared parameter's name.
_Threshold = float | str | None


def _threshold(stream: Stream | str, name: str, value: _Threshold) -> float | str | None:
    """A LiveValue threshold as the browser takes it; a parameter name is checked against the
    stream's declared parameters when the stream is known here."""
    if value is None:
        return None
    if isinstance(value, str):
        if not isinstance(stream, Stream):
            return value  # a stream of another server: its parameters are not known here
        declared = stream.controls.params
        param = declared.get(value)
        numeric = {n for n, p in declared.items() if p.kind in ("float", "int")}
        if param is None or value not in numeric:
            problem = (
                f"names no parameter of stream {stream.name!r}"
                if param is None
                else f"is a {param.kind} parameter of stream {stream.name!r}, not a number"
            )
            what = (
                f"its numeric parameters are {', '.join(sorted(numeric))}"
                if numeric
                else "it declares no numeric parameter"
            )
            fix = (
                f"declare it, e.g. @stream.producer(params={{{value!r}: ls.Float(...)}})"
                if param is None
                else "name a numeric parameter"
            )
            raise ConfigError(f"{name}={value!r} {problem}; {what}. Pass a number, or {fix}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(
            f"{name} must be a finite number or the name of a declared parameter; got {value!r}"
        )
    return float(value)


class LiveValue(LiveWidget):
    """The newest value of one column, big, with its change, direction and a sparkline.

    ``column`` defaults to the first numeric column that is not a time; ``digits`` fixes
    the number's fraction digits (the change shows more when it would otherwise read 0).

    Alarms: with ``alarm_above`` (or ``alarm_below``) the value turns red, with an "Alarm"
    chip, while its newest value is above (below) the threshold. A threshold is a number, or
    the name of a declared parameter of the stream: it then follows that parameter live, so
    moving its slider in any viewer's :class:`Controls`, or ``stream.set(...)``, moves the
    alarm::

        @lab.producer(every=0.5, params={"max_temp": ls.Float(25.0, min=0, max=50)})
        def read(params): ...

        ls.LiveValue(lab, "temp", alarm_above="max_temp", alarm_below=5)

    The browser view marks the alarm in ``data-alarm`` ("high" or "low").

    Raises:
        ConfigError: a threshold that is neither a finite number nor the name of a numeric
            parameter the stream declared (the message lists those it has).
    """

    _kind = "value"

    def __init__(
        self,
        stream: Stream | str,
        column: str | None = None,
        *,
        label: str | None = None,
        digits: int | None = None,
        alarm_above: _Threshold = None,
        alarm_below: _Threshold = None,
        url: str | None = None,
        token: str | None = None,
        **kwargs: Any,
    ) -> None:
        options = {
            k: v
            for k, v in {
                "column": column,
                "label": label,
                "digits": digits,
                "alarmAbove": _threshold(stream, "alarm_above", alarm_above),
                "alarmBelow": _threshold(stream, "alarm_below", alarm_below),
            }.items()
            if v is not None
        }
        super().__init__(stream, url=url, token=token, options=options, **kwargs)


class Controls(LiveWidget):
    """Pause/resume and the producer's declared parameters and actions, kept in step with
    every other viewer through the broadcast state."""

    _kind = "controls"

    def __init__(
        self,
        stream: Stream | str,
        *,
        url: str | None = None,
        token: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(stream, url=url, token=token, **kwargs)


class Status(LiveWidget):
    """Connection and producer status, rows/s and lag."""

    _kind = "status"

    def __init__(
        self,
        stream: Stream | str,
        *,
        compact: bool = False,
        url: str | None = None,
        token: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(stream, url=url, token=token, options={"compact": compact}, **kwargs)


class Dashboard(LiveWidget):
    """Plot, big value, table, controls and status for one stream, in one call.

    Plot options as for :class:`LivePlot` (``kind="ohlc"`` with ``interval`` for a market
    feed); ``rows``: table rows; ``value``: the column of the big number (default: the
    plot's first y).
    """

    _kind = "dashboard"

    def __init__(
        self,
        stream: Stream | str,
        *,
        x: str | None = None,
        y: str | Sequence[str] | None = None,
        kind: str = "line",
        window: int = 10_000,
        rows: int = 10,
        value: str | None = None,
        title: str | None = None,
        interval: float | None = None,
        height: int | None = None,
        url: str | None = None,
        token: str | None = None,
        **kwargs: Any,
    ) -> None:
        options = _plot_options(
            stream,
            x=x,
            y=y,
            kind=kind,
            window=window,
            title=title,
            webgl=None,
            figure=None,
            source=None,
            columns=None,
            height=height,
            interval=interval,
        )
        options["rows"] = rows
        if value:
            options["value"] = value
        elif kind == "ohlc":
            # The big number of a market feed is its last price, not its volume.
            options["value"] = y if isinstance(y, str) else (y[0] if y else "price")
        super().__init__(stream, url=url, token=token, options=options, **kwargs)
