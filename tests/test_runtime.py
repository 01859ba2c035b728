"""The runtime: routing, context, isolation, cycles, failure, timeout and cancellation."""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel
import trio.testing

from trioflow import (
    Context,
    Event,
    RetryPolicy,
    StartEvent,
    StepFailedEvent,
    StopEvent,
    Workflow,
    WorkflowCancelledError,
    WorkflowCancelledEvent,
    WorkflowFailedEvent,
    WorkflowRuntimeError,
    WorkflowTimedOutEvent,
    WorkflowTimeoutError,
    step,
)


class Progress(Event):
    value: float


class Draft(Event):
    text: str


class JokeFlow(Workflow):
    @step
    async def write(self, ctx: Context, ev: StartEvent) -> Draft:
        await ctx.write_event_to_stream(Progress(value=0.5))
        return Draft(text=f"a joke about {ev.topic}")

    @step(num_workers=2, timeout=30)
    async def polish(self, ctx: Context, ev: Draft) -> StopEvent:
        return StopEvent(result=ev.text.upper())


async def test_run_returns_result() -> None:
    """The API.md example runs and returns the stop event's result."""
    assert await JokeFlow().run(topic="trio") == "A JOKE ABOUT TRIO"


async def test_run_with_start_event_object() -> None:
    """run(start_event=...) takes a ready start event."""
    assert await JokeFlow().run(start_event=StartEvent(topic="x")) == "A JOKE ABOUT X"


async def test_bad_start_fields_raise_clearly() -> None:
    """Fields that do not fit a typed start event raise TypeError naming the event."""

    class Typed(StartEvent):
        topic: str

    class Flow(Workflow):
        @step
        async def go(self, ev: Typed) -> StopEvent:
            return StopEvent(result=ev.topic)

    with pytest.raises(TypeError, match="cannot make the start event Typed"):
        await Flow().run(wrong=1)
    with pytest.raises(TypeError, match="starts with Typed"):
        await Flow().run(start_event=StartEvent(topic="x"))
    assert await Flow().run(topic="ok") == "ok"


async def test_stop_event_subclass_is_returned_itself() -> None:
    """With a StopEvent subclass, run() returns the event itself."""

    class Answer(StopEvent):
        confidence: float

    class Flow(Workflow):
        @step
        async def go(self, ev: StartEvent) -> Answer:
            return Answer(result=42, confidence=0.5)

    assert await Flow().run() == Answer(result=42, confidence=0.5)


async def test_event_goes_to_every_accepting_step(autojump_clock: trio.testing.MockClock) -> None:
    """An event is routed to every step whose annotation accepts it (isinstance)."""
    seen: list[str] = []

    class Base(Event):
        pass

    class Sub(Base):
        pass

    class Flow(Workflow):
        @step
        async def begin(self, ev: StartEvent) -> Sub:
            return Sub()

        @step
        async def by_base(self, ctx: Context, ev: Base) -> None:
            seen.append("base")
            await ctx.store.set("base", True)

        @step
        async def by_sub(self, ctx: Context, ev: Sub) -> StopEvent | None:
            seen.append("sub")
            await trio.sleep(1)
            return StopEvent(result=await ctx.store.get("base"))

    assert await Flow().run() is True
    assert sorted(seen) == ["base", "sub"]


async def test_send_event_to_named_step_and_errors() -> None:
    """ctx.send_event(step=...) targets one step; unknown or non-accepting steps raise."""
    errors: list[str] = []

    class Ping(Event):
        pass

    class Flow(Workflow):
        @step
        async def begin(self, ctx: Context, ev: StartEvent) -> Ping | None:
            for bad in ("nope", "begin"):
                try:
                    ctx.send_event(Ping(), step=bad)
                except WorkflowRuntimeError as exc:
                    errors.append(str(exc))
            ctx.send_event(Ping(), step="a")
            return None

        @step
        async def a(self, ev: Ping) -> StopEvent:
            return StopEvent(result="a")

        @step
        async def b(self, ev: Ping) -> StopEvent:
            return StopEvent(result="b")

    assert await Flow().run() == "a"
    assert "no step named 'nope'" in errors[0]
    assert "step 'begin' of Flow does not accept Ping" in errors[1]


async def test_unroutable_event_fails_the_sending_step() -> None:
    """An event no step accepts is an error from send_event, never silently dropped."""

    class Stray(Event):
        pass

    class Flow(Workflow):
        @step
        async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
            ctx.send_event(Stray())
            return StopEvent()

    with pytest.raises(WorkflowRuntimeError, match="no step of Flow accepts Stray"):
        await Flow().run()


async def test_returning_a_non_event_fails_the_step() -> None:
    """A step returning something that is not an Event fails with a clear error."""

    class Flow(Workflow):
        @step
        async def go(self, ev: StartEvent) -> StopEvent:
            return 42  # type: ignore[return-value]

    with pytest.raises(WorkflowRuntimeError, match="returned 42"):
        await Flow().run()


async def test_collect_events_waits_for_one_per_entry_in_list_order() -> None:
    """collect_events returns events in list order once each entry has one, else None."""
    calls: list[object] = []

    class Flow(Workflow):
        @step
        async def fan_out(self, ctx: Context, ev: StartEvent) -> Progress | Draft | None:
            ctx.send_event(Draft(text="d1"))
            ctx.send_event(Progress(value=1.0))
            ctx.send_event(Draft(text="d2"))
            return None

        @step(num_workers=1)
        async def join(self, ctx: Context, ev: Progress | Draft) -> StopEvent | None:
            got = ctx.collect_events(ev, [Draft, Progress, Draft])
            calls.append(got)
            return None if got is None else StopEvent(result=got)

    result = await Flow().run()
    assert result == [Draft(text="d1"), Progress(value=1.0), Draft(text="d2")]
    assert calls[:2] == [None, None]


async def test_cycles_never_deadlock() -> None:
    """A step floods its own inbox and a two-step cycle with 2,000 events in one go (far more
    than any buffer would hold) and the run still completes: inboxes never block a sender."""

    class Hop(Event):
        n: int

    class Echo(Event):
        n: int

    class Flow(Workflow):
        @step
        async def begin(self, ev: StartEvent) -> Hop:
            return Hop(n=0)

        @step(num_workers=1)
        async def loop(self, ctx: Context, ev: Hop) -> Hop | Echo | StopEvent | None:
            if ev.n == 0:
                for i in range(1, 1001):
                    ctx.send_event(Hop(n=i))  # into our own inbox
                    ctx.send_event(Echo(n=i))  # around the cycle loop -> echo -> loop
                return None
            seen = await ctx.store.get("seen", 0) + 1
            await ctx.store.set("seen", seen)
            return StopEvent(result=seen) if seen == 2000 else None

        @step(num_workers=1)
        async def echo(self, ev: Echo) -> Hop:
            return Hop(n=-ev.n)

    assert await Flow(timeout=None).run() == 2000


async def test_concurrent_runs_are_isolated() -> None:
    """1,000 runs at once in one process each get their own context and result."""

    class Flow(Workflow):
        @step
        async def remember(self, ctx: Context, ev: StartEvent) -> Draft:
            await ctx.store.set("n", ev.n)
            await trio.lowlevel.checkpoint()
            return Draft(text=str(ev.n))

        @step
        async def answer(self, ctx: Context, ev: Draft) -> StopEvent:
            assert await ctx.store.get("n") == int(ev.text)
            return StopEvent(result=(ctx.run_id, int(ev.text)))

    flow = Flow()
    results: dict[int, tuple[str, int]] = {}

    async def one(n: int) -> None:
        results[n] = await flow.run(n=n)

    async with trio.open_nursery() as nursery:
        for n in range(1000):
            nursery.start_soon(one, n)
    assert {n for n, (_, got) in results.items() if got == n} == set(range(1000))
    assert len({run_id for run_id, _ in results.values()}) == 1000


async def test_step_failure_propagates_the_original_exception(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A failing step's exception is raised as itself, with a note naming the step, and the
    other steps are cancelled."""
    error = ValueError("boom")
    cancelled: list[bool] = []

    class Flow(Workflow):
        @step
        async def fail(self, ev: StartEvent) -> StopEvent:
            await trio.sleep(1)
            raise error

        @step
        async def hang(self, ev: StartEvent) -> StopEvent:
            try:
                await trio.sleep_forever()
            finally:
                cancelled.append(True)

    with pytest.raises(ValueError, match="boom") as info:
        await Flow().run()
    assert info.value is error
    assert any("step 'fail'" in note for note in info.value.__notes__)
    assert cancelled == [True]


async def test_two_failures_in_one_tick_raise_one_and_keep_the_other() -> None:
    """When two steps fail in the same tick, one is raised, the other is noted on it."""
    gate = trio.Event()

    # Both wait on one event, so both resume in the same batch already inside their step,
    # and the second raises after the first has decided the run.
    class Flow(Workflow):
        @step
        async def one(self, ev: StartEvent) -> StopEvent:
            await gate.wait()
            raise ValueError("one")

        @step
        async def two(self, ev: StartEvent) -> StopEvent:
            await gate.wait()
            raise KeyError("two")

    with pytest.raises((ValueError, KeyError)) as info:
        async with Flow().start() as handler:
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
            await handler.result()
    notes = "\n".join(info.value.__notes__)
    other = "KeyError" if isinstance(info.value, ValueError) else "ValueError"
    assert f"also failed: {other}" in notes


async def test_failure_stream_ends_with_workflow_failed_event() -> None:
    """An unhandled failure streams its StepFailedEvent, then ends the stream with
    WorkflowFailedEvent carrying the same exception."""
    error = RuntimeError("bad")

    class Flow(Workflow):
        @step
        async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
            await ctx.write_event_to_stream(Progress(value=0.1))
            raise error

    flow = Flow()
    events: list[Event] = []
    with pytest.raises(RuntimeError) as info:
        async with flow.start() as handler:
            events = [ev async for ev in handler.stream_events()]
    assert info.value is error
    assert events == [
        Progress(value=0.1),
        StepFailedEvent(step_name="go", attempt=1, exception=error, input_event=StartEvent()),
        WorkflowFailedEvent(step_name="go", exception=error),
    ]


async def test_workflow_timeout(autojump_clock: trio.testing.MockClock) -> None:
    """Workflow(timeout=s) ends the stream with WorkflowTimedOutEvent naming the active
    steps, and result() raises WorkflowTimeoutError, at exactly s virtual seconds."""

    class Flow(Workflow):
        @step
        async def slow(self, ev: StartEvent) -> StopEvent:
            await trio.sleep(100)
            return StopEvent()

    start = trio.current_time()
    with pytest.raises(WorkflowTimeoutError, match="timed out after 5"):
        async with Flow(timeout=5).start() as handler:
            events = [ev async for ev in handler.stream_events()]
            assert events == [WorkflowTimedOutEvent(timeout=5, active_steps=("slow",))]
            await handler.result()
    assert trio.current_time() - start == pytest.approx(5)


async def test_timeout_raises_on_leaving_block_when_result_not_awaited(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A timeout is never silent: leaving the block raises it when result() did not."""

    class Flow(Workflow):
        @step
        async def slow(self, ev: StartEvent) -> StopEvent:
            await trio.sleep_forever()

    with pytest.raises(WorkflowTimeoutError):
        async with Flow(timeout=1).start() as handler:
            async for _ in handler.stream_events():
                pass


async def test_cancel_ends_stream_and_raises_cancelled_from_result(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """handler.cancel(): stream ends with WorkflowCancelledEvent, result() raises, the block
    itself raises nothing."""

    class Flow(Workflow):
        @step
        async def slow(self, ctx: Context, ev: StartEvent) -> StopEvent:
            await ctx.write_event_to_stream(Progress(value=0))
            await trio.sleep_forever()

    async with Flow().start() as handler:
        events = []
        async for ev in handler.stream_events():
            events.append(ev)
            handler.cancel()
        with pytest.raises(WorkflowCancelledError):
            await handler.result()
    assert events == [Progress(value=0), WorkflowCancelledEvent()]


async def test_leaving_block_early_cancels_and_no_step_code_runs_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Leaving start() early cancels the run; no step code runs after the block exits."""
    ticks: list[float] = []

    class Flow(Workflow):
        @step
        async def ticker(self, ev: StartEvent) -> StopEvent:
            while True:
                ticks.append(trio.current_time())
                await trio.sleep(1)

    async with Flow().start() as handler:
        await trio.sleep(3.5)
    left_at = trio.current_time()
    count = len(ticks)
    await trio.sleep(10)
    assert len(ticks) == count == 4
    assert max(ticks) < left_at
    assert handler.status.value == "cancelled"


async def test_outer_cancellation_stops_the_run(autojump_clock: trio.testing.MockClock) -> None:
    """Cancelling the caller's scope cancels the run and propagates as a plain Cancelled."""

    class Flow(Workflow):
        @step
        async def slow(self, ev: StartEvent) -> StopEvent:
            await trio.sleep_forever()

    with trio.move_on_after(2) as scope:
        await Flow().run()
    assert scope.cancelled_caught
    assert trio.current_time() == pytest.approx(2)


async def test_body_exception_propagates_as_itself() -> None:
    """An exception raised in the start() block comes out as itself, not in a group."""

    class Flow(Workflow):
        @step
        async def slow(self, ev: StartEvent) -> StopEvent:
            await trio.sleep_forever()

    with pytest.raises(KeyError):
        async with Flow().start():
            raise KeyError("mine")


async def test_step_timeout_and_retry(autojump_clock: trio.testing.MockClock) -> None:
    """@step(timeout=...) fails a slow attempt with TooSlowError; RetryPolicy retries it after
    the delay, reporting each retried attempt as StepFailedEvent."""
    attempts: list[float] = []

    class Flow(Workflow):
        @step(timeout=2, retry=RetryPolicy(max_attempts=3, delay=1, backoff=2))
        async def flaky(self, ev: StartEvent) -> StopEvent:
            attempts.append(trio.current_time())
            await trio.sleep(5 if len(attempts) < 3 else 0)
            return StopEvent(result=len(attempts))

    async with Flow().start() as handler:
        events = [ev async for ev in handler.stream_events()]
        assert await handler.result() == 3
    # Attempt 1 times out at 2, retry after 1 s; attempt 2 times out at 5, retry after 2 s.
    assert attempts == pytest.approx([0, 3, 7])
    failed = [ev for ev in events if isinstance(ev, StepFailedEvent)]
    assert [(ev.step_name, ev.attempt) for ev in failed] == [("flaky", 1), ("flaky", 2)]
    assert all(isinstance(ev.exception, trio.TooSlowError) for ev in failed)


async def test_retry_gives_up_after_max_attempts() -> None:
    """After max_attempts the last exception fails the run."""
    count = 0

    class Flow(Workflow):
        @step(retry=RetryPolicy(max_attempts=2, retry_on=(ValueError,)))
        async def bad(self, ev: StartEvent) -> StopEvent:
            nonlocal count
            count += 1
            raise ValueError(count)

    with pytest.raises(ValueError, match="2"):
        await Flow().run()
    assert count == 2


def test_retry_policy_validation() -> None:
    """RetryPolicy rejects nonsense values."""
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="backoff"):
        RetryPolicy(backoff=0.5)
    assert RetryPolicy(delay=1, backoff=3).delay_before(3) == 3
