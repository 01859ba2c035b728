"""trioflow: the workflows of ``_anchor``, written against trioflow's public API.

Every workflow is built with ``timeout=None`` and trioflow's defaults otherwise (``num_workers``,
``stream_buffer``), as a user would write them.
"""

from __future__ import annotations

import time

import trio

from benchmarks._common import SLOW_SLEEP, Metrics, Params, even, payload, stream_metrics
from trioflow import Context, Event, StartEvent, StopEvent, Workflow, step


# The workflows here mirror those in _anchor.py line for line on purpose: the same program
# written against each library is what makes the comparison fair.
class Ping(Event):
    i: int
    n: int


class Pong(Event):
    i: int
    n: int


class Tick(Event):
    i: int


class Blob(Event):
    i: int
    data: str


class PingPong(Workflow):
    @step
    async def begin(self, ev: StartEvent) -> Ping:
        return Ping(i=0, n=ev.n)

    @step
    async def ping(self, ev: Ping) -> Pong | StopEvent:
        if ev.i >= ev.n:
            return StopEvent(result=ev.i)
        return Pong(i=ev.i + 1, n=ev.n)

    @step
    async def pong(self, ev: Pong) -> Ping:
        return Ping(i=ev.i + 1, n=ev.n)


async def _routing(n: int) -> Metrics:
    wf = PingPong(timeout=None)
    start = time.perf_counter()
    hops = await wf.run(n=n)
    elapsed = time.perf_counter() - start
    assert hops == n, (hops, n)
    return {"hops": n, "seconds": elapsed, "rate": n / elapsed}


def routing(p: Params) -> Metrics:
    return trio.run(_routing, even(p.n))


# Set by the writing step: just before it writes event 0, and once its loop has finished.
_first_write_at = 0.0
_loop_done_at = 0.0


class Ticker(Workflow):
    @step
    async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
        global _first_write_at, _loop_done_at
        n: int = ev.n
        for i in range(n):
            if i == 0:
                _first_write_at = time.perf_counter()
            await ctx.write_event_to_stream(Tick(i=i))
        _loop_done_at = time.perf_counter()
        return StopEvent(result=n)


async def _stream(n: int) -> Metrics:
    wf = Ticker(timeout=None)
    start = time.perf_counter()
    first_latency = -1.0
    count = 0
    async with wf.start(n=n) as handler:
        async for ev in handler.stream_events():
            if isinstance(ev, StopEvent):
                break
            if count == 0:
                first_latency = time.perf_counter() - _first_write_at
            count += 1
        elapsed = time.perf_counter() - start
        await handler.result()
    assert count == n, (count, n)
    return stream_metrics(n, elapsed, first_latency, _first_write_at, _loop_done_at)


def stream(p: Params) -> Metrics:
    return trio.run(_stream, p.n)


class Blobs(Workflow):
    @step
    async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
        n: int = ev.n
        for i in range(n):
            await ctx.write_event_to_stream(Blob(i=i, data=payload()))
        return StopEvent(result=n)


async def _memory(p: Params) -> Metrics:
    wf = Blobs(timeout=None)
    start = time.perf_counter()
    count = 0
    async with wf.start(n=p.n) as handler:
        async for ev in handler.stream_events():
            if isinstance(ev, StopEvent):
                break
            count += 1
            if time.perf_counter() - start < p.slow_seconds:
                await trio.sleep(SLOW_SLEEP)
        await handler.result()
    elapsed = time.perf_counter() - start
    assert count == p.n, (count, p.n)
    return {"events": p.n, "seconds": elapsed}


def memory(p: Params) -> Metrics:
    return trio.run(_memory, p)
