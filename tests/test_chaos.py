"""Chaos: a cancel, a failure or a timeout injected at every scheduler step of small runs.

A trio `Instrument` counts task steps; run k injects at the k-th one (cancel: the caller's
`handler.cancel()`; failure: the next step code to run raises). Timeouts are swept over every
virtual instant the steps reach. Whatever happens when, the run's invariants hold: the outcome
is decided once and never changes, the stream ends with exactly one terminal event that agrees
with the status and with `result()`, and no step code runs after the `start()` block.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio
import trio.testing

from trioflow import (
    Context,
    Event,
    RunStatus,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowCancelledError,
    WorkflowCancelledEvent,
    WorkflowFailedEvent,
    WorkflowHandler,
    WorkflowTimedOutEvent,
    WorkflowTimeoutError,
    step,
)


class Chaos(Exception):
    """The failure injected into a step."""


class Half(Event):
    n: int


class Plan:
    """Shared by the steps: whether the next step code raises, and whether code ran late."""

    def __init__(self) -> None:
        self.fail_next = False
        self.block_exited = False
        self.late = False

    async def point(self) -> None:
        if self.block_exited:
            self.late = True
        if self.fail_next:
            self.fail_next = False
            raise Chaos("injected")
        await trio.sleep(0.1)


class Small(Workflow):
    def __init__(self, plan: Plan, timeout: float | None) -> None:
        super().__init__(timeout=timeout, stream_buffer=1)
        self.plan = plan

    @step
    async def split(self, ctx: Context, ev: StartEvent) -> Half:
        await self.plan.point()
        ctx.send_event(Half(n=1))
        await ctx.write_event_to_stream(Half(n=0))
        await self.plan.point()
        return Half(n=2)

    @step(num_workers=2)
    async def work(self, ctx: Context, ev: Half) -> StopEvent | None:
        await self.plan.point()
        got = ctx.collect_events(ev, [Half, Half])
        if got is None:
            return None
        await self.plan.point()
        return StopEvent(result="done")


class Injector(trio.abc.Instrument):
    def __init__(self, at: int, action: Callable[[], None]) -> None:
        self.count = 0
        self.at = at
        self.action = action

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.count += 1
        if self.count == self.at:
            self.action()


def _check(handler: WorkflowHandler, events: list[Event], result: object, plan: Plan) -> None:
    terminals = [ev for ev in events if isinstance(ev, StopEvent)]
    assert len(terminals) == 1
    assert events[-1] is terminals[0]
    terminal = terminals[0]
    status = handler.status
    expected = {
        WorkflowFailedEvent: RunStatus.FAILED,
        WorkflowCancelledEvent: RunStatus.CANCELLED,
        WorkflowTimedOutEvent: RunStatus.TIMED_OUT,
        StopEvent: RunStatus.COMPLETED,
    }[type(terminal)]
    assert status is expected
    if status is RunStatus.COMPLETED:
        assert result == "done"
    elif status is RunStatus.FAILED:
        assert isinstance(result, Chaos)
    elif status is RunStatus.TIMED_OUT:
        assert isinstance(result, WorkflowTimeoutError)
    else:
        assert isinstance(result, WorkflowCancelledError)
    assert not plan.late


async def _one(kind: str, at: int, run_timeout: float | None) -> int:
    plan = Plan()
    handlers: list[WorkflowHandler] = []
    statuses: list[RunStatus] = []

    def inject() -> None:
        if kind == "fail":
            plan.fail_next = True
        elif handlers:
            handlers[0].cancel()

    injector = Injector(at, inject)
    trio.lowlevel.add_instrument(injector)
    try:
        async with Small(plan, run_timeout).start() as handler:
            handlers.append(handler)
            events: list[Event] = []
            async with handler.stream_events() as stream:
                async for ev in stream:
                    events.append(ev)
                    statuses.append(handler.status)
            try:
                result: object = await handler.result()
            except (Chaos, WorkflowTimeoutError, WorkflowCancelledError) as exc:
                result = exc
    except (Chaos, WorkflowTimeoutError):
        pass  # raised by leaving the block when result() had not raised it: checked below
    finally:
        trio.lowlevel.remove_instrument(injector)
        plan.block_exited = True
    _check(handler, events, result, plan)
    # Once decided, the status never changed while the stream was read.
    decided = [s for s in statuses if s is not RunStatus.RUNNING]
    assert all(s is decided[-1] for s in decided)
    await trio.sleep(1)  # a step still alive would run now
    assert not plan.late
    return injector.count


@pytest.mark.parametrize("kind", ["cancel", "fail"])
async def test_inject_at_every_scheduler_step(
    autojump_clock: trio.testing.MockClock, kind: str
) -> None:
    """A cancel or a failure at any scheduler step leaves every invariant intact."""
    steps = await _one(kind, 0, None)
    assert steps > 10
    for at in range(1, steps + 1):
        await _one(kind, at, None)


async def test_timeout_at_every_instant(autojump_clock: trio.testing.MockClock) -> None:
    """A workflow timeout at any instant the steps reach leaves every invariant intact."""
    for tenth in range(1, 6):
        for offset in (-0.001, 0.0, 0.001):
            await _one("cancel", 0, tenth / 10 + offset)
