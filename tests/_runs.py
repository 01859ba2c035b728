"""What the property suites (test_properties.py, test_fault_injection.py) share: a log of what
a caller saw of one run, the caller's helpers, and the checks of the contract that hold for
every run, whatever its steps did."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import trio

from trioflow import (
    Event,
    StopEvent,
    WorkflowCancelledError,
    WorkflowCancelledEvent,
    WorkflowFailedEvent,
    WorkflowHandler,
    WorkflowRuntimeError,
    WorkflowTimedOutEvent,
    WorkflowTimeoutError,
)


@dataclass
class Captured:
    """What ``await handler.result()`` gave: a value or an exception."""

    value: object = None
    error: BaseException | None = None


async def capture_result(handler: WorkflowHandler) -> Captured:
    try:
        return Captured(value=await handler.result())
    except Exception as exc:  # an ExceptionGroup included, to be reported as such
        return Captured(error=exc)


@dataclass(eq=False, kw_only=True)
class RunLog:
    """What the caller saw of one run; the suites add what their steps record."""

    #: Every event read from the stream, in the block and after it, in order.
    events: list[Event] = field(default_factory=list)
    #: Whether each loop that read the terminal event then ended by itself.
    ended_after_terminal: list[bool] = field(default_factory=list)
    #: Anything a loop yielded after the terminal event.
    after_terminal: list[Event] = field(default_factory=list)
    body_result: Captured | None = None
    body_unexpected: BaseException | None = None
    caller_error: Exception | None = None
    exit_error: BaseException | None = None
    exit_time: float = math.nan
    #: What stream_events() did after the terminal event had been read.
    reopen_tried: bool = False
    reopen_error: BaseException | None = None
    final_result: Captured | None = None
    discarded: int = 0


async def read_stream(
    handler: WorkflowHandler, log: RunLog, *, limit: int | None = None, delay: float = 0.0
) -> None:
    """Read the stream into ``log``; with ``limit``, break out after that many events unless the
    last one read is the terminal event (a loop that has read the terminal must end by itself)."""
    read = 0
    seen_terminal = False
    async for event in handler.stream_events():
        if seen_terminal:
            log.after_terminal.append(event)
            return
        log.events.append(event)
        seen_terminal = isinstance(event, StopEvent)
        read += 1
        if limit is not None and read >= limit and not seen_terminal:
            break
        if delay:
            await trio.sleep(delay)
    if seen_terminal:
        log.ended_after_terminal.append(True)


async def cancel_at(handler: WorkflowHandler, when: float) -> None:
    await trio.sleep_until(when)
    handler.cancel()


def check_terminal(log: RunLog) -> StopEvent:
    """Exactly one terminal event, last, of a terminal type; the iteration then ends, and
    stream_events() afterwards raises."""
    terminals = [i for i, ev in enumerate(log.events) if isinstance(ev, StopEvent)]
    assert len(terminals) == 1, f"terminal events at {terminals} of {log.events!r}"
    assert terminals[0] == len(log.events) - 1, "the terminal event is not the last one"
    assert not log.after_terminal, f"yielded after the terminal event: {log.after_terminal!r}"
    assert log.ended_after_terminal == [True]
    if log.reopen_tried:
        assert isinstance(log.reopen_error, WorkflowRuntimeError), log.reopen_error
    terminal = log.events[-1]
    assert isinstance(terminal, StopEvent)
    assert type(terminal) in (
        StopEvent,
        WorkflowFailedEvent,
        WorkflowCancelledEvent,
        WorkflowTimedOutEvent,
    )
    return terminal


def check_no_late_ticks(ticks: list[tuple[float, str, bool]], exit_time: float) -> None:
    """No step code ran once the ``async with`` block had exited."""
    late = [(t, name) for t, name, after in ticks if after or t > exit_time]
    assert not late, f"step code ran after the block exited at {exit_time}: {late}"


def check_result(terminal: StopEvent, captured: Captured) -> None:
    """result() agrees with the terminal event, and never raises a group."""
    error = captured.error
    assert not isinstance(error, BaseExceptionGroup), f"result() raised a group: {error!r}"
    if type(terminal) is StopEvent:
        assert error is None, f"completed run, but result() raised {error!r}"
        assert captured.value is terminal.result
    elif isinstance(terminal, WorkflowFailedEvent):
        assert error is terminal.exception, f"{error!r} is not {terminal.exception!r}"
    elif isinstance(terminal, WorkflowTimedOutEvent):
        assert isinstance(error, WorkflowTimeoutError), f"timed out, result() gave {captured}"
    else:
        assert isinstance(terminal, WorkflowCancelledEvent)
        assert isinstance(error, WorkflowCancelledError), f"cancelled, result() gave {captured}"


def check_exit(terminal: StopEvent, log: RunLog, *, left_by_raise: bool) -> None:
    """What leaving the block raises: the caller's own error (noting an unreported failure),
    else an unreported failure or timeout, else nothing."""
    failed = isinstance(terminal, WorkflowFailedEvent | WorkflowTimedOutEvent)
    reported = log.body_result is not None and log.body_result.error is not None
    exit_error = log.exit_error
    assert not isinstance(exit_error, BaseExceptionGroup), f"the block raised {exit_error!r}"
    if left_by_raise:
        assert exit_error is log.caller_error, f"the block raised {exit_error!r}"
        assert log.caller_error is not None
        also = [n for n in getattr(log.caller_error, "__notes__", []) if "also failed" in n]
        assert bool(also) == (failed and not reported), also
    elif failed and not reported:
        unreported = f"{type(terminal).__name__} not raised by result(), but the block raised"
        if isinstance(terminal, WorkflowFailedEvent):
            assert exit_error is terminal.exception, f"{unreported} {exit_error!r}"
        else:
            assert isinstance(exit_error, WorkflowTimeoutError), f"{unreported} {exit_error!r}"
    else:
        assert exit_error is None, f"{type(terminal).__name__}: the block raised {exit_error!r}"
