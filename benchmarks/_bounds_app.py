"""What `benchmarks.server_bounds` serves: the bundled examples, and a run that streams events
of a given size until cancelled."""

from __future__ import annotations

from trioflow import Context, Event, StartEvent, StopEvent, Workflow, step
from trioflow.examples import WORKFLOWS as EXAMPLES


class Chunk(Event):
    n: int
    payload: str


class Sized(StartEvent):
    size: int = 10_000


class StreamFlow(Workflow):
    """Writes events of ``size`` characters, without end."""

    @step
    async def stream(self, ctx: Context, ev: Sized) -> StopEvent:
        payload = "x" * ev.size
        n = 0
        while True:
            n += 1
            await ctx.write_event_to_stream(Chunk(n=n, payload=payload))


WORKFLOWS = {**EXAMPLES, "stream": StreamFlow(timeout=None)}
