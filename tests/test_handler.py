"""The handler and the start() block: ids, status, send_event, and the failure rule."""

from __future__ import annotations

import traceback

import pytest
import trio
import trio.testing

from trioflow import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    RunStatus,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowRuntimeError,
    step,
)


class Ask(InputRequiredEvent):
    question: str


class Reply(HumanResponseEvent):
    text: str


class Interview(Workflow):
    @step
    async def ask(self, ev: StartEvent) -> Ask:
        return Ask(question="name?")

    @step
    async def answer(self, ev: Reply) -> StopEvent:
        return StopEvent(result=f"hello {ev.text}")


class Failing(Workflow):
    @step
    async def go(self, ev: StartEvent) -> StopEvent:
        raise ValueError("nope")


async def test_returned_input_required_reaches_stream_and_reply_routes_in() -> None:
    """A returned InputRequiredEvent is streamed; handler.send_event routes the reply."""
    async with Interview().start() as handler:
        assert handler.status.value == "running"
        async for ev in handler.stream_events():
            if isinstance(ev, Ask):
                await handler.send_event(Reply(text="ada"))
        assert await handler.result() == "hello ada"
        assert handler.status is RunStatus.COMPLETED
        assert handler.is_done()
        with pytest.raises(WorkflowRuntimeError, match="has ended"):
            await handler.send_event(Reply(text="late"))


async def test_send_event_nobody_accepts_raises() -> None:
    """handler.send_event with an event no step accepts raises WorkflowRuntimeError."""

    class Stray(Event):
        pass

    async with Interview().start() as handler:
        with pytest.raises(WorkflowRuntimeError, match="accepts Stray"):
            await handler.send_event(Stray())
        handler.cancel()


async def test_run_ids_are_unique_and_shared_with_context() -> None:
    """handler.run_id is unique per run and equals ctx.run_id."""

    class Flow(Workflow):
        @step
        async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
            return StopEvent(result=ctx.run_id)

    flow = Flow()
    ids = set()
    for _ in range(3):
        async with flow.start() as handler:
            assert await handler.result() == handler.run_id
            ids.add(handler.run_id)
    assert len(ids) == 3


async def test_leaving_block_raises_unobserved_failure() -> None:
    """A failure is never silent: leaving the block raises it if result() was not awaited."""
    with pytest.raises(ValueError, match="nope"):
        async with Failing().start() as handler:
            async for _ in handler.stream_events():
                pass
    assert handler.status is RunStatus.FAILED


async def test_failure_raised_by_result_is_not_raised_again() -> None:
    """Once result() raised the failure and the caller handled it, leaving raises nothing."""
    async with Failing().start() as handler:
        with pytest.raises(ValueError, match="nope"):
            await handler.result()
    assert handler.status is RunStatus.FAILED


async def test_body_exception_wins_and_notes_the_run_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """If the block raises its own exception while the run failed, the block's exception
    propagates, noting the run's failure so that neither is lost."""
    with pytest.raises(KeyError) as info:
        async with Failing().start():
            await trio.sleep(1)
            raise KeyError("mine")
    assert any("the run had also failed: ValueError" in n for n in info.value.__notes__)


async def test_repr_names_workflow_and_status() -> None:
    """The handler's repr shows the workflow, the run id and the status."""
    async with Interview().start() as handler:
        assert f"Interview run {handler.run_id} running" in repr(handler)
        handler.cancel()


async def test_asking_a_failed_runs_result_again_does_not_grow_its_traceback() -> None:
    """A server asks for a failed run's result on every status request: the exception's
    traceback stays what it was, however often it is raised."""

    class Failing(Workflow):
        @step
        async def fail(self, ev: StartEvent) -> StopEvent:
            raise ValueError("no")

    async with Failing().start() as handler:
        with pytest.raises(ValueError, match="no"):
            await handler.result()
        lengths = set()
        for _ in range(5):
            with pytest.raises(ValueError, match="no") as caught:
                handler.result_nowait()
            lengths.add(len(traceback.extract_tb(caught.value.__traceback__)))
        assert len(lengths) == 1
