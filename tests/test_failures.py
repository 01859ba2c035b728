"""Failure as events: StepFailedEvent per attempt, error handlers, retries with jitter."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import trio
import trio.testing

from trioflow import (
    Context,
    Event,
    RetryPolicy,
    StartEvent,
    StepFailedEvent,
    StopEvent,
    Workflow,
    WorkflowFailedEvent,
    step,
)


class Tick(Event):
    i: int


class Work(Event):
    n: int


async def stream_all(flow: Workflow, **fields: Any) -> tuple[list[Event], object]:
    """Run ``flow`` to its end, returning what its stream carried and its result (or the
    exception it raised)."""
    outcome: object = None
    async with flow.start(**fields) as handler:
        events = [ev async for ev in handler.stream_events()]
        try:
            outcome = await handler.result()
        except Exception as exc:
            outcome = exc
    return events, outcome


async def test_every_failed_attempt_is_streamed_then_the_terminal() -> None:
    """With retries, each failed attempt is a StepFailedEvent (attempt 1, 2, 3) on the
    stream; the last one's exception is the one WorkflowFailedEvent and result() carry."""
    errors: list[ValueError] = []

    class Flow(Workflow):
        @step(retry=RetryPolicy(max_attempts=3))
        async def flaky(self, ev: StartEvent) -> StopEvent:
            errors.append(ValueError(len(errors)))
            raise errors[-1]

    events, outcome = await stream_all(Flow())
    assert [(e.step_name, e.attempt) for e in events[:-1]] == [  # type: ignore[attr-defined]
        ("flaky", 1),
        ("flaky", 2),
        ("flaky", 3),
    ]
    assert [e.exception for e in events[:-1]] == errors  # type: ignore[attr-defined]
    assert events[-1] == WorkflowFailedEvent(step_name="flaky", exception=errors[2])
    assert outcome is errors[2]


async def test_error_handler_turns_failure_into_a_result() -> None:
    """An error handler receives the final StepFailedEvent and may finish the run."""

    class Flow(Workflow):
        @step
        async def fetch(self, ev: StartEvent) -> StopEvent:
            raise ConnectionError("down")

        @step
        async def recover(self, ev: StepFailedEvent) -> StopEvent:
            return StopEvent(result=f"fallback after {ev.step_name}: {ev.exception}")

    events, outcome = await stream_all(Flow())
    assert outcome == "fallback after fetch: down"
    assert isinstance(events[0], StepFailedEvent)
    assert events[0].input_event == StartEvent()
    assert events[-1] == StopEvent(result=outcome)


async def test_error_handler_returning_none_recovers() -> None:
    """A handler returning None recovers: the other work of the run goes on to the end."""
    handled: list[int] = []

    class Flow(Workflow):
        @step
        async def fan_out(self, ctx: Context, ev: StartEvent) -> Work | None:
            for n in range(4):
                ctx.send_event(Work(n=n))
            return None

        @step(num_workers=1)  # one at a time: the store update below is read-modify-write
        async def crunch(self, ctx: Context, ev: Work) -> StopEvent | None:
            if ev.n == 1:
                raise ValueError("bad input")
            done = await ctx.store.get("done", 0) + 1
            await ctx.store.set("done", done)
            return StopEvent(result=done) if done == 3 else None

        @step
        async def skip(self, ev: StepFailedEvent) -> None:
            handled.append(ev.input_event.n)  # type: ignore[attr-defined]

    assert await Flow().run() == 3
    assert handled == [1]


async def test_failing_error_handler_ends_the_run() -> None:
    """An error handler that fails ends the run with its own exception."""

    class Flow(Workflow):
        @step
        async def go(self, ev: StartEvent) -> StopEvent:
            raise ValueError("first")

        @step
        async def handler(self, ev: StepFailedEvent) -> None:
            raise RuntimeError("handler broke")

    events, outcome = await stream_all(Flow())
    assert isinstance(outcome, RuntimeError)
    assert any("step 'handler'" in note for note in outcome.__notes__)
    assert [type(e).__name__ for e in events] == [
        "StepFailedEvent",
        "StepFailedEvent",
        "WorkflowFailedEvent",
    ]
    assert events[-1].step_name == "handler"  # type: ignore[attr-defined]


async def test_failures_of_limits_a_handler() -> None:
    """A handler with failures_of only gets the named steps' failures; others end the run."""

    class Flow(Workflow):
        @step
        async def a(self, ev: StartEvent) -> StopEvent:
            raise ValueError("a failed")

        @step(failures_of=["b"])
        async def for_b(self, ev: StepFailedEvent) -> StopEvent:
            return StopEvent(result="handled")

        @step
        async def b(self, ev: StartEvent) -> None:
            await trio.sleep_forever()

    with pytest.raises(ValueError, match="a failed"):
        await Flow().run()


async def test_retry_delay_does_not_stall_other_steps(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """While one step waits to retry, another keeps streaming."""
    times: list[float] = []

    class Flow(Workflow):
        @step(retry=RetryPolicy(max_attempts=2, delay=10))
        async def flaky(self, ev: StartEvent) -> StopEvent:
            if not times:
                times.append(trio.current_time())
                raise ValueError("once")
            return StopEvent(result="ok")

        @step
        async def ticker(self, ctx: Context, ev: StartEvent) -> None:
            for i in range(5):
                await trio.sleep(1)
                await ctx.write_event_to_stream(Tick(i=i))

    events, outcome = await stream_all(Flow(timeout=None))
    assert outcome == "ok"
    assert [e for e in events if isinstance(e, Tick)] == [Tick(i=i) for i in range(5)]
    assert trio.current_time() == pytest.approx(10)


async def test_retry_jitter_stays_within_bounds(autojump_clock: trio.testing.MockClock) -> None:
    """Each retry waits delay * backoff**k plus up to `jitter` seconds."""
    starts: list[float] = []

    class Flow(Workflow):
        @step(retry=RetryPolicy(max_attempts=4, delay=1, backoff=2, jitter=0.5))
        async def flaky(self, ev: StartEvent) -> StopEvent:
            starts.append(trio.current_time())
            if len(starts) < 4:
                raise ValueError("again")
            return StopEvent()

    await Flow().run()
    waits = [b - a for a, b in itertools.pairwise(starts)]
    for wait, base in zip(waits, [1, 2, 4], strict=True):
        assert base <= wait <= base + 0.5
