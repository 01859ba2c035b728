"""One owner for a run's state: the outcome is decided once, at the moment it happens, and
status, sends, cancels and the terminal event all follow from it."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import threading

import pytest
import trio
import trio.lowlevel
import trio.testing

from trioflow import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    RetryPolicy,
    RunEndedError,
    RunStatus,
    StartEvent,
    StopEvent,
    SyncContext,
    Workflow,
    WorkflowCancelledError,
    WorkflowCancelledEvent,
    WorkflowFailedEvent,
    WorkflowRuntimeError,
    WorkflowTimedOutEvent,
    WorkflowTimeoutError,
    step,
)


class StateNudge(HumanResponseEvent):
    pass


class Unwinding(Workflow):
    """`fast` decides the run while `slow`, a `def` step, is still in its thread."""

    def __init__(self, gate: threading.Event, entered: threading.Event) -> None:
        super().__init__(timeout=None)
        self.gate = gate
        self.entered = entered

    @step
    async def fast(self, ev: StartEvent) -> StopEvent:
        await trio.to_thread.run_sync(self.entered.wait)
        return StopEvent(result="done")

    @step
    def slow(self, ev: StartEvent) -> None:
        self.entered.set()
        self.gate.wait()

    @step
    async def takes(self, ev: StateNudge) -> None:
        pass


async def test_a_decided_run_says_so_while_its_steps_unwind() -> None:
    """Once decided, status is the outcome, cancel() is refused and send_event raises, even
    while a `def` step is still in its thread; result() waits for the thread."""
    gate, entered = threading.Event(), threading.Event()
    async with Unwinding(gate, entered).start() as handler:
        try:
            with trio.fail_after(10):
                while handler.status is RunStatus.RUNNING:
                    await trio.sleep(0.001)
            assert handler.status is RunStatus.COMPLETED
            assert not handler.is_done()  # the thread still runs
            assert handler.cancel() is False
            with pytest.raises(RunEndedError, match="completed"):
                await handler.send_event(StateNudge())
            assert handler.failed_step is None
            assert handler.result_nowait() == "done"
        finally:
            gate.set()  # on failure too: a thread left waiting would hang the test
        assert await handler.result() == "done"
        assert handler.is_done()


async def test_cancel_decides_at_once_and_says_whether_it_did() -> None:
    """cancel() decides the run the moment it is called (True); a second call is refused."""
    gate, entered = threading.Event(), threading.Event()
    gate.set()
    async with Unwinding(gate, entered).start() as handler:
        assert handler.cancel() is True
        assert handler.status is RunStatus.CANCELLED
        assert handler.cancel() is False
        with pytest.raises(WorkflowCancelledError):
            handler.result_nowait()
        entered.set()


async def test_result_nowait_would_block_until_decided() -> None:
    """result_nowait() raises trio.WouldBlock while the run's outcome is undecided."""
    gate, entered = threading.Event(), threading.Event()
    async with Unwinding(gate, entered).start() as handler:
        with pytest.raises(trio.WouldBlock):
            handler.result_nowait()
        entered.set()
        gate.set()
        assert await handler.result() == "done"


class Stubborn(Workflow):
    """On cancellation the step returns a stop event anyway, or raises from its cleanup."""

    def __init__(self, on_cancel: str, timeout: float | None = 1.0) -> None:
        super().__init__(timeout=timeout)
        self.on_cancel = on_cancel

    @step
    async def hold(self, ev: StartEvent) -> StopEvent:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            if self.on_cancel == "raise":
                raise ValueError("cleanup failed") from None
            return StopEvent(result="sneaked out")  # swallows the cancellation on purpose
        raise AssertionError("unreachable")


@pytest.mark.parametrize("on_cancel", ["stop", "raise"])
async def test_a_timeout_is_decided_when_it_happens(
    autojump_clock: trio.testing.MockClock, on_cancel: str
) -> None:
    """A step that answers the timeout's cancellation with a stop event or a cleanup error
    does not change the outcome: the run timed out, naming the step that was running."""
    async with Stubborn(on_cancel).start() as handler:
        events = [ev async for ev in handler.stream_events()]
        with pytest.raises(WorkflowTimeoutError):
            await handler.result()
    assert handler.status is RunStatus.TIMED_OUT
    assert events[-1] == WorkflowTimedOutEvent(timeout=1.0, active_steps=("hold",))


@pytest.mark.parametrize("on_cancel", ["stop", "raise"])
async def test_the_callers_deadline_is_a_cancel(
    autojump_clock: trio.testing.MockClock, on_cancel: str
) -> None:
    """The caller's deadline cancels the run, whatever its steps do while they unwind: the
    caller's scope gets its TooSlowError and the stream ends with WorkflowCancelledEvent."""
    for _ in range(20):  # trio runs the tasks woken in one tick in a random order
        handlers = []
        with pytest.raises(trio.TooSlowError):
            with trio.fail_after(1):
                async with Stubborn(on_cancel, timeout=None).start() as handler:
                    handlers.append(handler)
                    await handler.result()
        handler = handlers[0]
        assert handler.status is RunStatus.CANCELLED
        events = [ev async for ev in handler.stream_events()]
        assert events[-1] == WorkflowCancelledEvent()  # after the cleanup error's report


class Exiting(Workflow):
    """Its step raises what it is given."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    @step
    async def boom(self, ev: StartEvent) -> StopEvent:
        await trio.lowlevel.checkpoint()
        raise self.error


@pytest.mark.parametrize("error", [KeyboardInterrupt(), SystemExit(3), GeneratorExit()])
async def test_base_exceptions_propagate_as_themselves(error: BaseException) -> None:
    """KeyboardInterrupt, SystemExit and GeneratorExit from a step reach the caller as
    themselves (never a WorkflowCancelledError or a group); the stream still ends."""
    with pytest.raises(type(error)) as raised:
        await Exiting(error).run()
    assert raised.value is error
    handlers = []
    with pytest.raises(type(error)) as left:
        async with Exiting(error).start() as handler:
            handlers.append(handler)
            await trio.sleep_forever()  # the crash cancels the block, as trio's nursery would
    assert left.value is error
    handler = handlers[0]
    events = [ev async for ev in handler.stream_events()]
    assert events[-1] == WorkflowFailedEvent(step_name="boom", exception=error)
    assert handler.status is RunStatus.FAILED
    with pytest.raises(type(error)):
        await handler.result()


def test_sys_exit_in_a_step_exits_with_its_code(tmp_path: object) -> None:
    """sys.exit(3) in a step makes the program exit with 3, as it would without trioflow."""
    import subprocess
    import sys

    code = (
        "import sys, trio\n"
        "from trioflow import StartEvent, StopEvent, Workflow, step\n"
        "class F(Workflow):\n"
        "    @step\n"
        "    async def go(self, ev: StartEvent) -> StopEvent:\n"
        "        sys.exit(3)\n"
        "trio.run(F().run)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert done.returncode == 3, done.stderr


@dataclasses.dataclass(frozen=True)
class FrozenError(Exception):
    """A frozen dataclass exception: `add_note` raises on it."""

    code: int


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


class RaisingHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        raise RuntimeError("the log handler is broken")


@pytest.mark.parametrize("error", [FrozenError(7), UnprintableError()])
async def test_exceptions_that_fight_back_still_end_the_stream(error: Exception) -> None:
    """A failure whose exception refuses notes or str(), with a logging handler that raises,
    still ends the stream with its terminal event and is raised by result()."""
    handler_ = RaisingHandler()
    logger = logging.getLogger("trioflow")
    logger.addHandler(handler_)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        async with Exiting(error).start() as handler:
            with trio.fail_after(5):
                events = [ev async for ev in handler.stream_events()]
            with pytest.raises(type(error)) as raised:
                await handler.result()
    finally:
        logger.removeHandler(handler_)
        logger.setLevel(old_level)
    assert raised.value is error
    assert events[-1] == WorkflowFailedEvent(step_name="boom", exception=error)
    assert handler.status is RunStatus.FAILED
    assert handler.failed_step == "boom"
    with pytest.raises(type(error)) as through_run:  # out of run(), through the block's exit
        await Exiting(error).run()
    assert through_run.value is error


async def test_a_shared_exception_object_gets_one_note() -> None:
    """One exception object raised by many runs carries the step's note once, not per run."""
    error = ValueError("shared")
    for _ in range(3):
        with pytest.raises(ValueError, match="shared"):
            await Exiting(error).run()
    assert len(error.__notes__) == 1


class Flaky(Workflow):
    """Fails twice, then succeeds; records what each attempt saw."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[object] = []
        self.attempts = 0

    @step(retry=RetryPolicy(max_attempts=3))
    async def wobble(self, ev: StartEvent) -> StopEvent:
        self.seen.append(sys.exc_info()[1])
        self.attempts += 1
        raise ValueError(f"attempt {self.attempts}")


async def test_retries_run_outside_any_except_block() -> None:
    """Attempt 2 does not see attempt 1 in sys.exc_info(), and the final failure is not
    chained to the earlier attempts."""
    flow = Flaky()
    with pytest.raises(ValueError, match="attempt 3") as raised:
        await flow.run()
    assert flow.seen == [None, None, None]
    assert raised.value.__context__ is None


class Ask(InputRequiredEvent):
    pass


class StateReply(HumanResponseEvent):
    n: int


class Impatient(Workflow):
    """`wait` waits for a reply for one second under its own move_on_after; `answer` sends one
    from inside the run (no checkpoint before the send) exactly when the wait gives up."""

    def __init__(self) -> None:
        super().__init__(timeout=None)
        self.got: list[StateReply] = []
        self.accepted: list[bool] = []

    @step
    async def wait(self, ctx: Context, ev: StartEvent) -> StopEvent:
        with trio.move_on_after(1):
            self.got.append(await ctx.wait_for_event(StateReply))
        await trio.sleep(1)
        return StopEvent(result=len(self.got))

    @step
    async def answer(self, ctx: Context, ev: StartEvent) -> None:
        await trio.sleep(1)
        try:
            ctx.send_event(StateReply(n=1))
        except WorkflowRuntimeError:
            self.accepted.append(False)
        else:
            self.accepted.append(True)


async def test_an_answer_goes_only_to_a_live_waiter(autojump_clock: trio.testing.MockClock) -> None:
    """An answer sent in the very tick a waiter gives up either reaches the step or is
    refused: send_event never reports success for an answer that is then lost."""
    for _ in range(60):  # trio runs the tasks woken in one tick in a random order
        flow = Impatient()
        got = await flow.run()
        assert flow.accepted == [got == 1]


class Touchy:
    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no comparing")

    __hash__ = object.__hash__


class TwoWaiters(Workflow):
    @step
    async def touchy(self, ctx: Context, ev: StartEvent) -> None:
        await ctx.wait_for_event(StateReply, requirements={"n": Touchy()})

    @step
    async def plain(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await trio.sleep(1)  # so that the touchy waiter is the oldest, looked at first
        reply = await ctx.wait_for_event(StateReply, requirements={"n": 2})
        return StopEvent(result=reply.n)


async def test_a_misbehaving_requirement_breaks_no_sender(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A waiter whose requirement's == raises matches nothing; other waiters still get theirs."""
    async with TwoWaiters().start() as handler:
        await trio.sleep(2)
        await handler.send_event(StateReply(n=2))
        assert await handler.result() == 2


class Job(Event):
    i: int


class ReleaseAll(HumanResponseEvent):
    pass


class Later(Event):
    pass


class Fanned(Workflow):
    """45 `def` workers wait in a ctx call, then another `def` step has to run."""

    def __init__(self) -> None:
        super().__init__(timeout=None)

    @step
    async def fan(self, ctx: Context, ev: StartEvent) -> Later | Job:
        for i in range(45):
            ctx.send_event(Job(i=i))
        await trio.testing.wait_all_tasks_blocked()  # every `hold` is in (or waits for) a thread
        return Later()

    @step(num_workers=45)
    def hold(self, ctx: SyncContext, ev: Job) -> None:
        ctx.wait_for_event(ReleaseAll)

    @step
    def release(self, ctx: SyncContext, ev: Later) -> StopEvent:
        return StopEvent(result="released")


async def test_waiting_def_steps_do_not_take_other_steps_threads() -> None:
    """46 `def` workers waiting in ctx calls leave thread room for the run's other `def` steps
    (trio's shared limit is 40): each step has its own, sized by its workers."""
    async with Fanned().start() as handler:
        with trio.fail_after(20):
            assert await handler.result() == "released"


class Chatty(Workflow):
    """Writes many events without any other await."""

    @step
    async def write(self, ctx: Context, ev: StartEvent) -> StopEvent:
        for i in range(ev.n):
            await ctx.write_event_to_stream(Job(i=i))
        return StopEvent(result=ev.n)


async def test_a_write_loop_lets_other_tasks_run() -> None:
    """Writing into a big buffer never waits, yet other tasks run during the loop (the
    stream yields once a millisecond has passed), and reading it back does the same."""
    ticks: list[int] = []
    done = trio.Event()

    async def ticker() -> None:
        while not done.is_set():
            ticks.append(1)
            await trio.lowlevel.checkpoint()

    n = 50_000
    async with trio.open_nursery() as nursery, Chatty(stream_buffer=n + 1).start(n=n) as handler:
        nursery.start_soon(ticker)
        await trio.lowlevel.checkpoint()
        before = len(ticks)
        while handler.status is RunStatus.RUNNING:
            await trio.lowlevel.checkpoint()
        during_writes = len(ticks) - before
        before = len(ticks)
        async with handler.stream_events() as events:
            count = sum([1 async for _ in events])
        during_reads = len(ticks) - before
        done.set()
    assert count == n + 1
    assert during_writes > 2
    assert during_reads > 2


async def test_run_with_an_input_request_never_depends_on_the_buffer_being_full() -> None:
    """Under run() nobody streams: ctx.send_event(InputRequiredEvent) works whether the
    buffer has room or is exactly full."""

    class Asking(Workflow):
        @step
        async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
            for i in range(ev.writes):
                await ctx.write_event_to_stream(Job(i=i))
            ctx.send_event(Ask())
            return StopEvent(result="asked")

    for writes in (0, 1, 2):
        assert await Asking(stream_buffer=2).run(writes=writes) == "asked"


async def test_a_context_kept_after_its_run_refuses_sends() -> None:
    """ctx.send_event on a run that has ended raises RunEndedError instead of dropping it."""
    kept: list[Context] = []

    class Keeper(Workflow):
        @step
        async def keep(self, ctx: Context, ev: StartEvent) -> StopEvent:
            kept.append(ctx)
            return StopEvent()

        @step
        async def takes(self, ev: StateReply) -> None:
            pass

    await Keeper().run()
    with pytest.raises(RunEndedError):
        kept[0].send_event(StateReply(n=1))


class AskFirst(Workflow):
    """Asks through a stream nobody reads (no room), under its own one-second limit, then
    waits again without asking."""

    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        with trio.move_on_after(1):
            reply = await ctx.wait_for_event(StateReply, waiter_event=Ask())
            return StopEvent(result=("first", reply.n))
        with trio.move_on_after(5):
            reply = await ctx.wait_for_event(StateReply)
            return StopEvent(result=("second", reply.n))
        return StopEvent(result="lost")


async def test_an_answer_taken_while_asking_is_kept_when_the_ask_is_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An answer accepted while the waiter still writes its question reaches the step, even
    if that write is then cancelled: send_event's success is never a lost answer."""
    async with AskFirst(stream_buffer=0, timeout=None).start() as handler:
        await trio.sleep(0.5)
        await handler.send_event(StateReply(n=7))
        await trio.sleep(2)  # nobody reads: the question's write is cancelled at 1 s
        assert await handler.result() == ("first", 7)


async def test_the_wait_timeout_covers_writing_the_question(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """wait_for_event(timeout=1) raises TooSlowError after one second, also while its
    waiter_event waits for room in a full stream."""

    class Patient(Workflow):
        @step
        async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
            started = trio.current_time()
            with pytest.raises(trio.TooSlowError):
                await ctx.wait_for_event(StateReply, waiter_event=Ask(), timeout=1)
            return StopEvent(result=trio.current_time() - started)

    async with Patient(stream_buffer=0, timeout=None).start() as handler:
        await trio.sleep(2)  # nobody reads meanwhile: the question finds no room
        async with handler.stream_events() as events:
            got = [ev async for ev in events]
    assert got == [StopEvent(result=1.0)]


async def test_result_nowait_only_looks() -> None:
    """result_nowait() on a failed run raises the failure but does not count as reporting it:
    leaving start() still raises it (result() does count)."""
    error = ValueError("peeked at")
    with pytest.raises(ValueError, match="peeked at"):
        async with Exiting(error).start() as handler:
            while handler.status is RunStatus.RUNNING:
                await trio.lowlevel.checkpoint()
            with pytest.raises(ValueError, match="peeked at"):
                handler.result_nowait()
    async with Exiting(error).start() as handler:
        with pytest.raises(ValueError, match="peeked at"):
            await handler.result()  # reported: leaving the block raises nothing


async def test_the_callers_own_error_survives_a_failure_that_fights_back() -> None:
    """The block's own exception comes out as itself when the run also failed with an
    exception whose str() raises (the note about the run is best effort)."""
    with pytest.raises(KeyError) as raised:
        async with Exiting(UnprintableError()).start() as handler:
            while handler.status is RunStatus.RUNNING:
                await trio.lowlevel.checkpoint()
            raise KeyError("mine")
    assert "the run had also failed" in raised.value.__notes__[0]


# -- run() in the caller's task: what it raises is what leaving start() raises -----------------


class Onward(Event):
    pass


class FailsWhileAnotherCleansUp(Workflow):
    """Step ``fail`` raises at 0.05 s; step ``clean`` takes 0.2 s to unwind (shielded)."""

    def __init__(self, failure: BaseException) -> None:
        super().__init__(timeout=None)
        self.failure = failure

    @step
    async def fail(self, ctx: Context, ev: StartEvent) -> Onward | None:
        ctx.send_event(Onward())
        await trio.sleep(0.05)
        raise self.failure

    @step
    async def clean(self, ev: Onward) -> StopEvent:
        try:
            await trio.sleep(10)
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(0.2)
        return StopEvent()


@pytest.mark.parametrize("failure", [ValueError("the run failed"), SystemExit(3)])
async def test_run_raises_its_failure_over_a_cancel_of_the_caller_while_it_unwinds(
    autojump_clock: trio.testing.MockClock, failure: BaseException
) -> None:
    """The caller's scope is cancelled while the failed run unwinds: ``run()`` raises the
    failure (a step's SystemExit too), as leaving ``start()`` does; it never returns."""
    for use_start in (False, True):
        flow = FailsWhileAnotherCleansUp(failure)
        with pytest.raises(type(failure)) as raised, trio.move_on_after(0.1):
            if use_start:
                async with flow.start() as handler:
                    await handler.result()
            else:
                await flow.run()
        assert raised.value is failure


def test_ctrl_c_during_run_reaches_the_caller_as_keyboard_interrupt() -> None:
    """Ctrl-C while ``run()`` waits (here sent by a step): a KeyboardInterrupt, not a group
    holding one, as from ``start()``."""

    class Interrupted(Workflow):
        @step
        async def interrupt(self, ev: StartEvent) -> StopEvent:
            await trio.to_thread.run_sync(os.kill, os.getpid(), signal.SIGINT)
            await trio.sleep(1)
            return StopEvent()

    async def run_it() -> None:
        await Interrupted(timeout=None).run()

    with pytest.raises(KeyboardInterrupt):
        trio.run(run_it)
