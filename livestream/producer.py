"""Producers: functions, generators and coroutines that feed a stream on a schedule.

``@stream.producer(every=0.05, params={...})`` wraps a function ``f(params)``:

* a plain function runs in its own worker thread every ``every`` seconds, so a slow or
  blocking producer never stalls the server or other producers;
* a generator function is iterated in its worker thread, one batch per item (paced by
  ``every`` when given);
* an ``async def`` function or async generator runs on the server's event loop.

Whatever it returns or yields (rows in any shape ``Stream.append`` takes, or ``None``) is
appended. While the stream is paused the producer is not called. A producer that raises (or
returns rows of the wrong schema) puts its stream in the ``error`` state with the message,
which every viewer sees; a ``resume`` control starts it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .columns import to_batch
from .controls import Action, Param, Params
from .errors import ConfigError

if TYPE_CHECKING:
    from .streams import Stream

__all__ = ["STALL_SECONDS", "Producer", "Schedule"]

log = logging.getLogger("livestream.producer")

#: A call that has not returned after this many seconds (or after ``every``, when longer)
#: makes the producer *stalled* (see :meth:`Producer.stalled_for`).
STALL_SECONDS = 1.0


class Schedule:
    """When a producer's next step is due: one schedule for every kind of producer.

    Steps are due ``every`` seconds apart, counted from the step before, so a steady
    producer keeps its rate. A step that ends after the next one was due does not start a
    burst to catch up: the next step is due at once, and the pace goes on from there.
    Without ``every`` (a generator that paces itself) every step is due at once. Pure: the
    clock is injected, so tests drive it by hand.

    >>> now = [0.0]
    >>> s = Schedule(0.05, clock=lambda: now[0])
    >>> s.delay(), s.done(), s.delay()
    (0.0, None, 0.05)
    >>> now[0] = 1.0; s.done(); s.delay()   # a slow step: due at once, no burst after it
    0.0
    """

    def __init__(self, every: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every or 0.0
        self._clock = clock
        self.next_at = clock()

    def delay(self) -> float:
        """Seconds until the next step is due; 0 when it is due now."""
        return max(0.0, self.next_at - self._clock())

    def done(self) -> None:
        """Record that a step was made."""
        self.next_at = max(self.next_at + self.every, self._clock())


def _wants_params(fn: Callable[..., Any]) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return True
    positional = [
        p
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return bool(positional)


class _LiveParams(Params):
    """The stream's current parameter values, read at each access.

    A generator gets its ``params`` once, when it starts, so it needs a view that follows
    later ``set`` controls rather than a snapshot.
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    @property
    def _values(self) -> dict[str, Any]:  # type: ignore[override]
        return self._stream.controls.values  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"Params({dict(self._values)!r})"


class Producer:
    """A running producer attached to a stream. Returned by ``@stream.producer``.

    ``pause()``, ``resume()``, ``stop()`` and ``start()`` control it from Python; viewers
    control it through the stream's controls. Calling the producer object calls the wrapped
    function directly (handy in tests).
    """

    def __init__(
        self,
        stream: Stream,
        fn: Callable[..., Any],
        *,
        every: float | None = None,
        params: dict[str, Param] | None = None,
        actions: dict[str, Any] | None = None,
        start: bool = True,
    ) -> None:
        if every is not None and every < 0:
            raise ConfigError(f"`every` must be a number of seconds >= 0; got {every!r}")
        self.stream = stream
        self.fn = fn
        self.every = every
        self.name = getattr(fn, "__name__", "producer")
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)
        self.is_generator = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
        if not self.is_generator and every is None:
            raise ConfigError(
                f"producer {self.name!r} is a plain function: give `every=` seconds between calls"
                " (or make it a generator that yields batches)"
            )
        self._pass_params = _wants_params(fn)
        acts = {}
        for name, act in (actions or {}).items():
            acts[name] = act if isinstance(act, Action) else Action(callback=act)
        stream.attach_producer(self, fresh=start)
        stream.declare(params or {}, acts, as_declared=start)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._task: Any = None
        self._generation = 0
        self._call_started: float | None = None  # monotonic start of the running call
        self._close: Callable[[], Any] | None = None  # closes the running generator
        self._loop: asyncio.AbstractEventLoop | None = None  # where an async producer runs
        self._async_wake: asyncio.Event | None = None
        self.calls = 0
        if start:
            self.start()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return (
            f"<Producer {self.name!r} of stream {self.stream.name!r} status={self.stream.status}>"
        )

    # ------------------------------------------------------------------ control

    def action(
        self, name: str, label: str | None = None
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator declaring a custom action: ``@tick.action("reset")``."""

        def register(callback: Callable[..., Any]) -> Callable[..., Any]:
            self.stream.declare(actions={name: Action(callback=callback, label=label)})
            return callback

        return register

    def start(self) -> None:
        """Start (or restart after an error or stop)."""
        self.stop(wait=False)
        self._stop = threading.Event()
        self._generation += 1
        stream = self.stream
        if self.is_async:
            if stream.host is None:
                raise ConfigError(
                    f"async producer {self.name!r} needs a server loop; create the stream "
                    "with livestream.stream() or Server.stream()"
                )
            loop = stream.loop
            if loop is None:
                # Server.start_async starts it once the server's loop runs.
                stream.set_status("idle")
                return
            stream.set_status("paused" if stream.paused else "running")
            stop = self._stop

            def spawn() -> None:
                self._task = loop.create_task(self._run_async(stop))

            loop.call_soon_threadsafe(spawn)
        else:
            stream.set_status("paused" if stream.paused else "running")
            self._thread = threading.Thread(
                target=self._run_thread,
                args=(self._stop,),
                name=f"livestream-producer-{stream.name}",
                daemon=True,
            )
            self._thread.start()

    def loop_started(self) -> None:
        """The server's loop runs now: an async producer that waits for it starts."""
        if self.is_async and self._task is None:
            self.start()

    def stop(self, wait: bool = True, timeout: float = 5.0) -> None:
        """Stop calling the function. With ``wait``, wait (bounded) for a running call."""
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            task, self._task = self._task, None
            loop = task.get_loop()
            if not loop.is_closed():
                loop.call_soon_threadsafe(task.cancel)
        thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if self.stream.status in ("running", "paused"):
            self.stream.set_status("stopped")

    def pause(self) -> None:
        """Pause the stream (viewers see it)."""
        self.stream.pause()

    def resume(self) -> None:
        """Resume the stream (viewers see it)."""
        self.stream.resume()

    def wake(self) -> None:
        """Called when controls change, so a waiting producer notices at once."""
        self._wake.set()
        loop, woken = self._loop, self._async_wake
        if loop is not None and woken is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(woken.set)

    def stalled_for(self) -> float | None:
        """Seconds the running call of the function (or step of the generator) has lasted,
        when longer than ``STALL_SECONDS`` and than ``every``; else None. A producer
        blocked on I/O or a lock shows here while its stream simply stops growing."""
        started = self._call_started
        if started is None:
            return None
        running = time.monotonic() - started
        return running if running > max(STALL_SECONDS, self.every or 0.0) else None

    # ------------------------------------------------------------------ running

    def _params(self) -> Params:
        return Params(dict(self.stream.controls.values))

    def _emit(self, rows: Any) -> None:
        if rows is not None:
            self.stream.append(rows)

    def _fail(self, exc: BaseException) -> None:
        log.warning(
            "producer %r of stream %r failed: %s", self.name, self.stream.name, exc, exc_info=exc
        )
        self.stream.set_status("error", f"{type(exc).__name__}: {exc}")

    def _wait(self, stop: threading.Event, schedule: Schedule) -> bool:
        """Wait until the next step is due and the stream is not paused; False when stopped.
        A control (resume, set) wakes it at once."""
        while not stop.is_set():
            delay = 3600.0 if self.stream.paused else schedule.delay()
            if delay <= 0:
                return True
            self._wake.wait(delay)
            self._wake.clear()
        return False

    def _step(self) -> Callable[[], Any]:
        """One step of the producer: a call of the function, or the generator's next item
        (``StopIteration`` / ``StopAsyncIteration`` when it ends)."""
        if self.is_generator:
            args = (_LiveParams(self.stream),) if self._pass_params else ()
            gen = self.fn(*args)
            self._close = gen.aclose if self.is_async else gen.close
            return gen.__anext__ if self.is_async else gen.__next__  # type: ignore[no-any-return]
        if self._pass_params:
            return lambda: self.fn(self._params())
        return self.fn

    def _stepped(self, rows: Any, schedule: Schedule) -> None:
        self._call_started = None
        self.calls += 1
        self._emit(rows)
        schedule.done()

    def _run_thread(self, stop: threading.Event) -> None:
        schedule = Schedule(self.every)
        try:
            step = self._step()
            while self._wait(stop, schedule):
                self._call_started = time.monotonic()
                try:
                    rows = step()
                except StopIteration:
                    break
                self._stepped(rows, schedule)
        except BaseException as exc:
            self._call_started = None
            if not stop.is_set():
                self._fail(exc)
            return
        finally:
            self._close_generator()
        if not stop.is_set():
            self.stream.set_status("stopped")

    def _close_generator(self) -> Any:
        close, self._close = self._close, None
        return close() if close is not None else None

    async def _sleep_until_due(self, stop: threading.Event, schedule: Schedule) -> bool:
        """The async twin of :meth:`_wait`, woken by :meth:`wake` through an asyncio event."""
        while not stop.is_set():
            delay = 3600.0 if self.stream.paused else schedule.delay()
            if delay <= 0:
                return True
            woken = self._async_wake
            assert woken is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), delay)
            woken.clear()
        return False

    async def _run_async(self, stop: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._async_wake = asyncio.Event()
        schedule = Schedule(self.every)
        try:
            step = self._step()
            stream = self.stream
            paced = bool(schedule.every)
            while (
                # Due at once (no pace, not paused, not stopped): the common case of a
                # generator pacing itself, checked without a coroutine per step.
                (not paced and not stream.paused and not stop.is_set())
                or await self._sleep_until_due(stop, schedule)
            ):
                self._call_started = time.monotonic()
                try:
                    rows = await step()
                except StopAsyncIteration:
                    break
                if rows is not None and self.stream.overflow == "wait":
                    # On the loop an append cannot block: await room here instead.
                    rows = to_batch(rows)
                    await self.stream.wait_for_room_async(rows.rows)
                self._stepped(rows, schedule)
                host = self.stream.host
                if host is not None:
                    # Share the loop fairly with the writes to the viewers (Hub.turn).
                    waiting = host.turn(self.stream)
                    if waiting is not None:
                        await waiting
        except asyncio.CancelledError:
            self._call_started = None
            return
        except Exception as exc:
            self._call_started = None
            if not stop.is_set():
                self._fail(exc)
            return
        finally:
            closing = self._close_generator()
            if closing is not None:
                with contextlib.suppress(Exception):
                    await closing
        if not stop.is_set():
            self.stream.set_status("stopped")
