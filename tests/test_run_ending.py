"""How a decided run ends: what waits for nothing but the decision (the run's own task, the
workers idle at their inboxes) is woken by it and ends without a `trio.Cancelled`; whatever is
still at work is cancelled, as before."""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any

import pytest
import trio
import trio.testing
from trio._core import _run

from trioflow import Context, Event, StartEvent, StopEvent, Workflow, step
from trioflow._core._inbox import Inbox
from trioflow._core._state import RunState


def _looked_at_only() -> bool:
    """Whether the `trio.Cancelled` being made is the one a nursery makes while it waits for
    its children (to look for a ``KeyboardInterrupt``), which it delivers to no task."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_name == "aborted" and frame.f_globals.get("__name__") == _run.__name__:
            return True
        frame = frame.f_back
    return False


@pytest.fixture
def cancellations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each `trio.Cancelled` made for a task while the test runs (trio makes one for each task
    it wakes by a cancellation, and for each `trio.sleep`), as trio's name for its source."""
    made: list[str] = []
    create = trio.Cancelled._create

    def counting(**fields: Any) -> trio.Cancelled:
        if not _looked_at_only():
            made.append(str(fields.get("source")))
        return create(**fields)

    monkeypatch.setattr(trio.Cancelled, "_create", counting)
    return made


class A(Event):
    pass


class B(Event):
    pass


class Chain(Workflow):
    @step
    async def first(self, ev: StartEvent) -> A:
        return A()

    @step
    async def second(self, ev: A) -> B:
        return B()

    @step
    async def third(self, ev: B) -> StopEvent:
        return StopEvent(result="done")


async def test_a_completed_run_ends_without_a_cancellation(cancellations: list[str]) -> None:
    assert await Chain(timeout=None).run() == "done"
    assert cancellations == []


async def test_a_streamed_run_ends_without_a_cancellation(cancellations: list[str]) -> None:
    async with Chain(timeout=10).start() as handler:
        seen = [type(ev).__name__ async for ev in handler.stream_events()]
        assert await handler.result() == "done"
    assert seen == ["StopEvent"]
    assert cancellations == []


class Busy(Workflow):
    """``stop`` decides the run while ``sleeper`` is still at work."""

    def __init__(self) -> None:
        super().__init__(timeout=None)
        self.parked = trio.Event()
        self.sleeper_cancelled = False

    @step
    async def stop(self, ev: StartEvent) -> StopEvent:
        await self.parked.wait()
        return StopEvent(result="stopped")

    @step
    async def sleeper(self, ev: StartEvent) -> None:
        self.parked.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            self.sleeper_cancelled = True
            raise


async def test_a_decision_still_cancels_a_step_at_work(cancellations: list[str]) -> None:
    wf = Busy()
    assert await wf.run() == "stopped"
    assert wf.sleeper_cancelled
    assert cancellations == ["explicit"]  # the sleeper's, and nobody else's


class Handed(Workflow):
    """``go`` hands ``late``'s idle worker an event, then decides the run before ``late`` has
    run it."""

    def __init__(self) -> None:
        super().__init__(timeout=None)
        self.late_ran = 0

    @step
    async def go(self, ctx: Context, ev: StartEvent) -> A | StopEvent:
        ctx.send_event(A())
        await trio.sleep(1)  # by now ``late`` has run once, and its worker waits for more
        ctx.send_event(A())
        return StopEvent(result="first")

    @step
    async def late(self, ev: A) -> None:
        self.late_ran += 1


async def test_an_event_handed_to_an_idle_worker_before_the_decision_is_not_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    wf = Handed()
    assert await wf.run() == "first"
    assert wf.late_ran == 1


class Slow(Workflow):
    @step
    async def wait(self, ev: StartEvent) -> StopEvent:
        await trio.sleep_forever()
        raise AssertionError("unreachable")


async def test_the_callers_cancel_still_ends_a_run_waiting_for_its_decision(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.move_on_after(5) as scope:
        await Slow(timeout=None).run()
    assert scope.cancelled_caught
    assert trio.current_time() == pytest.approx(5)


async def test_a_closed_inbox_wakes_its_parked_workers_and_hands_out_none() -> None:
    inbox: Inbox[int] = Inbox()
    got: list[int | None] = []

    async def worker() -> None:
        get = inbox.getter()
        got.append(await get())
        got.append(await get())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker)
        nursery.start_soon(worker)
        await trio.testing.wait_all_tasks_blocked()
        inbox.put(1)
        await trio.testing.wait_all_tasks_blocked()
        inbox.close()
        inbox.put(2)  # after the decision: queued, never handed out
    assert sorted(got, key=str) == [1, None, None, None]
    assert inbox.waiting == 1


async def test_a_workers_first_take_is_still_a_cancel_point() -> None:
    inbox: Inbox[int] = Inbox()
    inbox.put(7)
    get = inbox.getter(first_yields=False)
    with trio.CancelScope() as scope:
        scope.cancel()
        await get()
    assert scope.cancelled_caught
    assert inbox.waiting == 1  # the item stays for the next worker
    assert await get() == 7


class _Steps(trio.abc.Instrument):
    """How many times trio ran a step of each task, by task name."""

    def __init__(self) -> None:
        self.steps: dict[str, int] = {}

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps[task.name] = self.steps.get(task.name, 0) + 1


class One(Workflow):
    @step
    async def go(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result=ev.n)


async def test_a_worker_takes_its_first_event_without_a_trip_through_the_scheduler() -> None:
    steps = _Steps()
    trio.lowlevel.add_instrument(steps)
    try:
        assert await One(timeout=None).run(n=3) == 3
    finally:
        trio.lowlevel.remove_instrument(steps)
    # Started for the start event, it takes it, runs the step, decides the run and ends: one
    # step of its task (two more: a yield before the event, a cancellation after it).
    assert steps.steps["trioflow step go"] == 1


# -- found in review: a cancellation of the caller's after the decision, a Ctrl-C --------------


class Poking(Workflow):
    """Its step sets ``poke`` and returns the stop event with no checkpoint between."""

    def __init__(self, poke: trio.Event) -> None:
        super().__init__(timeout=None)
        self.poke = poke

    @step
    async def only(self, ev: StartEvent) -> StopEvent:
        self.poke.set()
        return StopEvent(result="done")


async def test_a_cancel_of_the_caller_just_after_the_decision_is_still_raised() -> None:
    """The caller's scope is cancelled in the batch that decided the run: the decision woke
    the run's task, which ends without a `trio.Cancelled` of the run's own; the caller's
    cancellation is raised all the same, and no code of the caller's after ``run()`` runs."""
    for _ in range(10):  # (trio may run the tasks of a batch in either order)
        poke = trio.Event()
        after_run = False
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as scope:

                async def cancel_on_poke(
                    scope: trio.CancelScope = scope, poke: trio.Event = poke
                ) -> None:
                    await poke.wait()
                    scope.cancel()

                nursery.start_soon(cancel_on_poke)
                await Poking(poke).run()
                after_run = True
        assert scope.cancelled_caught
        assert not after_run


async def _interrupt_the_wait_at(line: int, fired: list[int]) -> None:
    """``run()`` of a step that takes a moment, a Ctrl-C raised on ``line`` of
    `RunState.until_decided` (noted in ``fired``) if the wait gets there."""
    code = RunState.until_decided.__code__

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code is not code:
            return None

        def on_line(frame: FrameType, event: str, arg: Any) -> Any:
            if event == "line" and frame.f_lineno == line and not fired:
                fired.append(line)
                signal.raise_signal(signal.SIGINT)
            return on_line

        return on_line

    sys.settrace(trace)
    try:
        await Busy().run()
    finally:
        sys.settrace(None)


def test_a_ctrl_c_anywhere_in_the_wait_for_the_decision_reaches_the_caller() -> None:
    """Wherever a KeyboardInterrupt lands while the run's task waits for the decision, it
    reaches the caller as itself, and trio stays sound (noted as waiting without being parked,
    the task would have been woken by the decision while it ran: a `TrioInternalError`)."""
    if not (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ):
        pytest.skip("trio handles SIGINT only in the main thread, from the default handler")
    code = RunState.until_decided.__code__
    landed = 0
    for line in sorted({line for _, _, line in code.co_lines() if line is not None}):
        fired: list[int] = []
        try:
            trio.run(_interrupt_the_wait_at, line, fired)
        except KeyboardInterrupt:
            landed += 1
        else:
            assert not fired, f"a Ctrl-C on line {line} did not reach the caller"
    assert landed >= 4  # on the lines of the path taken
