"""The stream's `Buffer` behaves as a trio memory channel of one sender and one receiver, and
`cancel_pending` makes the stream's hot paths cancel points exactly as trio's would be.

- `Buffer` alone: FIFO through a full buffer, capacity 0, cancelled waits, close, checkpoints;
- `Buffer` against `trio.open_memory_channel`: one random sequence of operations on both, the
  same observable results (a hypothesis property);
- `cancel_pending`: its fast path on the installed trio, and the fallback that always answers
  yes (the stream works the same on it);
- through the public API: a cancelled writer writes nothing, a cancelled consumer takes nothing.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import outcome
import pytest
import trio
import trio.lowlevel
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from trioflow import Context, Event, StartEvent, StopEvent, Workflow, step
from trioflow._core import _cancel, _context, _stream
from trioflow._core._buffer import Buffer


class Tick(Event):
    i: int


# -- helpers -------------------------------------------------------------------------------


def described(result: outcome.Outcome[object]) -> tuple[str, object]:
    """An outcome as something to compare: the value, or the exception's type."""
    if isinstance(result, outcome.Value):
        return ("value", result.value)
    assert isinstance(result, outcome.Error)
    return ("raised", type(result.error).__name__)


class Waiter:
    """A task awaiting one call (``put(x)`` or ``get()``) in a cancel scope of its own."""

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.result: outcome.Outcome[object] | None = None

    async def run(self, call: Callable[..., Awaitable[object]], *args: object) -> None:
        with self.scope:
            # acapture records a trio.Cancelled as well: how the call ended is what we check.
            self.result = await outcome.acapture(call, *args)

    @property
    def done(self) -> bool:
        return self.result is not None

    @property
    def ended(self) -> tuple[str, object] | None:
        return None if self.result is None else described(self.result)


class Tasks:
    """The tasks a test starts to await a buffer's `put` or `get`."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.waiters: list[Waiter] = []

    async def park(self, call: Callable[..., Awaitable[object]], *args: object) -> Waiter:
        """Start a task awaiting ``call(*args)`` and let it run until it waits (or ends)."""
        waiter = Waiter()
        self.nursery.start_soon(waiter.run, call, *args)
        self.waiters.append(waiter)
        await trio.testing.wait_all_tasks_blocked()
        return waiter


@asynccontextmanager
async def waiting_tasks() -> AsyncIterator[Tasks]:
    """A nursery for `Tasks.park`; at the end of the block every parked task must have ended.
    A task still waiting fails the test rather than hanging it, and so does the test's own
    task waiting forever in the block (on the `autojump_clock` that the tests using this take,
    a deadlock is at once a timeout)."""
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            tasks = Tasks(nursery)
            yield tasks
            await trio.testing.wait_all_tasks_blocked()
            stuck = [n for n, waiter in enumerate(tasks.waiters) if not waiter.done]
            nursery.cancel_scope.cancel()
    assert not stuck, f"tasks {stuck} (in the order started) still wait"


def drain(buffer: Buffer[int]) -> list[int]:
    """Everything `get_nowait` gives until it would block or the buffer has ended."""
    got: list[int] = []
    while True:
        try:
            got.append(buffer.get_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return got


# -- Buffer alone --------------------------------------------------------------------------


async def test_nowait_on_room_and_on_full() -> None:
    buffer = Buffer[int](2)
    with pytest.raises(trio.WouldBlock):
        buffer.get_nowait()
    buffer.put_nowait(1)
    buffer.put_nowait(2)
    with pytest.raises(trio.WouldBlock):
        buffer.put_nowait(3)  # full: refused, not appended
    assert list(buffer.items) == [1, 2]
    assert buffer.get_nowait() == 1
    buffer.put_nowait(4)
    assert drain(buffer) == [2, 4]


async def test_parked_writers_enter_a_full_buffer_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Writers waiting on a full buffer enter it oldest first as a reader makes room, and the
    buffer stays full while any waits."""
    buffer = Buffer[int](2)
    buffer.put_nowait(0)
    buffer.put_nowait(1)
    async with waiting_tasks() as tasks:
        writers = [await tasks.park(buffer.put, i) for i in range(2, 6)]
        assert buffer.writers_waiting == 4
        assert not any(w.done for w in writers)
        got = []
        for n in range(4):
            got.append(buffer.get_nowait())
            # the oldest writer's item went in at once; the buffer is full again
            assert list(buffer.items) == [n + 1, n + 2]
            assert buffer.writers_waiting == 3 - n
            await trio.testing.wait_all_tasks_blocked()
            assert [w.done for w in writers] == [True] * (n + 1) + [False] * (3 - n)
        got += [await buffer.get(), await buffer.get()]
    assert got == [0, 1, 2, 3, 4, 5]
    assert [w.ended for w in writers] == [("value", None)] * 4


async def test_get_with_parked_writers_keeps_fifo(autojump_clock: trio.testing.MockClock) -> None:
    """`get` (rather than `get_nowait`) on a full buffer with parked writers: the same order."""
    buffer = Buffer[int](1)
    buffer.put_nowait(0)
    async with waiting_tasks() as tasks:
        for i in range(1, 4):
            await tasks.park(buffer.put, i)
        got = [await buffer.get() for _ in range(4)]
    assert got == [0, 1, 2, 3]
    assert buffer.writers_waiting == 0
    assert not buffer.items


async def test_capacity_zero_nowait_without_a_partner() -> None:
    buffer = Buffer[int](0)
    with pytest.raises(trio.WouldBlock):
        buffer.put_nowait(1)
    with pytest.raises(trio.WouldBlock):
        buffer.get_nowait()
    assert not buffer.items


async def test_capacity_zero_a_parked_reader_is_handed_the_item(
    autojump_clock: trio.testing.MockClock,
) -> None:
    buffer = Buffer[int](0)
    async with waiting_tasks() as tasks:
        first = await tasks.park(buffer.get)
        buffer.put_nowait(7)  # handed over, never buffered
        assert not buffer.items
        second = await tasks.park(buffer.get)
        with trio.testing.assert_checkpoints():
            await buffer.put(8)  # a reader waits: the put does not
    assert (first.ended, second.ended) == (("value", 7), ("value", 8))


async def test_capacity_zero_a_parked_writer_hands_over_its_item(
    autojump_clock: trio.testing.MockClock,
) -> None:
    buffer = Buffer[int](0)
    async with waiting_tasks() as tasks:
        first = await tasks.park(buffer.put, 1)
        second = await tasks.park(buffer.put, 2)
        assert buffer.writers_waiting == 2
        assert not buffer.items  # nothing enters a buffer of size 0
        assert buffer.get_nowait() == 1
        assert not buffer.items
        assert buffer.writers_waiting == 1
        assert await buffer.get() == 2
        with pytest.raises(trio.WouldBlock):
            buffer.get_nowait()
    assert (first.ended, second.ended) == (("value", None), ("value", None))


@pytest.mark.parametrize("capacity", [0, 1, 3])
async def test_a_cancelled_parked_writer_puts_nothing(
    autojump_clock: trio.testing.MockClock, capacity: int
) -> None:
    """The middle one of three waiting writers is cancelled: its item never appears, and the
    others keep their order."""
    buffer = Buffer[int](capacity)
    for i in range(capacity):
        buffer.put_nowait(i)
    async with waiting_tasks() as tasks:
        writers = [await tasks.park(buffer.put, 100 + i) for i in range(3)]
        writers[1].scope.cancel()
        assert buffer.writers_waiting == 2  # taken off the queue at once
        await trio.testing.wait_all_tasks_blocked()
        assert writers[1].ended == ("raised", "Cancelled")
        got = [buffer.get_nowait() for _ in range(capacity + 2)]
        with pytest.raises(trio.WouldBlock):
            buffer.get_nowait()
    assert got == [*range(capacity), 100, 102]
    assert [w.ended for w in writers] == [
        ("value", None),
        ("raised", "Cancelled"),
        ("value", None),
    ]


@pytest.mark.parametrize("capacity", [0, 1])
async def test_a_cancelled_parked_reader_takes_nothing(
    autojump_clock: trio.testing.MockClock, capacity: int
) -> None:
    """A reader cancelled while it waits takes nothing: the next item goes to whoever reads
    next, a reader waiting behind it or a later `get_nowait`."""
    buffer = Buffer[int](capacity)
    async with waiting_tasks() as tasks:
        first = await tasks.park(buffer.get)
        second = await tasks.park(buffer.get)
        first.scope.cancel()
        buffer.put_nowait(1)  # to the reader still waiting
        await trio.testing.wait_all_tasks_blocked()
        assert (first.ended, second.ended) == (("raised", "Cancelled"), ("value", 1))
        third = await tasks.park(buffer.get)
        third.scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert third.ended == ("raised", "Cancelled")
        if capacity:
            buffer.put_nowait(2)  # nobody waits any more: it is buffered
            assert buffer.get_nowait() == 2
        else:
            with pytest.raises(trio.WouldBlock):  # nobody waits any more
                buffer.put_nowait(2)


async def test_a_cancelled_waiter_already_handed_its_item_keeps_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Once a waiting task has been handed its item (or had it taken), cancelling it before it
    runs loses nothing: the call returns as if the cancel came after."""
    buffer = Buffer[int](0)
    async with waiting_tasks() as tasks:
        reader = await tasks.park(buffer.get)
        buffer.put_nowait(1)
        reader.scope.cancel()
        writer = await tasks.park(buffer.put, 2)
        assert buffer.get_nowait() == 2
        writer.scope.cancel()
    assert (reader.ended, writer.ended) == (("value", 1), ("value", None))


async def test_close_ends_parked_readers(autojump_clock: trio.testing.MockClock) -> None:
    buffer = Buffer[int](2)
    async with waiting_tasks() as tasks:
        readers = [await tasks.park(buffer.get) for _ in range(2)]
        buffer.close()
    assert [r.ended for r in readers] == [("raised", "EndOfChannel")] * 2
    with pytest.raises(trio.EndOfChannel):
        await buffer.get()
    with pytest.raises(trio.EndOfChannel):
        buffer.get_nowait()


async def test_close_fails_parked_writers_and_keeps_what_is_buffered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    buffer = Buffer[int](2)
    buffer.put_nowait(1)
    buffer.put_nowait(2)
    async with waiting_tasks() as tasks:
        writers = [await tasks.park(buffer.put, i) for i in (3, 4)]
        buffer.close()
        assert buffer.writers_waiting == 0
    assert [w.ended for w in writers] == [("raised", "ClosedResourceError")] * 2
    assert buffer.get_nowait() == 1
    assert await buffer.get() == 2  # buffered items stay readable, and nothing else
    with pytest.raises(trio.EndOfChannel):
        buffer.get_nowait()
    with pytest.raises(trio.EndOfChannel):
        await buffer.get()


async def test_close_with_a_parked_writer_of_capacity_zero(
    autojump_clock: trio.testing.MockClock,
) -> None:
    buffer = Buffer[int](0)
    async with waiting_tasks() as tasks:
        writer = await tasks.park(buffer.put, 1)
        buffer.close()
    assert writer.ended == ("raised", "ClosedResourceError")
    with pytest.raises(trio.EndOfChannel):
        buffer.get_nowait()


async def test_writing_after_close_raises() -> None:
    buffer = Buffer[int](2)
    buffer.close()
    buffer.close()  # again: nothing happens
    with pytest.raises(trio.ClosedResourceError):
        buffer.put_nowait(1)
    with pytest.raises(trio.ClosedResourceError):
        await buffer.put(1)
    assert not buffer.items


async def test_put_and_get_are_checkpoints(autojump_clock: trio.testing.MockClock) -> None:
    """Every `put` and `get` is a checkpoint (cancel point and schedule point), whether it
    waits or not."""
    buffer = Buffer[int](1)
    with trio.testing.assert_checkpoints():
        await buffer.put(1)  # room
    with trio.testing.assert_checkpoints():
        assert await buffer.get() == 1  # something to read
    async with waiting_tasks() as tasks:
        buffer.put_nowait(2)
        reader = await tasks.park(buffer.get)
        with trio.testing.assert_checkpoints():
            await buffer.put(3)  # full: waits for the reader
        await trio.testing.wait_all_tasks_blocked()
        assert reader.ended == ("value", 2)

        async def put_later() -> None:
            await trio.testing.wait_all_tasks_blocked()
            buffer.put_nowait(4)

        assert buffer.get_nowait() == 3
        tasks.nursery.start_soon(put_later)
        with trio.testing.assert_checkpoints():
            assert await buffer.get() == 4  # empty: waits for a writer


@pytest.mark.parametrize("room", [True, False])
async def test_a_cancelled_put_puts_nothing_even_with_room(
    autojump_clock: trio.testing.MockClock, room: bool
) -> None:
    """In a cancelled scope `put` raises at once, even with room or a reader waiting."""
    buffer = Buffer[int](1 if room else 0)
    async with waiting_tasks() as tasks:
        reader = None if room else await tasks.park(buffer.get)
        with trio.CancelScope() as scope:
            scope.cancel()
            await buffer.put(1)
        assert scope.cancelled_caught
        assert not buffer.items
        if reader is not None:
            assert not reader.done
            reader.scope.cancel()


@pytest.mark.parametrize("room", [True, False])
async def test_a_cancelled_get_takes_nothing_even_with_an_item(
    autojump_clock: trio.testing.MockClock, room: bool
) -> None:
    """In a cancelled scope `get` raises at once, even with an item or a writer waiting."""
    buffer = Buffer[int](1 if room else 0)
    async with waiting_tasks() as tasks:
        if room:
            buffer.put_nowait(1)
        writer = None if room else await tasks.park(buffer.put, 1)
        with trio.CancelScope() as scope:
            scope.cancel()
            await buffer.get()
        assert scope.cancelled_caught
        assert buffer.get_nowait() == 1  # still there for the next reader
        if writer is not None:
            await trio.testing.wait_all_tasks_blocked()
            assert writer.ended == ("value", None)


# -- Buffer against trio's memory channel --------------------------------------------------


class Side(Protocol):
    """What the property drives: a `Buffer`, or a trio memory channel's two ends."""

    def put_nowait(self, item: int) -> None: ...
    async def put(self, item: int) -> None: ...
    def get_nowait(self) -> int: ...
    async def get(self) -> int: ...
    def close(self) -> None: ...
    def counts(self) -> tuple[int, int, int]:
        """Items buffered, writers waiting, readers waiting."""
        ...


class BufferSide:
    def __init__(self, capacity: int) -> None:
        self.buffer = Buffer[int](capacity)
        self.put_nowait = self.buffer.put_nowait
        self.put = self.buffer.put
        self.get_nowait = self.buffer.get_nowait
        self.get = self.buffer.get
        self.close = self.buffer.close

    def counts(self) -> tuple[int, int, int]:
        buffer = self.buffer
        return (len(buffer.items), buffer.writers_waiting, len(buffer._readers))


class ChannelSide:
    def __init__(self, capacity: int) -> None:
        self.send, self.receive = trio.open_memory_channel[int](capacity)
        self.put_nowait = self.send.send_nowait
        self.put = self.send.send
        self.get_nowait = self.receive.receive_nowait
        self.get = self.receive.receive
        self.close = self.send.close

    def counts(self) -> tuple[int, int, int]:
        stats = self.send.statistics()
        return (stats.current_buffer_used, stats.tasks_waiting_send, stats.tasks_waiting_receive)


#: put/get: start a task that awaits it (and let it run until it waits); "cancelled put" and
#: "cancelled get" start one in a scope already cancelled; "cancel" cancels the oldest task
#: that has not ended; "run" lets the tasks run (those handed an item, or cancelled, end).
OPERATIONS = (
    "put_nowait",
    "put_nowait",
    "get_nowait",
    "get_nowait",
    "put",
    "put",
    "get",
    "get",
    "cancelled put",
    "cancelled get",
    "cancel",
    "cancel",
    "run",
    "close",
)


async def observe(side: Side, operations: list[str]) -> list[object]:
    """Apply ``operations`` to ``side``: what each returned or raised, the counts after each,
    what each task ended with, and what is left to read."""
    log: list[object] = []
    waiters: list[Waiter] = []
    async with trio.open_nursery() as nursery:
        for n, op in enumerate(operations):
            if op == "put_nowait":
                log.append(described(outcome.capture(side.put_nowait, n)))
            elif op == "get_nowait":
                log.append(described(outcome.capture(side.get_nowait)))
            elif op in ("put", "get", "cancelled put", "cancelled get"):
                waiter = Waiter()
                if op.startswith("cancelled"):
                    waiter.scope.cancel()
                if op.endswith("put"):
                    nursery.start_soon(waiter.run, side.put, n)
                else:
                    nursery.start_soon(waiter.run, side.get)
                waiters.append(waiter)
                await trio.testing.wait_all_tasks_blocked()
            elif op == "cancel":
                oldest = next((w for w in waiters if not w.done), None)
                if oldest is not None:
                    oldest.scope.cancel()
            elif op == "run":
                await trio.testing.wait_all_tasks_blocked()
            else:
                assert op == "close"
                side.close()
            log.append((op, side.counts()))
        await trio.testing.wait_all_tasks_blocked()
        log.append(("ended before the end", [w.ended for w in waiters]))
        for waiter in waiters:  # those still waiting
            waiter.scope.cancel()
    log.append(("ended", [w.ended for w in waiters]))
    log.append(("left", described(outcome.capture(drain_side, side))))
    return log


def drain_side(side: Side) -> tuple[list[int], str]:
    got: list[int] = []
    while True:
        try:
            got.append(side.get_nowait())
        except (trio.WouldBlock, trio.EndOfChannel) as exc:
            return got, type(exc).__name__


# Derandomized, as the whole suite's properties (see conftest.py): how many examples is the
# profile's. Each is a few dozen trio operations; 200 of them take well under a second.
PROPERTY_SETTINGS = settings(deadline=None, derandomize=True, database=None)


@PROPERTY_SETTINGS
@given(
    capacity=st.integers(0, 4),
    operations=st.lists(st.sampled_from(OPERATIONS), max_size=40),
)
async def test_buffer_behaves_as_a_memory_channel(capacity: int, operations: list[str]) -> None:
    """One sequence of operations on a `Buffer` and on a trio memory channel of the same
    capacity: the same values, the same exceptions, the same waiting tasks, the same ends."""
    expected = await observe(ChannelSide(capacity), operations)
    got = await observe(BufferSide(capacity), operations)
    assert got == expected


# -- cancel_pending ------------------------------------------------------------------------


def trio_says_cancelled() -> bool:
    """What `trio.lowlevel.checkpoint_if_cancelled` tests, asked through trio's public API
    (a non-main task: no KeyboardInterrupt to deliver)."""
    return trio.current_effective_deadline() == -math.inf


def test_the_fast_check_is_in_use() -> None:
    assert _cancel.FAST, (
        "trioflow._core._cancel could not find the trio private attributes it reads, so "
        "cancel_pending() always answers yes: correct, but every event written to or read "
        "from a stream awaits trio's checkpoint_if_cancelled() again, a quarter of what an "
        "event costs. Update _fast_check() for this trio."
    )
    assert _cancel.cancel_pending is not _cancel._always
    # where the hot paths look it up: bound at import, so it must be the fast one there too
    assert vars(_stream)["cancel_pending"] is _cancel.cancel_pending
    assert vars(_context)["cancel_pending"] is _cancel.cancel_pending


async def test_cancel_pending_follows_cancel_scopes() -> None:
    """No, outside a cancelled scope; yes inside one; no in a shielded scope inside it. (The
    scopes hold no checkpoint, hence the noqa: asking without one is the point.)"""
    assert not _cancel.cancel_pending()
    with trio.CancelScope() as outer:
        assert not _cancel.cancel_pending()
        outer.cancel()
        assert _cancel.cancel_pending()
        assert trio_says_cancelled()
        with trio.CancelScope(shield=True):  # noqa: ASYNC100
            assert not _cancel.cancel_pending()
            assert not trio_says_cancelled()
            with trio.CancelScope() as inner:  # noqa: ASYNC100
                assert not _cancel.cancel_pending()  # inside the shield
                inner.cancel()
                assert _cancel.cancel_pending()
        with trio.CancelScope():  # noqa: ASYNC100
            assert _cancel.cancel_pending()  # a new scope inside a cancelled one
        await trio.lowlevel.checkpoint()
    assert outer.cancelled_caught
    assert not _cancel.cancel_pending()
    with trio.move_on_at(trio.current_time()):  # noqa: ASYNC100
        assert _cancel.cancel_pending()  # a deadline already passed
        assert trio_says_cancelled()
    with trio.move_on_after(10):  # noqa: ASYNC100
        assert not _cancel.cancel_pending()


async def test_cancel_pending_says_whether_checkpoint_if_cancelled_raises() -> None:
    for cancel in (False, True):
        raised = False
        with trio.CancelScope() as scope:
            if cancel:
                scope.cancel()
            pending = _cancel.cancel_pending()
            try:
                await trio.lowlevel.checkpoint_if_cancelled()
            except trio.Cancelled:
                raised = True
                raise
        assert pending == raised == cancel


def test_cancel_pending_sees_a_pending_keyboard_interrupt() -> None:
    """In the main task, a KeyboardInterrupt that trio holds until the next checkpoint makes
    `cancel_pending` answer yes, as `checkpoint_if_cancelled` then delivers it."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        pytest.skip("trio handles SIGINT only in the main thread, from the default handler")
    seen: list[bool] = []

    @trio.lowlevel.enable_ki_protection
    async def main() -> None:
        seen.append(_cancel.cancel_pending())
        signal.raise_signal(signal.SIGINT)  # protected here: trio only notes it
        seen.append(_cancel.cancel_pending())
        await trio.lowlevel.checkpoint_if_cancelled()

    with pytest.raises(KeyboardInterrupt):
        trio.run(main)
    assert seen == [False, True]


@pytest.fixture(params=["fast", "fallback"])
def cancel_check(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The stream's hot paths with the fast `cancel_pending`, or with the fallback of a trio
    without the attributes it reads (always yes); with the fallback, that it is used."""
    if request.param == "fast":
        yield "fast"
        return
    calls = 0

    def always() -> bool:
        nonlocal calls
        calls += 1
        return _cancel._always()

    # `cancel_pending` is bound into the modules that use it at import: patch it there.
    for module in (_cancel, _stream, _context):
        monkeypatch.setattr(module, "cancel_pending", always)
    yield "fallback"
    assert calls > 0, "the fallback cancel_pending was never called"


class Writer(Workflow):
    """Writes `n` ticks, then stops."""

    @step
    async def write(self, ctx: Context, ev: StartEvent) -> StopEvent:
        for i in range(ev.n):
            await ctx.write_event_to_stream(Tick(i=i))
        return StopEvent(result=ev.n)


@pytest.mark.parametrize("stream_buffer", [0, 1, 64])
async def test_a_stream_works_on_either_check(cancel_check: str, stream_buffer: int) -> None:
    async with Writer(stream_buffer=stream_buffer).start(n=300) as handler:
        events = [ev async for ev in handler.stream_events()]
        assert await handler.result() == 300
    assert events == [*(Tick(i=i) for i in range(300)), StopEvent(result=300)]


# -- through the public API ----------------------------------------------------------------


class CancelledWrite(Workflow):
    """Writes Tick 0, then Tick -1 in a cancelled scope, then Tick 1. The step's result: whether
    the write raised trio.Cancelled, and whether the scope caught it."""

    @step
    async def write(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await ctx.write_event_to_stream(Tick(i=0))
        await trio.sleep(1)  # the consumer is waiting for the next event by now
        raised = False
        with trio.CancelScope() as scope:
            scope.cancel()
            try:
                await ctx.write_event_to_stream(Tick(i=-1))
            except trio.Cancelled:
                raised = True
                raise
        await ctx.write_event_to_stream(Tick(i=1))
        return StopEvent(result=(raised, scope.cancelled_caught))


@pytest.mark.parametrize("stream_buffer", [0, 1, 64])
async def test_a_write_in_a_cancelled_scope_raises_and_writes_nothing(
    autojump_clock: trio.testing.MockClock, cancel_check: str, stream_buffer: int
) -> None:
    """`ctx.write_event_to_stream` in a cancelled scope raises trio.Cancelled and writes
    nothing, though there is room in the buffer (or a consumer waiting to be handed it)."""
    async with CancelledWrite(stream_buffer=stream_buffer).start() as handler:
        events = [ev async for ev in handler.stream_events()]
        assert await handler.result() == (True, True)
    assert events == [Tick(i=0), Tick(i=1), StopEvent(result=(True, True))]
    assert handler.statistics().discarded == 0


async def test_a_consumer_in_a_cancelled_scope_takes_nothing(cancel_check: str) -> None:
    """A consumer whose `async for` runs in a cancelled scope gets trio.Cancelled at its next
    `__anext__`, though events are buffered, and takes nothing: a later `stream_events()`
    gets the next event."""
    got: list[Event] = []
    async with Writer(stream_buffer=16).start(n=5) as handler:
        await trio.testing.wait_all_tasks_blocked()  # all five buffered
        assert handler.statistics().buffered == 5
        with trio.CancelScope() as scope:
            async for ev in handler.stream_events():
                got.append(ev)
                if ev == Tick(i=1):
                    scope.cancel()
        assert scope.cancelled_caught
        assert handler.statistics().buffered == 3
        rest = [ev async for ev in handler.stream_events()]
    assert got == [Tick(i=0), Tick(i=1)]
    assert rest == [Tick(i=2), Tick(i=3), Tick(i=4), StopEvent(result=5)]


async def test_an_anext_in_a_cancelled_scope_raises_cancelled(cancel_check: str) -> None:
    async with Writer(stream_buffer=16).start(n=3) as handler:
        await trio.testing.wait_all_tasks_blocked()
        events = handler.stream_events()
        assert await events.__anext__() == Tick(i=0)
        raised = False
        with trio.CancelScope() as scope:
            scope.cancel()
            try:
                await events.__anext__()
            except trio.Cancelled:
                raised = True
                raise
        assert raised
        with pytest.raises(StopAsyncIteration):  # it ended, and handed the stream on
            await events.__anext__()
        rest = [ev async for ev in handler.stream_events()]
    assert rest == [Tick(i=1), Tick(i=2), StopEvent(result=3)]


class Gated(Workflow):
    """Writes Tick 0, sleeps 10 s, writes Tick 1, stops."""

    @step
    async def write(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await ctx.write_event_to_stream(Tick(i=0))
        await trio.sleep(10)
        await ctx.write_event_to_stream(Tick(i=1))
        return StopEvent()


@pytest.mark.parametrize("stream_buffer", [0, 4])
async def test_a_consumer_cancelled_while_it_waits_takes_nothing(
    autojump_clock: trio.testing.MockClock, cancel_check: str, stream_buffer: int
) -> None:
    got: list[Event] = []
    async with Gated(stream_buffer=stream_buffer).start() as handler:
        with trio.move_on_after(5) as scope:  # waits for Tick 1, which comes at 10 s
            async for ev in handler.stream_events():
                got.append(ev)
        assert scope.cancelled_caught
        rest = [ev async for ev in handler.stream_events()]
    assert got == [Tick(i=0)]
    assert rest == [Tick(i=1), StopEvent()]


class BlockedWrite(Workflow):
    """Fills the buffer (`n` ticks), gives up a write of Tick -1 after waiting 1 s for room,
    then writes Tick n. The step's result: whether it gave up."""

    @step
    async def write(self, ctx: Context, ev: StartEvent) -> StopEvent:
        for i in range(ev.n):
            await ctx.write_event_to_stream(Tick(i=i))
        with trio.move_on_after(1) as scope:
            await ctx.write_event_to_stream(Tick(i=-1))
        await ctx.write_event_to_stream(Tick(i=ev.n))
        return StopEvent(result=scope.cancelled_caught)


@pytest.mark.parametrize("stream_buffer", [0, 2])
async def test_a_writer_cancelled_while_the_stream_is_full_writes_nothing(
    autojump_clock: trio.testing.MockClock, cancel_check: str, stream_buffer: int
) -> None:
    async with BlockedWrite(stream_buffer=stream_buffer).start(n=stream_buffer) as handler:
        await trio.sleep(5)  # nobody reads: the write of Tick -1 waits, then gives up
        stats = handler.statistics()
        assert (stats.buffered, stats.writers_waiting) == (stream_buffer, 1)  # Tick n waits
        events = [ev async for ev in handler.stream_events()]
        assert await handler.result() is True
    ticks = [*(Tick(i=i) for i in range(stream_buffer + 1))]
    assert events == [*ticks, StopEvent(result=True)]


# -- found in review: a Ctrl-C inside a read, a stream of size 0 -------------------------------


def _main_thread_sigint() -> bool:
    return (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    )


async def _interrupt_a_read_at(line: int) -> tuple[bool, int, int, list[int]]:
    """A stream of 2 with E0, E1 buffered and E2's writer waiting; a read that a Ctrl-C
    interrupts on ``line`` of `StreamIterator.__anext__` (trio raises it there, the reader's
    code being unprotected); then E3 is written and everything left is read. Returns whether it
    fired, the writers waiting at a buffer with room after it, and the ints read after."""
    stream = _stream.EventStream(2)
    code = _stream.StreamIterator.__anext__.__code__
    fired = False

    def trace(frame: types.FrameType, event: str, arg: Any) -> Any:
        if frame.f_code is not code:
            return None

        def on_line(frame: types.FrameType, event: str, arg: Any) -> Any:
            nonlocal fired
            if event == "line" and frame.f_lineno == line and not fired:
                fired = True
                signal.raise_signal(signal.SIGINT)
            return on_line

        return on_line

    async def write(i: int) -> None:
        with contextlib.suppress(Exception):  # E2's writer, had its event been dropped
            await stream.write(Tick(i=i))

    async with trio.open_nursery() as nursery:
        for i in range(3):
            nursery.start_soon(write, i)
            await trio.testing.wait_all_tasks_blocked()
        reader = stream.open(())
        sys.settrace(trace)
        try:
            await reader.__anext__()
        except KeyboardInterrupt:
            pass
        finally:
            sys.settrace(None)
        await reader.aclose()  # (not read on: a line the read did not reach, it got E0)
        buffer = stream._buffer
        stranded = len(buffer.writers) if len(buffer.items) < buffer.capacity else 0
        nursery.start_soon(write, 3)
        await trio.testing.wait_all_tasks_blocked()
        stream.close(StopEvent())
        rest = [ev.i async for ev in stream.open((Tick,)) if isinstance(ev, Tick)]
    return fired, stranded, len(buffer.writers), rest


def test_a_ctrl_c_anywhere_in_a_read_leaves_no_writer_behind() -> None:
    """Wherever a KeyboardInterrupt lands in a read, no writer is left waiting at a buffer
    with room, and what is read after keeps the written order: taking from a full buffer and
    letting the waiting writer's event in is one protected call, not two lines of the
    (unprotected) reader between which trio may raise."""
    if not _main_thread_sigint():
        pytest.skip("trio handles SIGINT only in the main thread, from the default handler")
    code = _stream.StreamIterator.__anext__.__code__
    lines = sorted({line for _, _, line in code.co_lines() if line is not None})
    fired_on = 0
    for line in lines:
        fired, stranded, _, rest = trio.run(_interrupt_a_read_at, line)
        fired_on += fired
        assert stranded == 0, f"a Ctrl-C on line {line} left a writer behind"
        # What is left reads in the written order: E1, E2 if the read took E0 (and so let
        # E2's writer in), else E0, E1 (and the writers of E2 and E3 failed at the close).
        assert rest in ([0, 1], [1, 2]), (line, rest)
    assert fired_on >= 5  # the interrupts did land, on the lines of the path taken


async def test_a_reader_of_a_stream_of_size_0_lets_others_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reading from writers waiting at a stream of size 0 yields now and then as any reading
    does (`YIELD_EVERY`, set to 0 here so that every 64th read yields)."""
    monkeypatch.setattr(_stream, "YIELD_EVERY", 0.0)
    stream = _stream.EventStream(0)
    ran = 0

    async def other() -> None:
        nonlocal ran
        while True:
            ran += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        for i in range(300):
            nursery.start_soon(stream.write, Tick(i=i))
        await trio.testing.wait_all_tasks_blocked()
        assert stream.writers_waiting == 300
        reader = stream.open(())
        nursery.start_soon(other)  # it runs only when the reader lets it
        read = [await reader.__anext__() for _ in range(300)]
        during = ran
        nursery.cancel_scope.cancel()
    # (in the order the writers began to wait, which is trio's to choose)
    assert sorted(ev.i for ev in read if isinstance(ev, Tick)) == list(range(300))
    assert during >= 4  # 300 reads: a yield at least every 64th
