"""The floor: what bare trio does with no workflow runtime in between.

Routing is two tasks bouncing an int through two memory channels with plain
``await send()`` / ``await receive()``: the obvious hand-written equivalent of a two-step
ping-pong. It runs with unbuffered channels (``buffer0``, trio's default advice) and with a
buffer of one (``buffer1``, a little faster here, so the stricter floor); both are reported.
Stream is one task sending small attrs events through a bounded channel to a consumer (for
reference only, no target).
"""

from __future__ import annotations

import time

import attrs
import trio

from benchmarks._common import Metrics, Params, Scenarios, even, stream_metrics

ROUTING_BUFFERS = {"buffer0": 0, "buffer1": 1}
STREAM_BUFFER = 64


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


async def _routing(n: int, buffer: int) -> Metrics:
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


def routing(p: Params) -> Metrics:
    if p.variant not in ROUTING_BUFFERS:
        raise ValueError(f"floor routing variant must be one of {sorted(ROUTING_BUFFERS)}")
    return trio.run(_routing, even(p.n), ROUTING_BUFFERS[p.variant])


async def _stream(n: int) -> Metrics:
    send, receive = trio.open_memory_channel[Tick | None](STREAM_BUFFER)
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
    return trio.run(_stream, p.n)


SCENARIOS: Scenarios = {"routing": routing, "stream": stream}
