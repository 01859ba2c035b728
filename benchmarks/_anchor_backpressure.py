"""The anchor: backpressure in action (the workflow of ``_trioflow_backpressure``, in
llama-index-workflows).

The same program: a step writes ``n`` events of 1 KiB as fast as it can, noting when each write
returned; the consumer notes when each event arrived and reads at ``--rate`` events per second.
The anchor's stream is unbounded and its ``write_event_to_stream`` is a plain function, so the
producer never waits: expect a producer far faster than the consumer and memory that grows with
the backlog. Variant ``yield`` (the only one): the writer awaits ``asyncio.sleep(0)`` after each
write, as in ``_anchor``'s memory scenario; without it nothing reaches the consumer until the
writer's loop has ended, and there is no "while both run" to compare. The figures are computed by
``_common.rate_figures``.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from typing import Any

from workflows import Context, Workflow, step
from workflows.events import StartEvent, StopEvent

from benchmarks._anchor import Blob
from benchmarks._common import Metrics, Params, payload, rate_figures

# The workflow here mirrors the one in _trioflow_backpressure.py line for line on purpose: the
# same program written against each library is what makes the comparison fair.

# When each write returned, in perf_counter seconds: written by the step, read after the run.
# An array of doubles, not a list of floats: 8 bytes a stamp, so the ruler barely shows in RSS.
_written = array("d")


class Flood(Workflow):
    @step
    async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
        n: int = ev.n
        for i in range(n):
            ctx.write_event_to_stream(Blob(i=i, data=payload()))
            _written.append(time.perf_counter())
            # Let the consumer run at all (see the module docstring).
            await asyncio.sleep(0)
        return StopEvent(result=n)


async def _backpressure(p: Params) -> Metrics:
    if p.rate <= 0:
        raise ValueError("backpressure needs --rate, the consumer's events per second")
    if p.variant != "yield":
        raise ValueError(f"anchor backpressure variant must be 'yield', not {p.variant!r}")
    wf = Flood(timeout=None)
    del _written[:]  # a second run in this process starts from scratch
    received = array("d")
    start = time.perf_counter()
    handler = wf.run(n=p.n)
    ev: Any
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
            await asyncio.sleep(due - now)
    await handler
    assert len(received) == p.n, (len(received), p.n)
    return rate_figures(start, _written, received)


def backpressure(p: Params) -> Metrics:
    return asyncio.run(_backpressure(p))
