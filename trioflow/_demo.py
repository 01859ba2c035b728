"""The example workflow behind ``trioflow demo``: a mock research assistant.

It shows the things trioflow is for: a fan-out to parallel steps that report progress, a
join with `Context.collect_events`, and a draft streamed token by token. It uses only the
public API, as user code would. ``pace`` scales every sleep (0 makes it instant, for tests).
"""

from __future__ import annotations

import trio

from trioflow import Context, Event, StartEvent, StopEvent, Workflow, step


class Progress(Event):
    """How far a step has come (0 to 1)."""

    step: str
    value: float
    note: str = ""


class Query(Event):
    """One search to run."""

    text: str


class Findings(Event):
    """What one search found."""

    query: str
    facts: tuple[str, ...]


class Token(Event):
    """One piece of the answer as it is written."""

    text: str


class Research(StartEvent):
    """Start: the topic, and a pace factor for the demo's pretend work."""

    topic: str = "structured concurrency"
    pace: float = 1.0


class ResearchFlow(Workflow):
    """Plan three searches, run them in parallel, then write an answer token by token."""

    @step
    async def plan(self, ctx: Context, ev: Research) -> Query | None:
        await ctx.store.set("pace", ev.pace)
        await ctx.store.set("topic", ev.topic)
        for angle in ("history", "how it works", "who uses it"):
            ctx.send_event(Query(text=f"{ev.topic}: {angle}"))
        await ctx.write_event_to_stream(Progress(step="plan", value=1.0, note="3 searches"))
        return None

    @step(num_workers=3)
    async def search(self, ctx: Context, ev: Query) -> Findings:
        pace = await ctx.store.get("pace", 1.0)
        for i in range(1, 5):
            await trio.sleep(0.15 * pace)
            await ctx.write_event_to_stream(Progress(step="search", value=i / 4, note=ev.text))
        return Findings(query=ev.text, facts=(f"a fact about {ev.text}",))

    @step(num_workers=1)
    async def write(self, ctx: Context, ev: Findings) -> StopEvent | None:
        collected = ctx.collect_events(ev, [Findings, Findings, Findings])
        if collected is None:
            return None
        pace = await ctx.store.get("pace", 1.0)
        topic = await ctx.store.get("topic")
        words = (
            f"{topic} keeps every task inside a scope, so nothing outlives its caller, "
            f"failures surface as one clear error, and cancelling is deterministic."
        ).split()
        for word in words:
            await trio.sleep(0.04 * pace)
            await ctx.write_event_to_stream(Token(text=word))
        sources = [finding.query for finding in collected]  # type: ignore[attr-defined]
        return StopEvent(result={"answer": " ".join(words), "sources": sources})
