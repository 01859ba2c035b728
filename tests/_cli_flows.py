"""Workflows for the command-line tests (imported by `trioflow` subprocesses from tests/)."""

from __future__ import annotations

import sys
import time

import trio

from trioflow import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StepFailedEvent,
    StopEvent,
    SyncContext,
    Workflow,
    step,
)


class Progress(Event):
    value: float
    step: str = ""


class Count(StartEvent):
    n: int
    label: str = "tick"


class Tick(Event):
    i: int
    label: str


class CountFlow(Workflow):
    """Writes n ticks with progress, then stops with n."""

    @step
    async def count(self, ctx: Context, ev: Count) -> StopEvent:
        for i in range(1, ev.n + 1):
            await ctx.write_event_to_stream(Tick(i=i, label=ev.label))
            await ctx.write_event_to_stream(Progress(value=i / ev.n, step="count"))
        return StopEvent(result={"counted": ev.n, "label": ev.label})


class Boom(Exception):
    pass


class FailFlow(Workflow):
    @step
    async def explode(self, ev: StartEvent) -> StopEvent:
        raise Boom("kaboom")


class Waiting(Event):
    pass


class ForeverFlow(Workflow):
    """Writes one event, then waits until cancelled."""

    @step
    async def wait(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await ctx.write_event_to_stream(Waiting())
        await trio.sleep_forever()
        raise AssertionError("unreachable")


class Again(Event):
    round: int


class Left(Event):
    pass


class Right(Event):
    pass


class Ask(InputRequiredEvent):
    question: str


class Answer(HumanResponseEvent):
    text: str


class ShapesFlow(Workflow):
    """A cycle, a union, a human in the loop, an error handler, and a step called `end`."""

    @step
    async def begin(self, ev: StartEvent) -> Again:
        return Again(round=0)

    @step
    async def loop(self, ev: Again) -> Again | Left | Right:
        return Again(round=ev.round + 1) if ev.round < 3 else Left()

    @step
    async def end(self, ctx: Context, ev: Left | Right) -> StopEvent:
        answer = await ctx.wait_for_event(Answer, waiter_event=Ask(question="ok?"))
        return StopEvent(result=answer.text)

    @step
    async def rescue(self, ev: StepFailedEvent) -> StopEvent:
        return StopEvent(result="rescued")


class BrokenFlow(Workflow):
    """Nothing takes Orphan, and nothing produces Missing (so nothing reaches finish, and
    begin leads nowhere)."""

    @step
    async def begin(self, ev: StartEvent) -> Orphan:
        return Orphan()

    @step
    async def finish(self, ev: Missing) -> StopEvent:
        return StopEvent()


class Orphan(Event):
    pass


class Missing(Event):
    pass


class Huge(Event):
    n: int


class HugeFlow(Workflow):
    """Streams, then returns, an int too long for JSON (5,000 digits)."""

    @step
    async def huge(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await ctx.write_event_to_stream(Huge(n=10**5000))
        return StopEvent(result=10**5000)


FLOWS = {"count": CountFlow(), "fail": FailFlow(), "forever": ForeverFlow(timeout=None)}
CLASSES = {"shapes": ShapesFlow, "broken": BrokenFlow}
NOT_A_WORKFLOW = 42


class StuckFlow(Workflow):
    """A plain `def` step that writes one event, then blocks its thread for a long time."""

    @step
    def block(self, ctx: SyncContext, ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(Waiting())
        time.sleep(60)  # a thread cannot be interrupted
        return StopEvent()


class Leave(StartEvent):
    code: int | None = None


class ExitFlow(Workflow):
    """A step that calls sys.exit(code), or raises KeyboardInterrupt when no code is given."""

    @step
    async def leave(self, ev: Leave) -> StopEvent:
        if ev.code is None:
            raise KeyboardInterrupt
        sys.exit(ev.code)


SERVED = {"exit": ExitFlow(), "stuck": StuckFlow(timeout=None)}
