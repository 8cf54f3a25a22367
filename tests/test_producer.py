"""Producers: plain functions, generators and coroutines feeding streams, steered by controls."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support import wait_until

from livestream import ConfigError, Float, Int, Producer, Server, Stream
from livestream.producer import Schedule


@pytest.fixture
def make_stream() -> Iterator[Callable[..., Stream]]:
    """Streams without a server; every producer attached to one is stopped at teardown."""
    made: list[Stream] = []

    def make(name: str = "s", **options: Any) -> Stream:
        stream = Stream(name, **options)
        made.append(stream)
        return stream

    yield make
    for stream in made:
        if stream._producer is not None:
            stream._producer.stop()


def values(stream: Stream, column: str) -> list[Any]:
    return stream.read(0).columns[column].tolist() if stream.end else []


def producer_threads(stream: Stream) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"livestream-producer-{stream.name}"]


# --------------------------------------------------------------------------- kinds of producer


def test_a_plain_function_is_called_every_n_seconds(make_stream: Callable[..., Stream]) -> None:
    stream = make_stream(params={"k": Int(3)})
    received: list[Any] = []
    started = time.monotonic()

    @stream.producer(every=0.02)
    def tick(params: Any) -> dict[str, Any]:
        received.append(params)
        return {"k": params["k"], "at": time.monotonic()}

    assert isinstance(tick, Producer)
    wait_until(lambda: stream.end >= 6, message="6 rows from the producer")
    assert stream.state["status"] == "running"
    assert values(stream, "k")[:6] == [3] * 6
    stamps = values(stream, "at")[:6]
    # Paced, not bursting: six calls take at least five intervals (less a scheduling margin).
    assert stamps[5] - stamps[0] >= 5 * 0.02 * 0.8
    assert stamps[0] - started < 1.0  # the first call comes at once
    assert tick.calls >= 6
    assert received[0].k == 3


def test_a_function_without_a_params_argument(make_stream: Callable[..., Stream]) -> None:
    stream = make_stream()

    @stream.producer(every=0.01)
    def tick() -> dict[str, int]:
        return {"x": 1}

    wait_until(lambda: stream.end >= 3)
    assert set(values(stream, "x")) == {1}


def test_a_plain_function_needs_every(make_stream: Callable[..., Stream]) -> None:
    stream = make_stream()
    with pytest.raises(ConfigError, match="give `every=`"):
        stream.producer(lambda: {"x": 1})
    with pytest.raises(ConfigError, match=">= 0"):
        stream.producer(lambda: {"x": 1}, every=-1)


def test_a_generator_yields_batches_until_it_ends(make_stream: Callable[..., Stream]) -> None:
    stream = make_stream()

    @stream.producer
    def rows(params: Any) -> Iterator[Any]:
        yield {"i": [0, 1]}
        yield None  # appends nothing
        yield [{"i": 2}, {"i": 3}]

    wait_until(lambda: stream.state["status"] == "stopped", message="the generator to end")
    assert values(stream, "i") == [0, 1, 2, 3]
    assert rows.calls == 3


def test_a_generator_sees_parameter_changes(make_stream: Callable[..., Stream]) -> None:
    stream = make_stream(params={"k": Int(1, min=0, max=10)})

    @stream.producer(every=0.01)
    def rows(params: Any) -> Iterator[Any]:
        while True:
            yield {"k": params.k}

    wait_until(lambda: stream.end >= 2)
    stream.set(k=7)
    wait_until(lambda: 7 in values(stream, "k"), message="a row made after set(k=7)")
    ks = values(stream, "k")
    assert ks[0] == 1 and ks[-1] == 7


async def test_an_async_function_runs_on_the_server_loop(live_server: Server) -> None:
    stream = live_server.stream("async-fn", params={"k": Int(2)})
    loops: list[Any] = []

    @stream.producer(every=0.01)
    async def tick(params: Any) -> dict[str, Any]:
        loops.append(asyncio.get_running_loop())
        await asyncio.sleep(0)
        return {"k": params["k"]}

    await asyncio.to_thread(wait_until, lambda: stream.end >= 3)
    assert stream.state["status"] == "running"
    assert loops[0] is live_server.loop
    assert set(values(stream, "k")) == {2}
    stream.set(k=4)
    await asyncio.to_thread(wait_until, lambda: 4 in values(stream, "k"))
    tick.stop()
    assert stream.state["status"] == "stopped"


def test_an_async_generator(live_server: Server) -> None:
    stream = live_server.stream("async-gen", params={"k": Int(1, min=0, max=9)})

    @stream.producer(every=0.01)
    async def rows(params: Any) -> Any:
        for _ in range(60):
            yield {"k": params.k}

    wait_until(lambda: stream.end >= 2)
    stream.set(k=9)  # an async generator too sees changes made after it started
    wait_until(lambda: 9 in values(stream, "k"))
    wait_until(lambda: stream.state["status"] == "stopped", message="the async generator to end")
    assert stream.end == 60


def test_an_async_producer_waits_for_its_server_to_start() -> None:
    server = Server("127.0.0.1", 0, token="support-token-0123456789")
    stream = server.stream("deferred")

    @stream.producer(every=0.01)
    async def tick() -> dict[str, int]:
        return {"x": 1}

    assert stream.state["status"] == "idle"
    assert stream.end == 0
    server.start()
    try:
        wait_until(lambda: stream.end >= 2, message="the async producer to start with the server")
    finally:
        server.stop()


def test_an_async_producer_without_a_server_is_refused(make_stream: Callable[..., Stream]) -> None:
    stream = make_stream()

    async def tick() -> dict[str, int]:
        return {"x": 1}

    with pytest.raises(ConfigError, match="needs a server loop"):
        stream.producer(tick, every=0.01)


# --------------------------------------------------------------------------- controls


def test_pause_stops_calls_and_resume_restarts_them(make_stream: Callable[..., Stream]) -> None:
    stream = make_stream()

    @stream.producer(every=0.01)
    def tick() -> dict[str, int]:
        return {"x": 1}

    wait_until(lambda: tick.calls >= 3)
    tick.pause()
    assert stream.state == {"status": "paused", "paused": True, "params": {}}
    time.sleep(0.05)  # a call already under way when pause came may still finish
    calls, end = tick.calls, stream.end
    time.sleep(0.3)  # an interval of 30 periods in which nothing may happen
    assert (tick.calls, stream.end) == (calls, end), "the producer ran while paused"
    tick.resume()
    assert stream.state["status"] == "running"
    wait_until(lambda: tick.calls >= calls + 3, message="calls to restart after resume")
    assert stream.end > end


def test_set_changes_what_the_producer_receives(make_stream: Callable[..., Stream]) -> None:
    stream = make_stream()

    @stream.producer(every=0.01, params={"volatility": Float(0.02, min=0, max=0.2)})
    def tick(params: Any) -> dict[str, float]:
        return {"v": params.volatility}

    wait_until(lambda: stream.end >= 1)
    assert values(stream, "v")[0] == 0.02
    stream.set(volatility=0.15)
    assert stream.params == {"volatility": 0.15}
    wait_until(lambda: values(stream, "v")[-1] == 0.15, message="a row made with 0.15")


def test_a_failing_producer_sets_error_and_others_keep_going(
    make_stream: Callable[..., Stream],
) -> None:
    bad, good = make_stream("bad"), make_stream("good")

    calls = itertools.count(1)

    @bad.producer(every=0.01)
    def explode() -> dict[str, int]:
        if next(calls) == 3:
            raise ValueError("sensor unplugged")
        return {"x": 1}

    @good.producer(every=0.01)
    def steady() -> dict[str, int]:
        return {"x": 1}

    wait_until(lambda: bad.state["status"] == "error", message="the error state")
    assert bad.state["error"] == "ValueError: sensor unplugged"
    assert bad.end == 2
    wait_until(lambda: not producer_threads(bad), message="the failed producer's thread to end")
    seen = good.end
    wait_until(lambda: good.end > seen + 3, message="the other stream to keep growing")
    assert good.state["status"] == "running"

    bad.resume()  # a resume starts a failed producer again
    assert bad.state["status"] == "running"
    assert "error" not in bad.state
    wait_until(lambda: bad.end > 4, message="rows after the restart")


def test_wrong_schema_from_a_producer_is_an_error_naming_the_column(
    make_stream: Callable[..., Stream],
) -> None:
    stream = make_stream("typed")

    calls = itertools.count(1)

    @stream.producer(every=0.01)
    def tick() -> dict[str, Any]:
        return {"price": 1.5} if next(calls) < 3 else {"price": "n/a"}

    wait_until(lambda: stream.state["status"] == "error")
    error = stream.state["error"]
    assert error.startswith("SchemaMismatch: ")
    assert "'price'" in error and "float64" in error
    assert values(stream, "price") == [1.5, 1.5]


def test_a_producer_returning_none_appends_nothing(make_stream: Callable[..., Stream]) -> None:
    stream = make_stream()

    @stream.producer(every=0.005)
    def idle() -> None:
        return None

    wait_until(lambda: idle.calls >= 5)
    assert (stream.end, stream.schema) == (0, {})
    assert stream.state["status"] == "running"


def test_stop_ends_the_producer_thread(make_stream: Callable[..., Stream]) -> None:
    stream = make_stream("stoppable")

    @stream.producer(every=0.01)
    def tick() -> dict[str, int]:
        return {"x": 1}

    wait_until(lambda: stream.end >= 1)
    assert producer_threads(stream)
    tick.stop()
    assert not producer_threads(stream), "stop() returned while the thread still ran"
    assert stream.state["status"] == "stopped"
    end = stream.end
    tick.start()
    wait_until(lambda: stream.end > end, message="rows after start()")
    tick.stop()
    assert not producer_threads(stream)


def test_a_new_producer_replaces_the_old_one(make_stream: Callable[..., Stream]) -> None:
    stream = make_stream()

    @stream.producer(every=0.01)
    def first() -> dict[str, int]:
        return {"who": 1}

    wait_until(lambda: stream.end >= 1)

    @stream.producer(every=0.01)
    def second() -> dict[str, int]:
        return {"who": 2}

    calls = first.calls
    wait_until(lambda: values(stream, "who")[-1] == 2)
    time.sleep(0.05)
    assert first.calls == calls
    assert len(producer_threads(stream)) == 1


def test_a_custom_action_runs_with_the_current_params(make_stream: Callable[..., Stream]) -> None:
    stream = make_stream()
    shocks: list[dict[str, Any]] = []
    resets: list[dict[str, Any]] = []

    @stream.producer(
        every=0.05,
        params={"size": Float(0.05, min=0, max=1)},
        actions={"shock": lambda params: shocks.append(dict(params))},
    )
    def tick() -> None:
        return None

    @tick.action("reset", label="Reset")
    def reset(params: Any) -> None:
        resets.append(dict(params))

    assert stream.controls.describe()["actions"] == {"shock": {}, "reset": {"label": "Reset"}}
    stream.set(size=0.5)
    state = stream.control("shock")
    assert shocks == [{"size": 0.5}]
    assert state["params"] == {"size": 0.5}
    stream.control("reset")
    assert resets == [{"size": 0.5}]


# --------------------------------------------------------------------------- one schedule


def test_the_schedule_keeps_pace_and_never_bursts_after_a_slow_step() -> None:
    now = [100.0]
    schedule = Schedule(0.05, clock=lambda: now[0])
    assert schedule.delay() == 0.0  # the first step is due at once
    gaps = []
    for step in range(6):
        now[0] += schedule.delay()  # wait until due
        gaps.append(round(now[0] - 100.0, 3))
        now[0] += 0.5 if step == 2 else 0.01  # the third step is slow
        schedule.done()
    # Due every 50 ms; after the slow step, the next one is due at once and the pace
    # goes on from it: no run of back-to-back steps to catch up.
    assert gaps == [0.0, 0.05, 0.1, 0.6, 0.65, 0.7]


def test_a_schedule_without_every_is_always_due() -> None:
    now = [0.0]
    schedule = Schedule(None, clock=lambda: now[0])
    for _ in range(3):
        assert schedule.delay() == 0.0
        schedule.done()


@pytest.mark.parametrize("kind", ["thread generator", "async generator", "async function"])
def test_every_kind_of_producer_keeps_pace_after_a_slow_step(
    live_server: Server, kind: str
) -> None:
    """The same schedule for every kind: one slow step is followed by at most one step at
    once, then the 50 ms pace (an async generator used to fire ~11 steps back to back)."""
    stream = live_server.stream(f"pace-{kind.replace(' ', '-')}")
    stamps: list[float] = []

    def step() -> dict[str, Any]:
        stamps.append(time.monotonic())
        if len(stamps) == 3:
            time.sleep(0.4)  # a slow step (it holds the loop for an async one; fine here)
        return {"n": len(stamps)}

    if kind == "thread generator":

        def gen() -> Iterator[dict[str, Any]]:
            while True:
                yield step()

        stream.producer(every=0.05)(gen)
    elif kind == "async generator":

        async def agen() -> Any:
            while True:
                yield step()

        stream.producer(every=0.05)(agen)
    else:

        async def afn() -> dict[str, Any]:
            return step()

        stream.producer(every=0.05)(afn)
    wait_until(lambda: len(stamps) >= 9, message="9 steps")
    stream._producer.stop()
    gaps = [b - a for a, b in itertools.pairwise(stamps[:9])]
    after_slow = gaps[3:]  # gaps[2] is the slow step itself
    quick = [g for g in after_slow if g < 0.025]
    assert len(quick) <= 1, f"steps fired back to back after a slow one: {gaps}"


def test_an_async_producer_wakes_on_resume_without_polling(live_server: Server) -> None:
    stream = live_server.stream("wake-async")
    calls: list[float] = []

    @stream.producer(every=0.02)
    async def tick() -> dict[str, Any]:
        calls.append(time.monotonic())
        return {"n": len(calls)}

    wait_until(lambda: len(calls) >= 2)
    # The first call after each resume comes at once, not at the next poll (polling every
    # 50 ms, as the async path did, would pass all five rounds about 8 % of the time).
    for _ in range(5):
        stream.pause()
        paused_at = len(calls)
        stream.resume()
        resumed = time.monotonic()
        wait_until(lambda paused_at=paused_at: len(calls) > paused_at + 1)
        first_after = next(t for t in calls[paused_at:] if t >= resumed)
        assert first_after - resumed < 0.03
    tick.stop()


def test_a_producer_defined_anew_starts_as_declared(make_stream: Callable[..., Stream]) -> None:
    """Re-running a notebook's producer cell: the stream was paused and a slider moved;
    the new producer starts running, with its parameters at their declared defaults."""
    stream = make_stream()

    @stream.producer(every=0.02, params={"v": Float(0.5, min=0, max=1)})
    def first(params: Any) -> dict[str, Any]:
        return {"v": params.v}

    stream.set(v=0.9)
    stream.pause()
    assert stream.state["status"] == "paused" and stream.params == {"v": 0.9}

    @stream.producer(every=0.02, params={"v": Float(0.5, min=0, max=1)})
    def second(params: Any) -> dict[str, Any]:
        return {"v": params.v}

    assert stream.state["status"] == "running" and not stream.paused
    assert stream.params == {"v": 0.5}
    end = stream.end
    wait_until(lambda: stream.end > end + 2, message="the new producer runs")
    assert values(stream, "v")[-1] == 0.5


def test_a_producer_made_with_start_false_keeps_the_state(
    make_stream: Callable[..., Stream],
) -> None:
    stream = make_stream(params={"v": Float(0.5)})
    stream.set(v=0.9)
    stream.pause()
    stream.producer(every=0.02, params={"v": Float(0.5)}, start=False)(lambda p: None)
    assert stream.paused and stream.params == {"v": 0.9}
