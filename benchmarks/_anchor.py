"""The anchor: the same workflows in llama-index-workflows (package ``workflows``, asyncio).

Steps use the library's defaults (``num_workers=4``); every workflow is built with
``timeout=None`` (the default is 45 s). Note that its ``ctx.write_event_to_stream`` is a plain
function that schedules a task per event: nothing reaches the consumer until the step yields.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from workflows import Context, Workflow, step
from workflows.events import Event, StartEvent, StopEvent

from benchmarks._common import SLOW_SLEEP, Metrics, Params, even, payload, stream_metrics


# The workflows here mirror those in _trioflow.py line for line on purpose: the same program
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
    return asyncio.run(_routing(even(p.n)))


# Set by the writing step: just before it writes event 0, and once its loop has finished.
_first_write_at = 0.0
_loop_done_at = 0.0


class Ticker(Workflow):
    @step
    async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
        global _first_write_at, _loop_done_at
        n: int = ev.n
        yield_each: bool = ev.yield_each
        for i in range(n):
            if i == 0:
                _first_write_at = time.perf_counter()
            ctx.write_event_to_stream(Tick(i=i))
            if yield_each:
                await asyncio.sleep(0)
        _loop_done_at = time.perf_counter()
        return StopEvent(result=n)


async def _stream(n: int, yield_each: bool) -> Metrics:
    wf = Ticker(timeout=None)
    start = time.perf_counter()
    handler = wf.run(n=n, yield_each=yield_each)
    first_latency = -1.0
    count = 0
    ev: Any
    async for ev in handler.stream_events():
        if isinstance(ev, StopEvent):
            break
        if count == 0:
            first_latency = time.perf_counter() - _first_write_at
        count += 1
    elapsed = time.perf_counter() - start
    await handler
    assert count == n, (count, n)
    return stream_metrics(n, elapsed, first_latency, _first_write_at, _loop_done_at)


def stream(p: Params) -> Metrics:
    """Variant ``yield``: the writer awaits ``asyncio.sleep(0)`` after each write, so that
    events reach the consumer while the step runs (without it, only once its loop has ended)."""
    if p.variant not in ("", "yield"):
        raise ValueError(f"anchor stream variant must be '' or 'yield', not {p.variant!r}")
    return asyncio.run(_stream(p.n, p.variant == "yield"))


class Blobs(Workflow):
    @step
    async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
        n: int = ev.n
        yield_each: bool = ev.yield_each
        for i in range(n):
            ctx.write_event_to_stream(Blob(i=i, data=payload()))
            if yield_each:
                await asyncio.sleep(0)
        return StopEvent(result=n)


async def _memory(p: Params) -> Metrics:
    if p.variant not in ("yield", "noyield"):
        raise ValueError(f"anchor memory variant must be 'yield' or 'noyield', not {p.variant!r}")
    wf = Blobs(timeout=None)
    start = time.perf_counter()
    handler = wf.run(n=p.n, yield_each=p.variant == "yield")
    count = 0
    async for ev in handler.stream_events():
        if isinstance(ev, StopEvent):
            break
        count += 1
        if time.perf_counter() - start < p.slow_seconds:
            await asyncio.sleep(SLOW_SLEEP)
    await handler
    elapsed = time.perf_counter() - start
    assert count == p.n, (count, p.n)
    return {"events": p.n, "seconds": elapsed}


def memory(p: Params) -> Metrics:
    return asyncio.run(_memory(p))
