"""The floor: the best bare trio program for each scenario, with no workflow runtime in between.

"Best" means the tricks trioflow itself uses, so that trioflow's overhead over the floor is what
its runtime costs and nothing else:

- **routing** (`routing`): two tasks bounce an int, each handing it straight to the other,
  parked in `trio.lowlevel.wait_task_rescheduled`, with `trio.lowlevel.reschedule`, and parking
  at once: one task switch per hop, no channel, no yield on the sending side. That is what a
  trioflow hop does (`trioflow._core._inbox`), and nothing in trio is cheaper.
- **stream** (`stream`): one task writes small attrs events into a bounded memory channel of 256
  (trioflow's default ``stream_buffer``) with ``send_nowait``, waiting in ``await send()`` only
  when it is full; the consumer takes with ``receive_nowait``, waiting in ``await receive()``
  only when it is empty. Both sides work in batches, one task switch per buffer-full, as
  trioflow's stream does.

The earlier floors stay as named variants, for continuity with older figures: routing through
two memory channels with plain ``await send()`` / ``await receive()`` (``buffer0``: unbuffered,
trio's default advice; ``buffer1``: a buffer of one), and the stream with ``await send()`` on
every event through a buffer of 64 (``send``). Each ``send()`` is a checkpoint that yields to
the scheduler, so these pay a scheduler round trip per event that the runtime does not.
"""

from __future__ import annotations

import time

import attrs
import trio
import trio.testing
from outcome import Value
from trio.lowlevel import Abort, Task, current_task, reschedule, wait_task_rescheduled

from benchmarks._common import Metrics, Params, even, stream_metrics

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

    async with trio.open_nursery() as nursery:
        nursery.start_soon(bounce, 0, 1)
        nursery.start_soon(bounce, 1, 0)
        await trio.testing.wait_all_tasks_blocked()  # both are parked now
        first = tasks[0]
        assert first is not None
        start = time.perf_counter()
        reschedule(first, Value(0))
    elapsed = time.perf_counter() - start
    return {"hops": n, "seconds": elapsed, "rate": n / elapsed}


def routing(p: Params) -> Metrics:
    """The best hop: direct hand-off between parked tasks (see the module docstring)."""
    if p.variant:
        if p.variant not in ROUTING_BUFFERS:
            raise ValueError(
                f"floor routing variant must be '' or one of {sorted(ROUTING_BUFFERS)}"
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
    elapsed = time.perf_counter() - start
    assert count == n, (count, n)
    return stream_metrics(n, elapsed, first_latency, first_write_at, loop_done_at)


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
    elapsed = time.perf_counter() - start
    assert count == n, (count, n)
    return stream_metrics(n, elapsed, first_latency, first_write_at, loop_done_at)


def stream(p: Params) -> Metrics:
    """The best stream: a batching channel (see the module docstring); variant ``send``: the
    earlier floor, ``await send()`` per event."""
    if p.variant not in ("", "send"):
        raise ValueError(f"floor stream variant must be '' or 'send', not {p.variant!r}")
    return trio.run(_send_each if p.variant else _batching, p.n)
