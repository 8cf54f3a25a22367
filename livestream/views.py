"""Views of a long history at a plot's width: which rows to draw (issue 12, server side).

A plot a thousand pixels wide cannot show ten million rows, and need not: per pixel column
("bucket") a line is drawn exactly by its first, last, lowest and highest point (M4, Jugel
et al., VLDB 2014). :class:`Overview` picks those rows, for any x-range of a stream's
history, out of the rows themselves: the view is a subset of raw rows (offsets and values
as stored), so a single spike among millions is always in it, and a range holding fewer
rows than the view's budget is sent whole, exactly.

Cost. The overview keeps, per block of :data:`BLOCK` rows and per numeric column asked
for, the block's lowest and highest value and their offsets. Blocks are summarised once,
when first needed after they are complete, so a view costs the blocks it spans plus the
raw rows of the blocks cut by bucket edges (at most ``2 * BLOCK`` per bucket), not a pass
over every row; a view asked again a frame later summarises only the blocks completed
since. The summary takes 32 bytes per column per block (1/32 of a float64 column).

Reads take no lock, as the hub's do (see ``History.append``): values are gathered from the
ring and the rows are checked to be intact afterwards; a producer that lapped them in the
meantime makes the view read again.

x must not decrease along the offsets (a time column, or the offset itself) for an x-range
to map to a range of rows; :meth:`Overview.view` raises :class:`NotSorted` otherwise.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .columns import NUMERIC_DTYPES, Batch
from .errors import BadMessage

if TYPE_CHECKING:
    from .streams import Stream

__all__ = ["BLOCK", "NotSorted", "Overview", "View", "select_rows"]

#: Rows per summarised block.
BLOCK = 256
#: Rows gathered per step when summarising (bounds the temporary memory: 8 MiB a column).
_CHUNK_ROWS = 1 << 20


class NotSorted(BadMessage):
    """The x column decreases somewhere in the history: an x-range is not a row range."""


@dataclass
class View:
    """What :meth:`Overview.view` answers.

    ``batch`` holds the chosen rows (all of the stream's columns, or those asked for) with
    their offsets in ``offsets``; ``exact`` is true when every row of the range is in it;
    ``first``/``stop`` are the offsets the x-range covers and ``end`` the stream's end when
    it was read (rows from ``end`` on reach the viewer as they are appended)."""

    batch: Batch
    offsets: np.ndarray
    exact: bool
    first: int
    stop: int
    end: int
    buckets: int


class _Blocks:
    """One column's per-block minimum and maximum with their offsets, in a ring of slots
    indexed by block number; blocks ``lo:hi`` are held."""

    def __init__(self, slots: int, dtype: np.dtype[Any]) -> None:
        self.slots = slots
        self.lo = 0
        self.hi = 0
        self.min = np.empty(slots, dtype=dtype)
        self.max = np.empty(slots, dtype=dtype)
        self.argmin = np.zeros(slots, dtype=np.int64)
        self.argmax = np.zeros(slots, dtype=np.int64)
        self.decrease_at = -1  # the last offset whose value is below the one before


def _ranges(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """The integers of every range ``starts[i] : starts[i] + lens[i]``, concatenated."""
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(lens)
    shift: np.ndarray = np.repeat(starts - (ends - lens), lens)
    out: np.ndarray = np.arange(total, dtype=np.int64) + shift
    return out


def _segment_best(
    values: np.ndarray, offsets: np.ndarray, lens: np.ndarray, highest: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per segment (consecutive runs of ``lens`` items) the lowest (or highest) value and
    the offset holding it; empty segments get offset -1. NaN loses to every number."""
    n = len(lens)
    out_off = np.full(n, -1, dtype=np.int64)
    if values.dtype.kind == "f":
        fill = -np.inf if highest else np.inf
        if np.isnan(values).any():
            values = np.where(np.isnan(values), fill, values)
        best = np.full(n, fill, dtype=values.dtype)
    else:
        info = np.iinfo(values.dtype) if values.dtype.kind in "iu" else None
        fill_int = (info.min if highest else info.max) if info is not None else 0
        best = np.full(n, fill_int, dtype=values.dtype)
    full = lens > 0
    if not full.any():
        return best, out_off
    starts = np.cumsum(lens) - lens
    ufunc = np.maximum if highest else np.minimum
    best[full] = ufunc.reduceat(values, starts[full])
    hits = np.flatnonzero(values == np.repeat(best, lens))
    j = np.searchsorted(hits, starts[full])
    j = np.minimum(j, len(hits) - 1)
    pos = hits[j]
    ok = (pos >= starts[full]) & (pos < starts[full] + lens[full])
    idx = np.flatnonzero(full)
    out_off[idx[ok]] = offsets[pos[ok]]
    return best, out_off


class Overview:
    """Block summaries of one stream, shared by every view of it (thread-safe)."""

    def __init__(self, stream: Stream, block: int = BLOCK) -> None:
        if block < 2:
            raise ValueError(f"block must be at least 2 rows; got {block}")
        self.stream = stream
        self.block = block
        self._lock = threading.Lock()
        self._epoch: str | None = None
        self._columns: dict[str, _Blocks] = {}

    # ------------------------------------------------------------------ the ring

    def _ring(self) -> tuple[int, dict[str, np.ndarray]]:
        history = self.stream._history
        if history is None:
            return 1, {}
        return history._ring

    def _gather(self, name: str, offsets: np.ndarray) -> np.ndarray:
        size, cols = self._ring()
        ring = cols[name]
        # take(mode="wrap") indexes modulo the ring's length without a temporary array;
        # the ring array is exactly `size` long.
        return ring.take(offsets, mode="wrap") if len(ring) == size else ring[offsets % size]

    def _numeric(self, name: str) -> np.dtype[Any]:
        dtype = self.stream.schema.get(name)
        if dtype is None:
            raise BadMessage(
                f"stream {self.stream.name!r} has no column {name!r}; its columns: "
                + ", ".join(self.stream.schema)
            )
        if dtype not in NUMERIC_DTYPES:
            raise BadMessage(
                f"column {name!r} of stream {self.stream.name!r} is {dtype}; a view "
                "summarises numeric columns only"
            )
        return np.dtype(NUMERIC_DTYPES[dtype])

    # ------------------------------------------------------------------ summaries

    def _blocks(self, name: str) -> _Blocks:
        epoch = self.stream.epoch
        if epoch != self._epoch:  # restarted: every summary is of rows that are gone
            self._columns.clear()
            self._epoch = epoch
        blocks = self._columns.get(name)
        if blocks is None:
            capacity = self.stream.history_rows
            blocks = _Blocks(capacity // self.block + 2, self._numeric(name))
            self._columns[name] = blocks
        self._summarise(name, blocks)
        return blocks

    def _summarise(self, name: str, b: _Blocks) -> None:
        """Summarise the blocks completed since the last call (and forget trimmed ones)."""
        B = self.block
        start, end = self.stream.window()
        first_whole = -(-start // B)
        b.lo = max(b.lo, first_whole)
        if b.hi < b.lo:
            b.hi = b.lo
        target = end // B
        laps = 0
        while b.hi < target:
            k0 = b.hi
            k1 = min(target, k0 + max(1, _CHUNK_ROWS // B))
            offsets = np.arange(k0 * B, k1 * B, dtype=np.int64)
            values = self._gather(name, offsets)
            if not self.stream.intact(k0 * B):  # lapped while read: skip what is gone
                laps += 1
                start, end = self.stream.window()
                if laps > 4:
                    # A producer that laps the ring faster than it can be summarised
                    # would keep this loop going for as long as it appends: summarise
                    # nothing more now; a view reads the rows themselves meanwhile.
                    b.lo = b.hi = max(b.hi, end // B)
                    return
                b.lo = max(b.lo, -(-start // B))
                b.hi = max(b.hi, b.lo)
                target = end // B
                continue
            self._store(b, k0, k1, values)
        if b.hi - b.lo > b.slots:  # never: slots cover the capacity
            b.lo = b.hi - b.slots

    def _store(self, b: _Blocks, k0: int, k1: int, values: np.ndarray) -> None:
        B = self.block
        n = k1 - k0
        m = values.reshape(n, B)
        base = np.arange(k0, k1, dtype=np.int64) * B
        if m.dtype.kind == "f" and np.isnan(m).any():
            lows = np.where(np.isnan(m), np.inf, m)
            highs = np.where(np.isnan(m), -np.inf, m)
        else:
            lows = highs = m
        imin = np.argmin(lows, axis=1)
        imax = np.argmax(highs, axis=1)
        rows = np.arange(n)
        slots = np.arange(k0, k1) % b.slots
        b.min[slots] = lows[rows, imin]
        b.max[slots] = highs[rows, imax]
        b.argmin[slots] = base + imin
        b.argmax[slots] = base + imax
        # Where the column decreases inside these rows (for when it serves as x; the
        # boundaries between calls are checked by _x_sorted).
        down = np.flatnonzero(values[1:] < values[:-1])
        if down.size:
            b.decrease_at = max(b.decrease_at, k0 * B + int(down[-1]) + 1)
        b.hi = k1

    # ------------------------------------------------------------------ x to offsets

    def _x_sorted(self, x: str, start: int, end: int) -> None:
        """Raise :class:`NotSorted` unless ``x`` never decreases over ``start:end``."""
        blocks = self._blocks(x)
        B = self.block
        checked = blocks.decrease_at
        # Block boundaries and the rows not in whole blocks (head and tail) checked here.
        if blocks.hi > blocks.lo + 1:
            ks = np.arange(blocks.lo + 1, blocks.hi, dtype=np.int64)
            prev = self._gather(x, ks * B - 1)
            first = self._gather(x, ks * B)
            bad = np.flatnonzero(first < prev)
            if bad.size:
                checked = max(checked, int(ks[bad[-1]]) * B)
        edges = []
        head_stop = min(end, blocks.lo * B + 1) if blocks.hi > blocks.lo else end
        edges.append((start, head_stop))
        if blocks.hi > blocks.lo:
            edges.append((max(start, blocks.hi * B - 1), end))
        for a, z in edges:
            if z - a >= 2:
                vals = self._gather(x, np.arange(a, z, dtype=np.int64))
                bad = np.flatnonzero(np.diff(vals) < 0)
                if bad.size:
                    checked = max(checked, a + int(bad[-1]) + 1)
        if checked > start and self.stream.intact(start):
            raise NotSorted(
                f"column {x!r} of stream {self.stream.name!r} decreases at offset "
                f"{checked}: a view of an x-range needs an x that never decreases (a time "
                "column, or the offset); ask for a view by offset instead (no `x`)"
            )

    def _search(self, x: str, start: int, end: int, targets: np.ndarray) -> np.ndarray:
        """For each target value, the first offset in ``start:end`` whose x is not below
        it (``end`` when none): a vectorised bisection over the ring, no copy of x."""
        lo = np.full(len(targets), start, dtype=np.int64)
        hi = np.full(len(targets), end, dtype=np.int64)
        size, cols = self._ring()
        ring = cols[x]
        for _ in range(max(1, int(end - start).bit_length() + 1)):
            open_ = lo < hi
            if not open_.any():
                break
            mid = (lo + hi) // 2
            below = np.zeros(len(targets), dtype=bool)
            below[open_] = ring[mid[open_] % size] < targets[open_]
            lo = np.where(open_ & below, mid + 1, lo)
            hi = np.where(open_ & ~below, mid, hi)
        return lo

    # ------------------------------------------------------------------ the view

    def select(
        self,
        edges: np.ndarray,
        columns: list[str],
        budget: int,
    ) -> tuple[np.ndarray, bool]:
        """The offsets to draw for buckets ``edges[i]:edges[i+1]`` (offsets, ascending):
        every row when they hold at most ``budget`` rows, else each bucket's first and
        last row and, per column, its lowest and highest. Sorted, without repeats."""
        first, stop = int(edges[0]), int(edges[-1])
        if stop - first <= budget:
            return np.arange(first, stop, dtype=np.int64), True
        B = self.block
        e0, e1 = edges[:-1].astype(np.int64), edges[1:].astype(np.int64)
        full = e1 > e0
        picks = [e0[full], e1[full] - 1]
        for name in columns:
            blocks = self._blocks(name)
            k0 = np.maximum(-(-e0 // B), blocks.lo)
            k1 = np.minimum(e1 // B, blocks.hi)
            has = k1 > k0
            k1 = np.where(has, k1, k0)
            head_end = np.where(has, k0 * B, e1)
            tail_start = np.where(has, k1 * B, e1)
            # Raw rows: per bucket its head, then its tail (segments 2i and 2i+1).
            r_start = np.stack([e0, tail_start], axis=1).ravel()
            r_len = np.stack([head_end - e0, e1 - tail_start], axis=1).ravel()
            raw_off = _ranges(r_start, r_len)
            raw_val = self._gather(name, raw_off)
            k_idx = _ranges(k0, k1 - k0) % blocks.slots
            for highest in (False, True):
                rv, ro = _segment_best(raw_val, raw_off, r_len, highest)
                bv_all = blocks.max[k_idx] if highest else blocks.min[k_idx]
                bo_all = blocks.argmax[k_idx] if highest else blocks.argmin[k_idx]
                bv, bo = _segment_best(bv_all, bo_all, k1 - k0, highest)
                cand_v = np.stack([rv[0::2], bv, rv[1::2]], axis=1)
                cand_o = np.stack([ro[0::2], bo, ro[1::2]], axis=1)
                if cand_v.dtype.kind == "f":
                    cand_v = np.where(cand_o < 0, np.nan, cand_v)
                    score = np.where(np.isnan(cand_v), -np.inf if highest else np.inf, cand_v)
                else:
                    score = cand_v
                pick = np.argmax(score, axis=1) if highest else np.argmin(score, axis=1)
                chosen = cand_o[np.arange(len(cand_o)), pick]
                picks.append(chosen[chosen >= 0])
        offsets = np.unique(np.concatenate(picks))
        return offsets, False

    def view(
        self,
        *,
        x: str | None,
        x_range: tuple[float, float] | None,
        width: int,
        columns: list[str],
        points_per_bucket: int = 4,
        read: list[str] | None = None,
    ) -> View:
        """The rows to draw of the x-range ``x_range`` (inclusive; None: the whole
        history) at ``width`` buckets (pixels). ``x``: the x column, or None for the
        offset. ``columns``: the columns whose extremes must show (the plotted y's).
        ``read``: the columns the batch carries (default: every column)."""
        if not isinstance(width, int) or not 1 <= width <= 100_000:
            raise BadMessage(f"width must be a whole number of pixels 1..100000; got {width!r}")
        for name in columns:
            self._numeric(name)
        unknown = [n for n in read or () if n not in self.stream.schema]
        if unknown:
            raise BadMessage(
                f"stream {self.stream.name!r} has no column {unknown[0]!r} to read; its "
                "columns: " + ", ".join(self.stream.schema)
            )
        # Rows a producer may overwrite while a view of the oldest rows is read: none at
        # first; after a lapped read, twice what was appended meanwhile (a full history
        # appended fast loses its oldest rows during every read of them).
        spare = 0
        last_end: int | None = None
        for _attempt in range(4):
            with self._lock:
                start, end = self.stream.window()
                if last_end is not None:
                    spare = max(2 * spare, 2 * (end - last_end), self.block)
                last_end = end
                start = min(end, start + spare)
                if x is not None:
                    self._numeric(x)
                    self._x_sorted(x, start, end)
                first, stop = self._row_range(x, x_range, start, end)
                if stop - first <= 0:
                    edges = np.array([first, first], dtype=np.int64)
                    buckets = 0
                else:
                    buckets = width
                    edges = self._edges(x, x_range, first, stop, width)
                offsets, exact = self.select(edges, columns, points_per_bucket * max(buckets, 1))
            names = tuple(read) if read is not None else tuple(self.stream.schema)
            cols = self._ring()[1]
            data = {n: cols[n].take(offsets, mode="wrap") for n in names} if offsets.size else {}
            if offsets.size and not self.stream.intact(int(offsets[0])):
                continue  # a producer lapped the rows while they were read: again
            if not offsets.size:
                data = {n: np.zeros(0, dtype=NUMERIC_DTYPES.get(t, object))
                        for n, t in self.stream.schema.items() if n in names}  # fmt: skip
            schema = {n: self.stream.schema[n] for n in names}
            batch = Batch(data, schema, offset=int(offsets[0]) if offsets.size else first)
            return View(batch, offsets, exact, first, stop, end, buckets)
        raise BadMessage(
            f"stream {self.stream.name!r} is appended faster than its history can be read "
            "for a view; ask for a narrower range nearer the live edge, or keep a longer "
            "history"
        )

    def _row_range(
        self, x: str | None, x_range: tuple[float, float] | None, start: int, end: int
    ) -> tuple[int, int]:
        if x_range is None:
            return start, end
        lo, hi = x_range
        if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
            raise BadMessage(f"x_range must be two finite numbers, low then high; got {x_range}")
        if x is None:
            return max(start, min(end, math.ceil(lo))), max(start, min(end, math.floor(hi) + 1))
        found = self._search(x, start, end, np.array([lo, np.nextafter(hi, np.inf)]))
        return int(found[0]), int(found[1])

    def _edges(
        self,
        x: str | None,
        x_range: tuple[float, float] | None,
        first: int,
        stop: int,
        width: int,
    ) -> np.ndarray:
        """Bucket boundaries (offsets) of ``width`` equal slices of the x-range."""
        if x is None:
            lo = first if x_range is None else max(x_range[0], first)
            hi = stop if x_range is None else min(x_range[1] + 1, stop)
            cuts = np.ceil(np.linspace(lo, hi, width + 1))
            edges = np.clip(cuts.astype(np.int64), first, stop)
        else:
            if x_range is None:
                size, cols = self._ring()
                lo = float(cols[x][first % size])
                hi = float(cols[x][(stop - 1) % size])
            else:
                lo, hi = x_range
            cuts = np.linspace(lo, hi, width + 1)[1:-1]
            inner = self._search(x, first, stop, cuts)
            edges = np.concatenate([[first], inner, [stop]]).astype(np.int64)
        edges[0], edges[-1] = first, stop
        return np.maximum.accumulate(edges)


def select_rows(values: dict[str, np.ndarray], edges: np.ndarray, budget: int) -> np.ndarray:
    """The same choice as :meth:`Overview.select`, by brute force over plain arrays (the
    reference the tests and the benchmark compare with): indices into the arrays."""
    first, stop = int(edges[0]), int(edges[-1])
    if stop - first <= budget:
        return np.arange(first, stop)
    picks: set[int] = set()
    for a, z in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True):
        if z <= a:
            continue
        picks.update((a, z - 1))
        for v in values.values():
            seg = v[a:z]
            if seg.dtype.kind == "f":
                if np.isnan(seg).all():
                    continue
                picks.add(a + int(np.nanargmin(seg)))
                picks.add(a + int(np.nanargmax(seg)))
            else:
                picks.add(a + int(np.argmin(seg)))
                picks.add(a + int(np.argmax(seg)))
    return np.array(sorted(picks), dtype=np.int64)
