"""Nested workflows and idleness: a parent whose child waits is idle, answers go to the child
that asked, recursion, a child's timeout retried by its parent's step, no stale idle event
after a full stream, a resumed durable run that waits says it is idle."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from trioflow import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    RetryPolicy,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowIdleEvent,
    WorkflowTimeoutError,
    open_store,
    step,
)


class Question(InputRequiredEvent):
    n: int


class Answer(HumanResponseEvent):
    n: int


class Child(Workflow):
    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        n = ev.get("n", 1)
        a = await ctx.wait_for_event(Answer, waiter_event=Question(n=n), requirements={"n": n})
        return StopEvent(result=a.n)


class Parent(Workflow):
    @step
    async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
        return StopEvent(result=await ctx.run_workflow(Child(), forward=True, n=5))


async def test_parent_waiting_on_a_childs_question_says_idle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The only thing that can move the run on is the answer: is the run idle?"""
    seen: list[str] = []
    async with Parent().start() as handler:
        with trio.move_on_after(2):
            async for ev in handler.stream_events(Question, WorkflowIdleEvent):
                seen.append(type(ev).__name__)
                if isinstance(ev, WorkflowIdleEvent):
                    await handler.send_event(Answer(n=5))
        assert "WorkflowIdleEvent" in seen, seen


class TwoChildren(Workflow):
    @step
    async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
        results = {}

        async def one(n: int) -> None:
            results[n] = await ctx.run_workflow(Child(), forward=True, n=n)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, 1)
            nursery.start_soon(one, 2)
        return StopEvent(result=results)


async def test_answers_go_to_the_child_that_asked() -> None:
    async with TwoChildren(timeout=5).start() as handler:
        asked = []
        async for ev in handler.stream_events(Question):
            if isinstance(ev, Question):
                asked.append(ev.n)
                if len(asked) == 2:
                    await handler.send_event(Answer(n=2))
                    await handler.send_event(Answer(n=1))
        assert await handler.result() == {1: 1, 2: 2}


class Rec(Workflow):
    @step
    async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
        depth = ev.get("depth", 0)
        if depth == 3:
            return StopEvent(result=[depth])
        below = await ctx.run_workflow(Rec(), depth=depth + 1)
        return StopEvent(result=[depth, *below])


async def test_recursion() -> None:
    assert await Rec(timeout=5).run(depth=0) == [0, 1, 2, 3]


class SlowChild(Workflow):
    @step
    async def s(self, ev: StartEvent) -> StopEvent:
        await trio.sleep(10)
        return StopEvent(result=1)


ATTEMPTS: list[int] = []


class RetryingParent(Workflow):
    @step(retry=RetryPolicy(max_attempts=3, delay=0.0))
    async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ATTEMPTS.append(1)
        return StopEvent(result=await ctx.run_workflow(SlowChild(timeout=1)))


async def test_child_timeout_retried_by_parent(autojump_clock: trio.testing.MockClock) -> None:
    ATTEMPTS.clear()
    with pytest.raises(WorkflowTimeoutError):
        await RetryingParent(timeout=None).run()
    assert len(ATTEMPTS) == 3


class Slow(Event):
    pass


class Chatty(Workflow):
    """Asks at once, then (once answered) works a while, writing."""

    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        a = await ctx.wait_for_event(Answer, waiter_event=Question(n=1))
        for _ in range(3):
            await ctx.write_event_to_stream(Slow())
            await trio.sleep(1)
        return StopEvent(result=a.n)


async def test_an_idle_event_waiting_for_room_is_withdrawn_once_the_run_is_busy(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A stream of 2 holding the step's start and its question (lifecycle events are asked
    for): the idle event waits for room. The caller answers before reading: the run is busy
    again, and the stream never says it was idle."""
    async with Chatty(stream_buffer=2, timeout=None).start() as handler:
        events = handler.stream_events(Question, WorkflowIdleEvent, Slow)
        await trio.testing.wait_all_tasks_blocked()  # asked; the idle event waits for room
        await handler.send_event(Answer(n=1))
        seen = [type(ev).__name__ async for ev in events]
        assert await handler.result() == 1
    assert seen == ["Question", "Slow", "Slow", "Slow", "StopEvent"]


async def test_a_resumed_durable_run_waiting_says_idle(tmp_path: Path) -> None:
    flow = Child(timeout=None)
    url = f"sqlite:///{tmp_path}/runs.db"
    async with open_store(url) as store:
        with trio.CancelScope() as shutdown:
            async with store.start(flow, n=3) as handler:
                async for _ in handler.stream_events(Question):
                    break
                shutdown.cancel()
                await trio.sleep_forever()
    seen: list[str] = []
    async with open_store(url) as store, store.resume([flow]) as handlers:
        (resumed,) = handlers
        with trio.move_on_after(2):
            async for ev in resumed.stream_events(Question, WorkflowIdleEvent):
                seen.append(type(ev).__name__)
                if isinstance(ev, WorkflowIdleEvent):
                    break
        await resumed.send_event(Answer(n=3))
        assert await resumed.result() == 3
    assert "WorkflowIdleEvent" in seen, seen
