"""Plain ``def`` steps: run in worker threads, with a blocking context, inside the run's scope.

These use real threads, so they use real (short) waits, and assert on ordering rather than on
durations, to stay robust on a loaded machine.
"""

from __future__ import annotations

import threading
import time

import pytest
import trio
import trio.testing

from trioflow import (
    Context,
    Event,
    HumanResponseEvent,
    StartEvent,
    StopEvent,
    SyncContext,
    Workflow,
    WorkflowCancelledError,
    step,
)


class Tick(Event):
    i: int


class Draft(Event):
    text: str


async def test_sync_step_runs_in_a_thread_with_a_blocking_context() -> None:
    """A def step runs off the trio thread; its ctx writes, sends and stores as plain calls."""
    trio_thread = threading.current_thread()
    seen: dict[str, object] = {}

    class Flow(Workflow):
        @step
        def draft(self, ctx: SyncContext, ev: StartEvent) -> Draft | None:
            seen["thread"] = threading.current_thread()
            time.sleep(0.01)  # blocking is fine here: the event loop is free meanwhile
            ctx.write_event_to_stream(Tick(i=1))
            ctx.store.set("topic", ev.topic)
            ctx.send_event(Draft(text="from a thread"))
            return None

        @step
        def finish(self, ctx: SyncContext, ev: Draft) -> StopEvent:
            return StopEvent(result=f"{ev.text} about {ctx.store.get('topic')} ({ctx.run_id})")

    async with Flow().start(topic="trio") as handler:
        events = [ev async for ev in handler.stream_events()]
        result = await handler.result()
    assert seen["thread"] is not trio_thread
    assert events[0] == Tick(i=1)
    assert result == f"from a thread about trio ({handler.run_id})"


async def test_sync_writes_wait_under_backpressure() -> None:
    """A thread writing to a full stream blocks until the consumer reads; nothing is lost."""
    written: list[int] = []

    class Flow(Workflow):
        @step
        def produce(self, ctx: SyncContext, ev: StartEvent) -> StopEvent:
            for i in range(20):
                ctx.write_event_to_stream(Tick(i=i))
                written.append(i)
            return StopEvent()

    async with Flow(stream_buffer=2).start() as handler:
        stream = handler.stream_events()
        first = await stream.__anext__()
        with trio.fail_after(10):
            while len(written) < 3:  # buffer 2 + the one read: then the thread must block
                await trio.sleep(0.01)
        await trio.sleep(0.05)
        assert len(written) == 3
        rest = [ev async for ev in stream]
    assert [first, *rest[:-1]] == [Tick(i=i) for i in range(20)]


async def test_cancelled_run_stops_its_thread_and_waits_for_it() -> None:
    """Once the run is cancelled the thread's ctx calls raise; the block waits for the
    thread, so no step code runs after it; and the run reports cancelled, not success."""
    log: list[str] = []

    class Flow(Workflow):
        @step
        def loop(self, ctx: SyncContext, ev: StartEvent) -> StopEvent:
            try:
                for i in range(10_000):
                    ctx.write_event_to_stream(Tick(i=i))
                    time.sleep(0.001)
            except trio.Cancelled:
                log.append("cancelled in thread")
                time.sleep(0.05)  # cleanup that the run must wait for
                log.append("thread done")
                raise
            return StopEvent(result="finished")

    async with Flow().start() as handler:
        async for ev in handler.stream_events():
            if ev == Tick(i=3):
                handler.cancel()
        with pytest.raises(WorkflowCancelledError):
            await handler.result()
    log.append("block exited")
    assert log == ["cancelled in thread", "thread done", "block exited"]


async def test_thread_returning_after_cancel_is_not_success() -> None:
    """A def step that ignores cancellation and returns a stop event afterwards does not make
    a cancelled run complete."""
    started = threading.Event()

    class Flow(Workflow):
        @step
        def stubborn(self, ev: StartEvent) -> StopEvent:
            started.set()
            time.sleep(0.1)  # no ctx calls: it cannot notice the cancellation
            return StopEvent(result="too late")

    async with Flow().start() as handler:
        await trio.to_thread.run_sync(started.wait)
        handler.cancel()
        with pytest.raises(WorkflowCancelledError):
            await handler.result()
    assert handler.status.value == "cancelled"


async def test_outer_cancel_while_thread_runs_reports_cancelled() -> None:
    """An enclosing cancel scope expiring while a def step runs ends the run as cancelled."""
    started = threading.Event()

    class Flow(Workflow):
        @step
        def stubborn(self, ev: StartEvent) -> StopEvent:
            started.set()
            time.sleep(0.1)
            return StopEvent(result="too late")

    flow = Flow()
    with trio.CancelScope() as scope:
        async with flow.start() as handler:
            await trio.to_thread.run_sync(started.wait)
            scope.cancel()
            await handler.result()
    assert handler.status.value == "cancelled"


async def test_sync_collect_events_and_wait_for_event() -> None:
    """A def step's ctx.collect_events buffers per step as in async steps, and its
    wait_for_event blocks the thread until the reply arrives."""

    class Part(Event):
        n: int

    class Reply(HumanResponseEvent):
        text: str

    class Flow(Workflow):
        @step
        async def split(self, ctx: Context, ev: StartEvent) -> Part | None:
            for n in range(3):
                ctx.send_event(Part(n=n))
            return None

        @step(num_workers=1)
        def join(self, ctx: SyncContext, ev: Part) -> StopEvent | None:
            parts = ctx.collect_events(ev, [Part, Part, Part])
            if parts is None:
                return None
            reply = ctx.wait_for_event(Reply)
            return StopEvent(result=(sorted(p.n for p in parts), reply.text))  # type: ignore[attr-defined]

    async with Flow().start() as handler:
        with trio.fail_after(10):
            while not handler._run.router.waiters:  # the thread has registered its waiter
                await trio.sleep(0.01)
        await handler.send_event(Reply(text="hi"))
        assert await handler.result() == ([0, 1, 2], "hi")


async def test_def_step_timeout_applies_at_next_ctx_call_or_return() -> None:
    """A def step over its timeout fails with TooSlowError at its next ctx call, or, if it
    makes none, when it returns (its result is not used)."""
    calls_after_timeout: list[int] = []

    class Quiet(Workflow):
        @step(timeout=0.05)
        def slow(self, ev: StartEvent) -> StopEvent:
            time.sleep(0.2)
            return StopEvent(result="returned")

    class Chatty(Workflow):
        @step(timeout=0.05)
        def slow(self, ctx: SyncContext, ev: StartEvent) -> StopEvent:
            for i in range(1000):
                time.sleep(0.01)
                ctx.write_event_to_stream(Tick(i=i))
                calls_after_timeout.append(i)
            return StopEvent(result="returned")

    with pytest.raises(trio.TooSlowError):
        await Quiet().run()
    with pytest.raises(trio.TooSlowError):
        await Chatty().run()
    assert len(calls_after_timeout) < 1000  # stopped at a ctx call, not at the end
