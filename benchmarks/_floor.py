"""The floor: the best bare trio program for each scenario, with no workflow runtime in between.

"Best" means the tricks trioflow itself uses, so that trioflow's overhead over the floor is what
its runtime costs and nothing else:

- **routing** (`routing`): two tasks bounce an int, each handing it straight to the other,
  parked in `trio.lowlevel.wait_task_rescheduled`, with `trio.lowlevel.reschedule`, and parking
  at once: one task switch per hop, no channel, no yield on the sending side. That is what a
  trioflow hop does (`trioflow._core._inbox`), and nothing in trio is cheaper.
- **stream** (`stream`): one task writes small attrs events into a deque of at most 256
  (trioflow's default ``stream_buffer``), and the consumer takes them from it, each side
  parking only when the buffer is full or empty and then handed its item by the other (as
  trioflow's stream buffer does, `trioflow._core._buffer`). Both sides work in batches, one
  task switch per buffer-full, with no call per event but the event's construction.
- **the stream behind trioflow's API** (`stream`, variant ``api``): the same buffer, written
  through an ``async def`` awaited per event and read with ``async for`` (an ``__anext__`` per
  event), each call a cancel point (asked as trioflow asks it, without a coroutine). This is the
  least a stream with trioflow's API can cost, so trioflow's overhead over it is what its
  runtime adds (filters, statistics, claims, the periodic yield); the default floor's is that
  plus the API's own shape.

The earlier floors stay as named variants, for continuity with older figures: routing through
two memory channels with plain ``await send()`` / ``await receive()`` (``buffer0``: unbuffered,
trio's default advice; ``buffer1``: a buffer of one); the stream through a trio memory channel
of 256 written with ``send_nowait`` and read with ``receive_nowait``, in batches (``channel``,
the floor of 2026-12-01), and with ``await send()`` on every event through a buffer of 64
(``send``). Each ``send()`` is a checkpoint that yields to the scheduler, so that one pays a
scheduler round trip per event that the runtime does not.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable

import attrs
import trio
import trio.testing
from outcome import Value
from trio.lowlevel import (
    Abort,
    Task,
    checkpoint_if_cancelled,
    current_task,
    reschedule,
    wait_task_rescheduled,
)

from benchmarks._common import Metrics, Params, even, stream_metrics

# Whether the current task's next cancel point raises, asked without a coroutine: the floor
# behind trioflow's API asks it as trioflow's hot paths do, with the same function (trio's
# private state, or trio's own check should a release of trio rename it).
from trioflow._core._cancel import cancel_pending as _cancel_pending

ROUTING_BUFFERS = {"buffer0": 0, "buffer1": 1}
#: The batching stream's buffer: trioflow's default ``stream_buffer``.
STREAM_BUFFER = 256
#: The buffer of the stream that awaits ``send()`` per event (variant ``send``).
SEND_BUFFER = 64


@attrs.frozen
class Tick:
    i: int


async def _bounce(
    n: int, inbox: trio.MemoryReceiveChannel[int], out: trio.MemorySendChannel[int]
) -> None:
    async with out:
        async for i in inbox:
            if i >= n:
                return  # closing `out` ends the other task's loop
            await out.send(i + 1)


def _abort(_: object) -> Abort:
    return Abort.SUCCEEDED


async def _handoff(n: int) -> Metrics:
    """Two tasks; each waits parked for the count, and hands ``count + 1`` straight to the
    other (which is parked by then) until the count reaches ``n``. A negative count ends both."""
    tasks: list[Task | None] = [None, None]

    async def bounce(me: int, other: int) -> None:
        tasks[me] = current_task()
        while True:
            i: int = await wait_task_rescheduled(_abort)
            if i < 0:
                return
            to = tasks[other]
            assert to is not None
            if i >= n:
                reschedule(to, Value(-1))
                return
            reschedule(to, Value(i + 1))

    return await _time_bouncing(n, bounce, tasks, 0)


@attrs.frozen
class Hop:
    i: int
    n: int


async def _next_hop(ev: Hop) -> Hop:
    """The step of `_handoff_api`: what a trioflow step of the ping-pong does."""
    return Hop(i=ev.i + 1, n=ev.n)


async def _handoff_api(n: int) -> Metrics:
    """`_handoff` in the shape of a trioflow hop: what each task hands on is what a step (an
    async function) returned, a new attrs event made from the one the task was handed. None
    ends both."""
    tasks: list[Task | None] = [None, None]

    async def bounce(me: int, other: int) -> None:
        tasks[me] = current_task()
        while True:
            ev: Hop | None = await wait_task_rescheduled(_abort)
            if ev is None:
                return
            to = tasks[other]
            assert to is not None
            if ev.i >= ev.n:
                reschedule(to, Value(None))
                return
            reschedule(to, Value(await _next_hop(ev)))

    return await _time_bouncing(n, bounce, tasks, Hop(i=0, n=n))


async def _time_bouncing(
    n: int,
    bounce: Callable[[int, int], Awaitable[None]],
    tasks: list[Task | None],
    first_value: object,
) -> Metrics:
    """Start the two tasks of a hand-off floor, and time them from handing the first one
    ``first_value`` until both are done."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bounce, 0, 1)
        nursery.start_soon(bounce, 1, 0)
        await trio.testing.wait_all_tasks_blocked()  # both are parked now
        first = tasks[0]
        assert first is not None
        start = time.perf_counter()
        reschedule(first, Value(first_value))
    elapsed = time.perf_counter() - start
    return {"hops": n, "seconds": elapsed, "rate": n / elapsed}


def routing(p: Params) -> Metrics:
    """The best hop: direct hand-off between parked tasks (see the module docstring);
    variant ``api``: the same in the shape of a trioflow hop (a step makes each event), and
    ``buffer0``, ``buffer1``: the earlier floors, through memory channels."""
    if p.variant == "api":
        return trio.run(_handoff_api, even(p.n))
    if p.variant:
        if p.variant not in ROUTING_BUFFERS:
            raise ValueError(
                "floor routing variant must be '', 'api' or one of "
                f"{sorted(ROUTING_BUFFERS)}, not {p.variant!r}"
            )
        return trio.run(_channels, even(p.n), ROUTING_BUFFERS[p.variant])
    return trio.run(_handoff, even(p.n))


async def _channels(n: int, buffer: int) -> Metrics:
    to_ping, ping_inbox = trio.open_memory_channel[int](buffer)
    to_pong, pong_inbox = trio.open_memory_channel[int](buffer)
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_bounce, n, ping_inbox, to_pong)
        nursery.start_soon(_bounce, n, pong_inbox, to_ping.clone())
        async with to_ping:
            await to_ping.send(0)
    elapsed = time.perf_counter() - start
    return {"hops": n, "seconds": elapsed, "rate": n / elapsed}


async def _batching(n: int) -> Metrics:
    send, receive = trio.open_memory_channel[Tick | None](STREAM_BUFFER)
    send_nowait, receive_nowait = send.send_nowait, receive.receive_nowait
    first_write_at = loop_done_at = 0.0

    async def produce() -> None:
        nonlocal first_write_at, loop_done_at
        async with send:
            for i in range(n):
                if i == 0:
                    first_write_at = time.perf_counter()
                ev = Tick(i=i)
                try:
                    send_nowait(ev)
                except trio.WouldBlock:
                    await send.send(ev)
            loop_done_at = time.perf_counter()
            await send.send(None)  # the terminal event

    start = time.perf_counter()
    first_latency = -1.0
    count = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        async with receive:
            while True:
                try:
                    ev = receive_nowait()
                except trio.WouldBlock:
                    ev = await receive.receive()
                if ev is None:
                    break
                if count == 0:
                    first_latency = time.perf_counter() - first_write_at
                count += 1
    return _stream_ended(n, count, start, first_latency, first_write_at, loop_done_at)


async def _send_each(n: int) -> Metrics:
    send, receive = trio.open_memory_channel[Tick | None](SEND_BUFFER)
    first_write_at = loop_done_at = 0.0

    async def produce() -> None:
        nonlocal first_write_at, loop_done_at
        async with send:
            for i in range(n):
                if i == 0:
                    first_write_at = time.perf_counter()
                await send.send(Tick(i=i))
            loop_done_at = time.perf_counter()
            await send.send(None)  # the terminal event

    start = time.perf_counter()
    first_latency = -1.0
    count = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        async with receive:
            async for ev in receive:
                if ev is None:
                    break
                if count == 0:
                    first_latency = time.perf_counter() - first_write_at
                count += 1
    return _stream_ended(n, count, start, first_latency, first_write_at, loop_done_at)


class _Handoff:
    """The least a bounded stream between one writer and one reader can be: a deque, and the
    task parked on either side handed its item (`reschedule`) by the other, as the inboxes
    do. The sides' fast paths are written out where they are used."""

    __slots__ = ("items", "reader", "writer")

    def __init__(self) -> None:
        self.items: deque[Tick | None] = deque()
        self.reader: Task | None = None  # parked on an empty buffer
        self.writer: tuple[Task, Tick | None] | None = None  # parked on a full one

    async def wait_for_room(self, item: Tick | None) -> None:
        self.writer = (current_task(), item)
        await wait_task_rescheduled(_abort)

    async def wait_for_item(self) -> Tick | None:
        self.reader = current_task()
        item: Tick | None = await wait_task_rescheduled(_abort)
        return item

    def admit_writer(self) -> None:
        """After a read from a full buffer: the parked writer's item goes in."""
        assert self.writer is not None
        task, item = self.writer
        self.writer = None
        self.items.append(item)
        reschedule(task)

    def hand_to_reader(self, item: Tick | None) -> None:
        assert self.reader is not None
        task, self.reader = self.reader, None
        reschedule(task, Value(item))


async def _handoff_stream(n: int) -> Metrics:
    buffer = _Handoff()
    items = buffer.items
    append, popleft = items.append, items.popleft
    first_write_at = loop_done_at = 0.0

    async def produce() -> None:
        nonlocal first_write_at, loop_done_at
        for i in range(n):
            if i == 0:
                first_write_at = time.perf_counter()
            ev = Tick(i=i)
            if buffer.reader is not None:
                buffer.hand_to_reader(ev)
            elif len(items) < STREAM_BUFFER:
                append(ev)
            else:
                await buffer.wait_for_room(ev)
        loop_done_at = time.perf_counter()
        if buffer.reader is not None:  # the terminal event, the same way
            buffer.hand_to_reader(None)
        elif len(items) < STREAM_BUFFER:
            append(None)
        else:
            await buffer.wait_for_room(None)

    start = time.perf_counter()
    first_latency = -1.0
    count = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        while True:
            if items:
                ev = popleft()
                if buffer.writer is not None:
                    buffer.admit_writer()
            else:
                ev = await buffer.wait_for_item()
            if ev is None:
                break
            if count == 0:
                first_latency = time.perf_counter() - first_write_at
            count += 1
    return _stream_ended(n, count, start, first_latency, first_write_at, loop_done_at)


class _Events:
    """`_api_shaped`'s reading side: an async iterator over a `_Handoff`, each ``__anext__`` a
    cancel point."""

    __slots__ = ("buffer", "items")

    def __init__(self, buffer: _Handoff) -> None:
        self.buffer = buffer
        self.items = buffer.items

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> Tick:
        if _cancel_pending():
            await checkpoint_if_cancelled()
        if self.items:
            ev = self.items.popleft()
            if self.buffer.writer is not None:
                self.buffer.admit_writer()
        else:
            ev = await self.buffer.wait_for_item()
        if ev is None:
            raise StopAsyncIteration
        return ev


async def _api_shaped(n: int) -> Metrics:
    """`_handoff_stream` behind the shape of trioflow's API: the writer awaits a write per
    event and the reader runs an ``async for``, each call a cancel point."""
    buffer = _Handoff()
    items = buffer.items
    first_write_at = loop_done_at = 0.0

    async def write(ev: Tick | None) -> None:
        if _cancel_pending():
            await checkpoint_if_cancelled()
        if buffer.reader is not None:
            buffer.hand_to_reader(ev)
        elif len(items) < STREAM_BUFFER:
            items.append(ev)
        else:
            await buffer.wait_for_room(ev)

    async def produce() -> None:
        nonlocal first_write_at, loop_done_at
        for i in range(n):
            if i == 0:
                first_write_at = time.perf_counter()
            await write(Tick(i=i))
        loop_done_at = time.perf_counter()
        await write(None)  # the terminal event

    start = time.perf_counter()
    first_latency = -1.0
    count = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        async for _ in _Events(buffer):
            if count == 0:
                first_latency = time.perf_counter() - first_write_at
            count += 1
    return _stream_ended(n, count, start, first_latency, first_write_at, loop_done_at)


#: The stream floors by variant (see the module docstring).
STREAM_VARIANTS = {
    "": _handoff_stream,
    "api": _api_shaped,
    "channel": _batching,
    "send": _send_each,
}


def _stream_ended(
    n: int, count: int, start: float, first_latency: float, first_write_at: float, done_at: float
) -> Metrics:
    """A stream floor's figures, once its consumer has read the terminal event: every one of
    the ``n`` events must have arrived."""
    elapsed = time.perf_counter() - start
    assert count == n, (count, n)
    return stream_metrics(n, elapsed, first_latency, first_write_at, done_at)


def stream(p: Params) -> Metrics:
    """The best stream: a deque with hand-off, both sides in batches (see the module
    docstring); variants ``api`` (the same behind the shape of trioflow's API), ``channel``
    (a trio memory channel, batching) and ``send`` (the earliest floor, ``await send()``)."""
    if p.variant not in STREAM_VARIANTS:
        raise ValueError(
            f"floor stream variant must be one of {sorted(STREAM_VARIANTS)}, not {p.variant!r}"
        )
    return trio.run(STREAM_VARIANTS[p.variant], p.n)
