"""Nested workflows: ``ctx.run_workflow(child, ...)`` runs a child run inside a step."""

from __future__ import annotations

import re

import pytest
import trio
import trio.testing

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
    WorkflowCancelledError,
    WorkflowRuntimeError,
    WorkflowTimeoutError,
    step,
)


class Progress(Event):
    n: int


class Other(Event):
    pass


class Question(InputRequiredEvent):
    text: str


class Reply(HumanResponseEvent):
    text: str


class Child(Workflow):
    @step
    async def work(self, ctx: Context, ev: StartEvent) -> StopEvent:
        for n in range(3):
            await ctx.write_event_to_stream(Progress(n=n))
            await ctx.write_event_to_stream(Other())
        if ev.get("fail"):
            raise ValueError("child failed")
        await trio.sleep(ev.get("sleep", 0))
        return StopEvent(result=ev.get("x", 0) * 2)


class Parent(Workflow):
    def __init__(self, forward: bool | tuple[type[Event], ...] = False, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.forward = forward

    @step
    async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
        result = await ctx.run_workflow(
            Child(), forward=self.forward, x=ev.get("x", 1), fail=ev.get("fail", False),
            sleep=ev.get("sleep", 0),
        )  # fmt: skip
        return StopEvent(result=result)


async def test_a_child_runs_inside_a_step_and_returns_its_result() -> None:
    assert await Parent().run(x=21) == 42


@pytest.mark.parametrize(
    ("forward", "expected"),
    [
        (False, []),
        (True, ["Progress", "Other"] * 3),
        ((Progress,), ["Progress"] * 3),
    ],
)
async def test_forwarded_events_reach_the_parent_stream(
    forward: bool | tuple[type[Event], ...], expected: list[str]
) -> None:
    async with Parent(forward=forward).start() as handler:
        seen = [type(ev).__name__ async for ev in handler.stream_events()]
        assert await handler.result() == 2
    assert seen == [*expected, "StopEvent"]  # the child's own terminal event never


async def test_a_childs_failure_is_the_steps_failure() -> None:
    handled: list[StepFailedEvent] = []

    class Handled(Parent):
        @step
        async def rescue(self, ev: StepFailedEvent) -> StopEvent:
            handled.append(ev)
            return StopEvent(result="rescued")

    with pytest.raises(ValueError, match="child failed") as info:
        await Parent().run(fail=True)
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "in step 'work' of Child" in notes
    assert re.search(r"in child run \w+ of Child", notes)
    assert "in step 'go' of Parent" in notes

    assert await Handled().run(fail=True) == "rescued"
    assert isinstance(handled[0].exception, ValueError)


async def test_cancelling_the_parent_cancels_the_child(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with pytest.raises(WorkflowTimeoutError):
        await Parent(timeout=5).run(sleep=100)
    assert trio.current_time() == pytest.approx(5)

    async with Parent().start(sleep=100) as handler:
        await trio.sleep(1)
        handler.cancel()
        with pytest.raises(WorkflowCancelledError):
            await handler.result()
    assert trio.current_time() == pytest.approx(6)


async def test_the_caller_answers_a_childs_question_through_the_parent() -> None:
    class Asking(Workflow):
        @step
        async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
            reply = await ctx.wait_for_event(Reply, waiter_event=Question(text="name?"))
            return StopEvent(result=f"hello {reply.text}")

    class Outer(Workflow):
        @step
        async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
            return StopEvent(result=await ctx.run_workflow(Asking(), forward=(Question,)))

    async with Outer().start() as handler:
        async for ev in handler.stream_events():
            if isinstance(ev, Question):
                with pytest.raises(WorkflowRuntimeError, match="no step of Outer accepts Other"):
                    await handler.send_event(Other())  # the child does not take it either
                await handler.send_event(Reply(text="trio"))
        assert await handler.result() == "hello trio"
        assert handler._run.router.children == []  # the child is gone


async def test_a_plain_def_step_runs_a_child() -> None:
    class Threaded(Workflow):
        @step
        def go(self, ctx: SyncContext, ev: StartEvent) -> StopEvent:
            return StopEvent(result=ctx.run_workflow(Child(), x=5))

    assert await Threaded().run() == 10


async def test_run_workflow_checks_what_it_is_given() -> None:
    class Wrong(Workflow):
        @step
        async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
            what = ev.get("what")
            if what == "object":
                await ctx.run_workflow(object())
            await ctx.run_workflow(Child(), forward=(int,))  # type: ignore[arg-type]
            return StopEvent()

    with pytest.raises(TypeError, match="runs a Workflow"):
        await Wrong().run(what="object")
    with pytest.raises(TypeError, match="forward= takes True, False or event types"):
        await Wrong().run()
    with pytest.raises(WorkflowRuntimeError, match="call it from one of the run's steps"):
        await Context(Child()).run_workflow(Child())
