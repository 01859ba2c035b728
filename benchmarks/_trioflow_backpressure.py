"""trioflow: backpressure in action (the workflow of ``_anchor_backpressure``, in trioflow).

A step writes ``n`` events of 1 KiB to the stream as fast as it can, noting when each write
returned; the consumer notes when each event arrived and reads at ``--rate`` events per second.
The stream's buffer (trioflow's default, 256 events) fills, and from then on every write waits
for the consumer to take an event: the producer's rate should follow the consumer's, and memory
should stay flat. The figures are computed by ``_common.rate_figures``.
"""

from __future__ import annotations

import time
from array import array

import trio

from benchmarks._common import Metrics, Params, payload, rate_figures
from benchmarks._trioflow import Blob
from trioflow import Context, StartEvent, StopEvent, Workflow, step

# The workflow here mirrors the one in _anchor_backpressure.py line for line on purpose: the
# same program written against each library is what makes the comparison fair.

# When each write returned, in perf_counter seconds: written by the step, read after the run.
# An array of doubles, not a list of floats: 8 bytes a stamp, so the ruler barely shows in RSS.
_written = array("d")


class Flood(Workflow):
    @step
    async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
        n: int = ev.n
        for i in range(n):
            await ctx.write_event_to_stream(Blob(i=i, data=payload()))
            _written.append(time.perf_counter())
        return StopEvent(result=n)


async def _backpressure(p: Params) -> Metrics:
    if p.rate <= 0:
        raise ValueError("backpressure needs --rate, the consumer's events per second")
    wf = Flood(timeout=None)
    del _written[:]  # a second run in this process starts from scratch
    received = array("d")
    start = time.perf_counter()
    async with wf.start(n=p.n) as handler:
        async for ev in handler.stream_events():
            if isinstance(ev, StopEvent):
                break
            now = time.perf_counter()
            received.append(now)
            # Paced, not a fixed sleep per event: the next event is due 1/rate after this one's
            # slot on a schedule that starts at the first event, so oversleeping (a timer can be
            # coarser than the gap between events) is made up by not sleeping: the rate is exact.
            due = received[0] + len(received) / p.rate
            if due > now:
                await trio.sleep(due - now)
        await handler.result()
    assert len(received) == p.n, (len(received), p.n)
    return rate_figures(start, _written, received)


def backpressure(p: Params) -> Metrics:
    return trio.run(_backpressure, p)
