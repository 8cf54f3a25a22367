"""The ``view`` message (issue 12) over a real server: a plain ``websockets`` peer decoding
frames by docs/protocol.md alone, and our Python client."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from test_views import _reference

import livestream as ls
from conftest import TOKEN

N = 1_000_000


def _feed(server: Any, n: int = N, name: str = "big") -> tuple[np.ndarray, np.ndarray]:
    stream = server.stream(name)
    t = np.arange(n, dtype=np.float64) * 1e-3  # one row per millisecond: 1,000 s
    y = np.sin(t / 7.0) + np.random.default_rng(3).normal(0, 0.01, n)
    y[654_321] = 50.0  # one spike
    for i in range(0, n, 200_000):
        stream.append(
            {
                "t": t[i : i + 200_000],
                "y": y[i : i + 200_000],
                "k": np.arange(i, min(n, i + 200_000)),
            }
        )
    return t, y


async def test_a_plain_websockets_peer_gets_views_as_the_protocol_document_says(
    server_factory: Any, ws_connect: Any
) -> None:
    server = server_factory(history=N)
    t, y = _feed(server)
    async with ws_connect(server) as peer:
        whole = await peer.request(
            {
                "type": "view",
                "stream": "big",
                "x": "t",
                "range": None,
                "width": 800,
                "columns": ["y"],
            }
        )
        assert whole["type"] == "view" and whole["binary"], whole
        name = whole["offsets_column"]
        assert name == "@offset"
        offsets = np.asarray(whole["columns"][name])
        want, exact = _reference(t, {"y": y}, 0, None, 800, 4 * 800)
        assert offsets.tolist() == want and whole["exact"] is exact is False
        assert 654_321 in offsets.tolist()  # the spike
        assert np.array_equal(whole["columns"]["y"], y[offsets])
        assert np.array_equal(whole["columns"]["k"], offsets)
        assert (whole["first"], whole["stop"], whole["end"], whole["buckets"]) == (0, N, N, 800)
        assert whole["epoch"] == server.stream("big").epoch

        # One second, zoomed in: every row of it, exactly, as JSON this time.
        sec = await peer.request(
            {
                "type": "view",
                "stream": "big",
                "x": "t",
                "range": [500.0, 501.0],
                "width": 1200,
                "columns": ["y"],
                "read": ["t", "y"],
                "format": "json",
            }
        )
        assert not sec.get("binary") and sec["exact"] is True
        assert sec["columns"][sec["offsets_column"]] == list(range(500_000, 501_001))
        assert sec["columns"]["y"] == y[500_000:501_001].tolist()
        assert set(sec["columns"]) == {"t", "y", "@offset"}

        # By offset instead of x.
        by_offset = await peer.request(
            {
                "type": "view",
                "stream": "big",
                "range": [10, 19],
                "width": 5,
                "columns": ["y"],
                "x": None,
            }
        )
        assert by_offset["columns"]["@offset"].tolist() == list(range(10, 20))
        await peer.ping()


async def test_a_newer_view_with_the_same_key_cancels_the_older(
    server_factory: Any, ws_connect: Any
) -> None:
    server = server_factory(history=N)
    _feed(server)
    async with ws_connect(server) as peer:
        # Sent together: the first (which must summarise a million rows) is still being
        # computed when the second arrives.
        first = {
            "type": "view",
            "stream": "big",
            "x": "t",
            "width": 600,
            "columns": ["y"],
            "key": "plot-1",
            "id": "a",
        }
        second = {**first, "range": [100.0, 200.0], "id": "b"}
        other = {**first, "key": "plot-2", "id": "c"}
        await peer.ws.send(json.dumps(first))
        await peer.ws.send(json.dumps(second))
        await peer.ws.send(json.dumps(other))
        replies = {}
        for _ in range(3):
            msg = await peer.expect(lambda m: m.get("id") in ("a", "b", "c"))
            replies[msg["id"]] = msg
        assert replies["a"] == {
            "type": "view",
            "stream": "big",
            "id": "a",
            "key": "plot-1",
            "cancelled": True,
        }
        assert replies["b"]["first"] == 100_000 and not replies["b"].get("cancelled")
        assert replies["c"]["first"] == 0 and not replies["c"].get("cancelled")


async def test_bad_views_get_clear_errors_and_the_connection_carries_on(
    server_factory: Any, ws_connect: Any
) -> None:
    server = server_factory()
    stream = server.stream("s")
    stream.append({"t": [0.0, 1.0, 2.0], "name": ["a", "b", "c"], "y": [1.0, 2.0, 3.0]})
    stream.append({"t": [1.5], "name": ["d"], "y": [0.0]})  # t goes back
    cases = [
        (
            {"width": 0, "columns": ["y"]},
            "bad_message",
            "`view` needs `width`, the plot's width in pixels",
        ),
        ({"width": 10**6, "columns": ["y"]}, "bad_message", "a whole number from 1 to 20000"),
        (
            {"width": 10, "columns": []},
            "bad_message",
            "`columns` must be a list of 1 to 32 column names",
        ),
        (
            {"width": 10, "columns": ["nope"]},
            "bad_message",
            "stream 's' has no column 'nope'; its columns: t, name, y",
        ),
        (
            {"width": 10, "columns": ["name"]},
            "bad_message",
            "column 'name' of stream 's' is str; a view summarises numeric columns only",
        ),
        (
            {"width": 10, "columns": ["y"], "read": ["zzz"]},
            "bad_message",
            "has no column 'zzz' to read",
        ),
        (
            {"width": 10, "columns": ["y"], "range": [5, 1]},
            "bad_message",
            "`range` must be [low, high]",
        ),
        (
            {"width": 10, "columns": ["y"], "range": [0, "x"]},
            "bad_message",
            "`range` must be [low, high]",
        ),
        (
            {"width": 10, "columns": ["y"], "x": 3},
            "bad_message",
            "`x` must be the name of the x column",
        ),
        (
            {"width": 10, "columns": ["y"], "x": "t", "range": [0, 2]},
            "bad_message",
            "column 't' of stream 's' decreases at offset 3",
        ),
    ]
    async with ws_connect(server) as peer:
        for fields, code, text in cases:
            reply = await peer.request({"type": "view", "stream": "s", **fields})
            assert reply["type"] == "error" and reply["code"] == code, (fields, reply)
            assert text in reply["message"], (fields, reply["message"])
        unknown = await peer.request(
            {"type": "view", "stream": "nope", "width": 10, "columns": ["y"]}
        )
        assert unknown["code"] == "unknown_stream"
        await peer.ping()
        ok = await peer.request({"type": "view", "stream": "s", "width": 10, "columns": ["y"]})
        assert ok["type"] == "view" and ok["columns"]["@offset"].tolist() == [0, 1, 2, 3]


async def test_views_in_flight_are_bounded_per_connection(
    server_factory: Any, ws_connect: Any
) -> None:
    server = server_factory(history=N)
    stream = server.stream("wide")
    cols = {f"y{i}": np.random.default_rng(i).normal(size=N) for i in range(6)}
    for i in range(0, N, 250_000):
        stream.append(
            {
                "t": np.arange(i, i + 250_000, dtype=np.float64),
                **{k: v[i : i + 250_000] for k, v in cols.items()},
            }
        )
    async with ws_connect(server) as peer:
        for i in range(6):  # each must summarise its own column first: slow enough to pile up
            await peer.ws.send(
                json.dumps(
                    {
                        "type": "view",
                        "stream": "wide",
                        "width": 300,
                        "columns": [f"y{i}"],
                        "key": f"k{i}",
                        "id": i,
                    }
                )
            )
        got = {}
        for _ in range(6):
            msg = await peer.expect(lambda m: isinstance(m.get("id"), int))
            got[msg["id"]] = msg
        limited = [i for i, m in got.items() if m["type"] == "error"]
        assert limited and all(got[i]["code"] == "rate_limited" for i in limited), got
        assert "views are being computed for this connection already" in got[limited[0]]["message"]
        assert all(got[i]["type"] == "view" for i in range(4))
        await peer.ping()


def test_the_python_client_asks_for_views(server_factory: Any) -> None:
    server = server_factory(history=N)
    t, y = _feed(server)
    with ls.connect(server.ws_url, token=TOKEN) as client:
        view = client.view("big", width=400, columns=["y"], x="t")
        want, _ = _reference(t, {"y": y}, 0, None, 400, 1600)
        assert view.offsets.tolist() == want and not view.exact
        assert np.array_equal(view.batch.columns["y"], y[view.offsets])
        near = client.view("big", width=400, columns=["y"], x="t", range=(654.3, 654.4), read=["y"])
        assert near.exact and list(near.batch.columns) == ["y"]
        assert near.offsets.tolist() == list(range(654_300, 654_401))
        assert near.batch.columns["y"].max() == 50.0
        with pytest.raises(ls.ServerError, match="has no column 'nope'"):
            client.view("big", width=10, columns=["nope"])
