"""The history ring (offsets, wrap-around, reads, age) and the Stream around it."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest
from support import wait_until

from livestream import Batch, ConfigError, SchemaMismatch, Stream, to_batch
from livestream.streams import History

TIMEOUT_S = 10.0


def ints(*values: int) -> Batch:
    return to_batch({"i": np.array(values, dtype="<i8")})


def ring(history: History, since: int = 0, stop: int | None = None) -> list[int]:
    return history.read(since, stop).columns["i"].tolist()


# --------------------------------------------------------------------------- History


def test_offsets_number_rows_from_zero() -> None:
    h = History({"i": "int64"}, capacity=10)
    assert (h.start, h.end, len(h)) == (0, 0, 0)
    assert h.append(ints(0, 1, 2), now=0.0) == 0
    assert h.append(ints(3, 4), now=0.0) == 3
    assert (h.start, h.end, len(h)) == (0, 5, 5)
    batch = h.read(0)
    assert batch.offset == 0
    assert batch.columns["i"].tolist() == [0, 1, 2, 3, 4]


def test_wrap_around_keeps_the_newest_rows_in_order() -> None:
    h = History({"i": "int64"}, capacity=5)
    expected: list[int] = []
    value = 0
    for size in (3, 4, 1, 2, 5, 3, 4):  # crosses the end of the ring several times
        rows = list(range(value, value + size))
        value += size
        assert h.append(ints(*rows), now=0.0) == rows[0]
        expected += rows
        assert h.end == len(expected)
        assert h.start == max(0, len(expected) - 5)
        assert ring(h) == expected[-5:]
        assert h.read(0).offset == h.start


def test_batch_larger_than_capacity_keeps_only_its_newest_rows() -> None:
    h = History({"i": "int64"}, capacity=4)
    assert h.append(ints(100, 101, 102), now=0.0) == 0  # the ring position is now 3, not 0
    assert h.append(ints(*range(10)), now=0.0) == 3
    assert (h.start, h.end) == (9, 13)
    assert ring(h) == [6, 7, 8, 9]
    assert h.read(0).offset == 9


def test_read_is_clipped_to_start_end() -> None:
    h = History({"i": "int64"}, capacity=4)
    h.append(ints(*range(10)), now=0.0)  # keeps offsets 6..9
    assert ring(h, 0) == [6, 7, 8, 9]  # before start: from start
    assert ring(h, 7, 9) == [7, 8]  # [since, stop)
    assert ring(h, 8, 100) == [8, 9]  # past end: to end
    assert h.read(8, 100).offset == 8
    assert ring(h, 10) == []  # at end: nothing
    assert ring(h, 9, 7) == []  # stop before since: nothing
    assert h.read(7, 8).rows == 1


def test_read_selects_columns() -> None:
    h = History({"a": "int64", "b": "float64", "s": "str"}, capacity=3)
    h.append(to_batch({"a": [1, 2], "b": [0.5, 1.5], "s": ["x", "y"]}), now=0.0)
    batch = h.read(0, columns=("s", "a"))
    assert list(batch.columns) == ["s", "a"]
    assert batch.columns["s"].tolist() == ["x", "y"]


def test_max_age_trims_rows_older_than_it() -> None:
    h = History({"i": "int64"}, capacity=100, max_age=1.0)
    h.append(ints(0, 1), now=10.0)
    h.append(ints(2), now=10.5)
    h.append(ints(3, 4), now=11.2)
    h.trim(now=10.9)
    assert (h.start, h.end) == (0, 5)
    h.trim(now=11.1)  # the rows stamped 10.0 are now 1.1 s old
    assert (h.start, h.end) == (2, 5)
    assert ring(h) == [2, 3, 4]
    h.trim(now=11.6)
    assert ring(h) == [3, 4]
    h.trim(now=13.0)
    assert (h.start, h.end) == (5, 5)
    assert ring(h) == []


def test_max_age_on_a_stream_in_real_time() -> None:
    stream = Stream("aged", max_age=0.2)
    stream.append({"i": [0, 1, 2]})
    assert stream.window() == (0, 3)
    appended = time.monotonic()
    wait_until(lambda: time.monotonic() - appended > 0.25, timeout=3)
    assert (stream.rows, stream.start, stream.end) == (0, 3, 3)  # without a read first
    wait_until(
        lambda: stream.window() == (3, 3),
        timeout=3,
        message="rows older than max_age=0.2 s to be dropped",
    )
    assert stream.read(0).rows == 0
    assert stream.append({"i": [3]}) == 3  # offsets go on after a trim
    assert stream.read(0).columns["i"].tolist() == [3]


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="at least 1 row"):
        History({"i": "int64"}, capacity=0)


# --------------------------------------------------------------------------- Stream schema


def test_schema_is_inferred_from_the_first_batch() -> None:
    stream = Stream("inferred")
    assert stream.schema == {}
    assert (stream.start, stream.end, stream.rows) == (0, 0, 0)
    assert stream.append({"t": [1.5, 2.5], "n": [1, 2], "s": ["a", "b"], "ok": [True, False]}) == 0
    assert stream.schema == {"t": "float64", "n": "int64", "s": "str", "ok": "bool"}
    assert list(stream.schema) == ["t", "n", "s", "ok"]
    # Later batches are conformed: ints go into a float column.
    assert stream.append({"t": [3], "n": [3], "s": ["c"], "ok": [True]}) == 2
    assert stream.read(2).columns["t"].dtype == np.dtype("<f8")


def test_declared_schema_orders_and_casts_batches() -> None:
    stream = Stream("declared", schema={"t": "float64", "n": "int32", "label": "str"})
    assert stream.schema == {"t": "float64", "n": "int32", "label": "str"}
    stream.append({"label": ["x"], "n": [7], "t": [1]})  # other order, int for float
    batch = stream.read(0)
    assert list(batch.columns) == ["t", "n", "label"]
    assert batch.dtypes == {"t": "float64", "n": "int32", "label": "str"}
    assert batch.columns["t"].tolist() == [1.0]
    assert batch.columns["n"].dtype == np.dtype("<i4")


def test_declared_schema_with_an_unknown_dtype_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown dtypes"):
        Stream("bad", schema={"t": "float128"})


@pytest.mark.parametrize(
    ("batch", "column"),
    [
        ({"t": ["text"], "n": [1]}, "t"),  # wrong type
        ({"t": [1.0]}, "n"),  # missing column
        ({"t": [1.0], "n": [1], "extra": [0]}, "extra"),  # column not in the schema
        ({"t": [1.0], "n": [1.5]}, "n"),  # a fraction into an int column
    ],
)
def test_schema_mismatch_names_the_column_and_appends_nothing(batch: dict, column: str) -> None:
    stream = Stream("typed")
    stream.append({"t": [0.5], "n": [1]})
    with pytest.raises(SchemaMismatch, match=f"'{column}'") as info:
        stream.append(batch)
    assert "'typed'" in str(info.value)  # and the stream
    assert stream.window() == (0, 1)
    assert stream.append({"t": [2.0], "n": [2]}) == 1


# --------------------------------------------------------------------------- concurrency


def test_append_from_8_threads_gives_contiguous_offsets_and_loses_no_row() -> None:
    stream = Stream("concurrent", history=100_000)
    threads_n, batches_n = 8, 150
    barrier = threading.Barrier(threads_n)
    results: list[list[tuple[int, int]]] = [[] for _ in range(threads_n)]
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            barrier.wait(TIMEOUT_S)
            seq = 0
            for b in range(batches_n):
                size = 1 + (b * 7 + k) % 5
                first = stream.append({"who": [k] * size, "seq": list(range(seq, seq + size))})
                results[k].append((first, size))
                seq += size
        except BaseException as exc:  # reported below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads_n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(TIMEOUT_S)
    assert not any(w.is_alive() for w in workers), "appending threads did not finish"
    assert not errors, errors

    spans = sorted(span for per_thread in results for span in per_thread)
    total = sum(size for _, size in spans)
    position = 0
    for first, size in spans:
        assert first == position, f"batch at offset {first}, expected {position}: gap or overlap"
        position += size
    assert stream.window() == (0, total)

    batch = stream.read(0)
    who, seq = batch.columns["who"], batch.columns["seq"]
    for k in range(threads_n):
        mine = seq[who == k].tolist()
        assert mine == list(range(len(mine))), f"thread {k}: rows lost, repeated or reordered"
        for first, size in results[k]:  # each batch sits where append said it did
            assert who[first : first + size].tolist() == [k] * size


# --------------------------------------------------------------------------- reading


def test_tail_and_to_pandas() -> None:
    stream = Stream("tailed", history=5)
    stream.append({"x": [float(v) for v in range(8)]})  # keeps offsets 3..7
    tail = stream.tail(2)
    assert tail.offset == 6
    assert tail.columns["x"].tolist() == [6.0, 7.0]
    assert stream.tail(100).columns["x"].tolist() == [3.0, 4.0, 5.0, 6.0, 7.0]

    frame = stream.to_pandas()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.index) == [3, 4, 5, 6, 7]
    assert frame.index.name == "offset"
    assert frame["x"].tolist() == [3.0, 4.0, 5.0, 6.0, 7.0]


def test_an_empty_stream_reads_as_nothing() -> None:
    stream = Stream("empty")
    assert stream.read(0).rows == 0
    assert stream.tail(3).rows == 0
    assert len(stream.to_pandas()) == 0
    assert stream.rate() == 0.0


def test_rate_reports_rows_per_second() -> None:
    stream = Stream("rated")
    stream.append({"x": [0.0] * 10})
    assert stream.rate() == 0.0  # one sample says nothing yet
    started = time.monotonic()
    appended = 0
    while time.monotonic() - started < 0.8:
        stream.append({"x": [1.0] * 10})
        appended += 10
        time.sleep(0.01)
    measured = appended / (time.monotonic() - started)
    rate = stream.rate()
    assert 0.4 * measured < rate < 2.5 * measured, (rate, measured)


def test_describe_summarises_the_stream() -> None:
    stream = Stream("described", history=3)
    stream.append({"x": [1, 2, 3, 4]})
    info = stream.describe()
    assert info["name"] == "described"
    assert info["schema"] == {"x": "int64"}
    assert (info["rows"], info["offset"], info["start"]) == (3, 4, 1)
    assert info["epoch"] == stream.epoch
    assert info["state"] == {"status": "idle", "paused": False, "params": {}}
    assert info["controls"] == {"params": {}, "actions": {}}


def test_history_grows_on_demand_and_keeps_every_row_in_order() -> None:
    # The ring starts small and doubles up to its capacity; whatever the batch sizes, a
    # read returns exactly the newest rows a plain list would keep.
    import random

    from livestream.columns import to_batch
    from livestream.streams import History

    rng = random.Random(7)
    for capacity in (1, 5, 1000, 1025, 3000):
        history = History({"v": "int64", "s": "str"}, capacity)
        assert history.allocated_rows <= History.INITIAL_ROWS
        model: list[int] = []
        offset = 0
        for _ in range(150):
            n = rng.choice([1, 3, 100, 700, 2000])
            values = list(range(offset, offset + n))
            offset += n
            history.append(to_batch({"v": values, "s": [str(x) for x in values]}), 0.0)
            model = (model + values)[-capacity:]
            assert (history.start, history.end) == (offset - len(model), offset)
            since = rng.randint(history.start, history.end)
            batch = history.read(since)
            assert batch.columns["v"].tolist() == model[since - history.start :]
            assert batch.columns["s"].tolist() == [str(x) for x in model[since - history.start :]]
        assert history.allocated_rows <= capacity


def test_a_new_stream_costs_little_memory() -> None:
    from livestream.streams import History

    history = History({"a": "float64", "b": "float64", "c": "int64"}, 100_000)
    assert history.nbytes <= 3 * 8 * History.INITIAL_ROWS


def test_lock_free_reads_never_see_torn_or_overwritten_rows() -> None:
    """A writer thread appends batches of every size into a small ring as fast as it can
    while readers copy windows and build zero-copy views: every row a read returns must
    be the one appended at its offset (each row holds its own offset), however the two
    interleave. Bounded: 4,000 appends."""
    import threading

    import numpy as np

    from livestream.streams import Stream

    stream = Stream("torn", history=3_000)
    stream.append({"v": np.arange(1, dtype="<i8"), "w": np.arange(1, dtype="<f8")})
    done = threading.Event()
    problems: list[str] = []

    def write() -> None:
        rng = np.random.default_rng(7)
        try:
            for _ in range(4_000):
                start = stream.end
                n = int(rng.integers(1, 5_000))  # sometimes more than the whole ring
                rows = np.arange(start, start + n, dtype="<i8")
                stream.append({"v": rows, "w": rows.astype("<f8")})
        finally:
            done.set()

    def read() -> None:
        while not done.is_set():
            start, end = stream.window()
            for copy in (True, False):
                batch = stream.read_rows(max(start, end - 2_000), end, copy=copy)
                first = batch.offset
                v, w = batch.columns["v"].copy(), batch.columns["w"].copy()
                if not copy and not stream.intact(first):
                    continue  # a view may be overwritten: the hub reads again, as here
                expected = np.arange(first, first + batch.rows)
                if not (np.array_equal(v, expected) and np.array_equal(w, expected)):
                    problems.append(f"copy={copy}: rows {first}..{first + batch.rows} wrong")
                    return

    # Each numpy copy of more than a few hundred elements lets go of the GIL, and at the
    # default 5 ms switch interval the writer then waits behind both spinning readers: 50 s
    # instead of 0.4 s, past the bound on a loaded CI machine. A short interval makes the
    # hand-offs fast, and the interleavings finer, which is what this test wants anyway.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    try:
        readers = [threading.Thread(target=read) for _ in range(2)]
        writer = threading.Thread(target=write)
        for t in (*readers, writer):
            t.start()
        writer.join(60)
        for t in readers:
            t.join(10)
    finally:
        sys.setswitchinterval(interval)
    assert done.is_set() and not writer.is_alive()
    assert not problems, problems[:3]


def _append_alike(fast: Stream, data: object, slow: Stream, same: object) -> None:
    """Append ``data`` to ``fast`` and ``same`` (the same rows, in a shape the fast paths
    do not take) to ``slow``: both must give the same offset, or fail alike."""
    outcomes = []
    for stream, given in ((fast, data), (slow, same)):
        try:
            outcomes.append(("ok", stream.append(given)))
        except Exception as exc:
            outcomes.append((type(exc).__name__, str(exc).replace("'slow'", "'fast'")))
    assert outcomes[0] == outcomes[1], (data, outcomes)


def test_single_row_appends_store_what_the_general_path_stores() -> None:
    """A dict of plain values skips building a batch (issue 14); a stream fed those rows
    must hold exactly what one fed the same rows as one-row lists holds, through ring
    growth and wrap, and whatever does not fit the fast path still gets the general
    path's conversions and errors."""
    import random

    rng = random.Random(5)
    fast, slow = Stream("fast", history=3_000), Stream("slow", history=3_000)
    schema_row = {"t": 0.5, "n": 1, "s": "a", "b": True}
    for stream in (fast, slow):
        stream.append([schema_row])
    for i in range(7_000):
        row = {
            "t": rng.choice([rng.random(), float("nan"), float("inf"), rng.randint(-9, 9), 2**60]),
            "n": rng.choice([rng.randint(-(2**63), 2**63 - 1), 3.0, -1]),
            "s": rng.choice(["x", "", "<b>é</b>", None]),
            "b": rng.choice([True, False, None]) if i % 50 == 0 else bool(i % 2),
        }
        if i % 3 == 0:
            row = dict(reversed(list(row.items())))  # key order does not matter
        _append_alike(fast, row, slow, [row])
    assert (fast.start, fast.end) == (slow.start, slow.end)
    a, b = fast.read(fast.start), slow.read(slow.start)
    assert a.schema == b.schema == {"t": "float64", "n": "int64", "s": "str", "b": "bool"}
    for name in a.schema:
        assert np.array_equal(a.columns[name], b.columns[name], equal_nan=name == "t"), name
    with pytest.raises(SchemaMismatch, match="lacks column 'b'"):
        fast.append({"t": 1.0, "n": 1, "s": "x"})
    with pytest.raises(SchemaMismatch, match="column 'n'"):
        fast.append({"t": 1.0, "n": 1.5, "s": "x", "b": True})


def test_array_appends_store_what_the_general_path_stores() -> None:
    """A dict of numpy arrays of the ring's dtypes goes straight into the ring (issue 14);
    a stream fed such dicts must hold exactly what one fed the same data through the
    general path holds (a read-only mapping of the same arrays takes it), through ring
    growth and wrap, and whatever does not fit (another dtype, a missing or extra column,
    unequal lengths, 2-D, strided, big-endian, empty) gets the general path's
    conversions and errors."""
    import random
    import types

    rng = random.Random(7)
    fast, slow = Stream("fast", history=3_000), Stream("slow", history=3_000)
    for stream in (fast, slow):
        stream.append({"t": np.zeros(1), "n": np.zeros(1, dtype=np.int64)})

    def column(kind: str, rows: int, want: str) -> object:
        base = np.arange(rows, dtype=np.float64) * rng.random()
        if kind == "right":
            return base if want == "f" else np.arange(rows, dtype=np.int64) - rows // 2
        if kind == "int32":
            return np.arange(rows, dtype=np.int32)
        if kind == "float_to_int":
            return base + 0.5
        if kind == "big_endian":
            return base.astype(">f8") if want == "f" else np.arange(rows, dtype=">i8")
        if kind == "strided":
            full = np.arange(2 * rows, dtype=np.float64 if want == "f" else np.int64)
            return full[::2]
        if kind == "two_d":
            return base.reshape(-1, 1)
        return base.tolist()  # a list: the general path converts it

    kinds = ["right"] * 6 + ["int32", "float_to_int", "big_endian", "strided", "two_d", "list"]
    for i in range(2_000):
        rows = rng.choice([0, 1, 7, 100, 999, 3_500])
        data: dict[str, object] = {
            "t": column(rng.choice(kinds), rows, "f"),
            "n": column(rng.choice(kinds), rows, "i"),
        }
        if i % 17 == 0:
            data["extra"] = np.zeros(rows)
        if i % 19 == 0:
            del data["n"]
        if i % 23 == 0 and rows:
            data["t"] = np.zeros(rows + 1)  # unequal lengths
        if i % 3 == 0:
            data = dict(reversed(list(data.items())))  # key order does not matter
        _append_alike(fast, data, slow, types.MappingProxyType(data))
    assert (fast.start, fast.end) == (slow.start, slow.end)
    assert fast.end > 100_000  # the ring wrapped many times
    a, b = fast.read(fast.start), slow.read(slow.start)
    assert a.schema == b.schema == {"t": "float64", "n": "int64"}
    for name in a.schema:
        assert np.array_equal(a.columns[name], b.columns[name]), name


def test_strided_and_reversed_columns_are_stored_as_their_values() -> None:
    """The ring copies contiguous columns as bytes; others (a strided or reversed view)
    take numpy's path, wrapping around the ring all the same."""
    stream = Stream("strided", history=8)
    values = np.arange(40.0)
    stream.append({"v": values[::2], "w": np.arange(20, dtype=np.int64)[::-1]})
    assert stream.read(0).columns["v"].tolist() == values[::2][-8:].tolist()
    assert stream.read(0).columns["w"].tolist() == list(range(7, -1, -1))
    stream.append({"v": values[1:6:2], "w": np.arange(3, dtype=np.int64)})  # wraps
    got = stream.read(0)
    assert got.columns["v"].tolist() == [*values[::2][-5:].tolist(), 1.0, 3.0, 5.0]
    assert got.columns["w"].tolist() == [4, 3, 2, 1, 0, 0, 1, 2]
