"""Plot specs (livestream/plots.py) and the plot options of the widgets, without a browser.

A spec's ``item`` is Bokeh's own JSON; these tests read it back into Bokeh models
(``Document.from_json``) and check what the browser will get: the source and its columns,
the glyphs and the fields they draw, the axis type, the options; and that every mistake a
user can make is refused with a message that names the columns there are.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from bokeh.document import Document
from bokeh.layouts import column
from bokeh.models import ColumnDataSource, DatetimeAxis, GlyphRenderer, HoverTool, Legend
from bokeh.models.dom import Span as DomSpan
from bokeh.models.dom import ValueRef
from bokeh.models.glyphs import Line, Scatter, Segment, Step, VArea, VBar
from bokeh.plotting import figure

import livestream as ls
from livestream.errors import ConfigError
from livestream.plots import KINDS, OFFSET_COLUMN, OHLC_COLORS, OHLC_COLUMNS, custom_spec, plot_spec
from livestream.server import Server

SCHEMA = {"time": "float64", "price": "float64", "volume": "int64", "symbol": "str"}
SENSORS = {"time": "float64", "lab": "float64", "outdoor": "float64", "humidity": "float32"}


def document(spec: dict[str, Any]) -> Document:
    """The Bokeh document the browser will embed, rebuilt from the spec's JSON."""
    item = json.loads(json.dumps(spec))["item"]  # what travels: JSON only
    return Document.from_json(item["doc"])


def the_source(spec: dict[str, Any]) -> ColumnDataSource:
    source = document(spec).get_model_by_id(str(spec["source_id"]))
    assert isinstance(source, ColumnDataSource)
    return source


def glyphs(spec: dict[str, Any]) -> list[Any]:
    doc = document(spec)
    return [r.glyph for r in doc.select({"type": GlyphRenderer})]


def root(spec: dict[str, Any]) -> Any:
    return document(spec).roots[0]


def field(value: Any) -> Any:
    """A glyph property read back from JSON: its column name (a field spec) or its value."""
    name = getattr(value, "field", None)
    if isinstance(name, str):
        return name
    return getattr(value, "value", value)


# ----------------------------------------------------------------------------- every kind


GLYPHS = {
    "line": {Line},
    "scatter": {Scatter},
    "step": {Step},
    "area": {VArea, Line},
    "bar": {VBar},
    "ohlc": {Segment, VBar},
}


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_builds_an_empty_figure_with_its_glyphs(kind: str) -> None:
    spec = plot_spec("prices", SCHEMA, kind=kind)
    assert spec["kind"] == kind
    assert {type(g) for g in glyphs(spec)} == GLYPHS[kind]
    source = the_source(spec)
    assert all(len(v) == 0 for v in source.data.values()), "the figure starts empty"
    assert isinstance(root(spec).below[0], DatetimeAxis), "a time column makes a datetime axis"
    assert spec["x"] == "time"
    assert spec["rollover"] == 10_000
    json.dumps(spec, allow_nan=False)  # plain JSON, as the server sends it


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "ohlc"])
def test_several_y_columns_each_get_a_glyph_a_colour_and_a_legend_entry(kind: str) -> None:
    spec = plot_spec("sensors", SENSORS, y=["lab", "outdoor"], kind=kind)
    assert spec["y"] == ["lab", "outdoor"]
    assert spec["columns"] == {"time": "time", "lab": "lab", "outdoor": "outdoor"}
    assert set(the_source(spec).data) == {"time", "lab", "outdoor"}
    fields = {
        field(getattr(g, "y", None) or getattr(g, "top", None) or getattr(g, "y2", None))
        for g in glyphs(spec)
    }
    assert fields == {"lab", "outdoor"}
    colors = {field(getattr(g, "fill_color", None) or g.line_color) for g in glyphs(spec)}
    assert len(colors) == 2
    legend = document(spec).select_one({"type": Legend})
    assert [item.label["value"] for item in legend.items] == ["lab", "outdoor"]
    assert legend.click_policy == "hide"


@pytest.mark.parametrize("kind", ["line", "step", "area"])
def test_lines_of_large_windows_are_drawn_thin(kind: str) -> None:
    from livestream.plots import THIN_LINES_ABOVE

    def widths(window: int) -> set[float]:
        spec = plot_spec("s", SCHEMA, kind=kind, y="price", window=window)
        return {field(g.line_width) for g in glyphs(spec) if isinstance(g, Line | Step)}

    assert widths(THIN_LINES_ABOVE) == ({1.5} if kind == "area" else {2.0})
    assert widths(THIN_LINES_ABOVE + 1) == {1.0}


def test_default_y_is_every_numeric_column_but_x_and_one_y_has_no_legend() -> None:
    spec = plot_spec("sensors", SENSORS)
    assert spec["y"] == ["lab", "outdoor", "humidity"]
    one = plot_spec("prices", SCHEMA, y="price")
    assert one["y"] == ["price"]
    assert document(one).select_one({"type": Legend}) is None
    assert root(one).left[0].axis_label.text == "price"  # PlainText: never read as TeX


def test_without_a_time_column_x_is_the_row_offset() -> None:
    spec = plot_spec("counts", {"n": "int64", "v": "float64"})
    assert spec["x"] == OFFSET_COLUMN
    assert spec["columns"] == {OFFSET_COLUMN: OFFSET_COLUMN, "n": "n", "v": "v"}
    assert not isinstance(root(spec).below[0], DatetimeAxis)


def test_options_reach_the_figure() -> None:
    spec = plot_spec("prices", SCHEMA, y="price", window=500, height=180, title="ACME", webgl=True)
    fig = root(spec)
    assert fig.height == 180
    assert fig.title.text.text == "ACME"
    assert fig.output_backend == "webgl"
    assert spec["rollover"] == 500
    assert root(plot_spec("prices", SCHEMA, y="price")).output_backend == "canvas"
    hover = document(spec).select_one({"type": HoverTool})
    # A tooltip of DOM models (text children, ValueRef values), not an HTML template.
    values = [(v.field, v.format, v.formatter) for v in hover.tooltips.select({"type": ValueRef})]
    assert ("price", "0,0.[0000]", "numeral") in values
    assert "price:" in [c for s in hover.tooltips.select({"type": DomSpan}) for c in s.children]


# ----------------------------------------------------------------------------- ohlc


def test_ohlc_spec_draws_candles_from_a_bar_source() -> None:
    spec = plot_spec("prices", SCHEMA, kind="ohlc", interval=5_000, window=300)
    assert set(the_source(spec).data) == set(OHLC_COLUMNS)
    assert spec["columns"] == {"time": "time", "price": "close"}
    assert spec["x"] == "time" and spec["y"] == ["price"]
    assert spec["interval"] == 5_000
    assert spec["rollover"] == 300
    assert spec["colors"] == OHLC_COLORS
    (wick,) = [g for g in glyphs(spec) if isinstance(g, Segment)]
    (body,) = [g for g in glyphs(spec) if isinstance(g, VBar)]
    assert (field(wick.y0), field(wick.y1)) == ("high", "low")
    assert (field(body.top), field(body.bottom)) == ("open", "close")
    assert field(body.width) == pytest.approx(3_500)  # 70% of the interval, in ms
    assert field(body.fill_color) == "color" and field(wick.line_color) == "color"
    # Drawn at the middle of the bar's interval, while `time` stays the bar's start.
    assert field(body.x) == "time" and body.x.transform.value == pytest.approx(2_500)
    assert isinstance(root(spec).below[0], DatetimeAxis)


def test_ohlc_price_column_defaults_to_price_and_can_be_named() -> None:
    spec = plot_spec(
        "fx",
        {"t": "float64", "bid": "float64", "ask": "float64"},
        kind="ohlc",
        y="bid",
        interval=60_000,
    )
    assert spec["columns"] == {"t": "time", "bid": "close"}
    with pytest.raises(ValueError, match=r"no column 'price'.*bid \(float64\), ask \(float64\)"):
        plot_spec("fx", {"t": "float64", "bid": "float64", "ask": "float64"}, kind="ohlc")
    with pytest.raises(ValueError, match="one price column"):
        plot_spec(
            "fx",
            {"t": "float64", "bid": "float64", "ask": "float64"},
            kind="ohlc",
            y=["bid", "ask"],
        )
    with pytest.raises(ValueError, match="interval must be a positive number"):
        plot_spec("prices", SCHEMA, kind="ohlc", interval=0)
    with pytest.raises(ValueError, match="interval must be a positive number"):
        plot_spec("prices", SCHEMA, kind="ohlc", interval=float("nan"))


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"x": "nope"},
            r"x column 'nope' is not in the stream; available columns: time \(float64\)",
        ),
        ({"x": "symbol"}, r"x column 'symbol' has dtype 'str'.*available columns"),
        ({"y": "nope"}, r"y column 'nope' is not in the stream; available columns: time"),
        (
            {"y": ["price", "symbol"]},
            r"y column 'symbol' has dtype 'str', but a y column must be numeric",
        ),
        ({"y": []}, r"y is empty"),
        (
            {"kind": "pie"},
            r"kind 'pie' is not supported; use one of line, scatter, step, area, bar, ohlc",
        ),
        ({"window": 0}, r"window must be a positive number of rows, got 0"),
        ({"window": True}, r"window must be a positive number"),
        ({"height": 10}, r"height must be a whole number of pixels, at least 50; got 10"),
    ],
)
def test_mistakes_are_refused_naming_what_there_is(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plot_spec("prices", SCHEMA, **kwargs)


def test_a_stream_with_nothing_numeric_says_so() -> None:
    with pytest.raises(ValueError, match=r"no numeric column to plot besides x='time'.*pass y"):
        plot_spec("log", {"time": "float64", "line": "str"})
    with pytest.raises(ValueError, match="the stream has no columns yet"):
        plot_spec("empty", {}, y="v")


# ----------------------------------------------------------------------------- bring your own


def own_plot() -> tuple[Any, ColumnDataSource]:
    source = ColumnDataSource(data={"t": [], "p": []})
    top = figure(x_axis_type="datetime", height=200)
    top.line("t", "p", source=source)
    bottom = figure(x_range=top.x_range, height=100)
    bottom.scatter("t", "p", source=source)
    return column(top, bottom), source


def test_custom_spec_maps_stream_columns_to_the_source_in_a_layout() -> None:
    layout, source = own_plot()
    spec = custom_spec(
        layout, source, columns={"time": "t", "price": "p"}, window=2_000, schema=SCHEMA
    )
    assert spec["kind"] == "custom"
    assert spec["x"] is None and spec["y"] == []
    assert spec["columns"] == {"time": "t", "price": "p"}
    assert spec["rollover"] == 2_000
    assert the_source(spec).data == {"t": [], "p": []}
    assert len(document(spec).roots) == 1  # the whole layout, one root
    same_names = custom_spec(layout, source)
    assert same_names["columns"] == {"t": "t", "p": "p"}


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (
            {"time": "t", "price": "q"},
            r"source column 'q' is not in the ColumnDataSource; its columns are t, p",
        ),
        ({"time": "t"}, r"source column 'p' is not fed by any stream column"),
        (
            {"time": "t", "price": "t", "volume": "p"},
            r"source column 't' is fed by several stream columns \(time, price\)",
        ),
        (
            {"when": "t", "price": "p"},
            r"stream column 'when' \(in `columns`\) is not in the stream; available columns: time",
        ),
    ],
)
def test_custom_spec_refuses_a_mapping_that_cannot_work(
    columns: dict[str, str], message: str
) -> None:
    layout, source = own_plot()
    with pytest.raises(ValueError, match=message):
        custom_spec(layout, source, columns=columns, schema=SCHEMA)


def test_custom_spec_refuses_a_source_the_figure_does_not_use() -> None:
    layout, _ = own_plot()
    other = ColumnDataSource(data={"t": [], "p": []})
    with pytest.raises(ValueError, match="is not used by the figure"):
        custom_spec(layout, other)
    with pytest.raises(ValueError, match="must be a bokeh ColumnDataSource, got dict"):
        custom_spec(layout, {"t": []})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="window must be a positive number"):
        custom_spec(layout, own_plot()[1], window=-1)


# ----------------------------------------------------------------------------- the widgets' options


@pytest.fixture
def server() -> Iterator[Server]:
    server = Server("127.0.0.1", 0, token="plots-token-0123456789").start()
    yield server
    server.stop()


def test_live_plot_embeds_a_spec_when_the_schema_is_known(server: Server) -> None:
    prices = server.stream(
        "prices", schema={"time": "float64", "price": "float64", "volume": "int64"}
    )
    plot = ls.LivePlot(prices, kind="ohlc", interval=250, height=240)
    spec = plot.options["spec"]
    assert spec["kind"] == "ohlc" and spec["interval"] == 250
    assert plot.source_id == spec["source_id"]
    assert root(spec).height == 240
    assert root(spec).output_backend == "canvas"
    big = ls.LivePlot(prices, y="price", window=50_000).options["spec"]
    assert root(big).output_backend == "webgl", "windows over 20,000 points draw with WebGL"
    assert (
        root(
            ls.LivePlot(prices, y="price", window=50_000, webgl=False).options["spec"]
        ).output_backend
        == "canvas"
    )
    dashboard = ls.Dashboard(prices, kind="ohlc", interval=1_000)
    assert dashboard.options["spec"]["kind"] == "ohlc"
    assert dashboard.options["value"] == "price", "a market dashboard shows the last price"


def test_live_plot_without_a_schema_leaves_the_spec_to_the_browser(server: Server) -> None:
    later = server.stream("later")
    options = ls.LivePlot(later, kind="ohlc", interval=500, y="bid", window=30_000).options
    assert options == {
        "kind": "ohlc",
        "window": 30_000,
        "interval": 500,
        "webgl": True,
        "y": ["bid"],
    }


def test_live_plot_mistakes_are_config_errors_naming_the_columns(server: Server) -> None:
    prices = server.stream("prices", schema={"time": "float64", "price": "float64"})
    with pytest.raises(
        ConfigError,
        match=r"y column 'nope' is not in the stream; available columns: time \(float64\), price \(float64\)",
    ):
        ls.LivePlot(prices, y="nope")
    with pytest.raises(ConfigError, match="kind 'pie' is not supported"):
        ls.LivePlot(server.stream("later"), kind="pie")
    layout, source = own_plot()
    with pytest.raises(ConfigError, match="pass the `source`"):
        ls.LivePlot(prices, figure=layout)
    with pytest.raises(ConfigError, match="go with your own `figure`"):
        ls.LivePlot(prices, source=source)
    with pytest.raises(
        ConfigError, match=r"stream column 'volume' \(in `columns`\) is not in the stream"
    ):
        ls.LivePlot(prices, figure=layout, source=source, columns={"time": "t", "volume": "p"})
    mine = ls.LivePlot(prices, figure=layout, source=source, columns={"time": "t", "price": "p"})
    assert mine.options["spec"]["kind"] == "custom"


def test_the_plot_endpoint_passes_interval_and_height(server: Server) -> None:
    server.stream("prices", schema={"time": "float64", "price": "float64"})
    base = f"{server.base_url}/api/streams/prices/plot?token={server.token}"
    with urllib.request.urlopen(f"{base}&kind=ohlc&interval=250&height=200", timeout=10) as r:
        spec = json.loads(r.read())
    assert spec["kind"] == "ohlc" and spec["interval"] == 250
    assert root(spec).height == 200
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{base}&kind=ohlc&interval=-5", timeout=10)
    assert refused.value.code == 400
    body = json.loads(refused.value.read())
    assert "interval must be a positive number" in body["error"]["message"]


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("candlesticks", "ohlc"),
        ("Candlestick", "ohlc"),
        ("candles", "ohlc"),
        ("OHLC", "ohlc"),
        ("points", "scatter"),
        ("bars", "bar"),
        ("Line", "line"),
        ("step", "step"),
    ],
)
def test_the_names_people_use_for_kinds_are_accepted(name: str, kind: str) -> None:
    from livestream.plots import plot_spec

    spec = plot_spec("s", {"time": "float64", "price": "float64"}, kind=name)
    assert spec["kind"] == kind


def test_an_unknown_kind_names_the_options_and_a_close_one() -> None:
    from livestream.plots import plot_spec

    with pytest.raises(ValueError) as err:
        plot_spec("s", {"time": "float64", "price": "float64"}, kind="candelstick")
    message = str(err.value)
    assert "did you mean 'ohlc'" in message
    assert "line, scatter, step, area, bar, ohlc" in message
