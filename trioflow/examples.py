"""Example workflows, served by ``trioflow serve trioflow.examples:WORKFLOWS`` (the README's first
command) and streamed by ``trioflow demo``.

- `ResearchFlow`: a fan-out to parallel steps that report progress, a join with
  `Context.collect_events`, and an answer streamed token by token.
- `ApprovalFlow`: human in the loop. A step asks for approval with an `InputRequiredEvent` and
  waits for the caller's `HumanResponseEvent`.
- `FlakyFlow`: failure as events. A step fails and is retried; an error handler can recover
  from the final failure, or the run fails.

They use only the public API, as user code would. ``pace`` scales every sleep (0 makes a run
instant, for tests).
"""

from __future__ import annotations

import trio

from trioflow import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    RetryPolicy,
    StartEvent,
    StepFailedEvent,
    StopEvent,
    Workflow,
    step,
)


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


class Proposal(StartEvent):
    """Start: what to ask approval for."""

    action: str = "deploy to production"
    pace: float = 1.0


class ApprovalRequired(InputRequiredEvent):
    """The run asks the caller whether ``action`` may go ahead."""

    action: str
    question: str


class Approval(HumanResponseEvent):
    """The caller's answer to `ApprovalRequired`."""

    approved: bool
    comment: str = ""


class ApprovalFlow(Workflow):
    """Prepare an action, ask a human to approve it, then carry it out or drop it."""

    @step
    async def prepare(self, ctx: Context, ev: Proposal) -> StopEvent:
        for i in range(1, 4):
            await trio.sleep(0.2 * ev.pace)
            await ctx.write_event_to_stream(Progress(step="prepare", value=i / 3, note=ev.action))
        answer = await ctx.wait_for_event(
            Approval,
            waiter_event=ApprovalRequired(action=ev.action, question=f"May I {ev.action}?"),
        )
        if not answer.approved:
            return StopEvent(result={"action": ev.action, "done": False, "comment": answer.comment})
        for i in range(1, 4):
            await trio.sleep(0.2 * ev.pace)
            await ctx.write_event_to_stream(Progress(step="carry out", value=i / 3))
        return StopEvent(result={"action": ev.action, "done": True, "comment": answer.comment})


class Job(StartEvent):
    """Start: how many attempts fail before one succeeds, and whether to recover if all do."""

    failures: int = 1
    recover: bool = True
    pace: float = 1.0


class FlakyError(RuntimeError):
    """What the flaky step raises."""


class FlakyFlow(Workflow):
    """A step that fails ``failures`` times; three attempts, then an error handler decides."""

    @step(retry=RetryPolicy(max_attempts=3, delay=0.3))
    async def attempt(self, ctx: Context, ev: Job) -> StopEvent:
        tries = await ctx.store.get("tries", 0) + 1
        await ctx.store.set("tries", tries)
        await ctx.store.set("recover", ev.recover)
        await trio.sleep(0.2 * ev.pace)
        if tries <= ev.failures:
            raise FlakyError(f"attempt {tries} of {ev.failures} planned failures")
        return StopEvent(result={"succeeded_on_attempt": tries})

    @step
    async def recover(self, ctx: Context, ev: StepFailedEvent) -> StopEvent | None:
        if not await ctx.store.get("recover", True):
            raise ev.exception
        return StopEvent(result={"recovered_from": str(ev.exception)})


#: The workflows that ``trioflow serve trioflow.examples:WORKFLOWS`` serves, by name.
WORKFLOWS: dict[str, Workflow] = {
    "research": ResearchFlow(timeout=120),
    "approval": ApprovalFlow(timeout=600),
    "flaky": FlakyFlow(timeout=60),
}
