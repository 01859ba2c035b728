"""Lifecycle events on request, run statistics, logging with structured fields, and
OpenTelemetry spans (checked with the SDK's in-memory exporter)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import trio
import trio.testing
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import trioflow
from trioflow import (
    Context,
    Event,
    LifecycleEvent,
    RetryPolicy,
    StartEvent,
    StepFailedEvent,
    StepFinishedEvent,
    StepRetryEvent,
    StepStartedEvent,
    StopEvent,
    Workflow,
    step,
)


class Job(Event):
    seconds: float


class Progress(Event):
    value: float


class TwoSteps(Workflow):
    @step
    async def plan(self, ctx: Context, ev: StartEvent) -> Job:
        await ctx.write_event_to_stream(Progress(value=0.5))
        return Job(seconds=2.0)

    @step
    async def work(self, ev: Job) -> StopEvent:
        await trio.sleep(ev.seconds)
        return StopEvent(result="done")


class Flaky(Workflow):
    @step(retry=RetryPolicy(max_attempts=2, delay=3.0))
    async def wobble(self, ctx: Context, ev: StartEvent) -> StopEvent:
        attempt = await ctx.store.get("attempt", 0) + 1
        await ctx.store.set("attempt", attempt)
        if attempt == 1:
            raise ValueError("first try")
        return StopEvent(result=attempt)


class Boom(Exception):
    pass


class Failing(Workflow):
    @step
    async def explode(self, ev: StartEvent) -> StopEvent:
        raise Boom("kaboom")


async def collect(handler: trioflow.WorkflowHandler, *types: type[Event]) -> list[Event]:
    return [event async for event in handler.stream_events(*types)]


# -- lifecycle events --


async def test_lifecycle_events_never_appear_in_a_default_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Without asking, a stream carries no lifecycle events."""
    async with TwoSteps().start() as handler:
        events = await collect(handler)
    assert not any(isinstance(event, LifecycleEvent) for event in events)
    assert [type(event).__name__ for event in events] == ["Progress", "StopEvent"]


async def test_lifecycle_events_on_request(autojump_clock: trio.testing.MockClock) -> None:
    """Named in stream_events(), each step execution is bracketed by started and finished
    events, with its duration; other events keep their place."""
    async with TwoSteps().start() as handler:
        events = await collect(handler, StepStartedEvent, StepFinishedEvent, Progress)
    summary = [
        (type(e).__name__, getattr(e, "step_name", None), getattr(e, "succeeded", None))
        for e in events
    ]
    assert summary == [
        ("StepStartedEvent", "plan", None),
        ("Progress", None, None),
        ("StepFinishedEvent", "plan", True),
        ("StepStartedEvent", "work", None),
        ("StepFinishedEvent", "work", True),
        ("StopEvent", None, None),
    ]
    work_finished = events[4]
    assert isinstance(work_finished, StepFinishedEvent)
    assert work_finished.duration == 2.0
    plan_finished = events[2]
    assert isinstance(plan_finished, StepFinishedEvent)
    assert (plan_finished.returned, work_finished.returned) == ({"Job": 1}, {"StopEvent": 1})
    started = events[3]
    assert isinstance(started, StepStartedEvent)
    assert started.input_event == Job(seconds=2.0)
    assert started.attempt == 1


async def test_retries_and_failures_as_lifecycle_events(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A failed attempt: finished (not succeeded), its StepFailedEvent, a retry event with
    the delay, then the next attempt."""
    async with Flaky().start() as handler:
        events = await collect(handler, LifecycleEvent, StepFailedEvent)
        assert await handler.result() == 2
    kinds = [(type(e).__name__, getattr(e, "attempt", None)) for e in events]
    assert kinds == [
        ("StepStartedEvent", 1),
        ("StepFinishedEvent", 1),
        ("StepFailedEvent", 1),
        ("StepRetryEvent", 2),
        ("StepStartedEvent", 2),
        ("StepFinishedEvent", 2),
        ("StopEvent", None),
    ]
    retry = events[3]
    assert isinstance(retry, StepRetryEvent)
    assert retry.delay == 3.0
    assert str(retry.exception) == "first try"
    first, second = events[1], events[5]
    assert isinstance(first, StepFinishedEvent)
    assert isinstance(second, StepFinishedEvent)
    assert (first.succeeded, second.succeeded) == (False, True)
    assert (first.returned, second.returned) == ({}, {"StopEvent": 1})


class Spread(Workflow):
    @step
    async def split(self, ev: StartEvent) -> list[Job | Progress]:
        return [Job(seconds=0), Progress(value=0.1), Job(seconds=0)]

    @step
    async def work(self, ev: Job) -> None:
        return None

    @step
    async def done(self, evs: list[Progress]) -> StopEvent:  # once the works have ended
        return StopEvent(result=len(evs))


async def test_a_finished_step_counts_the_events_it_returned() -> None:
    """A fan-out's events are counted by type; a step returning None returned none."""
    async with Spread().start() as handler:
        events = await collect(handler, StepFinishedEvent)
    returned = [(e.step_name, e.returned) for e in events if isinstance(e, StepFinishedEvent)]
    assert returned[0] == ("split", {"Job": 2, "Progress": 1})
    assert all(isinstance(hash(e), int) for e in events)  # they stay hashable
    assert sorted((name, dict(counts)) for name, counts in returned[1:]) == [
        ("done", {"StopEvent": 1}),
        ("work", {}),
        ("work", {}),
    ]


async def test_a_later_consumer_that_does_not_ask_sees_no_leftovers() -> None:
    """Lifecycle events written for a consumer that asked are not handed to the next one."""

    class Gate(Event):
        pass

    class Slow(Workflow):
        @step
        async def one(self, ctx: Context, ev: StartEvent) -> Gate:
            return Gate()

        @step
        async def two(self, ctx: Context, ev: Gate) -> StopEvent:
            await ctx.write_event_to_stream(Progress(value=1.0))
            return StopEvent()

    async with Slow().start() as handler:
        async for event in handler.stream_events(LifecycleEvent):
            assert isinstance(event, StepStartedEvent)
            break  # lifecycle events are now buffered behind it
        rest = await collect(handler)
    assert [type(event).__name__ for event in rest] == ["Progress", "StopEvent"]


# -- statistics --


async def test_statistics_count_routing_running_steps_and_backpressure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """statistics(): events routed, steps running, the buffer's peak, time writers waited."""

    class Writer(Workflow):
        @step
        async def write(self, ctx: Context, ev: StartEvent) -> Job:
            for i in range(10):
                await ctx.write_event_to_stream(Progress(value=i / 10))
            return Job(seconds=50.0)

        @step
        async def wait(self, ev: Job) -> StopEvent:
            await trio.sleep(ev.seconds)
            return StopEvent()

    async with Writer(stream_buffer=4, timeout=None).start() as handler:
        before = handler.statistics()
        assert before.events_routed == 1  # the start event
        stream = handler.stream_events()
        await trio.sleep(3)  # nobody reads: the writer fills the buffer and waits
        stats = handler.statistics()
        assert stats.buffered == stats.capacity == 4
        assert stats.writers_waiting == 1
        assert stats.steps_running == {"write": 1}
        async for event in stream:
            if isinstance(event, Progress) and event.value == 0.9:
                break
            await trio.sleep(1)  # a slow consumer
        await trio.sleep(1)
        middle = handler.statistics()
        assert middle.steps_running == {"wait": 1}
        assert middle.events_routed == 2  # StartEvent, Job
        assert middle.buffer_peak == 4
        # Writes 5 to 10 found the buffer full: the first waited 3 s, the others 1 s each.
        assert middle.backpressure_wait == pytest.approx(3 + 5)
        await handler.result()
    assert handler.statistics().steps_running == {}


# -- logging --


async def test_runs_log_with_structured_fields(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    """Each run logs its end with workflow, run id, outcome (and the failed step)."""
    caplog.set_level(logging.DEBUG, logger="trioflow")
    assert await TwoSteps().run() == "done"
    with pytest.raises(Boom):
        await Failing().run()
    ends = [r for r in caplog.records if hasattr(r, "outcome")]
    assert [(r.workflow, r.outcome, r.levelname) for r in ends] == [  # type: ignore[attr-defined]
        ("TwoSteps", "completed", "DEBUG"),
        ("Failing", "failed", "INFO"),
    ]
    assert ends[1].step == "explode"  # type: ignore[attr-defined]
    assert all(len(r.run_id) == 32 for r in ends)  # type: ignore[attr-defined]


# -- tracing --


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trioflow.enable_tracing(provider)
    try:
        yield exporter
    finally:
        trioflow.disable_tracing()


def by_name(finished: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {span.name: span for span in finished}


async def test_a_span_per_run_and_per_step(
    spans: InMemorySpanExporter, autojump_clock: trio.testing.MockClock
) -> None:
    """One run span, a step span per execution as its child, with the attributes."""
    async with TwoSteps().start() as handler:
        run_id = handler.run_id
        assert await handler.result() == "done"
    found = by_name(spans.get_finished_spans())
    assert set(found) == {"trioflow.run TwoSteps", "trioflow.step plan", "trioflow.step work"}
    run = found["trioflow.run TwoSteps"]
    assert run.attributes is not None
    assert dict(run.attributes) == {
        "trioflow.workflow": "TwoSteps",
        "trioflow.run_id": run_id,
        "trioflow.outcome": "completed",
    }
    for name in ("plan", "work"):
        span = found[f"trioflow.step {name}"]
        assert span.parent is not None
        assert run.context is not None
        assert span.parent.span_id == run.context.span_id
        assert span.attributes is not None
        assert dict(span.attributes) == {
            "trioflow.workflow": "TwoSteps",
            "trioflow.run_id": run_id,
            "trioflow.step": name,
            "trioflow.attempt": 1,
            "trioflow.outcome": "succeeded",
        }


async def test_failed_steps_and_runs_mark_their_spans(
    spans: InMemorySpanExporter, autojump_clock: trio.testing.MockClock
) -> None:
    """A failing step's span and its run's span carry the error; retries are attempts."""
    with pytest.raises(Boom):
        await Failing().run()
    found = by_name(spans.get_finished_spans())
    step_span, run_span = found["trioflow.step explode"], found["trioflow.run Failing"]
    for span, outcome in ((step_span, "failed"), (run_span, "failed")):
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes is not None
        assert span.attributes["trioflow.outcome"] == outcome
        assert [e.name for e in span.events] == ["exception"]
    spans.clear()
    assert await Flaky().run() == 2
    attempts = [
        (s.attributes or {}).get("trioflow.attempt") for s in spans.get_finished_spans()
        if s.name == "trioflow.step wobble"
    ]  # fmt: skip
    assert attempts == [1, 2]


async def test_the_callers_span_is_the_runs_parent(
    spans: InMemorySpanExporter, autojump_clock: trio.testing.MockClock
) -> None:
    """The run span joins the caller's trace: the current span when the run starts."""
    from trioflow._core._tracing import current_tracer

    with current_tracer().start_as_current_span("request") as request:
        await TwoSteps().run()
    run = by_name(spans.get_finished_spans())["trioflow.run TwoSteps"]
    assert run.parent is not None
    assert run.parent.span_id == request.get_span_context().span_id


async def test_disabled_tracing_records_nothing(
    spans: InMemorySpanExporter, autojump_clock: trio.testing.MockClock
) -> None:
    """After disable_tracing(), runs make no spans."""
    trioflow.disable_tracing()
    await TwoSteps().run()
    assert spans.get_finished_spans() == ()
