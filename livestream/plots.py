"""Bokeh figures for live streams: the one place that decides how a stream looks as a plot.

:func:`plot_spec` builds an *empty* Bokeh figure for a stream and returns it as a JSON
"plot spec" that the browser module (``static/livestream.js``, ``embedPlot``) embeds with
``Bokeh.embed.embed_item`` and then feeds with ``ColumnDataSource.stream`` as column
batches arrive over the WebSocket. The standalone dashboard gets it from
``GET /api/streams/<name>/plot`` and the ``LivePlot`` widget from Python directly, so both
draw the same figure.

The plot spec is a plain JSON-serialisable dict::

    {
        "item": {...},                 # bokeh.embed.json_item(figure)
        "source_id": "p1234",          # id of the figure's ColumnDataSource
        "columns": {"time": "time", "price": "price"},   # stream column -> source column
        "rollover": 10000,             # rows kept in the browser (ColumnDataSource rollover)
        "x": "time",                   # the x column ("__offset__" for the row offset)
        "y": ["price"],
        "kind": "line",
    }

Kind ``"ohlc"`` draws candlesticks that the browser builds from a tick stream: its source has
the columns ``time`` (the bar's start), ``open``, ``high``, ``low``, ``close`` and ``color``
(:data:`OHLC_COLORS`), one row per bar, and the spec adds ``"interval"`` (x units per bar:
milliseconds on a time axis) and ``"colors"``. ``columns`` then names the two stream columns
read, ``{x: "time", price: "close"}``; ``rollover`` counts bars, not ticks. The browser folds
each tick into the newest bar (patching it in place) or starts a new one (streamed with
``rollover``), so one bar grows while ticks arrive.

A figure of your own (:func:`custom_spec`) gets the same spec with ``kind`` ``"custom"``,
``x`` ``None`` and ``y`` ``[]``: the browser streams into its one source, mapping each stream
column to the source column ``columns`` names, and leaves the figure's look alone.

When the stream has no time column and no ``x`` is given, the x axis is the row offset:
the source gets a column named ``"__offset__"`` (:data:`OFFSET_COLUMN`) that is not part of
the stream; the browser synthesises it from each batch's ``offset`` (row ``i`` of a batch
has offset ``batch.offset + i``), so x is the row's position in the stream, stable across
reconnects.

This module imports Bokeh but neither Tornado nor anything that does I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

from bokeh.embed import json_item
from bokeh.models import (
    AdaptiveTicker,
    BasicTicker,
    ColumnDataSource,
    DataRange1d,
    DatetimeTicker,
    HoverTool,
    PlainText,
)
from bokeh.models.annotations import Title
from bokeh.models.dom import Div, Span, ValueRef
from bokeh.models.renderers import GlyphRenderer
from bokeh.plotting import figure
from bokeh.transform import dodge

__all__ = [
    "KINDS",
    "KIND_ALIASES",
    "NUMERIC_DTYPES",
    "OFFSET_COLUMN",
    "OHLC_COLORS",
    "OHLC_COLUMNS",
    "TIME_COLUMNS",
    "custom_spec",
    "normalize_kind",
    "plot_spec",
]

#: The synthetic x column holding each row's stream offset (filled in by the browser).
OFFSET_COLUMN: Final = "__offset__"

#: Column names taken as the x axis, in this order of preference, when ``x`` is not given.
#: Their values are milliseconds since the Unix epoch (the protocol's time convention).
TIME_COLUMNS: Final = ("time", "timestamp", "t")

#: Schema dtypes that can be plotted as numbers.
NUMERIC_DTYPES: Final = frozenset(
    {
        "float64",
        "float32",
        "float16",
        "int64",
        "int32",
        "int16",
        "int8",
        "uint64",
        "uint32",
        "uint16",
        "uint8",
    }
)

#: Supported plot kinds.
KINDS: Final = ("line", "scatter", "step", "area", "bar", "ohlc")
#: Other names people use for the kinds (compared without case, ``-``, ``_`` or spaces).
KIND_ALIASES: Final = {
    "lines": "line",
    "timeseries": "line",
    "points": "scatter",
    "dots": "scatter",
    "markers": "scatter",
    "circle": "scatter",
    "steps": "step",
    "stairs": "step",
    "filled": "area",
    "bars": "bar",
    "column": "bar",
    "columns": "bar",
    "histogram": "bar",
    "candle": "ohlc",
    "candles": "ohlc",
    "candlestick": "ohlc",
    "candlesticks": "ohlc",
    "ohlcbars": "ohlc",
}


def normalize_kind(kind: object) -> str:
    """The kind ``kind`` names: one of :data:`KINDS` or a name people use for it
    (``"candlesticks"`` is ``"ohlc"``). Raises ValueError naming the kinds otherwise.

    >>> normalize_kind("Candlesticks")
    'ohlc'
    """
    if isinstance(kind, str):
        key = kind.strip().lower().replace("-", "").replace("_", "").replace(" ", "")
        if key in KINDS:
            return key
        if key in KIND_ALIASES:
            return KIND_ALIASES[key]
    import difflib

    close = difflib.get_close_matches(str(kind).lower(), [*KINDS, *KIND_ALIASES], n=1)
    hint = f" (did you mean {KIND_ALIASES.get(close[0], close[0])!r}?)" if close else ""
    raise ValueError(
        f"kind {kind!r} is not supported{hint}; use one of {', '.join(KINDS)} "
        f"(candlesticks are {'ohlc'!r})"
    )


#: Lines of plots whose window holds more points than this are drawn 1 px wide, not 2.
THIN_LINES_ABOVE: Final = 20_000

#: The columns of an ``"ohlc"`` plot's source, one row per bar (``time`` is the bar's start).
OHLC_COLUMNS: Final = ("time", "open", "high", "low", "close", "color")

#: Candle colours: a bar that closed at or above its open is ``up``.
OHLC_COLORS: Final = {"up": "#16a34a", "down": "#dc2626"}

# A palette that reads well on light and dark backgrounds (the figure is transparent).
_PALETTE: Final = (
    "#2563eb",
    "#f97316",
    "#16a34a",
    "#dc2626",
    "#9333ea",
    "#0891b2",
    "#ca8a04",
    "#db2777",
    "#4b5563",
    "#65a30d",
)

_FONT: Final = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
_MUTED_TEXT: Final = "#57606a"
_GRID: Final = "#d0d7de"


def _is_time(name: str, dtype: str) -> bool:
    return name in TIME_COLUMNS or dtype.startswith("datetime")


def _describe(schema: Mapping[str, str]) -> str:
    if not schema:
        return "the stream has no columns yet"
    return "available columns: " + ", ".join(f"{n} ({d})" for n, d in schema.items())


def _pick_x(schema: Mapping[str, str], x: str | None) -> str:
    if x is None:
        for name in TIME_COLUMNS:
            if name in schema:
                return name
        return OFFSET_COLUMN
    if x == OFFSET_COLUMN:
        return x
    if x not in schema:
        raise ValueError(
            f"x column {x!r} is not in the stream; {_describe(schema)}; "
            f"pass one of them as x, or x={OFFSET_COLUMN!r} for the row offset"
        )
    dtype = schema[x]
    if dtype not in NUMERIC_DTYPES and not _is_time(x, dtype):
        raise ValueError(
            f"x column {x!r} has dtype {dtype!r}, which cannot be plotted; "
            f"x must be numeric or a time column; {_describe(schema)}"
        )
    return x


#: Lines a plot draws when y is not given, and the most it draws when y is given.
DEFAULT_Y_COLUMNS = 12
MAX_Y_COLUMNS = 64


def _pick_y(schema: Mapping[str, str], x: str, y: str | Sequence[str] | None) -> list[str]:
    if y is None:
        ys = [
            name
            for name, dtype in schema.items()
            if name != x and dtype in NUMERIC_DTYPES and not _is_time(name, dtype)
        ]
        if not ys:
            raise ValueError(
                f"the stream has no numeric column to plot besides x={x!r}; "
                f"{_describe(schema)}; pass y explicitly"
            )
        # A wide stream (a publisher may send a thousand columns) gets its first lines,
        # not a thousand renderers that would take seconds to build and to draw.
        return ys[:DEFAULT_Y_COLUMNS]
    ys = [y] if isinstance(y, str) else list(y)
    if not ys:
        raise ValueError(f"y is empty; pass a column name or a list of them; {_describe(schema)}")
    if len(ys) > MAX_Y_COLUMNS:
        raise ValueError(
            f"a plot draws at most {MAX_Y_COLUMNS} y columns; got {len(ys)}; pass fewer, or "
            "use several plots"
        )
    for name in ys:
        if name not in schema:
            raise ValueError(f"y column {name!r} is not in the stream; {_describe(schema)}")
        if schema[name] not in NUMERIC_DTYPES:
            raise ValueError(
                f"y column {name!r} has dtype {schema[name]!r}, but a y column must be "
                f"numeric; {_describe(schema)}"
            )
    return ys


def _text(text: str) -> PlainText:
    """A label drawn as the text it is. Bokeh reads a plain string given as a title or an
    axis label for TeX delimiters (``$$...$$``, ``\\[...\\]``, ``\\(...\\)``); a column or
    stream name is a publisher's text, never markup."""
    return PlainText(text=text)


#: One tooltip row: (label, source column, format, Bokeh formatter).
_TooltipRow = tuple[str, str, str, Literal["numeral", "datetime"]]

#: The number format of tooltip values (numeral.js, as Bokeh's ``{0,0.[0000]}``).
_NUMBER: Final = "0,0.[0000]"


# Bokeh's own tooltip look (a two-column table, labels in its accent colour), as DOM styles.
_TOOLTIP_GRID: Final = {
    "display": "grid",
    "grid-template-columns": "auto auto",
    "column-gap": "6px",
    "row-gap": "2px",
}
_TOOLTIP_LABEL: Final = {"color": "#26aae1", "text-align": "right"}


def _tooltip(rows: Sequence[_TooltipRow]) -> Div:
    """A hover tooltip built from Bokeh DOM models, safe for any column name.

    Tooltips given as ``(label, "@{column}{format}")`` pairs are templates: BokehJS parses
    the template as HTML, and a column name holding ``}`` ends the field and turns the rest
    into markup (or script). Here a label is a string child of a DOM model, which BokehJS
    inserts as a text node, and a value is a :class:`~bokeh.models.dom.ValueRef`, which
    looks the column up by name and writes the formatted value as text: no name or value is
    ever parsed as HTML or as a template.
    """
    cells: list[Span] = []
    for label, column, fmt, formatter in rows:
        cells.append(Span(children=[f"{label}:"], style=_TOOLTIP_LABEL))
        cells.append(Span(children=[ValueRef(field=column, format=fmt, formatter=formatter)]))
    return Div(children=list(cells), style=_TOOLTIP_GRID)


def _time_ticker() -> DatetimeTicker:
    """Bokeh's datetime ticker with steps no more than 2x apart below an hour (it adds 2.5 ms
    and 3 s steps to 2 then 5). The browser asks for few ticks on a narrow plot; with Bokeh's
    2 -> 5 jump a sliding window then sometimes holds a single tick, which Bokeh's datetime
    formatter labels with the year alone."""
    ticker = DatetimeTicker()
    tickers = list(ticker.tickers)
    tickers[0] = AdaptiveTicker(mantissas=[1, 2, 2.5, 5], max_interval=500.0, num_minor_ticks=0)
    tickers[1] = AdaptiveTicker(
        mantissas=[1, 2, 3, 5, 10, 15, 20, 30],
        base=60,
        min_interval=1000.0,
        max_interval=1_800_000.0,
        num_minor_ticks=0,
    )
    ticker.tickers = tickers
    return ticker


def _style(fig: figure) -> None:
    fig.background_fill_color = None
    fig.border_fill_color = None
    fig.outline_line_color = None
    fig.min_border_left = 8
    fig.min_border_right = 12
    fig.min_border_top = 8
    fig.min_border_bottom = 8
    fig.toolbar.autohide = True
    fig.toolbar.logo = None
    for axis in (*fig.xaxis, *fig.yaxis):
        axis.axis_line_color = _GRID
        axis.major_tick_line_color = _GRID
        axis.minor_tick_line_color = None
        axis.major_label_text_color = _MUTED_TEXT
        axis.major_label_text_font = _FONT
        axis.major_label_text_font_size = "11px"
        axis.axis_label_text_color = _MUTED_TEXT
        axis.axis_label_text_font = _FONT
        axis.axis_label_text_font_size = "12px"
        axis.axis_label_text_font_style = "normal"
    for grid in (*fig.xgrid, *fig.ygrid):
        grid.grid_line_color = _GRID
        grid.grid_line_alpha = 0.6
        grid.grid_line_dash = [2, 3]
    fig.xgrid.grid_line_color = None
    if isinstance(fig.title, Title):
        fig.title.text_font = _FONT
        fig.title.text_font_size = "14px"
        fig.title.text_font_style = "bold"
        fig.title.text_color = _MUTED_TEXT


def _live_figure(
    stream: str, title: str | None, datetime_x: bool, height: int, webgl: bool, *, x_padding: float
) -> Any:
    """An empty figure whose ranges follow the data its source holds."""
    return figure(
        name=stream,
        title=Title(text=_text(title)) if title is not None else None,
        x_axis_type="datetime" if datetime_x else "linear",
        x_range=DataRange1d(range_padding=x_padding, only_visible=True),
        y_range=DataRange1d(range_padding=0.08, only_visible=True),
        sizing_mode="stretch_width",
        height=height,
        tools="pan,xwheel_zoom,box_zoom,reset,save",
        active_drag=None,
        active_scroll=None,
        toolbar_location="right",
        output_backend="webgl" if webgl else "canvas",
    )


def plot_spec(
    stream: str,
    schema: dict[str, str],
    *,
    x: str | None = None,
    y: str | list[str] | None = None,
    kind: str = "line",
    window: int = 10_000,
    title: str | None = None,
    webgl: bool = False,
    height: int = 320,
    interval: float = 1000,
) -> dict[str, object]:
    """Build an empty live figure for ``stream`` and return its plot spec (see the module doc).

    Args:
        stream: the stream's name (used for the figure's name and hover labels).
        schema: the stream's schema, ``{column: dtype}`` in column order.
        x: the x column. Default: the first of ``"time"``, ``"timestamp"``, ``"t"`` present
            (a datetime axis; values are ms since the epoch), else the row offset
            (``"__offset__"``, synthesised by the browser).
        y: one column or a list of columns. Default: every numeric column except x and
            time columns. Several columns get a legend (click an entry to hide it). For
            ``"ohlc"``: the one price column, default ``"price"``.
        kind: ``"line"``, ``"scatter"``, ``"step"``, ``"area"`` (filled down to 0),
            ``"bar"``, or ``"ohlc"`` (candlesticks built in the browser from ticks).
        window: how many of the newest rows the browser keeps (``rollover``); the x range
            follows the data in this window. For ``"ohlc"``: how many bars. Above 50,000
            rows (line, step, area, scatter; ``"ohlc"``: 1,000 bars) the browser draws
            views of the history instead of keeping the rows (static/overview.js).
        title: a title drawn above the plot; default none (the surrounding card or widget
            names the stream).
        webgl: draw with WebGL (the browser then also loads ``bokeh-gl.min.js``); worth it
            above roughly 10,000 points.
        height: the figure's height in pixels (its width follows its container).
        interval: ``"ohlc"`` only: the length of one bar in x units (milliseconds on a
            time axis); default 1000, one bar per second.

    Returns:
        ``{"item", "source_id", "columns", "rollover", "x", "y", "kind"}``, JSON-serialisable
        (plus ``"interval"`` and ``"colors"`` for ``"ohlc"``).

    Raises:
        ValueError: ``x`` or ``y`` is not a plottable column of ``schema`` (the message lists
            the available columns), ``kind`` is unknown, or ``window``, ``height`` or
            ``interval`` is not positive.

    Example::

        spec = plot_spec("prices", {"time": "float64", "price": "float64"}, window=5_000)
        bars = plot_spec("prices", {"time": "float64", "price": "float64"}, kind="ohlc",
                         interval=5_000, window=200)
    """
    kind = normalize_kind(kind)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive number of rows, got {window!r}")
    if isinstance(height, bool) or not isinstance(height, int) or height < 50:
        raise ValueError(f"height must be a whole number of pixels, at least 50; got {height!r}")
    if (
        isinstance(interval, bool)
        or not isinstance(interval, int | float)
        or not math.isfinite(interval)
        or interval <= 0
    ):
        raise ValueError(
            f"interval must be a positive number (x units per bar: ms on a time axis), "
            f"got {interval!r}"
        )
    if kind == "ohlc":
        return _ohlc_spec(
            stream,
            schema,
            x=x,
            y=y,
            window=window,
            title=title,
            webgl=webgl,
            height=height,
            interval=float(interval),
        )

    x_col = _pick_x(schema, x)
    y_cols = _pick_y(schema, x_col, y)
    datetime_x = x_col != OFFSET_COLUMN and _is_time(x_col, schema[x_col])

    source_columns = [x_col, *[c for c in y_cols if c != x_col]]
    source = ColumnDataSource(data={c: [] for c in source_columns}, name=f"{stream}:source")

    # No padding at the live edge: the rollover keeps the source to the last `window`
    # rows, so the view slides with the stream.
    fig = _live_figure(stream, title, datetime_x, height, webgl, x_padding=0.0)
    fig.xaxis.axis_label = None if datetime_x or x_col == OFFSET_COLUMN else _text(x_col)
    if datetime_x:
        fig.xaxis.ticker = _time_ticker()
    if x_col == OFFSET_COLUMN:
        for axis in fig.xaxis:
            axis.ticker = BasicTicker(min_interval=1)  # row numbers: no fractional ticks
    if len(y_cols) == 1:
        fig.yaxis.axis_label = _text(y_cols[0])

    several = len(y_cols) > 1
    # A 2-px line costs the browser several times a 1-px one to draw in software: at 100,000
    # points about 57 ms against 10 ms a repaint (docs/benchmarks.md, section 7).
    stroke = 1.0 if window > THIN_LINES_ABOVE else 2.0
    renderers: list[GlyphRenderer[Any]] = []
    for i, col in enumerate(y_cols):
        color = _PALETTE[i % len(_PALETTE)]
        legend: dict[str, Any] = {"legend_label": col} if several else {}
        if kind == "line":
            renderers.append(
                fig.line(x_col, col, source=source, color=color, line_width=stroke, **legend)
            )
        elif kind == "scatter":
            renderers.append(
                fig.scatter(x_col, col, source=source, color=color, size=5, alpha=0.75, **legend)
            )
        elif kind == "step":
            renderers.append(
                fig.step(
                    x_col,
                    col,
                    source=source,
                    color=color,
                    line_width=stroke,
                    mode="after",
                    **legend,
                )
            )
        elif kind == "area":
            fig.varea(
                x=x_col, y1=0, y2=col, source=source, fill_color=color, fill_alpha=0.18, **legend
            )
            renderers.append(
                fig.line(
                    x_col, col, source=source, color=color, line_width=min(stroke, 1.5), **legend
                )
            )
        else:  # bar
            if x_col == OFFSET_COLUMN:
                width: dict[str, Any] = {"width": 0.8}
            else:
                # The spacing of x values is unknown ahead of time: a fixed pixel width.
                width = {"width": 3, "width_units": "screen"}
            renderers.append(
                fig.vbar(
                    x=x_col,
                    top=col,
                    source=source,
                    fill_color=color,
                    line_color=None,
                    fill_alpha=0.55 if several else 0.85,
                    **width,
                    **legend,
                )
            )

    x_label = "time" if datetime_x else ("row" if x_col == OFFSET_COLUMN else x_col)
    x_row: _TooltipRow = (
        (x_label, x_col, "%F %T", "datetime")
        if datetime_x
        else (x_label, x_col, _NUMBER, "numeral")
    )
    hover = HoverTool(
        renderers=list(renderers),
        tooltips=_tooltip([x_row, *[(c, c, _NUMBER, "numeral") for c in y_cols]]),
        mode="vline" if kind in ("line", "step", "area") else "mouse",
    )
    fig.add_tools(hover)
    _style(fig)

    if several:
        # The browser module replaces this legend with an HTML one above the plot
        # (livestream.js, embedPlot's htmlLegend); this one, inside the frame, is for a
        # page that keeps BokehJS's own (htmlLegend: false) or renders the item itself.
        for legend_model in fig.legend:
            legend_model.update(
                location="top_left",
                click_policy="hide",
                orientation="horizontal",
                background_fill_alpha=0.75,
                border_line_color=None,
                label_text_font=_FONT,
                label_text_font_size="12px",
                label_text_color=_MUTED_TEXT,
                spacing=14,
                padding=4,
                margin=6,
                glyph_width=14,
            )

    return {
        "item": json_item(fig),
        "source_id": source.id,
        "columns": {c: c for c in source_columns},
        "rollover": window,
        "x": x_col,
        "y": y_cols,
        "kind": kind,
    }


def _pick_price(schema: Mapping[str, str], x: str, y: str | Sequence[str] | None) -> str:
    if y is None:
        if "price" not in schema:
            raise ValueError(
                f"an ohlc plot needs a price column: the stream has no column 'price'; "
                f"{_describe(schema)}; pass y=<the price column>"
            )
        return "price"
    ys = [y] if isinstance(y, str) else list(y)
    if len(ys) != 1:
        raise ValueError(
            f"an ohlc plot draws one price column; got y={ys!r}; pass one of "
            f"{', '.join(n for n, d in schema.items() if d in NUMERIC_DTYPES and n != x) or 'none'}"
        )
    return _pick_y(schema, x, ys)[0]


def _ohlc_spec(
    stream: str,
    schema: Mapping[str, str],
    *,
    x: str | None,
    y: str | Sequence[str] | None,
    window: int,
    title: str | None,
    webgl: bool,
    height: int,
    interval: float,
) -> dict[str, object]:
    x_col = _pick_x(schema, x)
    price = _pick_price(schema, x_col, y)
    if price == x_col:
        raise ValueError(f"the price column {price!r} is also x; pass another y")
    datetime_x = x_col != OFFSET_COLUMN and _is_time(x_col, schema[x_col])
    source = ColumnDataSource(data={c: [] for c in OHLC_COLUMNS}, name=f"{stream}:bars")
    fig = _live_figure(stream, title, datetime_x, height, webgl, x_padding=0.02)
    fig.yaxis.axis_label = _text(price)
    if datetime_x:
        fig.xaxis.ticker = _time_ticker()
    fig.xaxis.axis_label = None if datetime_x else _text("row" if x_col == OFFSET_COLUMN else x_col)
    # `time` is the bar's start; the candle is drawn centred on its interval.
    middle = dodge("time", interval / 2, range=fig.x_range)
    fig.segment(
        x0=middle, y0="high", x1=middle, y1="low", source=source, color="color", line_width=1
    )
    candles = fig.vbar(
        x=middle,
        width=interval * 0.7,
        top="open",
        bottom="close",
        source=source,
        fill_color="color",
        line_color="color",
        line_width=1,
    )
    x_row: _TooltipRow = (
        ("bar from", "time", "%F %T", "datetime")
        if datetime_x
        else (x_col, "time", _NUMBER, "numeral")
    )
    fig.add_tools(
        HoverTool(
            renderers=[candles],
            tooltips=_tooltip(
                [x_row, *[(c, c, _NUMBER, "numeral") for c in ("open", "high", "low", "close")]]
            ),
            mode="vline",
        )
    )
    _style(fig)
    return {
        "item": json_item(fig),
        "source_id": source.id,
        "columns": {x_col: "time", price: "close"},
        "rollover": window,
        "x": x_col,
        "y": [price],
        "kind": "ohlc",
        "interval": interval,
        "colors": dict(OHLC_COLORS),
    }


def custom_spec(
    figure: Any,
    source: ColumnDataSource,
    *,
    columns: Mapping[str, str] | None = None,
    window: int = 10_000,
    schema: Mapping[str, str] | None = None,
) -> dict[str, object]:
    """A plot spec for the user's own Bokeh ``figure`` (or layout) and ``source`` in it.

    ``columns`` maps stream columns to source columns (default: the source's own column
    names, each fed by the stream column of the same name); ``"__offset__"`` as a stream
    column is the row offset. The browser streams rows into ``source`` with
    ``rollover=window`` and leaves the figure's look as it is.

    One source per plot: every glyph that should move must draw from ``source`` (a layout
    such as ``column(price_fig, volume_fig)`` sharing it is fine). A second source in the
    figure stays as Python built it; for two streams, make two plots.

    Args:
        figure: a Bokeh figure or layout (anything :func:`bokeh.embed.json_item` takes).
        source: the ColumnDataSource, used by ``figure``, that the stream feeds. Every one of
            its columns must be fed (BokehJS keeps all columns the same length).
        columns: ``{stream column: source column}``.
        window: how many rows the browser keeps.
        schema: the stream's schema when known: stream columns are checked against it.

    Raises:
        ValueError: a source column is missing, not fed, or fed twice; a stream column is not
            in ``schema``; ``source`` is not part of ``figure``; ``window`` is not positive.

    Example::

        source = ColumnDataSource(data={"t": [], "p": []})
        fig = figure(x_axis_type="datetime")
        fig.line("t", "p", source=source)
        spec = custom_spec(fig, source, columns={"time": "t", "price": "p"})
    """
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive number of rows, got {window!r}")
    if not isinstance(source, ColumnDataSource):
        raise ValueError(
            f"source must be a bokeh ColumnDataSource, got {type(source).__name__}; pass the "
            "source your glyphs draw from"
        )
    have = ", ".join(source.data) or "none"
    mapping = dict(columns) if columns is not None else {c: c for c in source.data}
    if not mapping:
        raise ValueError(
            "nothing to stream: the source has no columns and no `columns` mapping was given; "
            "create it with empty columns, e.g. ColumnDataSource(data={'time': [], 'price': []})"
        )
    missing = [c for c in mapping.values() if c not in source.data]
    if missing:
        raise ValueError(
            f"source column {missing[0]!r} is not in the ColumnDataSource; its columns are "
            f"{have}: add it (e.g. data={{{missing[0]!r}: []}})"
        )
    fed = list(mapping.values())
    twice = sorted({c for c in fed if fed.count(c) > 1})
    if twice:
        raise ValueError(
            f"source column {twice[0]!r} is fed by several stream columns "
            f"({', '.join(k for k, v in mapping.items() if v == twice[0])}); map one to it"
        )
    unfed = [c for c in source.data if c not in fed]
    if unfed:
        raise ValueError(
            f"source column {unfed[0]!r} is not fed by any stream column (the mapping feeds "
            f"{', '.join(fed)}); streamed columns must all grow together: map a stream column "
            f"to it in `columns`, or drop it from the source"
        )
    if schema is not None:
        unknown = [c for c in mapping if c != OFFSET_COLUMN and c not in schema]
        if unknown:
            raise ValueError(
                f"stream column {unknown[0]!r} (in `columns`) is not in the stream; "
                f"{_describe(schema)}"
            )
    if source not in figure.references():
        raise ValueError(
            f"the source {source.name or source.id} is not used by the figure: pass the "
            "ColumnDataSource its glyphs draw from"
        )
    return {
        "item": json_item(figure),
        "source_id": source.id,
        "columns": mapping,
        "rollover": window,
        "x": None,
        "y": [],
        "kind": "custom",
    }
