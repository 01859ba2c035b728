"""Workflows for durable runs in process (`tests/test_run_store.py`), importable by the child
process that a test kills (`child`: a `Steps` run on ``sqlite:///DB`` that prints its id and
hangs in its second step)."""

from __future__ import annotations

import os

import trio
import trio.lowlevel

from trioflow import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
    Workflow,
    open_store,
    step,
)


class Turn(StartEvent):
    message: str = ""


class Chat(Workflow):
    """A chat's turn: its history is in the context's store."""

    @step
    async def reply(self, ctx: Context, ev: Turn) -> StopEvent:
        history = await ctx.store.get("history", [])
        history = [*history, ev.message]
        await ctx.store.set("history", history)
        return StopEvent(result=len(history))


class Ticks(StartEvent):
    n: int = 3


class Tick(Event):
    i: int


class Ask(InputRequiredEvent):
    question: str


class Answer(HumanResponseEvent):
    ok: bool


class Asking(Workflow):
    """Streams ``n`` ticks, then asks and waits for an answer."""

    @step
    async def ask(self, ctx: Context, ev: Ticks) -> StopEvent:
        for i in range(ev.n):
            await ctx.write_event_to_stream(Tick(i=i))
        answer = await ctx.wait_for_event(Answer, waiter_event=Ask(question="go on?"))
        return StopEvent(result={"ok": answer.ok, "ticks": ev.n})


class Marks(StartEvent):
    #: A file each step execution appends its name to: what ran, across processes.
    marks: str


class Half(Event):
    pass


class Steps(Workflow):
    """Two steps; the second hangs in the child process that a test kills
    (``$TRIOFLOW_TEST_HANG``). Where it marks comes from the store its caller's context
    began with."""

    @step
    async def first(self, ctx: Context, ev: Marks) -> Half:
        async with await trio.Path(ev.marks).open("a") as marks:
            await marks.write("first\n")
        await ctx.store.set("first", ctx.task_key)
        return Half()

    @step
    async def second(self, ctx: Context, ev: Half) -> StopEvent:
        async with await trio.Path(await ctx.store.get("marks")).open("a") as marks:
            await marks.write(f"second {ctx.task_key}\n")
        if os.environ.get("TRIOFLOW_TEST_HANG") == "1":
            print("hanging", flush=True)
            await trio.sleep_forever()
        return StopEvent(result=await ctx.store.get("first"))


async def child(db: str, marks: str) -> None:
    async with open_store(f"sqlite:///{db}") as store:
        flow = Steps()
        ctx = Context(flow)
        await ctx.store.set("marks", marks)
        async with store.start(flow, marks=marks, ctx=ctx) as handler:
            print(handler.run_id, flush=True)
            await handler.result()


class Left(Event):
    pass


class Right(Event):
    pass


class Both(Workflow):
    """Two steps stream at once: 200 ticks each."""

    @step
    async def fan(self, ctx: Context, ev: Ticks) -> Left | Right | None:
        ctx.send_event(Left())
        ctx.send_event(Right())
        return None

    @step
    async def left(self, ctx: Context, ev: Left) -> StopEvent | None:
        for i in range(ev_count := 200):
            await ctx.write_event_to_stream(Tick(i=i))
        await ctx.store.set("left", ev_count)
        return None

    @step
    async def right(self, ctx: Context, ev: Right) -> StopEvent:
        for i in range(200):
            await ctx.write_event_to_stream(Tick(i=1000 + i))
        while await ctx.store.get("left") is None:
            await trio.lowlevel.checkpoint()
        return StopEvent(result="both")


class Interrupted(Workflow):
    """Its step is where Ctrl-C lands."""

    @step
    async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await ctx.store.set("began", True)
        raise KeyboardInterrupt
