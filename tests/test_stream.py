"""The stream: bounded, live, one consumer at a time, exactly one terminal event."""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel
import trio.testing

from trioflow import (
    Context,
    Event,
    StartEvent,
    StopEvent,
    StreamIterator,
    Workflow,
    WorkflowRuntimeError,
    step,
)


class Tick(Event):
    i: int


class Other(Event):
    pass


class Writer(Workflow):
    """Writes `n` ticks (and an Other after each fifth), then stops."""

    @step
    async def write(self, ctx: Context, ev: StartEvent) -> StopEvent:
        for i in range(ev.n):
            await ctx.write_event_to_stream(Tick(i=i))
            if i % 5 == 4:
                await ctx.write_event_to_stream(Other())
        return StopEvent(result=ev.n)


async def test_events_arrive_in_order_then_terminal() -> None:
    """Every written event arrives in order, then the stop event, then iteration ends."""
    async with Writer().start(n=1000) as handler:
        events = [ev async for ev in handler.stream_events(Tick)]
    assert [ev.i for ev in events[:-1]] == list(range(1000))  # type: ignore[union-attr]
    assert events[-1] == StopEvent(result=1000)


async def test_type_filter_never_hides_terminal() -> None:
    """A filter yields only the asked types, and the terminal event regardless."""
    async with Writer().start(n=10) as handler:
        events = [ev async for ev in handler.stream_events(Other)]
    assert events == [Other(), Other(), StopEvent(result=10)]


async def test_writer_waits_while_buffer_is_full(autojump_clock: trio.testing.MockClock) -> None:
    """With nobody reading, the writer fills stream_buffer events and then waits: that is
    the backpressure; reading one event lets it write one more."""
    written: list[int] = []

    class Flow(Workflow):
        @step
        async def write(self, ctx: Context, ev: StartEvent) -> StopEvent:
            for i in range(100):
                await ctx.write_event_to_stream(Tick(i=i))
                written.append(i)
            return StopEvent()

    async with Flow(stream_buffer=8).start() as handler:
        await trio.testing.wait_all_tasks_blocked()
        assert len(written) == 8
        stats = handler.statistics()
        assert (stats.buffered, stats.capacity, stats.writers_waiting) == (8, 8, 1)
        stream = handler.stream_events()
        assert await stream.__anext__() == Tick(i=0)
        await trio.testing.wait_all_tasks_blocked()
        assert len(written) == 9
        rest = [ev async for ev in stream]
    assert [ev.i for ev in rest[:-1]] == list(range(1, 100))  # type: ignore[attr-defined]


async def test_event_is_delivered_at_the_writers_next_checkpoint(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An event written before a long sleep reaches the consumer at once, not when the step
    ends."""

    class Flow(Workflow):
        @step
        async def slow(self, ctx: Context, ev: StartEvent) -> StopEvent:
            await ctx.write_event_to_stream(Tick(i=0))
            await trio.sleep(60)
            return StopEvent()

    async with Flow(timeout=None).start() as handler:
        received: list[tuple[Event, float]] = []
        async for ev in handler.stream_events():
            received.append((ev, trio.current_time()))
    assert [ev for ev, _ in received] == [Tick(i=0), StopEvent()]
    assert [at for _, at in received] == pytest.approx([0, 60])


async def test_zero_buffer_is_a_rendezvous() -> None:
    """stream_buffer=0 still delivers every event (each write waits for the consumer)."""
    async with Writer(stream_buffer=0).start(n=50) as handler:
        events = [ev async for ev in handler.stream_events(Tick)]
    assert len(events) == 51


async def test_second_concurrent_consumer_raises() -> None:
    """A second stream_events() while one iterator is alive raises WorkflowRuntimeError."""
    async with Writer().start(n=3) as handler:
        first = handler.stream_events()
        with pytest.raises(WorkflowRuntimeError, match="already has a consumer"):
            handler.stream_events()
        assert [ev async for ev in first][-1] == StopEvent(result=3)


async def test_breaking_out_releases_the_stream() -> None:
    """Breaking out of the loop hands the stream on: the next consumer gets the next event."""
    async with Writer().start(n=20) as handler:
        async for ev in handler.stream_events(Tick):
            if ev.i == 4:  # type: ignore[union-attr]
                break
        rest = [ev async for ev in handler.stream_events(Tick)]
    assert rest[0] == Tick(i=5)
    assert rest[-1] == StopEvent(result=20)


async def test_aclose_releases_the_stream() -> None:
    """aclose() on a held iterator releases the stream without dropping the iterator."""
    async with Writer().start(n=3) as handler:
        held = handler.stream_events()
        await held.__anext__()
        await held.aclose()
        rest = [ev async for ev in handler.stream_events()]
        with pytest.raises(StopAsyncIteration):
            await held.__anext__()
    assert rest[0] == Tick(i=1)


async def test_stream_after_it_ended_raises() -> None:
    """stream_events() after the terminal event was delivered raises WorkflowRuntimeError."""
    async with Writer().start(n=1) as handler:
        _ = [ev async for ev in handler.stream_events()]
        with pytest.raises(WorkflowRuntimeError, match="has ended"):
            handler.stream_events()


async def test_result_without_streaming_drains_and_never_deadlocks() -> None:
    """result() with nobody streaming discards what blocks the writer; the run finishes."""
    async with Writer(stream_buffer=4).start(n=10_000) as handler:
        assert await handler.result() == 10_000
        assert handler.statistics().discarded > 9_000


async def test_run_discards_stream_events() -> None:
    """run() finishes even though its stream holds far more than the buffer, unbuffered too:
    the run's task is the caller's, so the writes themselves make room."""
    assert await Writer(stream_buffer=2).run(n=5_000) == 5_000
    assert await Writer(stream_buffer=0).run(n=500) == 500


async def test_consumer_task_started_before_result_gets_everything() -> None:
    """A consumer started with start_soon before awaiting result() receives every event:
    result() only drains a stream that nobody claims."""
    async with trio.open_nursery() as nursery, Writer(stream_buffer=4).start(n=500) as handler:
        received: list[Event] = []

        async def consume() -> None:
            received.extend([ev async for ev in handler.stream_events(Tick)])

        nursery.start_soon(consume)
        assert await handler.result() == 500
    assert len(received) == 501


async def test_events_left_after_result_can_still_be_streamed() -> None:
    """After result() returned, the events still buffered and the terminal can be streamed."""
    async with Writer().start(n=3) as handler:
        assert await handler.result() == 3
        events = [ev async for ev in handler.stream_events(Tick)]
    assert events == [Tick(i=0), Tick(i=1), Tick(i=2), StopEvent(result=3)]


async def test_writing_a_stop_event_or_non_event_is_refused() -> None:
    """write_event_to_stream refuses stop events and non-events with clear errors."""
    errors: list[Exception] = []

    class Flow(Workflow):
        @step
        async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
            for bad in (StopEvent(), "text"):
                try:
                    await ctx.write_event_to_stream(bad)  # type: ignore[arg-type]
                except (WorkflowRuntimeError, TypeError) as exc:
                    errors.append(exc)
            return StopEvent()

    await Flow().run()
    assert isinstance(errors[0], WorkflowRuntimeError)
    assert "return it from a step" in str(errors[0])
    assert isinstance(errors[1], TypeError)


async def test_stream_filter_must_be_event_types() -> None:
    """stream_events() refuses filters that are not Event subclasses."""
    async with Writer().start(n=1) as handler:
        with pytest.raises(TypeError, match="Event subclasses"):
            handler.stream_events(int)  # type: ignore[type-var]


async def test_a_kept_iterator_does_not_stop_result_from_draining(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An iterator still named after `break` does not keep result() (in the same task) from
    draining the stream, so a run that needs no time does not time out."""
    async with Writer(timeout=5, stream_buffer=1).start(n=50) as handler:
        events = handler.stream_events()
        async for _ in events:
            break
        assert await handler.result() == 50
        assert trio.current_time() == 0
        with pytest.raises(WorkflowRuntimeError, match="no longer holds"):
            await events.__anext__()


async def test_a_cancelled_consumer_releases_the_stream_without_the_gc() -> None:
    """A consumer cancelled while it waits for the next event hands the stream on at once,
    even while something (here a saved exception, in real code a reference cycle) keeps its
    iterator alive."""
    saved: list[BaseException] = []
    async with Writer(stream_buffer=0).start(n=3) as handler:

        async def consume() -> None:
            events = handler.stream_events()
            try:
                async for _ in events:
                    pass
            except trio.Cancelled as exc:
                saved.append(exc)  # its traceback holds this frame, and the frame the iterator
                raise

        with trio.move_on_after(0):
            await consume()
        rest = [ev async for ev in handler.stream_events()]
    assert saved
    assert rest[-1] == StopEvent(result=3)


async def test_async_with_releases_the_stream_on_exit() -> None:
    """`async with handler.stream_events() as events:` hands the stream on when the block
    ends, even with the iterator still named."""
    async with Writer().start(n=5) as handler:
        async with handler.stream_events(Tick) as events:
            async for ev in events:
                assert ev == Tick(i=0)
                break
        rest = [ev async for ev in handler.stream_events(Tick)]
        assert events is not None
    assert rest[0] == Tick(i=1)


async def test_an_iterator_handed_to_a_consumer_task_is_that_tasks() -> None:
    """`nursery.start_soon(consume, handler.stream_events())` then `await handler.result()`:
    the consumer task gets every event; the task that made the iterator does not take it over."""

    async def consume(events: StreamIterator, got: list[Event]) -> None:
        async for ev in events:
            got.append(ev)

    for _ in range(30):  # trio runs the tasks of one batch in a random order
        got: list[Event] = []
        async with trio.open_nursery() as nursery, Writer(stream_buffer=1).start(n=20) as handler:
            nursery.start_soon(consume, handler.stream_events(), got)
            assert await handler.result() == 20
        assert [ev for ev in got if isinstance(ev, Tick)] == [Tick(i=i) for i in range(20)]
        assert got[-1] == StopEvent(result=20)


async def test_discarding_a_big_buffer_lets_other_tasks_run() -> None:
    """result() throwing away a big unread buffer yields as a reader does: another task sees
    the discarding half done."""
    seen: list[int] = []
    n = 60_000
    flow = Writer(stream_buffer=n, timeout=None)
    async with trio.open_nursery() as nursery, flow.start(n=n + 1) as handler:

        async def watch() -> None:
            while True:
                seen.append(handler.statistics().discarded)
                await trio.lowlevel.checkpoint()

        while handler.statistics().writers_waiting == 0:  # the buffer is full
            await trio.lowlevel.checkpoint()
        nursery.start_soon(watch)
        assert await handler.result() == n + 1
        nursery.cancel_scope.cancel()
    assert handler.statistics().discarded >= n
    assert any(0 < discarded < n for discarded in seen)
