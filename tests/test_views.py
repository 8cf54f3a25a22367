"""Views of long histories (livestream/views.py, issue 12): the rows chosen for a plot's
width are exactly each bucket's first, last, lowest and highest rows of every plotted
column, computed here the slow obvious way over a plain copy of everything appended."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from livestream.errors import BadMessage
from livestream.streams import Stream
from livestream.views import NotSorted, Overview


def _reference(
    x: np.ndarray | None,
    ys: dict[str, np.ndarray],
    base: int,
    x_range: tuple[float, float] | None,
    width: int,
    budget: int,
) -> tuple[list[int], bool]:
    """Offsets to draw, by a loop over every bucket (``base``: offset of element 0)."""
    n = len(next(iter(ys.values())))
    offsets = np.arange(base, base + n)
    if x is None:
        if x_range is None:
            first, stop = base, base + n
            lo, hi = first, stop
        else:
            first = max(base, min(base + n, math.ceil(x_range[0])))
            stop = max(base, min(base + n, math.floor(x_range[1]) + 1))
            lo, hi = max(x_range[0], first), min(x_range[1] + 1, stop)
        cuts = np.ceil(np.linspace(lo, hi, width + 1)).astype(np.int64)
        edges = np.clip(cuts, first, stop)
    else:
        if x_range is None:
            first, stop = base, base + n
            lo, hi = (x[0], x[-1]) if n else (0.0, 0.0)
        else:
            lo, hi = x_range
            first = base + int(np.searchsorted(x, lo, "left"))
            stop = base + int(np.searchsorted(x, hi, "right"))
        inner = base + np.searchsorted(x, np.linspace(lo, hi, width + 1)[1:-1], "left")
        edges = np.concatenate([[first], inner, [stop]])
    edges[0], edges[-1] = first, stop
    edges = np.maximum.accumulate(np.clip(edges, first, stop))
    if stop - first <= budget:
        return list(range(first, stop)), True
    picks: set[int] = set()
    for a, z in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True):
        if z <= a:
            continue
        picks.update((a, z - 1))
        for v in ys.values():
            seg = v[a - base : z - base]
            if seg.dtype.kind == "f":
                if np.isnan(seg).all():
                    continue
                lowest, highest = np.nanmin(seg), np.nanmax(seg)
            else:
                lowest, highest = seg.min(), seg.max()
            # Any row holding the extreme will do; the view takes the first.
            picks.add(a + int(np.flatnonzero(seg == lowest)[0]))
            picks.add(a + int(np.flatnonzero(seg == highest)[0]))
    del offsets
    return sorted(picks), False


@pytest.mark.parametrize("seed", range(6))
def test_views_match_the_obvious_computation_as_rows_arrive(seed: int) -> None:
    """Random appends (some larger than the ring, which wraps and is lapped), NaN runs,
    ties, integer columns, an x with repeated values; after each append views of random
    ranges and widths, by x and by offset, checked against the reference."""
    rng = np.random.default_rng(seed)
    capacity = int(rng.integers(300, 3000))
    block = int(rng.choice([2, 4, 16, 64]))
    stream = Stream("v", history=capacity)
    overview = Overview(stream, block=block)
    model_t: list[float] = []
    model_y: list[float] = []
    model_k: list[int] = []
    t = 0.0
    for step in range(40):
        n = int(rng.integers(1, capacity * 2 if step % 7 == 0 else 400))
        dt = rng.choice([0.0, 0.5, 1.0], size=n)  # repeated x values
        ts = t + np.cumsum(dt)
        t = float(ts[-1])
        y = rng.normal(size=n).round(1)  # ties
        if rng.random() < 0.3:
            a = int(rng.integers(0, n))
            y[a : a + int(rng.integers(1, 50))] = np.nan
        k = rng.integers(-5, 5, size=n)
        stream.append({"t": ts, "y": y, "k": k})
        model_t += ts.tolist()
        model_y += y.tolist()
        model_k += k.tolist()
        start, end = stream.window()
        x_all = np.array(model_t[start:end])
        ys = {"y": np.array(model_y[start:end]), "k": np.array(model_k[start:end])}
        for _ in range(3):
            width = int(rng.integers(1, 120))
            budget = 4 * width
            if rng.random() < 0.3:
                x_range = None
            else:
                a, b = sorted(rng.uniform(x_all[0] - 5, x_all[-1] + 5, size=2))
                x_range = (float(a), float(b))
            use_x = rng.random() < 0.7
            if not use_x and x_range is not None:
                a, b = sorted(rng.integers(start - 10, end + 10, size=2))
                x_range = (float(a), float(b))
            view = overview.view(
                x="t" if use_x else None, x_range=x_range, width=width, columns=["y", "k"]
            )
            want, exact = _reference(x_all if use_x else None, ys, start, x_range, width, budget)
            assert view.offsets.tolist() == want, (step, width, x_range, use_x)
            assert view.exact == exact
            got = view.batch.columns
            idx = np.asarray(want, dtype=np.int64) - start
            assert np.array_equal(got["t"], x_all[idx])
            assert np.array_equal(got["y"], ys["y"][idx], equal_nan=True)
            assert np.array_equal(got["k"], ys["k"][idx])


def test_one_spike_among_two_million_rows_is_in_every_view() -> None:
    n = 2_000_000
    stream = Stream("spiky", history=n)
    t = np.arange(n, dtype=np.float64) * 1e-3
    y = np.sin(t)
    y[1_234_567] = 1e6
    for i in range(0, n, 100_000):
        stream.append({"t": t[i : i + 100_000], "y": y[i : i + 100_000]})
    overview = Overview(stream)
    full = overview.view(x="t", x_range=None, width=1000, columns=["y"])
    assert 1_234_567 in full.offsets.tolist() and not full.exact
    assert len(full.offsets) <= 4 * 1000
    assert full.batch.columns["y"].max() == 1e6
    # Zoomed around it: still there, and one second (1,000 rows) shows every row, exactly.
    near = overview.view(x="t", x_range=(1234.0, 1235.0), width=2000, columns=["y"])
    assert near.exact and near.offsets.tolist() == list(range(1_234_000, 1_235_001))
    assert np.array_equal(near.batch.columns["y"], y[1_234_000:1_235_001])


def test_a_view_summarises_only_what_is_new() -> None:
    stream = Stream("grow", history=1_000_000)
    overview = Overview(stream, block=256)
    stream.append({"t": np.arange(500_000.0), "y": np.zeros(500_000)})
    overview.view(x="t", x_range=None, width=500, columns=["y"])
    blocks = overview._columns["y"]
    assert (blocks.lo, blocks.hi) == (0, 500_000 // 256)
    stream.append({"t": np.arange(500_000.0, 500_300.0), "y": np.ones(300)})
    view = overview.view(x="t", x_range=None, width=500, columns=["y"])
    assert blocks.hi == 500_300 // 256
    assert 500_000 in view.offsets.tolist()  # the first 1, at the live edge


def test_an_x_that_goes_back_is_refused_with_what_to_do() -> None:
    stream = Stream("back", history=10_000)
    stream.append({"t": np.arange(5000.0), "y": np.zeros(5000)})
    stream.append({"t": np.array([10.0]), "y": np.zeros(1)})
    with pytest.raises(NotSorted, match=r"column 't' of stream 'back' decreases at offset 5000"):
        Overview(stream, block=64).view(x="t", x_range=(0, 100), width=10, columns=["y"])
    # By offset it is fine.
    view = Overview(stream, block=64).view(x=None, x_range=None, width=10, columns=["y"])
    assert view.offsets[0] == 0 and view.offsets[-1] == 5000


def test_bad_requests_say_what_was_expected() -> None:
    stream = Stream("s", history=100)
    stream.append({"t": np.arange(10.0), "name": ["a"] * 10})
    overview = Overview(stream)
    with pytest.raises(BadMessage, match="has no column 'nope'; its columns: t, name"):
        overview.view(x="t", x_range=None, width=10, columns=["nope"])
    with pytest.raises(BadMessage, match="column 'name' of stream 's' is str"):
        overview.view(x="t", x_range=None, width=10, columns=["name"])
    with pytest.raises(BadMessage, match="width must be a whole number of pixels"):
        overview.view(x="t", x_range=None, width=0, columns=["t"])
    with pytest.raises(BadMessage, match="x_range must be two finite numbers"):
        overview.view(x="t", x_range=(5.0, float("nan")), width=10, columns=["t"])


def test_views_read_while_a_thread_laps_the_ring_are_still_right() -> None:
    """A producer thread appends flat out into a small ring (each row holds its offset)
    while views are taken: every row a view returns is the row of its offset."""
    import sys
    import threading

    stream = Stream("lapped", history=5_000)
    stream.append({"t": np.zeros(1), "k": np.zeros(1, dtype=np.int64)})
    enough = threading.Event()  # the reader has taken its views: the writer may stop
    appended = threading.Event()  # the writer appended since the reader last looked
    appends = [0]

    def write() -> None:
        # Appends until the reader is done (bounded): however the two threads are
        # scheduled on a loaded machine, every view is taken while the ring is lapped.
        deadline = time.monotonic() + 30
        while not enough.is_set() and time.monotonic() < deadline:
            first = stream.end
            k = np.arange(first, first + 700, dtype=np.int64)
            stream.append({"t": k.astype(np.float64), "k": k})
            appends[0] += 1
            appended.set()
            # Let go of the GIL between appends, as a producer doing anything else would:
            # a thread that never does starves a view of it (each of its numpy calls lets
            # the GIL go and waits to win it back), which is not what this test is about.
            time.sleep(0)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)  # fine interleavings (see test_streams' torn-read test)
    writer = threading.Thread(target=write)
    writer.start()
    views = refused = 0
    try:
        overview = Overview(stream, block=16)
        while views < 30 and writer.is_alive():
            # At least one append between two views, however the threads are scheduled.
            assert appended.wait(10), "the writer appended nothing for 10 s"
            appended.clear()
            try:
                view = overview.view(x="t", x_range=None, width=50, columns=["k"])
            except BadMessage as exc:  # lapped four times in a row: said, never wrong
                assert "appended faster than its history can be read" in str(exc)
                refused += 1
                continue
            views += 1
            assert np.array_equal(view.batch.columns["k"], view.offsets)
            assert np.array_equal(view.batch.columns["t"], view.offsets.astype(np.float64))
    finally:
        enough.set()
        writer.join(60)
        sys.setswitchinterval(interval)
    assert not writer.is_alive() and views == 30, (views, refused, appends[0])
    assert appends[0] > 30  # the ring was lapped many times over meanwhile
